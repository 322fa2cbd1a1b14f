"""stereo_seg_node in its own process, fed and read by this process over shared-memory DDS.

The node runs a rigged tiny network whose outputs are known exactly (disparity RIGGED
everywhere, one class everywhere), so the cloud's geometry, the DisparityImage fields and the
message layouts can be checked number for number.
"""
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import String
from stereo_msgs.msg import DisparityImage

from pmt_perception.data.synthetic import CLASS_NAMES, PALETTE
from pmt_perception.ros.conversions import image_to_numpy, pointcloud2_to_array, unpack_rgb
from pmt_perception.ros.qos import latched_qos

pytestmark = pytest.mark.ros

DOMAIN_ID = 41
STARTUP_TIMEOUT = 90.0   # model load on a busy 2-core machine
FRAME_TIMEOUT = 30.0
OUTPUTS = {"seg": Image, "seg_color": Image, "disparity": DisparityImage, "points2": PointCloud2,
           "seg_confidence": Image, "disparity_confidence": Image}
NODE_PARAMS = {"input_reliability": "reliable", "diagnostics_period": 0.5,
               "publish_confidence": True, "points_max_depth": 1000.0}


def stamp_of(msg):
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def rig(ros_graph_factory, ros_endpoint_factory, stereo_inputs_factory, rigged_checkpoint):
    graph = ros_graph_factory(DOMAIN_ID)
    node = graph.start("node", "pmt_perception.ros.node",
                       params={"checkpoint": str(rigged_checkpoint.path), **NODE_PARAMS})
    endpoint = ros_endpoint_factory(DOMAIN_ID)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    for topic, msg_type in OUTPUTS.items():
        endpoint.listen(topic, msg_type)
    endpoint.listen("/diagnostics", DiagnosticArray)
    inputs = stereo_inputs_factory(endpoint, reliable)
    inputs.wait_until_connected(endpoint, STARTUP_TIMEOUT)
    # First frame: retried until it comes through (reliable matching completes asynchronously).
    deadline = time.monotonic() + FRAME_TIMEOUT
    while True:
        stamp = inputs.publish()
        try:
            endpoint.wait_for_stamp("points2", stamp, 2.0)
            break
        except AssertionError as error:
            if time.monotonic() > deadline:
                raise AssertionError("no output from the node:\n"
                                     + graph.log("node")[-3000:]) from error
    frame = {topic: endpoint.wait_for_stamp(topic, stamp, FRAME_TIMEOUT) for topic in OUTPUTS}
    yield SimpleNamespace(graph=graph, node=node, endpoint=endpoint, inputs=inputs, frame=frame,
                          stamp=stamp, rigged=rigged_checkpoint)


def test_outputs_have_the_documented_types_encodings_sizes_and_headers(rig):
    height, width = rig.inputs.SIZE
    for topic, msg in rig.frame.items():
        assert isinstance(msg, OUTPUTS[topic])
        assert stamp_of(msg) == rig.stamp
        assert msg.header.frame_id == "left_optical", f"{topic} must carry the left header"
    seg, color = rig.frame["seg"], rig.frame["seg_color"]
    assert (seg.encoding, seg.height, seg.width, seg.step) == ("mono8", height, width, width)
    assert (color.encoding, color.height, color.width) == ("rgb8", height, width)
    labels = image_to_numpy(seg)
    assert (labels == rig.rigged.label).all()
    assert (image_to_numpy(color) == np.asarray(PALETTE, np.uint8)[rig.rigged.label]).all()
    for topic in ("seg_confidence", "disparity_confidence"):
        confidence = image_to_numpy(rig.frame[topic])
        assert rig.frame[topic].encoding == "32FC1" and confidence.shape == (height, width)
        assert np.isfinite(confidence).all() and confidence.min() >= 0 and confidence.max() <= 1
    cloud = rig.frame["points2"]
    assert (cloud.height, cloud.width, cloud.is_dense) == (height, width, False)
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb", "label"]


def test_point_cloud_matches_the_known_depth(rig):
    camera, offset = rig.inputs.camera, rig.inputs.CX_OFFSET
    cloud = pointcloud2_to_array(rig.frame["points2"])
    depth = camera.fx * camera.baseline / (rig.rigged.disparity - offset)  # Z = f B / (d - dcx)
    rows, cols = np.mgrid[0:camera.height, 0:camera.width]
    np.testing.assert_allclose(cloud["z"], depth, rtol=1e-4)
    np.testing.assert_allclose(cloud["x"], (cols - camera.cx) * depth / camera.fx, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(cloud["y"], (rows - camera.cy) * depth / camera.fy, rtol=1e-4,
                               atol=1e-5)
    assert (unpack_rgb(cloud["rgb"]) == rig.inputs.pair.left).all()   # organized: pixel = point
    assert (cloud["label"] == rig.rigged.label).all()


def test_disparity_image_fields_follow_stereo_image_proc(rig):
    msg, camera = rig.frame["disparity"], rig.inputs.camera
    assert msg.f == pytest.approx(camera.fx) and msg.t == pytest.approx(camera.baseline)
    assert (msg.min_disparity, msg.max_disparity) == (0.0, 256.0)   # config/stereo_seg.yaml
    assert msg.delta_d == pytest.approx(1 / 16)
    assert (msg.valid_window.width, msg.valid_window.height) == (camera.width, camera.height)
    assert msg.image.encoding == "32FC1" and stamp_of(msg.image) == rig.stamp
    # Pre-adjusted for the principal point offset: Z = f * t / value.
    np.testing.assert_allclose(image_to_numpy(msg.image), rig.rigged.disparity - rig.inputs.CX_OFFSET,
                               rtol=1e-5)


def test_class_table_is_latched_for_late_subscribers(rig):
    rig.endpoint.listen("seg_classes", String, latched_qos())
    msg = rig.endpoint.wait_for(lambda: (rig.endpoint.messages("seg_classes") or [None])[-1],
                                10.0, "the latched class table")
    table = json.loads(msg.data)
    assert table["class_names"] == list(CLASS_NAMES)
    assert table["palette"] == np.asarray(PALETTE).tolist()
    assert table["ignore_label"] == 255 and table["trained"] is True


@pytest.mark.parametrize("encoding", ["bgr8", "mono8", "mono16"])
def test_other_encodings_are_served(rig, encoding):
    stamp = rig.inputs.publish(encoding=encoding)
    cloud = pointcloud2_to_array(rig.endpoint.wait_for_stamp("points2", stamp, FRAME_TIMEOUT))
    rgb = unpack_rgb(cloud["rgb"]).astype(int)
    if encoding == "bgr8":
        assert (rgb == rig.inputs.pair.left).all()
    else:  # grey: three equal channels, close to the luma of the colour image
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
        luma = rig.inputs.pair.left @ np.array([0.299, 0.587, 0.114])
        assert np.abs(rgb[..., 0] - luma).max() <= 1.5


def test_diagnostics_report_counters_and_latency(rig):
    values = rig.endpoint.wait_for_diagnostic("frames_published", lambda v: int(v) >= 1, 10.0)
    assert values["state"] == "active" and values["device"] == "cpu"
    assert int(values["sets_received"]) >= int(values["frames_processed"]) >= 1
    assert all(int(values[f"problems_{kind}"]) == 0 for kind in ("model", "publish"))
    assert "checkpoint" in values["model"]


def test_a_switched_off_output_is_not_published(rig):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = rig.endpoint.node.create_client(SetParameters, "/stereo_seg_node/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)

    def set_points(enabled):
        request = SetParameters.Request(parameters=[Parameter(
            name="publish_points", value=ParameterValue(type=ParameterType.PARAMETER_BOOL,
                                                        bool_value=enabled))])
        future = client.call_async(request)
        rig.endpoint.wait_for(future.done, 10.0, "set_parameters")
        assert future.result().results[0].successful

    set_points(False)
    try:
        stamp = rig.inputs.publish()
        # points2 would go out before the confidences (publishing order); wait for them.
        rig.endpoint.wait_for_stamp("disparity_confidence", stamp, FRAME_TIMEOUT)
        time.sleep(0.5)
        assert all(stamp_of(m) != stamp for m in rig.endpoint.messages("points2"))
    finally:
        set_points(True)
    stamp = rig.inputs.publish()
    rig.endpoint.wait_for_stamp("points2", stamp, FRAME_TIMEOUT)


def test_the_node_opens_no_network_socket(rig):
    """Networking rule: the node's sockets are none of the machine's UDP/TCP/raw sockets."""
    inodes = set()
    for fd in Path(f"/proc/{rig.node.pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    network = set()
    for table in ("udp", "udp6", "tcp", "tcp6", "raw", "raw6"):
        path = Path("/proc/net") / table
        if path.is_file():
            for line in path.read_text().splitlines()[1:]:
                network.add(line.split()[9])
    assert not inodes & network, "the node opened a network socket"
    assert rig.node.poll() is None
