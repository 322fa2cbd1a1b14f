"""Shared fixtures: shared-memory-only DDS, tiny checkpoints, ROS processes and a test endpoint.

Networking rule (DESIGN §5): DDS never sends a packet off this machine. The environment below
is applied when pytest loads this file, before any test can start rclpy, so every participant
of the session (this process, and every child started through `ros_graph`) uses the
shared-memory-only profile, its own domain id and a temporary ROS_LOG_DIR.
"""
from __future__ import annotations

import signal
import tempfile
import threading
import time
from types import SimpleNamespace

import pytest

from pmt_perception.ros.env import apply_dds_environment, dds_environment

SESSION_DOMAIN_ID = 40   # this process, unless a test opens a RosEndpoint on its module's id
apply_dds_environment(domain_id=SESSION_DOMAIN_ID,
                      log_dir=tempfile.mkdtemp(prefix="pmt_test_ros_logs_"))

# A run started in the background by a non-interactive shell (`make test &`, nohup, some CI
# runners) starts with SIGINT and SIGQUIT ignored, and every process the tests start inherits
# that. `ros2 launch` installs no handler of its own over an inherited SIG_IGN, so it would
# ignore the SIGINT the shutdown tests send it and never stop. Its children get the defaults.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)

# A tiny PMT (ResNet-18 taps, small SPP windows): accepts 32 px inputs, tens of ms a frame.
TINY_MODEL = dict(backbone="resnet18", spp_f1_windows=(8, 4), spp_f2_windows=(4, 2))
RIGGED_DISPARITY = 12.0   # px: what the rigged network predicts at every pixel
RIGGED_LABEL = 5          # class id it predicts at every pixel


def _save_tiny(path, *, rigged: bool):
    import torch

    from pmt_perception.checkpoint import save_checkpoint
    from pmt_perception.config import load_model_config
    from pmt_perception.data.synthetic import CLASS_NAMES, PALETTE
    from pmt_perception.network import build_model

    torch.manual_seed(0)
    # Bilinear upsampling keeps a constant prediction constant (convex upsampling pads with 0).
    config = load_model_config("fast", num_classes=len(CLASS_NAMES), **TINY_MODEL,
                               **({"upsample": "bilinear"} if rigged else {}))
    model = build_model(config)
    if rigged:
        # Zero the last conv of two heads and set their biases: the output is then known
        # exactly (disparity = RIGGED_DISPARITY, labels = RIGGED_LABEL) whatever the input.
        with torch.no_grad():
            disparity = model.disparity.head
            disparity.predict.weight.zero_()
            disparity.predict.bias.fill_(RIGGED_DISPARITY / model.disparity.scale)
            refined = model.refined_segmentation.head.predict
            refined.weight.zero_()
            refined.bias.fill_(-10.0)
            refined.bias[RIGGED_LABEL] = 10.0
    save_checkpoint(path, model=model, config=config, class_names=list(CLASS_NAMES),
                    palette=PALETTE)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return _save_tiny(tmp_path_factory.mktemp("models") / "tiny.pt", rigged=False)


@pytest.fixture(scope="session")
def rigged_checkpoint(tmp_path_factory):
    path = _save_tiny(tmp_path_factory.mktemp("models") / "rigged.pt", rigged=True)
    return SimpleNamespace(path=path, disparity=RIGGED_DISPARITY, label=RIGGED_LABEL)


# ----------------------------------------------------------------------------- processes
class RosGraph:
    """Child processes (node, source, monitor) on one domain; all stopped at teardown."""

    def __init__(self, domain_id: int, workdir):
        self.domain_id, self.workdir = domain_id, workdir
        self.env = dds_environment(domain_id=domain_id, log_dir=workdir / "ros_logs")
        self.processes: dict[str, object] = {}

    def start(self, name: str, module: str, *arguments: str, params: dict | None = None):
        from pmt_perception.ros.processes import start_module

        ros_arguments = []
        for key, value in (params or {}).items():
            ros_arguments += ["-p", f"{key}:={_ros_value(value)}"]
        if name in self.processes:
            raise ValueError(f"a process named {name!r} is running already")
        self.processes[name] = start_module(module, *arguments, env=self.env,
                                            log_path=self.log_path(name),
                                            ros_arguments=ros_arguments)
        return self.processes[name]

    def log_path(self, name: str):
        return self.workdir / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.is_file() else ""

    def stop(self, name: str) -> int:
        from pmt_perception.ros.processes import stop_process

        return stop_process(self.processes.pop(name))

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)


def _ros_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_ros_value(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


@pytest.fixture(scope="module")
def ros_graph_factory(tmp_path_factory):
    graphs = []

    def make(domain_id: int) -> RosGraph:
        graph = RosGraph(domain_id, tmp_path_factory.mktemp(f"graph{domain_id}"))
        graphs.append(graph)
        return graph

    yield make
    for graph in graphs:
        graph.stop_all()


# ----------------------------------------------------------------------------- test endpoint
class RosEndpoint:
    """This test process as a ROS participant: its own Context and domain, spun in a thread.

    ``listen(topic, type)`` records every message; ``wait_for(...)`` blocks (bounded) until a
    predicate over the recorded messages holds.
    """

    def __init__(self, domain_id: int, name: str = "pmt_test_endpoint"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.condition = threading.Condition()
        self.received: dict[str, list] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def listen(self, topic: str, msg_type, qos=None):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        qos = qos or QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.received.setdefault(topic, [])

        def record(msg):
            with self.condition:
                self.received[topic].append(msg)
                self.condition.notify_all()

        return self.node.create_subscription(msg_type, topic, record, qos)

    def messages(self, topic: str) -> list:
        with self.condition:
            return list(self.received.get(topic, []))

    def wait_for(self, predicate, timeout: float, what: str = "condition"):
        """Wait until ``predicate()`` returns a truthy value (returned); bounded."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
                self.condition.wait(min(remaining, 0.1))

    def wait_for_stamp(self, topic: str, stamp_ns: int, timeout: float):
        def find():
            for msg in self.received.get(topic, []):
                if stamp_of(msg) == stamp_ns:
                    return msg
            return None
        return self.wait_for(find, timeout, f"{topic} with stamp {stamp_ns}")

    def latest_diagnostics(self):
        """The newest stereo-segmentation status values as a dict (strings), or None."""
        for array in reversed(self.messages("/diagnostics")):
            for status in array.status:
                if status.name.endswith("stereo segmentation"):
                    return {kv.key: kv.value for kv in status.values}
        return None

    def wait_for_diagnostic(self, key: str, check, timeout: float):
        def find():
            values = self.latest_diagnostics()
            return values if values is not None and key in values and check(values[key]) else None
        return self.wait_for(find, timeout, f"diagnostics {key}")

    def close(self):
        import rclpy

        self._stop = True
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def ros_endpoint_factory():
    endpoints = []

    def make(domain_id: int, name: str = "pmt_test_endpoint") -> RosEndpoint:
        endpoint = RosEndpoint(domain_id, name)
        endpoints.append(endpoint)
        return endpoint

    yield make
    for endpoint in endpoints:
        endpoint.close()


# ----------------------------------------------------------------------------- stereo inputs
class StereoInputs:
    """Publishes stereo sets (left/right image_rect + camera_info) from a test endpoint.

    The images are one synthetic scene; the calibration is a verged rectification
    (cx_left - cx_right = CX_OFFSET) so the principal-point convention is exercised.
    """

    SIZE = (96, 128)
    CX_OFFSET = 2.5

    def __init__(self, endpoint, qos):
        from sensor_msgs.msg import CameraInfo, Image

        from pmt_perception.data.synthetic import generate_pair, load_generator_settings
        from pmt_perception.ros.stereo_source import CameraModel

        self.pair = generate_pair(load_generator_settings("synthetic"), seed=3, size=self.SIZE)
        info = self.pair.camera_info()
        self.camera = CameraModel(width=int(info["width"]), height=int(info["height"]),
                                  fx=info["fx"], fy=info["fy"], cx=info["cx"], cy=info["cy"],
                                  baseline=info["baseline"])
        self.publishers = [endpoint.node.create_publisher(msg_type, topic, qos)
                           for topic, msg_type in (("left/image_rect", Image),
                                                   ("right/image_rect", Image),
                                                   ("left/camera_info", CameraInfo),
                                                   ("right/camera_info", CameraInfo))]
        self._last_stamp = 0

    def next_stamp(self) -> int:
        self._last_stamp = max(time.time_ns(), self._last_stamp + 1_000_000)
        return self._last_stamp

    def images(self, encoding: str = "rgb8"):
        from pmt_perception.ros.conversions import numpy_to_image
        from pmt_perception.ros.stereo_source import encode

        left = numpy_to_image(encode(self.pair.left, encoding), encoding)
        right = numpy_to_image(encode(self.pair.right, encoding), encoding)
        left.header.frame_id, right.header.frame_id = "left_optical", "right_optical"
        return left, right

    def infos(self):
        from pmt_perception.ros.stereo_source import camera_infos

        left, right = camera_infos(self.camera, left_frame_id="left_optical",
                                   right_frame_id="right_optical")
        right.p[2] = self.camera.cx - self.CX_OFFSET
        right.k[2] = self.camera.cx - self.CX_OFFSET
        return left, right

    def publish(self, *, encoding: str = "rgb8", messages=None, right_offset_ns: int = 0,
                skip: tuple = ()) -> int:
        """Publish one set (``messages`` = (left, right, left_info, right_info) overrides the
        default good set); returns the left stamp. ``skip`` names inputs (0-3) not to send."""
        stamp = self.next_stamp()
        messages = messages or (*self.images(encoding), *self.infos())
        for index in (2, 3, 0, 1):  # infos first, as the source does
            if index in skip:
                continue
            msg = messages[index]
            ns = stamp + (right_offset_ns if index in (1, 3) else 0)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
            self.publishers[index].publish(msg)
        return stamp

    def wait_until_connected(self, endpoint, timeout: float) -> None:
        endpoint.wait_for(lambda: all(p.get_subscription_count() > 0 for p in self.publishers),
                          timeout, "the node to subscribe to all four inputs")
        time.sleep(0.3)  # the node's side of the match completes a moment later


@pytest.fixture(scope="module")
def stereo_inputs_factory():
    return StereoInputs


# ----------------------------------------------------------------------------- real ROS 2 tools
# launch, launch_ros, the ros2 CLI, message_filters and sensor_msgs_py come from
# ../shared/ros2_python (scripts/setup_venv.sh installs them) or a ROS 2 install; where they are
# absent (or hidden: scripts/without_ros2_tools.sh) the tests that need them skip, saying why.
REAL_ROS2_MODULES = ("launch", "launch_ros", "ros2cli", "ros2launch", "ros2lifecycle",
                     "ros2param", "ros2topic", "ros2node", "message_filters", "sensor_msgs_py")
REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def ros2_tools_missing() -> str | None:
    """Why the real ROS 2 tools cannot run here; None when they can."""
    import importlib
    import shutil
    import sys
    from pathlib import Path

    for module in REAL_ROS2_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as error:
            return (f"{module} is not importable ({error}); ../shared/ros2_python/install.sh "
                    ".venv/bin/python installs the ROS 2 tools")
    for tool in ("ros2", "colcon"):
        if shutil.which(tool, path=str(Path(sys.executable).parent)) is None:
            return f"the {tool} command is not installed next to {sys.executable}"
    return None


class ColconWorkspace:
    """The package built with `colcon build` in a temporary workspace, used as a user would:
    every command runs in bash after `source install/setup.bash`."""

    def __init__(self, root):
        import sys
        from pathlib import Path

        self.root = root
        self.bin = Path(sys.executable).parent
        self.setup = root / "install" / "setup.bash"

    def env(self, domain_id: int, log_dir) -> dict[str, str]:
        env = dds_environment(domain_id=domain_id, log_dir=log_dir)
        env["PATH"] = f"{self.bin}:{env.get('PATH', '')}"
        # A user's shell has no checkout on its path: the installed copy must serve.
        env.pop("PYTHONPATH", None)
        # A hung `ros2 launch` can be asked for every thread's Python stack (SIGABRT):
        # `wait_or_show_stacks` does so where a stop times out.
        env["PYTHONFAULTHANDLER"] = "1"
        return env

    def command(self, *words: str) -> list[str]:
        """argv that runs ``words`` in bash with the workspace sourced."""
        return ["bash", "-c", f'source "{self.setup}" && exec "$@"', "pmt_ws", *words]


@pytest.fixture(scope="session")
def colcon_workspace(tmp_path_factory):
    import subprocess
    import sys
    from pathlib import Path

    reason = ros2_tools_missing()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("colcon_ws")
    colcon = str(Path(sys.executable).parent / "colcon")
    result = subprocess.run(
        [colcon, "--log-base", str(root / "log"), "build", "--base-paths", str(REPO_ROOT),
         "--build-base", str(root / "build"), "--install-base", str(root / "install"),
         "--event-handlers", "console_direct-"],
        cwd=root, capture_output=True, text=True, timeout=600,
        env=dds_environment(domain_id=SESSION_DOMAIN_ID, log_dir=root / "ros_logs"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    workspace = ColconWorkspace(root)
    assert workspace.setup.is_file()
    return workspace


def descendant_pids(pid: int) -> list[int]:
    """Every live process below `pid` (Linux /proc), children first."""
    from pathlib import Path

    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *descendant_pids(child)]
    return found


def signal_state(pid: int) -> str:
    """A process's name and its blocked / ignored / caught / pending signal masks (/proc)."""
    from pathlib import Path

    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return f"{pid}: gone"
    keep = ("Name", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")
    return f"{pid}: " + " ".join(line.replace("\t", "") for line in lines
                                 if line.split(":")[0] in keep)


def wait_or_show_stacks(process, timeout: float, log_path) -> int:
    """`process.wait(timeout)`; where it times out, SIGABRT makes the process (started with
    PYTHONFAULTHANDLER=1, as `ColconWorkspace.env` sets) write each thread's Python stack into
    its log, and the AssertionError carries that log's tail: a hang shows where it hangs. The
    processes it had started are then killed, so that no orphan node disturbs later tests."""
    import os
    import subprocess

    from pmt_perception.ros.processes import read_log

    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        children = descendant_pids(process.pid)
        states = "\n".join(signal_state(pid) for pid in (os.getpid(), process.pid, *children))
        process.send_signal(signal.SIGABRT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise AssertionError(f"process {process.pid} did not exit within {timeout:g} s; "
                             f"signal masks (this test, it, its children):\n{states}\nits "
                             f"log, with the threads' stacks at the end:\n"
                             f"{read_log(log_path, tail=30_000)}") from None


def stop_ros2_daemon(workspace, env) -> None:
    """`ros2 daemon stop` on the domain of ``env`` (a test that may start the daemon calls it)."""
    import subprocess

    subprocess.run(workspace.command("ros2", "daemon", "stop"), env=env, capture_output=True,
                   timeout=60)
