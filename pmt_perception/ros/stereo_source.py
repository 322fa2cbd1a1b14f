"""stereo_source: a rectified stereo camera for demos and tests.

Publishes left/image_rect, right/image_rect, left/camera_info and right/camera_info (the
perception node's default inputs) at a fixed rate, from the synthetic scene generator or from a
folder of image pairs. A small pool of frames is rendered at startup and cycled, so rendering
never slows the rate down. Stamps are the wall (ROS) time of publication; ``stereo_jitter``
offsets the right stamps as unsynchronized cameras would (the node then needs approximate_sync).

Folder layout (the one `pmt-synth` writes): DIR/left/*.png and DIR/right/*.png with matching
names, and the calibration in DIR/camera/<name>.json or DIR/camera.json
(fx, fy, cx, cy, baseline in metres).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from pmt_perception import topics
from pmt_perception.config import config_dir
from pmt_perception.data.io import read_json, read_rgb
from pmt_perception.data.synthetic import generate_pair, load_generator_settings
from pmt_perception.geometry import StereoCamera
from pmt_perception.ros.conversions import camera_infos, numpy_to_image
from pmt_perception.ros.params import (
    ParameterSpec,
    declare_parameters,
    help_requested,
    help_text,
    settings_snapshot,
)
from pmt_perception.ros.qos import input_qos
from pmt_perception.ros.shutdown import StopRequest, finish, init_rclpy, spin_until_stopped

__all__ = ["SOURCE_PARAMETER_SPECS", "CameraModel", "StereoFrameSource", "StereoSourceNode",
           "camera_infos", "main"]

def _S(description, **limits):  # noqa: N802 - reads like the node's table
    return ParameterSpec(description, applies="at startup", **limits)


SOURCE_PARAMETER_SPECS = {
    "source": _S('"synthetic" (procedural scenes) or a folder of image pairs.'),
    "rate": _S("Pairs per second.", minimum=0.01, maximum=1000.0),
    "image_size": _S("[H, W] of synthetic frames (folders keep their own size)."),
    "pool_size": _S("Frames rendered / loaded at startup and cycled.", minimum=1,
                    maximum=10000),
    "seed": _S("Base seed of the synthetic pool (frame i is scene seed + i).", minimum=0),
    "noise": _S("Add synthetic sensor noise."),
    "encoding": _S("Image encoding published.", choices=("rgb8", "bgr8", "mono8", "mono16")),
    "stereo_jitter": _S("Right stamps differ from left ones by a uniform offset up to this "
                        "many seconds (0: identical stamps).", minimum=0.0, maximum=1.0),
    "left_frame_id": _S("frame_id of the left image and info (left optical frame)."),
    "right_frame_id": _S("frame_id of the right image and info."),
    "reliability": _S("QoS reliability of the four publishers.",
                      choices=("best_effort", "reliable")),
    "depth": _S("QoS history depth of the publishers.", minimum=1, maximum=1000),
    "max_frames": _S("Stop after this many pairs (0: until shut down).", minimum=0),
}


# The former camera class of this module; geometry.StereoCamera is the one camera model now.
# Kept as a constructor with the old keywords (width, height, fx, fy, cx, cy, baseline).
CameraModel = StereoCamera.rectified


@dataclass
class StereoFrameSource:
    left: np.ndarray        # H x W x 3 uint8 RGB
    right: np.ndarray
    camera: StereoCamera


def synthetic_pool(*, count: int, seed: int, size, noise: bool) -> list[StereoFrameSource]:
    settings = load_generator_settings("synthetic")
    pool = []
    for index in range(count):
        pair = generate_pair(settings, seed=seed + index, size=tuple(size), noise=noise)
        pool.append(StereoFrameSource(pair.left, pair.right, pair.rig.stereo_camera()))
    return pool


def folder_pool(folder: str | Path, *, count: int) -> list[StereoFrameSource]:
    folder = Path(folder).expanduser()
    names = sorted(p.name for p in (folder / "left").glob("*.png")
                   if (folder / "right" / p.name).is_file())
    if not names:
        raise ValueError(f"{folder}: no pairs left/NAME.png + right/NAME.png")
    pool = []
    for name in names[:count]:
        calibration = folder / "camera" / f"{Path(name).stem}.json"
        if not calibration.is_file():
            calibration = folder / "camera.json"
        if not calibration.is_file():
            raise ValueError(f"{folder}: no calibration for {name} (camera/{Path(name).stem}.json "
                             "or camera.json with fx, fy, cx, cy, baseline)")
        cal = read_json(calibration)
        left, right = read_rgb(folder / "left" / name), read_rgb(folder / "right" / name)
        if left.shape != right.shape:
            raise ValueError(f"{folder}: left and right {name} differ in size")
        pool.append(StereoFrameSource(left, right, StereoCamera.rectified(
            width=left.shape[1], height=left.shape[0], fx=float(cal["fx"]), fy=float(cal["fy"]),
            cx=float(cal["cx"]), cy=float(cal["cy"]), baseline=float(cal["baseline"]))))
    return pool


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """RGB uint8 -> the pixel array of ``encoding`` (luma for the mono ones)."""
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if encoding == "mono8":
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    if encoding == "mono16":
        return (np.clip(np.rint(luma), 0, 255).astype(np.uint16) * 257)
    raise ValueError(f"unsupported encoding {encoding!r}")


class StereoSourceNode(Node):
    def __init__(self, node_name: str = "stereo_source", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare_parameters(self, SOURCE_PARAMETER_SPECS, config_dir() / "stereo_source.yaml")
        values = settings_snapshot(self, SOURCE_PARAMETER_SPECS)
        self.values = values
        if values["source"] == "synthetic":
            pool = synthetic_pool(count=values["pool_size"], seed=values["seed"],
                                  size=values["image_size"], noise=values["noise"])
        else:
            pool = folder_pool(values["source"], count=values["pool_size"])
        # Messages are built once per pooled frame; each tick only restamps them.
        self._pool = [self._messages(frame) for frame in pool]
        qos = input_qos(values["reliability"], values["depth"])
        self._publishers = [self.create_publisher(msg_type, topic, qos) for topic, msg_type in (
            (topics.LEFT_IMAGE, Image), (topics.RIGHT_IMAGE, Image),
            (topics.LEFT_INFO, CameraInfo), (topics.RIGHT_INFO, CameraInfo))]
        self._rng = np.random.default_rng(values["seed"])
        self.published = 0
        self.done = False
        self._timer = self.create_timer(1.0 / values["rate"], self._tick)
        first = pool[0].camera
        self.get_logger().info(
            f"publishing {len(pool)} {values['source']} frame(s) of {first.width}x{first.height} "
            f"{values['encoding']} at {values['rate']:g} Hz on "
            + ", ".join(p.topic_name for p in self._publishers))

    def _messages(self, frame: StereoFrameSource) -> tuple:
        values = self.values
        left = numpy_to_image(encode(frame.left, values["encoding"]), values["encoding"])
        right = numpy_to_image(encode(frame.right, values["encoding"]), values["encoding"])
        left.header.frame_id = values["left_frame_id"]
        right.header.frame_id = values["right_frame_id"]
        left_info, right_info = camera_infos(frame.camera, left_frame_id=values["left_frame_id"],
                                             right_frame_id=values["right_frame_id"])
        return left, right, left_info, right_info

    def _tick(self) -> None:
        left, right, left_info, right_info = self._pool[self.published % len(self._pool)]
        stamp_ns = self.get_clock().now().nanoseconds
        jitter = self.values["stereo_jitter"]
        right_ns = stamp_ns + (int(self._rng.uniform(-jitter, jitter) * 1e9) if jitter else 0)
        for msg, ns in ((left, stamp_ns), (left_info, stamp_ns), (right, right_ns),
                        (right_info, right_ns)):
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 1_000_000_000)
        # Infos first: with exact sync the set completes on the last image, never waiting.
        self._publishers[2].publish(left_info)
        self._publishers[3].publish(right_info)
        self._publishers[0].publish(left)
        self._publishers[1].publish(right)
        self.published += 1
        if self.values["max_frames"] and self.published >= self.values["max_frames"]:
            self._timer.cancel()
            self.done = True
            self.get_logger().info(f"published {self.published} pairs; done")


USAGE = """usage: stereo_source [--ros-args -p NAME:=VALUE ... -r FROM:=TO ...]

Publishes left/image_rect, right/image_rect, left/camera_info, right/camera_info at a fixed rate
from synthetic scenes or a folder of pairs (a rectified stereo camera for demos and tests)."""


def main(args=None) -> int:
    """Exit status 0 after max_frames or a stop (SIGINT, SIGTERM)."""
    return finish(_run(args), as_command=args is None)


def _run(args) -> int:
    if help_requested(sys.argv if args is None else args):
        print(help_text(USAGE, SOURCE_PARAMETER_SPECS, config_dir() / "stereo_source.yaml"))
        return 0
    with StopRequest() as stop:
        init_rclpy(args)
        node = None
        try:
            node = StereoSourceNode()
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            spin_until_stopped(executor, stop, done=lambda: node.done)
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
