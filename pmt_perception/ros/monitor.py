"""stereo_seg_monitor: listens to the perception outputs as a planner would, and reports.

Subscribes to seg, disparity and points2 (plus the latched seg_classes table) for a bounded
time, measures each topic's rate and end-to-end latency (receipt time minus the left image's
stamp, the same clock on one machine) and writes a few frames: the segmentation over the image,
the colorized disparity and the point cloud as PLY. The image comes from the cloud's rgb field
(the left image at the cloud's stride), so the monitor never needs the camera topics.

    python -m pmt_perception.ros.monitor --duration 20 --out out/demo --save-frames 3
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pmt_perception import topics
from pmt_perception.geometry import write_ply
from pmt_perception.ros.conversions import image_to_numpy, pointcloud2_to_array, unpack_rgb
from pmt_perception.ros.qos import latched_qos
from pmt_perception.ros.shutdown import StopRequest, finish, init_rclpy
from pmt_perception.visualize import colorize_disparity, overlay, write_png_rgb

__all__ = ["TopicStatistics", "main"]


class TopicStatistics:
    """Arrival count, rate and latency of one topic."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.first: float | None = None
        self.last: float | None = None

    def add(self, latency_ms: float, now: float) -> None:
        self.latencies_ms.append(latency_ms)
        self.first = now if self.first is None else self.first
        self.last = now

    def summary(self) -> dict:
        count = len(self.latencies_ms)
        if count == 0:
            return {"count": 0}
        values = np.asarray(self.latencies_ms)
        span = (self.last - self.first) if count > 1 else 0.0
        return {"count": count, "rate_hz": (count - 1) / span if span > 0 else 0.0,
                "latency_ms_mean": float(values.mean()),
                "latency_ms_p50": float(np.percentile(values, 50)),
                "latency_ms_p95": float(np.percentile(values, 95)),
                "latency_ms_max": float(values.max())}


class MonitorNode:
    """The rclpy part, built lazily so `--help` works without a DDS environment."""

    def __init__(self, node, out: Path | None, save_frames: int) -> None:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, PointCloud2
        from std_msgs.msg import String
        from stereo_msgs.msg import DisparityImage


        self.node, self.out, self.save_frames = node, out, save_frames
        outputs = (topics.SEG, topics.DISPARITY, topics.POINTS)
        self.stats = {topic: TopicStatistics() for topic in outputs}
        self.classes: dict | None = None
        self.pending: dict[int, dict] = {}   # stamp -> {topic: msg}, for saving matched frames
        self.saved: list[str] = []
        for topic, msg_type in ((topics.SEG, Image), (topics.DISPARITY, DisparityImage),
                                (topics.POINTS, PointCloud2)):
            node.create_subscription(msg_type, topic, lambda m, t=topic: self._on_output(t, m),
                                     qos_profile_sensor_data)
        node.create_subscription(String, topics.SEG_CLASSES, self._on_classes, latched_qos())
        self.node_status: dict[str, str] = {}
        try:
            from diagnostic_msgs.msg import DiagnosticArray
        except ImportError:  # the node then logs its figures instead
            DiagnosticArray = None
        if DiagnosticArray is not None:
            node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith("stereo segmentation"):
                self.node_status = {"level": int.from_bytes(status.level, "little")
                                    if isinstance(status.level, bytes) else int(status.level),
                                    "message": status.message,
                                    **{kv.key: kv.value for kv in status.values}}

    def _on_classes(self, msg) -> None:
        self.classes = json.loads(msg.data)

    def _on_output(self, topic: str, msg) -> None:
        now_ns = self.node.get_clock().now().nanoseconds
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.stats[topic].add((now_ns - stamp_ns) * 1e-6, time.monotonic())
        if self.out is None or len(self.saved) >= self.save_frames:
            return
        frame = self.pending.setdefault(stamp_ns, {})
        frame[topic] = msg
        if len(frame) == 3 and self.classes is not None:
            del self.pending[stamp_ns]
            # Skip the first frames: the model's first passes are its slowest (allocation).
            seg_latencies = self.stats[topics.SEG].latencies_ms
            if seg_latencies and len(seg_latencies) > 2:
                self._save(stamp_ns, frame)
        for old in sorted(self.pending)[:-8]:  # bounded: outputs that never completed
            del self.pending[old]

    def _save(self, stamp_ns: int, frame: dict) -> None:

        labels = image_to_numpy(frame[topics.SEG])
        cloud = pointcloud2_to_array(frame[topics.POINTS])
        rgb = unpack_rgb(cloud["rgb"])
        stride = max(1, round(labels.shape[0] / cloud.shape[0]))
        palette = np.zeros((256, 3), np.uint8)
        palette[: len(self.classes["palette"])] = np.asarray(self.classes["palette"], np.uint8)
        colors = palette[labels[::stride, ::stride]][: rgb.shape[0], : rgb.shape[1]]
        disparity_msg = frame[topics.DISPARITY]
        disparity = image_to_numpy(disparity_msg.image).copy()
        disparity[disparity < disparity_msg.min_disparity] = np.nan
        name = f"frame_{len(self.saved):02d}"
        self.out.mkdir(parents=True, exist_ok=True)
        write_png_rgb(self.out / f"{name}_seg_overlay.png", overlay(rgb, colors, 0.5))
        write_png_rgb(self.out / f"{name}_disparity.png", colorize_disparity(disparity))
        points = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
        labels_field = cloud["label"] if "label" in cloud.dtype.names else None
        count = write_ply(self.out / f"{name}_points.ply", points, rgb, labels_field)
        self.saved.append(name)
        self.node.get_logger().info(f"saved {name} (stamp {stamp_ns * 1e-9:.3f}, {count} points)")

    def summary(self) -> dict:
        return {"topics": {t: s.summary() for t, s in self.stats.items()},
                "class_names": self.classes["class_names"] if self.classes else None,
                "saved_frames": self.saved, "out": str(self.out) if self.out else None,
                "node_diagnostics": self.node_status}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="stereo_seg_monitor", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=15.0,
                        help="seconds to listen, counted from the first seg message")
    parser.add_argument("--startup-timeout", type=float, default=60.0,
                        help="seconds to wait for the first seg message (model loading)")
    parser.add_argument("--out", type=Path, default=None, help="folder for saved frames")
    parser.add_argument("--save-frames", type=int, default=3, help="frames to save")
    parser.add_argument("--save-grace", type=float, default=10.0,
                        help="extra seconds allowed to complete the frames to save")
    parser.add_argument("--json", type=Path, default=None, help="write the summary here")
    return parser.parse_known_args(argv)


def main(args=None) -> int:

    return finish(_run(args), as_command=args is None)


def _run(args) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


    options, ros_args = parse_args(sys.argv[1:] if args is None else args)
    with StopRequest() as stop:
        init_rclpy(["stereo_seg_monitor", *ros_args])
        node = rclpy.create_node("stereo_seg_monitor")
        monitor = MonitorNode(node, options.out, options.save_frames)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        # Listening starts with the first output, so a slow model load (a busy CPU, a cold disk)
        # shortens nothing; the startup wait has its own bound.
        deadline = time.monotonic() + options.startup_timeout
        listening, extended = False, False
        try:
            while rclpy.ok() and not stop.requested:
                executor.spin_once(timeout_sec=0.05)
                now = time.monotonic()
                if not listening and monitor.stats[topics.SEG].latencies_ms:
                    listening = True
                    deadline = now + options.duration
                if now >= deadline:
                    # A slow model may not have completed the frames to save yet: a short,
                    # bounded extension rather than an empty output folder.
                    wanting = listening and options.out and len(monitor.saved) < options.save_frames
                    if wanting and not extended:
                        extended, deadline = True, now + options.save_grace
                        continue
                    break
                if extended and len(monitor.saved) >= options.save_frames:
                    break
        except ExternalShutdownException:
            pass
        summary = monitor.summary()
        summary["started"] = listening
        text = json.dumps(summary, indent=2)
        if options.json:
            options.json.write_text(text)
        print(text, flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
