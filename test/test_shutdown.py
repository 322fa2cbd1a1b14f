"""Every node and command stops cleanly (exit 0, no traceback) on SIGINT and SIGTERM:

  * alone: the signal goes to that one process;
  * under `ros2 launch`, SIGINT to the launch process only (launch forwards it);
  * under `ros2 launch`, SIGINT to the whole process group, as a terminal's Ctrl-C sends it
    (each process then gets SIGINT twice: from the terminal and from launch).

Separate processes over shared-memory DDS, domains 71-75; readiness is read from the ROS graph
(or the process's log), never from a sleep.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import wait_or_show_stacks

pytestmark = pytest.mark.ros

NOT_CLEAN = ("Traceback", "terminate called", "KeyboardInterrupt", "did not exit within",
             "has died", "escalating")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def assert_clean(text: str) -> None:
    for problem in NOT_CLEAN:
        assert problem not in text, text[-6000:]


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    from pmt_perception.ros.bags import writer

    bag = tmp_path_factory.mktemp("bags") / "small"
    assert writer.main(["--out", str(bag), "--num", "2", "--size", "64", "64"]) == 0
    return bag


def rclpy_commands(tmp_path, checkpoint, bag):
    """name -> (module, arguments, ROS arguments, node name in the graph)."""
    return {
        "stereo_seg_node": ("pmt_perception.ros.node", [],
                            ["-p", f"checkpoint:={checkpoint}", "-p", "device:=cpu"],
                            "stereo_seg_node"),
        "stereo_source": ("pmt_perception.ros.stereo_source", [],
                          ["-p", "image_size:=[64,96]", "-p", "pool_size:=1", "-p", "rate:=5.0"],
                          "stereo_source"),
        "stereo_seg_monitor": ("pmt_perception.ros.monitor",
                               ["--duration", "600", "--startup-timeout", "600"], [],
                               "stereo_seg_monitor"),
        "pmt-bag-play": ("pmt_perception.ros.bags.play", [str(bag), "--loop"], [],
                         "pmt_bag_play"),
        "pmt-bag-record": ("pmt_perception.ros.bags.record",
                           ["--out", str(tmp_path / "recorded")], [], "pmt_bag_record"),
    }


def graph_names(endpoint) -> set[str]:
    return set(endpoint.node.get_node_names())


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
def test_each_node_and_command_alone(sig, tmp_path, tiny_checkpoint, small_bag,
                                     ros_graph_factory, ros_endpoint_factory):
    from pmt_perception.data.bag_io import bag_topics
    from pmt_perception.ros.processes import start_module

    domain_id = 71 if sig == signal.SIGINT else 72
    graph = ros_graph_factory(domain_id)
    endpoint = ros_endpoint_factory(domain_id, f"watcher_{sig.name.lower()}")
    commands = rclpy_commands(tmp_path, tiny_checkpoint, small_bag)
    processes = {name: start_module(module, *arguments, env=graph.env,
                                    log_path=graph.log_path(name), ros_arguments=ros_arguments)
                 for name, (module, arguments, ros_arguments, _) in commands.items()}
    try:
        endpoint.wait_for(lambda: {c[3] for c in commands.values()} <= graph_names(endpoint),
                          240, "every process in the ROS graph")
        endpoint.wait_for(lambda: "active: subscribed" in graph.log("stereo_seg_node"), 120,
                          "the node to activate")
        for name, process in processes.items():
            process.send_signal(sig)            # this one process only
            assert process.wait(timeout=60) == 0, (name, graph.log(name))
            assert_clean(graph.log(name))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    # The recorder closed its bag on the signal: it is complete under its final name.
    assert set(bag_topics(tmp_path / "recorded")) == {"seg", "disparity"}


@pytest.mark.slow
@pytest.mark.parametrize("command, sig", [("pmt-demo", signal.SIGINT),
                                          ("pmt-demo", signal.SIGTERM),
                                          ("pmt-bag-loop", signal.SIGINT),
                                          ("pmt-bag-loop", signal.SIGTERM)],
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_orchestrating_commands_stop_their_graph(command, sig, tmp_path, tiny_checkpoint,
                                                 small_bag, ros_endpoint_factory):
    """pmt-demo and pmt-bag-loop run their own processes; a signal stops all of them."""
    import psutil

    from pmt_perception.ros.env import dds_environment

    domain_id = 73 if command == "pmt-demo" else 74
    if command == "pmt-demo":
        argv = ["-m", "pmt_perception.demo", "--checkpoint", str(tiny_checkpoint), "--size",
                "64x96", "--duration", "600", "--device", "cpu", "--domain-id", str(domain_id),
                "--out", str(tmp_path / "demo")]
    else:
        argv = ["-m", "pmt_perception.ros.bags.closed_loop", "--bag", str(small_bag),
                "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "loop"),
                "--domain-id", str(domain_id), "--settle", "600"]
    endpoint = ros_endpoint_factory(domain_id, f"watcher_{domain_id}_{sig.name.lower()}")
    env = dds_environment(domain_id=domain_id, log_dir=tmp_path / "ros_logs")
    with open(tmp_path / "out.log", "wb") as log:
        process = subprocess.Popen([sys.executable, *argv], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    children = []
    try:
        endpoint.wait_for(lambda: "stereo_seg_node" in graph_names(endpoint), 240,
                          "the command's node in the graph")
        children = psutil.Process(process.pid).children(recursive=True)
        assert children
        process.send_signal(sig)
        assert process.wait(timeout=120) == 0, (tmp_path / "out.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert_clean((tmp_path / "out.log").read_text(errors="replace"))
    assert not [child.pid for child in children if child.is_running()]


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
def test_a_node_stopped_while_loading_its_model_exits_at_once(sig, tmp_path, tiny_checkpoint,
                                                               ros_graph_factory,
                                                               ros_endpoint_factory):
    """A stop during the (here: deliberately long) model load and warm-up ends the node with
    exit 0 without waiting for the load to finish."""
    domain_id = 80 if sig == signal.SIGINT else 81
    graph = ros_graph_factory(domain_id)
    endpoint = ros_endpoint_factory(domain_id, f"watcher_load_{sig.name.lower()}")
    process = graph.start("node", "pmt_perception.ros.node",
                          params={"checkpoint": str(tiny_checkpoint), "device": "cpu",
                                  "warmup_size": [1024, 1024]})
    endpoint.wait_for(lambda: "stereo_seg_node" in graph_names(endpoint), 240,
                      "the node in the ROS graph")
    process.send_signal(sig)
    assert process.wait(timeout=60) == 0, graph.log("node")
    graph.processes.pop("node")
    log = graph.log("node")
    assert_clean(log)
    assert "while starting" in log or "active:" in log, log


ALL_NODES_LAUNCH = '''
from launch import LaunchDescription
from launch_ros.actions import Node

P = "pmt_perception"


def generate_launch_description():
    return LaunchDescription([
        Node(package=P, executable="stereo_seg_node", name="stereo_seg_node", output="screen",
             parameters=[{{"checkpoint": "{checkpoint}", "device": "cpu"}}]),
        Node(package=P, executable="stereo_source", name="stereo_source", output="screen",
             parameters=[{{"image_size": [64, 96], "pool_size": 1, "rate": 5.0}}]),
        Node(package=P, executable="stereo_seg_monitor", output="screen",
             arguments=["--duration", "600", "--startup-timeout", "600"]),
        Node(package=P, executable="pmt-bag-play", output="screen",
             arguments=["{bag}", "--loop"]),
        Node(package=P, executable="pmt-bag-record", output="screen",
             arguments=["--out", "{recorded}"]),
    ])
'''


@pytest.mark.parametrize("target", ["launch_only", "process_group"])
def test_every_node_under_ros2_launch(target, tmp_path, colcon_workspace, tiny_checkpoint,
                                      small_bag, ros_endpoint_factory):
    from pmt_perception.data.bag_io import bag_topics
    from pmt_perception.ros.processes import read_log

    domain_id = 75 if target == "launch_only" else 76
    launch_file = tmp_path / "all_nodes.launch.py"
    launch_file.write_text(ALL_NODES_LAUNCH.format(checkpoint=tiny_checkpoint, bag=small_bag,
                                                   recorded=tmp_path / "recorded"))
    endpoint = ros_endpoint_factory(domain_id, f"watcher_{target}")
    env = colcon_workspace.env(domain_id, tmp_path / "ros_logs")
    log_path = tmp_path / "launch.log"
    with open(log_path, "wb") as log:
        launch = subprocess.Popen(colcon_workspace.command("ros2", "launch", str(launch_file)),
                                  env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    names = {"stereo_seg_node", "stereo_source", "stereo_seg_monitor", "pmt_bag_play",
             "pmt_bag_record"}
    try:
        endpoint.wait_for(lambda: names <= graph_names(endpoint), 240, "all five nodes")
        endpoint.wait_for(lambda: "active: subscribed" in read_log(log_path, tail=100_000), 120,
                          "the node to activate")
        if target == "launch_only":
            launch.send_signal(signal.SIGINT)
        else:
            os.killpg(launch.pid, signal.SIGINT)   # the terminal's Ctrl-C: every process
        assert wait_or_show_stacks(launch, 120, log_path) == 0, read_log(log_path)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
    text = read_log(log_path, tail=500_000)
    assert text.count("process has finished cleanly") == 5, text[-6000:]
    assert_clean(text)
    assert set(bag_topics(tmp_path / "recorded")) == {"seg", "disparity"}


def test_stop_request_ignores_the_second_signal():
    """The unit under all of the above: the first signal requests the stop, later ones are
    ignored (no KeyboardInterrupt inside the cleanup)."""
    from pmt_perception.ros.shutdown import StopRequest

    previous = signal.getsignal(signal.SIGINT)
    stop = StopRequest(ignore_after=False)
    with stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5) and stop.signal_name == "SIGINT"
        os.kill(os.getpid(), signal.SIGTERM)   # would end the process by default
        os.kill(os.getpid(), signal.SIGINT)    # would raise KeyboardInterrupt by default
        assert stop.signal_name == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is previous
