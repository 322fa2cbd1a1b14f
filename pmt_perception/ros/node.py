"""stereo_seg_node: rectified stereo in; segmentation, disparity and a point cloud out (one net).

A lifecycle node, thin glue around :class:`pmt_perception.inference.Predictor`:

    configure   load the network onto the device, create the publishers, latch the class table
    activate    subscribe to the four inputs and start the workers (model, publishing)
    deactivate  unsubscribe, stop the workers, move the model off the GPU and free its memory
    cleanup     drop the publishers and the model

With ``autostart`` (the default) it configures and activates itself, so a plain launch works.
Parameters: config/stereo_seg.yaml (defaults) and params.py (meaning); topics and parameters
are tabled in docs/node.md. Frame handling (newest wins, drops counted): worker.py.
"""
from __future__ import annotations

import gc
import sys
import threading
import time
from dataclasses import dataclass

import rclpy
import torch
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image

from pmt_perception import topics
from pmt_perception.checkpoint import LoadedModel, load_network
from pmt_perception.inference import Predictor
from pmt_perception.ros import diagnostics
from pmt_perception.ros.adaptation import OnlineAdaptation
from pmt_perception.ros.inputs import (
    CameraCache,
    InputProblem,
    check_stereo_set,
    decode_stereo_set,
    frame_id_problem,
)
from pmt_perception.ros.node_adaptation import OnlineAdaptationHooks
from pmt_perception.ros.node_monitoring import NodeMonitoring
from pmt_perception.ros.outputs import CONFIDENCE_TOPICS, OutputPublishers, OutputSettings, classes_message
from pmt_perception.ros.params import declare_parameters, help_requested, help_text, settings_snapshot
from pmt_perception.ros.qos import input_qos, output_qos
from pmt_perception.ros.save_trigger import create_save_triggers
from pmt_perception.ros.shutdown import (
    StoppedWhileStarting,
    StopRequest,
    finish,
    init_rclpy,
    spin_until_stopped,
)
from pmt_perception.ros.sync import InputSynchronizer
from pmt_perception.ros.worker import FramePipeline

__all__ = ["INPUT_TOPICS", "StereoSegNode", "main"]

# (topic, type) in the synchronizer's argument order; relative names so they remap.
INPUT_TOPICS = tuple(zip(topics.INPUT_TOPICS, (Image, Image, CameraInfo, CameraInfo)))
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


@dataclass
class InputSet:
    messages: tuple          # left image, right image, left info, right info
    received_ns: int         # ROS time when the set completed in the synchronizer


class StereoSegNode(OnlineAdaptationHooks, NodeMonitoring, LifecycleNode):
    def __init__(self, node_name: str = "stereo_seg_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        values = settings_snapshot(self)
        self._output_settings = OutputSettings.from_parameters(values)
        self._problems = diagnostics.ProblemLog(self.get_logger().warning,
                                                throttle=values["warning_throttle"])
        self._stall_timeout = values["sync_stall_timeout"]
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._stats = diagnostics.StageStatistics()
        self._cameras = CameraCache()
        self._lock = threading.Lock()
        self.counters = {"sets": 0, "processed": 0, "published": 0, "unwanted": 0}
        self._reset_arrivals()
        self._received = [0] * len(INPUT_TOPICS)   # messages per input topic, since startup
        self._loaded: LoadedModel | None = None
        self.predictor: Predictor | None = None
        self._predictor_values: dict = {}
        self._outputs: OutputPublishers | None = None
        self._pipeline: FramePipeline | None = None
        self._adaptation: OnlineAdaptation | None = None   # adapt: true (ros/adaptation.py)
        self._last_frame_size: tuple[int, int] | None = None   # H, W of the latest prediction
        self._subscriptions_in: list = []
        self._sync_backend = "-"
        self._dropped_earlier = 0   # drops of previous activations (each has its own pipeline)
        self._last_report = (time.monotonic(), dict(self.counters))
        self._previous_problems: dict[str, int] = {}
        self._diagnostics_pub = None
        if diagnostics.diagnostics_available():
            from diagnostic_msgs.msg import DiagnosticArray
            self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(values["diagnostics_period"], self._report_diagnostics)
        self.create_timer(0.5, self._check_sync_stall)
        create_save_triggers(self, self._save_adapted)   # ~/save_adapted (save_trigger.py)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> bool:
        """configure + activate (autostart); True when the node ends up active."""
        return (self.trigger_configure() == SUCCESS and self.trigger_activate() == SUCCESS)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = settings_snapshot(self)
        try:
            self._loaded = load_network(values["checkpoint"],
                                        untrained_variant=values["untrained_variant"],
                                        untrained_seed=values["untrained_seed"])
            self._build_predictor(values)
            if all(values["warmup_size"]):
                seconds = self.predictor.warmup(tuple(values["warmup_size"]), confidence=bool(
                    self._output_settings.enabled & CONFIDENCE_TOPICS))
                self.get_logger().info(f"warm-up at {values['warmup_size']}: {seconds:.2f} s")
        except Exception as error:  # noqa: BLE001 - a bad checkpoint must not kill the node
            self.get_logger().error(f"configure failed: {type(error).__name__}: {error}")
            self._release_model()
            return FAILURE
        log = self.get_logger().info if self._loaded.trained else self.get_logger().warning
        log(f"model: {self._loaded.description}; device {self.predictor.device}, "
            f"{self.predictor.describe()}, {len(self.predictor.class_names)} classes")
        self._outputs = OutputPublishers(
            self, output_qos(values["output_reliability"], values["output_depth"]))
        self._outputs.classes.publish(classes_message(
            self.predictor.class_names, self.predictor.palette,
            model=self._loaded.description, trained=self._loaded.trained))
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = settings_snapshot(self)
        try:
            if self.predictor is None:  # deactivate moved the model off the device
                self._build_predictor(values)
            synchronizer = InputSynchronizer(
                input_count=len(INPUT_TOPICS), queue_size=values["sync_queue_size"],
                approximate=values["approximate_sync"], slop=values["sync_slop"])
        except Exception as error:  # noqa: BLE001
            self.get_logger().error(f"activate failed: {type(error).__name__}: {error}")
            return FAILURE
        synchronizer.register_callback(self._on_synchronized)
        self._sync_backend = synchronizer.backend
        self._pipeline = FramePipeline(process=self._process, publish=self._publish,
                                       on_error=self._on_worker_error, name=self.get_name(),
                                       model_workers=self.predictor.streams)
        self._pipeline.start()
        if values["adapt"]:
            self._start_adaptation(values)
        qos = input_qos(values["input_reliability"], values["input_depth"])
        self._reset_arrivals()
        self._subscriptions_in = [
            self.create_subscription(msg_type, topic,
                                     lambda msg, i=index, s=synchronizer: self._on_input(i, msg, s),
                                     qos)
            for index, (topic, msg_type) in enumerate(INPUT_TOPICS)]
        self.get_logger().info(
            "active: subscribed to " + ", ".join(s.topic_name for s in self._subscriptions_in)
            + f" ({'approximate' if values['approximate_sync'] else 'exact'} sync, "
            f"{synchronizer.backend})")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self._release_model(keep_weights=True)
        self.get_logger().info("inactive: unsubscribed, model released from the device")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None
        self._release_model()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.on_cleanup(state)
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.on_cleanup(state)
        return SUCCESS

    def _build_predictor(self, values: dict, model=None) -> None:
        self._predictor_values = values   # adapted weights are swapped in with the same settings
        self.predictor = self._new_predictor(values, model)

    def _new_predictor(self, values: dict, model=None) -> Predictor:
        return Predictor(
            model if model is not None else self._loaded.model, device=values["device"],
            precision=values["precision"], channels_last=values["channels_last"],
            compile=values["compile"], backend=values["backend"],
            inference_scale=values["inference_scale"], streams=values["parallel_frames"],
            class_names=self._loaded.class_names,
            palette=self._loaded.palette)

    def _release_model(self, keep_weights: bool = False) -> None:
        """Drop the Predictor and free device memory; keep the CPU weights for re-activation."""
        if self.predictor is not None and self.predictor.device.type != "cpu":
            self.predictor.model.to("cpu")
        self.predictor = None
        if not keep_weights:
            self._loaded = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _stop_input(self) -> None:
        self._stop_adaptation()
        for subscription in self._subscriptions_in:
            self.destroy_subscription(subscription)
        self._subscriptions_in = []
        if self._pipeline is not None:
            if not self._pipeline.stop():
                self.get_logger().warning("a worker did not stop within 10 s")
            self._dropped_earlier += self._pipeline.dropped
            self._pipeline = None

    # ------------------------------------------------------------------ frames
    def _on_input(self, index: int, msg, synchronizer: InputSynchronizer) -> None:
        now = time.monotonic()
        with self._lock:
            self._arrivals[index] = (now, msg.header.stamp)
            self._received[index] += 1
        synchronizer.add(index, msg)

    def _on_synchronized(self, *messages) -> None:
        received = self.get_clock().now().nanoseconds
        with self._lock:
            self.counters["sets"] += 1
            self._last_set_time = time.monotonic()
        # The cheap checks run here, before the newest-wins hand-off: every bad set is counted,
        # not only the ones the model worker happens to take.
        try:
            check_stereo_set(*messages, self._cameras)
        except InputProblem as problem:
            self._problems.report(problem.kind, str(problem))
            return
        mismatch = frame_id_problem(*messages)
        if mismatch is not None:
            self._problems.report("frame_id", mismatch)
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.submit(InputSet(messages, received))

    def _process(self, item: InputSet):
        """Model worker: decode + predict; None when the set is unusable (reported)."""
        started = self.get_clock().now().nanoseconds
        start = time.perf_counter()
        try:
            frame = decode_stereo_set(*item.messages, self._cameras)
        except InputProblem as problem:
            self._problems.report(problem.kind, str(problem))
            return None
        converted = time.perf_counter()
        adaptation = self._adaptation
        if adaptation is not None:
            adaptation.offer(frame.left, frame.right)   # O(1): every n-th pair, never waits
        predictor, outputs = self.predictor, self._outputs
        if predictor is None or outputs is None:
            return None
        if not outputs.wanted(self._output_settings):
            # Nobody listens to any output that is switched on: skip the model (a lazy node
            # costs no CPU/GPU while no one needs it).
            with self._lock:
                self.counters["unwanted"] += 1
            return None
        try:
            prediction = predictor.predict(
                frame.left, frame.right,
                confidence=outputs.needs_confidence(self._output_settings))
        except Exception as error:  # noqa: BLE001
            self._problems.report("model", f"model failed on a {frame.left.shape[1]}x"
                                  f"{frame.left.shape[0]} frame: {type(error).__name__}: {error}")
            return None
        timings = {"transport": (item.received_ns - frame.stamp_ns) * 1e-9,
                   "queue": (started - item.received_ns) * 1e-9,
                   "convert": converted - start,
                   **{f"predict_{k}": v for k, v in prediction.timings.items()}}
        self._last_frame_size = frame.left.shape[:2]
        with self._lock:
            self.counters["processed"] += 1
        return frame, prediction, timings, time.perf_counter()

    def _publish(self, result) -> None:
        """Publishing worker: every wanted output of one frame, seg first."""
        frame, prediction, timings, predicted_at = result
        outputs, predictor = self._outputs, self.predictor
        if outputs is None or predictor is None:
            return
        start = time.perf_counter()
        timings["handoff"] = start - predicted_at
        begin_ns = self.get_clock().now().nanoseconds
        try:
            spent = outputs.publish(frame, prediction, predictor.colorize, self._output_settings)
        except Exception as error:  # noqa: BLE001
            self._problems.report("publish", f"publishing failed: {type(error).__name__}: {error}")
            return
        done_ns = self.get_clock().now().nanoseconds
        timings.update({f"publish_{topic}": seconds for topic, seconds in spent.items()})
        if "seg" in spent:
            timings["stamp_to_seg"] = (begin_ns - frame.stamp_ns) * 1e-9 + spent["seg"]
        timings["stamp_to_done"] = (done_ns - frame.stamp_ns) * 1e-9
        self._stats.add_many(timings)
        with self._lock:
            self.counters["published"] += 1

    def _on_worker_error(self, stage: str, error: BaseException) -> None:
        kind = "model" if stage == "process" else "publish"
        self._problems.report(kind, f"unexpected error in the {stage} worker: "
                                    f"{type(error).__name__}: {error}")

    def _on_parameters_set(self, parameters) -> None:
        values = settings_snapshot(self)
        self._output_settings = OutputSettings.from_parameters(values)
        self._problems.throttle = values["warning_throttle"]
        self._stall_timeout = values["sync_stall_timeout"]


USAGE = """usage: stereo_seg_node [--ros-args -p NAME:=VALUE ... -r FROM:=TO ...]

Rectified stereo in (left/image_rect, right/image_rect, left/camera_info, right/camera_info);
seg, seg_color, disparity, points2 [, seg_confidence, disparity_confidence], seg_classes and
/diagnostics out. A lifecycle node; autostarts by default. Topics and parameters: docs/node.md."""


def main(args=None) -> int:
    """Exit status 0 after a stop (SIGINT, SIGTERM); 1 when autostart fails, so that launch
    (respawn, on_exit) and supervisors see a node that cannot serve."""
    return finish(_run(args), as_command=args is None)


def _run(args) -> int:
    if help_requested(sys.argv if args is None else args):
        print(help_text(USAGE))
        return 0
    with StopRequest() as stop:
        # Loading (and maybe exporting) a model can take many seconds on a busy machine: a stop
        # meanwhile interrupts it (nothing is written while loading), then the usual cleanup.
        stop.exit_at_once = True
        init_rclpy(args)
        node = None
        try:
            node = StereoSegNode()
            started = not node.get_parameter("autostart").value or node.start()
            stop.exit_at_once = False
            if not started:
                node.get_logger().fatal("autostart failed (see the error above); exiting with "
                                        "status 1")
                return 1
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            spin_until_stopped(executor, stop)
        except StoppedWhileStarting as stopped:
            print(f"stopped ({stopped}) while starting", file=sys.stderr, flush=True)
        finally:
            stop.exit_at_once = False
            if node is not None:
                node._stop_input()
                node.destroy_node()
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
