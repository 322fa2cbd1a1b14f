"""Bad input and lifecycle transitions: the node warns, counts, and keeps serving good frames.

One node process (tiny network) on its own shared-memory domain; this process feeds it broken
sets one kind at a time, waits for the matching diagnostics counter, then checks a good set
still comes through.
"""
import time
from types import SimpleNamespace

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros

DOMAIN_ID = 43
STARTUP_TIMEOUT = 90.0
FRAME_TIMEOUT = 30.0
STALL_TIMEOUT = 0.6
NODE_PARAMS = {"input_reliability": "reliable", "diagnostics_period": 0.3,
               "sync_stall_timeout": STALL_TIMEOUT, "warning_throttle": 0.0}


@pytest.fixture(scope="module")
def rig(ros_graph_factory, ros_endpoint_factory, stereo_inputs_factory, tiny_checkpoint):
    graph = ros_graph_factory(DOMAIN_ID)
    node = graph.start("node", "pmt_perception.ros.node",
                       params={"checkpoint": str(tiny_checkpoint), **NODE_PARAMS})
    endpoint = ros_endpoint_factory(DOMAIN_ID)
    endpoint.listen("seg", Image)
    endpoint.listen("/diagnostics", DiagnosticArray)
    inputs = stereo_inputs_factory(endpoint, QoSProfile(depth=10,
                                                        reliability=ReliabilityPolicy.RELIABLE))
    inputs.wait_until_connected(endpoint, STARTUP_TIMEOUT)
    rig = SimpleNamespace(graph=graph, node=node, endpoint=endpoint, inputs=inputs)
    deadline = time.monotonic() + FRAME_TIMEOUT
    while not serves_a_good_frame(rig, timeout=2.0):
        assert time.monotonic() < deadline, "no output:\n" + graph.log("node")[-3000:]
    return rig


def serves_a_good_frame(rig, timeout=FRAME_TIMEOUT) -> bool:
    stamp = rig.inputs.publish()
    try:
        rig.endpoint.wait_for_stamp("seg", stamp, timeout)
        return True
    except AssertionError:
        return False


def problem_count(rig, kind) -> int:
    values = rig.endpoint.latest_diagnostics() or {}
    return int(values.get(f"problems_{kind}", 0))


def with_size(msg, width, height):
    from pmt_perception.ros.conversions import image_to_numpy, numpy_to_image
    resized = numpy_to_image(image_to_numpy(msg)[:height, :width].copy(), msg.encoding)
    resized.header = msg.header
    return resized


def bad_size(inputs):
    left, right = inputs.images()
    return left, with_size(right, 100, 96), *inputs.infos()


def bad_encoding(inputs):
    left, right = inputs.images()
    left.encoding = "yuv422"   # a real encoding the node cannot interpret
    return left, right, *inputs.infos()


def bad_step(inputs):
    left, right = inputs.images()
    left.step = left.width * 2   # smaller than width x 3 bytes
    return left, right, *inputs.infos()


def bad_data_length(inputs):
    left, right = inputs.images()
    right.data = bytes(right.data)[:-100]
    return left, right, *inputs.infos()


def unrectified_info(inputs):
    left_info, right_info = inputs.infos()
    right_info.p = [0.0] * 12
    return (*inputs.images(), left_info, right_info)


def info_for_other_size(inputs):
    left_info, right_info = inputs.infos()
    for info in (left_info, right_info):
        info.width, info.height = 640, 480
    return (*inputs.images(), left_info, right_info)


@pytest.mark.parametrize("build, kind, phrase", [
    (bad_size, "size_mismatch", "left and right images differ in size"),
    (bad_encoding, "encoding", "encoding 'yuv422' is not supported"),
    (bad_step, "malformed_image", "step"),
    (bad_data_length, "malformed_image", "data has"),
    (unrectified_info, "camera_info", "camera_info rejected"),
    (info_for_other_size, "size_mismatch", "camera_info is for 640x480"),
], ids=["lr-size", "encoding", "step", "data-length", "unrectified-info", "info-size"])
def test_a_bad_set_is_counted_warned_about_and_survived(rig, build, kind, phrase):
    before = problem_count(rig, kind)
    rig.inputs.publish(messages=build(rig.inputs))
    rig.endpoint.wait_for_diagnostic(f"problems_{kind}", lambda v: int(v) > before, FRAME_TIMEOUT)
    assert phrase in rig.graph.log("node")
    assert serves_a_good_frame(rig), "the node stopped serving after bad input"
    assert rig.node.poll() is None


def diagnostic_int(rig, key) -> int:
    return int((rig.endpoint.latest_diagnostics() or {}).get(key, 0))


def test_every_set_of_a_burst_of_bad_sets_is_counted(rig):
    """Bad sets are checked before the newest-wins hand-off (which drops all but the newest):
    each one counts. Batches of 5 fit the input queues, so DDS delivers all of them; the
    per-topic arrival counters show they arrived."""
    key = "received_right_image_rect"
    rig.endpoint.wait_for_diagnostic(key, lambda v: True, FRAME_TIMEOUT)
    bad_before, arrived_before = problem_count(rig, "malformed_image"), diagnostic_int(rig, key)
    batches, per_batch = 8, 5
    for batch in range(1, batches + 1):
        for _ in range(per_batch):
            rig.inputs.publish(messages=bad_step(rig.inputs))
        rig.endpoint.wait_for_diagnostic(
            key, lambda v, n=batch * per_batch: int(v) >= arrived_before + n, FRAME_TIMEOUT)
    values = rig.endpoint.wait_for_diagnostic(
        "problems_malformed_image",
        lambda v: int(v) >= bad_before + batches * per_batch, FRAME_TIMEOUT)
    assert int(values["problems_malformed_image"]) == bad_before + batches * per_batch
    for topic in ("left_image_rect", "left_camera_info", "right_camera_info"):
        assert int(values[f"received_{topic}"]) >= arrived_before + batches * per_batch
    assert serves_a_good_frame(rig)


def test_a_camera_info_in_another_frame_is_warned_about_and_processed(rig):
    before = problem_count(rig, "frame_id")
    left, right, left_info, right_info = (*rig.inputs.images(), *rig.inputs.infos())
    left_info.header.frame_id = "some_other_camera"
    stamp = rig.inputs.publish(messages=(left, right, left_info, right_info))
    rig.endpoint.wait_for_stamp("seg", stamp, FRAME_TIMEOUT)   # processing continues
    rig.endpoint.wait_for_diagnostic("problems_frame_id", lambda v: int(v) > before,
                                     FRAME_TIMEOUT)
    assert "its camera_info in 'some_other_camera'" in rig.graph.log("node")


@pytest.mark.parametrize("send, phrase", [
    (dict(right_offset_ns=250_000_000), "the stamps never match"),
    (dict(skip=(2, 3)), "nothing received on /left/camera_info, /right/camera_info"),
], ids=["stamps-never-sync", "camera-info-missing"])
def test_inputs_that_never_synchronize_are_named(rig, send, phrase):
    before = problem_count(rig, "sync_stall")
    deadline = time.monotonic() + 10 * STALL_TIMEOUT
    while problem_count(rig, "sync_stall") <= before:
        assert time.monotonic() < deadline, "no sync_stall reported:\n" + rig.graph.log("node")[-2000:]
        rig.inputs.publish(**send)
        time.sleep(0.1)
    assert phrase in rig.graph.log("node")
    assert serves_a_good_frame(rig)


def call(rig, service_type, name, request, timeout=20.0):
    client = rig.endpoint.node.create_client(service_type, f"/stereo_seg_node/{name}")
    try:
        assert client.wait_for_service(timeout_sec=timeout)
        future = client.call_async(request)
        rig.endpoint.wait_for(future.done, timeout, name)
        return future.result()
    finally:
        rig.endpoint.node.destroy_client(client)


def transition(rig, transition_id) -> str:
    assert call(rig, ChangeState, "change_state",
                ChangeState.Request(transition=Transition(id=transition_id))).success
    return call(rig, GetState, "get_state", GetState.Request()).current_state.label


def test_deactivate_unsubscribes_and_activate_serves_again(rig):
    assert transition(rig, Transition.TRANSITION_DEACTIVATE) == "inactive"
    rig.endpoint.wait_for(lambda: all(p.get_subscription_count() == 0
                                      for p in rig.inputs.publishers), 10.0, "unsubscribe")
    assert not serves_a_good_frame(rig, timeout=1.0)
    assert transition(rig, Transition.TRANSITION_ACTIVATE) == "active"
    rig.inputs.wait_until_connected(rig.endpoint, 10.0)
    assert serves_a_good_frame(rig)


def test_cleanup_and_configure_reload_the_model(rig):
    assert transition(rig, Transition.TRANSITION_DEACTIVATE) == "inactive"
    assert transition(rig, Transition.TRANSITION_CLEANUP) == "unconfigured"
    assert transition(rig, Transition.TRANSITION_CONFIGURE) == "inactive"
    assert transition(rig, Transition.TRANSITION_ACTIVATE) == "active"
    rig.inputs.wait_until_connected(rig.endpoint, 10.0)
    assert serves_a_good_frame(rig)
    assert rig.node.poll() is None


def test_approximate_sync_applies_on_activate_and_pairs_jittered_stamps(rig):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    def parameter(name, **value):
        return Parameter(name=name, value=ParameterValue(**value))

    result = call(rig, SetParameters, "set_parameters", SetParameters.Request(parameters=[
        parameter("approximate_sync", type=ParameterType.PARAMETER_BOOL, bool_value=True),
        parameter("sync_slop", type=ParameterType.PARAMETER_DOUBLE, double_value=0.02)]))
    assert all(r.successful for r in result.results)
    jittered = dict(right_offset_ns=7_000_000)   # right camera 7 ms late
    stamp = rig.inputs.publish(**jittered)
    with pytest.raises(AssertionError):          # exact sync still active: never pairs
        rig.endpoint.wait_for_stamp("seg", stamp, 1.0)
    assert transition(rig, Transition.TRANSITION_DEACTIVATE) == "inactive"
    assert transition(rig, Transition.TRANSITION_ACTIVATE) == "active"
    rig.inputs.wait_until_connected(rig.endpoint, 10.0)
    stamp = rig.inputs.publish(**jittered)
    seg = rig.endpoint.wait_for_stamp("seg", stamp, FRAME_TIMEOUT)
    assert seg.header.frame_id == "left_optical"   # the left header, not the right one
    assert "approximate sync" in rig.graph.log("node")


def test_a_missing_checkpoint_fails_configure_and_the_node_stays_up(rig, tiny_checkpoint):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    def set_checkpoint(path):
        request = SetParameters.Request(parameters=[Parameter(
            name="checkpoint", value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                    string_value=path))])
        assert call(rig, SetParameters, "set_parameters", request).results[0].successful

    assert transition(rig, Transition.TRANSITION_DEACTIVATE) == "inactive"
    assert transition(rig, Transition.TRANSITION_CLEANUP) == "unconfigured"
    set_checkpoint("/nonexistent/model.pt")
    response = call(rig, ChangeState, "change_state",
                    ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
    assert not response.success
    assert call(rig, GetState, "get_state", GetState.Request()).current_state.label == "unconfigured"
    assert "configure failed" in rig.graph.log("node") and rig.node.poll() is None
    set_checkpoint(str(tiny_checkpoint))
    assert transition(rig, Transition.TRANSITION_CONFIGURE) == "inactive"
    assert transition(rig, Transition.TRANSITION_ACTIVATE) == "active"
    rig.inputs.wait_until_connected(rig.endpoint, 10.0)
    assert serves_a_good_frame(rig)


def test_without_subscribers_to_enabled_outputs_the_model_does_not_run(rig):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    def set_publish_seg(enabled):
        request = SetParameters.Request(parameters=[Parameter(
            name="publish_seg", value=ParameterValue(type=ParameterType.PARAMETER_BOOL,
                                                     bool_value=enabled))])
        assert call(rig, SetParameters, "set_parameters", request).results[0].successful

    # This process subscribes to seg only: with seg off, no enabled output has a subscriber.
    set_publish_seg(False)
    try:
        time.sleep(3 * NODE_PARAMS["diagnostics_period"])  # counters of earlier frames settle
        before = rig.endpoint.latest_diagnostics()
        skipped = int(before["sets_skipped_no_subscribers"])
        rig.inputs.publish()
        after = rig.endpoint.wait_for_diagnostic(
            "sets_skipped_no_subscribers", lambda v: int(v) > skipped, FRAME_TIMEOUT)
        assert after["frames_processed"] == before["frames_processed"]
    finally:
        set_publish_seg(True)
    assert serves_a_good_frame(rig)
