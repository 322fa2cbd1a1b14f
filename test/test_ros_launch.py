"""The package as a user runs it: `colcon build`, `source install/setup.bash`, then the real
`ros2 launch pmt_perception stereo_seg.launch.py start_source:=true` and the ros2 CLI against it.

Separate processes over shared-memory DDS on domain 70 (conftest); the ros2 daemon that
`ros2 lifecycle` / `ros2 param` start is stopped at the end. Skips, saying why, where the real
ROS 2 tools are not installed (../shared/ros2_python/install.sh).
"""
from __future__ import annotations

import functools
import signal
import subprocess
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import stamp_of, stop_ros2_daemon, wait_or_show_stacks

pytestmark = pytest.mark.ros

DOMAIN_ID = 70
NODE = "/stereo_seg_node"
SOURCE_YAML = """/**:
  ros__parameters:
    image_size: [64, 96]
    rate: 5.0
    pool_size: 2
"""
INFERENCE_SCALE = 0.5   # a launch argument (a float parameter): the network runs on 32 x 64
CLEAN_EXIT_PROBLEMS = ("Traceback", "has died", "terminate called", "escalating", "KeyboardInterrupt")


@pytest.fixture(scope="module")
def launched(colcon_workspace, tiny_checkpoint, tmp_path_factory, ros_endpoint_factory):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from stereo_msgs.msg import DisparityImage

    from pmt_perception.ros.processes import read_log, stop_process

    work = tmp_path_factory.mktemp("launch70")
    (work / "source.yaml").write_text(SOURCE_YAML)
    env = colcon_workspace.env(DOMAIN_ID, work / "ros_logs")
    endpoint = ros_endpoint_factory(DOMAIN_ID, "planner")
    for topic, msg_type in (("left/image_rect", Image), ("right/image_rect", Image),
                            ("left/camera_info", CameraInfo), ("right/camera_info", CameraInfo)):
        endpoint.listen(topic, msg_type, qos_profile_sensor_data)
    endpoint.listen("seg", Image)
    endpoint.listen("disparity", DisparityImage)
    endpoint.listen("cloud", PointCloud2)   # points2, remapped by a launch argument
    endpoint.listen("/diagnostics", DiagnosticArray)
    log_path = work / "launch.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(colcon_workspace.command(
            "ros2", "launch", "pmt_perception", "stereo_seg.launch.py", "start_source:=true",
            f"checkpoint:={tiny_checkpoint}", "device:=cpu", "precision:=fp32",
            f"inference_scale:={INFERENCE_SCALE}",
            f"source_config:={work / 'source.yaml'}", "points_topic:=cloud"),
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def ros2(*words: str, timeout: float = 120) -> subprocess.CompletedProcess:
        # A daemon that has just started may not have discovered the node yet ("Node not
        # found", "Unable to find node"): re-run for up to 30 s, as a user would; any other
        # answer is returned as is.
        deadline = time.monotonic() + 30
        while True:
            result = subprocess.run(colcon_workspace.command("ros2", *words), env=env,
                                    text=True, capture_output=True, timeout=timeout)
            racing = any(text in result.stderr for text in ("Node not found", "Unable to find node"))
            if not racing or time.monotonic() > deadline:
                return result
            time.sleep(1.0)

    try:
        try:
            endpoint.wait_for(lambda: endpoint.messages("seg"), 180, "seg from the launch")
        except AssertionError:
            raise AssertionError(read_log(log_path)) from None
        yield SimpleNamespace(process=process, endpoint=endpoint, ros2=ros2, env=env,
                              workspace=colcon_workspace, log_path=log_path,
                              checkpoint=tiny_checkpoint)
    finally:
        stop_ros2_daemon(colcon_workspace, env)
        if process.poll() is None:
            stop_process(process, timeout=30)


def new_stamps(endpoint, topic: str, after_ns: int) -> list[int]:
    return sorted({stamp_of(m) for m in endpoint.messages(topic) if stamp_of(m) > after_ns})


def newest_stamp(endpoint, topic: str) -> int:
    return max((stamp_of(m) for m in endpoint.messages(topic)), default=0)


def test_outputs_carry_the_left_image_header(launched):
    endpoint = launched.endpoint

    def output_of_a_seen_left_image(topic):
        lefts = {stamp_of(m): m for m in endpoint.messages("left/image_rect")}
        return next(((m, lefts[stamp_of(m)]) for m in endpoint.messages(topic)
                     if stamp_of(m) in lefts), None)

    for topic in ("seg", "disparity"):
        msg, left = endpoint.wait_for(functools.partial(output_of_a_seen_left_image, topic), 60,
                                      f"{topic} of a left image the planner saw")
        assert msg.header.frame_id == left.header.frame_id == "left_camera_optical_frame"
        assert msg.header.stamp == left.header.stamp


def test_launch_arguments_reach_the_node(launched):
    result = launched.ros2("param", "get", NODE, "checkpoint")
    assert result.returncode == 0 and str(launched.checkpoint) in result.stdout, result
    result = launched.ros2("param", "get", NODE, "inference_scale")
    assert result.returncode == 0 and f"Double value is: {INFERENCE_SCALE}" in result.stdout, result
    info = launched.ros2("node", "info", NODE)
    assert info.returncode == 0, info
    text = info.stdout
    subscribers = text.split("Subscribers:")[1].split("Publishers:")[0]
    publishers = text.split("Publishers:")[1].split("Service Servers:")[0]
    servers = text.split("Service Servers:")[1]
    for topic in ("left/image_rect", "right/image_rect"):
        assert f"/{topic}: sensor_msgs/msg/Image" in subscribers
    for topic in ("left/camera_info", "right/camera_info"):
        assert f"/{topic}: sensor_msgs/msg/CameraInfo" in subscribers
    # docs/node.md: the outputs, points2 remapped to /cloud by points_topic:=cloud.
    for line in ("/seg: sensor_msgs/msg/Image", "/seg_color: sensor_msgs/msg/Image",
                 "/disparity: stereo_msgs/msg/DisparityImage",
                 "/cloud: sensor_msgs/msg/PointCloud2", "/seg_classes: std_msgs/msg/String",
                 "/diagnostics: diagnostic_msgs/msg/DiagnosticArray"):
        assert line in publishers, text
    assert "/points2" not in publishers
    assert f"{NODE}/change_state: lifecycle_msgs/srv/ChangeState" in servers


def test_ros2_topic_hz_measures_seg(launched):
    process = subprocess.Popen(launched.workspace.command("ros2", "topic", "hz", "/seg"),
                               env=launched.env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("average rate" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    rate = float(next(line for line in lines if "average rate" in line).split(":")[1])
    assert rate > 0


def test_points2_read_back_equals_the_predictor_points(launched):
    from sensor_msgs_py import point_cloud2

    from pmt_perception.config import config_dir
    from pmt_perception.inference import Predictor
    from pmt_perception.ros.conversions import camera_from_infos, to_rgb8
    from pmt_perception.ros.params import load_defaults

    endpoint = launched.endpoint

    def frame_with_cloud():
        inputs = {topic: {stamp_of(m): m for m in endpoint.messages(topic)}
                  for topic in ("left/image_rect", "right/image_rect", "left/camera_info",
                                "right/camera_info")}
        for cloud in endpoint.messages("cloud"):
            stamp = stamp_of(cloud)
            if all(stamp in by_stamp for by_stamp in inputs.values()):
                return cloud, [inputs[t][stamp] for t in inputs]
        return None

    cloud, (left, right, left_info, right_info) = endpoint.wait_for(
        frame_with_cloud, 60, "a cloud whose four inputs were seen")
    settings = load_defaults(config_dir() / "stereo_seg.yaml")
    camera = camera_from_infos(left_info, right_info)
    # The node's runtime (its YAML's backend, resolved the same way): equal bytes need one runtime.
    prediction = Predictor(launched.checkpoint, device="cpu", precision="fp32",
                           backend=settings["backend"], inference_scale=INFERENCE_SCALE).predict(
        np.array(to_rgb8(left)), np.array(to_rgb8(right)))
    expected = camera.points_from_disparity(
        prediction.disparity, stride=settings["points_stride"],
        min_depth=settings["points_min_depth"], max_depth=settings["points_max_depth"])
    points = point_cloud2.read_points(cloud, field_names=("x", "y", "z"), skip_nans=False)
    read = np.stack([points["x"], points["y"], points["z"]], axis=-1).reshape(expected.shape)
    assert (cloud.height, cloud.width) == expected.shape[:2]
    np.testing.assert_array_equal(np.isnan(read), np.isnan(expected))
    np.testing.assert_allclose(read, expected, rtol=1e-4, atol=1e-5, equal_nan=True)
    labels = point_cloud2.read_points(cloud, field_names=("label",), skip_nans=False)["label"]
    stride = settings["points_stride"]
    np.testing.assert_array_equal(labels.reshape(expected.shape[:2]),
                                  prediction.labels[::stride, ::stride])


def test_ros2_param_set_switches_an_output_at_once(launched):
    endpoint = launched.endpoint
    result = launched.ros2("param", "set", NODE, "publish_points", "false")
    assert result.returncode == 0 and "successful" in result.stdout, result
    try:
        since = newest_stamp(endpoint, "seg")
        # A frame already being published may still carry a cloud; the ones after it do not.
        later = endpoint.wait_for(lambda: new_stamps(endpoint, "seg", since)[2:5] or None, 90,
                                  "three more seg frames")
        clouds = {stamp_of(m) for m in endpoint.messages("cloud")}
        assert not clouds & set(later)
    finally:
        assert launched.ros2("param", "set", NODE, "publish_points", "true").returncode == 0
    since = newest_stamp(endpoint, "seg")
    endpoint.wait_for(lambda: new_stamps(endpoint, "cloud", since), 90, "clouds again")


def test_ros2_lifecycle_deactivate_stops_outputs_and_releases_the_model(launched):
    endpoint = launched.endpoint
    result = launched.ros2("lifecycle", "set", NODE, "deactivate")
    assert result.returncode == 0 and "Transitioning successful" in result.stdout, result
    values = endpoint.wait_for_diagnostic("state", lambda state: state == "inactive", 30)
    assert values["device"] == "-"   # the Predictor (and its device memory) is gone
    assert "inactive" in launched.ros2("lifecycle", "get", NODE).stdout
    since = newest_stamp(endpoint, "left/image_rect")

    def four_more_camera_frames():
        stamps = new_stamps(endpoint, "left/image_rect", since)
        return stamps if len(stamps) >= 4 else None

    later = endpoint.wait_for(four_more_camera_frames, 60, "four more camera frames")
    assert not set(later) & {stamp_of(m) for m in endpoint.messages("seg")}

    result = launched.ros2("lifecycle", "set", NODE, "activate")
    assert result.returncode == 0 and "Transitioning successful" in result.stdout, result
    since = newest_stamp(endpoint, "left/image_rect")
    endpoint.wait_for(lambda: new_stamps(endpoint, "seg", since), 90, "seg after activate")
    values = endpoint.wait_for_diagnostic("state", lambda state: state == "active", 30)
    assert values["device"] == "cpu"


def test_sigint_to_ros2_launch_stops_both_nodes_cleanly(launched):
    from pmt_perception.ros.processes import read_log

    launched.process.send_signal(signal.SIGINT)   # the launch process only
    assert wait_or_show_stacks(launched.process, 60, launched.log_path) == 0
    log = read_log(launched.log_path, tail=200_000)
    assert log.count("process has finished cleanly") == 2, log
    for problem in CLEAN_EXIT_PROBLEMS:
        assert problem not in log, log
