"""`pmt-bag-write`: a dataset (synthetic scenes by default) -> a ROS 2 bag of stereo frames.

    pmt-bag-write --out runs/bags/synth20 --num 20 --size 240x320     # sqlite3, 10 Hz
    pmt-bag-write --out runs/bags/synth20.mcap --num 20 --storage mcap --compression message
    pmt-bag-write --out runs/bags/kitti --data kitti2015 --data-root /data/kitti --num 50

Per frame: left/image_rect, right/image_rect (rgb8), left/camera_info, right/camera_info and,
unless --no-ground-truth, ground_truth/seg (mono8 class ids, 255 = unlabeled) and
ground_truth/disparity (stereo_msgs/DisparityImage, or a 32FC1 Image with --gt-disparity-as
image). Every message of frame i carries stamp start + i / rate and is logged at that time, so
the bag replays at the chosen rate. An existing bag is refused unless --overwrite.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

from pmt_perception.cli import parse_size
from pmt_perception.config import from_dict
from pmt_perception.data import SyntheticStereo, build_dataset, load_data_config
from pmt_perception.data.bag_io import STORAGES, BagError, typestore, writing_bag
from pmt_perception.data.base import IGNORE_LABEL
from pmt_perception.data.ros_messages import CAMERA_INFO, DISPARITY_IMAGE, IMAGE
from pmt_perception.data.synthetic.settings import GeneratorSettings
from pmt_perception.geometry import StereoCamera
from pmt_perception.ros.conversions import (
    camera_from_infos,
    camera_infos,
    make_disparity_image,
    numpy_to_image,
)
from pmt_perception.topics import StereoTopics

__all__ = ["build_parser", "main", "write_bag", "frame_stamps", "dataset_frames"]


class _SizeAction(argparse.Action):
    """--size HxW (as every command); the former --size H W still works, with a warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) == 1:
            size = parse_size(values[0])
        elif len(values) == 2 and all(v.isdigit() for v in values):
            print(f"pmt-bag-write: --size H W is deprecated; use --size {values[0]}x{values[1]}",
                  file=sys.stderr)
            size = parse_size("x".join(values))
        else:
            parser.error(f"--size takes HxW (e.g. 240x320), got {' '.join(values)!r}")
        setattr(namespace, self.dest, size)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmt-bag-write", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="bag folder to create")
    parser.add_argument("--num", type=int, required=True, help="number of stereo frames")
    parser.add_argument("--data", default="synthetic",
                        help="data config: a name under config/data/ or a YAML path")
    parser.add_argument("--data-root", default=None, help="dataset folder (overrides the config's)")
    parser.add_argument("--split", default=None, help="split (default: the config's val_split)")
    parser.add_argument("--first", type=int, default=0, help="index of the first sample")
    parser.add_argument("--cycle", action="store_true",
                        help="repeat the samples in order until --num frames are written (a long "
                             "stream from a few real pairs, e.g. for online adaptation)")
    parser.add_argument("--fx", type=float, default=None,
                        help="focal length (px, at the written size) for samples without "
                             "calibration (Middlebury 2005/2006); the sample's own wins")
    parser.add_argument("--baseline", type=float, default=None,
                        help="baseline (m) for samples without calibration")
    parser.add_argument("--size", nargs="+", action=_SizeAction, metavar="HxW", default=None,
                        help="image size of generated synthetic frames (default: the config's)")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second")
    parser.add_argument("--start-time", type=float, default=1_700_000_000.0,
                        help="stamp of the first frame, seconds since the epoch")
    parser.add_argument("--right-stamp-offset", type=float, default=0.0,
                        help="seconds added to right stamps (cameras without hardware sync; "
                             "read such bags with --approximate-sync)")
    parser.add_argument("--storage", choices=STORAGES, default="sqlite3")
    parser.add_argument("--compression", choices=("none", "file", "message"), default="none",
                        help="zstd compression mode (rosbag2's --compression-mode)")
    parser.add_argument("--no-ground-truth", action="store_true",
                        help="write only the four camera topics")
    parser.add_argument("--gt-disparity-as", choices=("disparity_image", "image"),
                        default="disparity_image",
                        help="ground-truth disparity as stereo_msgs/DisparityImage or 32FC1 Image")
    parser.add_argument("--left-frame-id", default="left_camera_optical_frame")
    parser.add_argument("--right-frame-id", default="right_camera_optical_frame")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    parser.add_argument("--json", action="store_true", help="print a summary as JSON")
    return parser


def frame_stamps(index: int, *, start_time: float, rate: float) -> int:
    """Stamp of frame ``index`` in integer nanoseconds (no float drift over long bags)."""
    return int(round(start_time * 1e9)) + int(round(index * 1e9 / rate))


def _to_uint8_rgb(image: Any) -> np.ndarray:
    """HxWx3 uint8 from the sample contract's 3xHxW float tensor in [0, 1] (or uint8 HxWx3)."""
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    return np.ascontiguousarray((np.clip(array.transpose(1, 2, 0), 0, 1) * 255 + 0.5)
                                .astype(np.uint8))


def dataset_frames(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Samples ``first .. first + num - 1`` of the chosen dataset, unaugmented."""
    config = load_data_config(args.data)
    split = args.split or config.val_split
    root = args.data_root if args.data_root is not None else config.root
    if config.dataset == "synthetic" and root is None:
        settings = from_dict(GeneratorSettings, config.loader, source="synthetic loader")
        dataset = SyntheticStereo(settings, split=split, length=args.first + args.num,
                                  size=tuple(args.size) if args.size else None)
    else:
        if args.size:
            raise SystemExit("pmt-bag-write: --size applies to generated synthetic frames only")
        dataset = build_dataset(config, split=split, root=root, augment=False)
    if args.cycle:
        for index in range(args.num):
            yield with_camera(dataset[(args.first + index) % len(dataset)], args)
        return
    if args.first + args.num > len(dataset):
        raise SystemExit(f"pmt-bag-write: {args.data} split {split!r} has {len(dataset)} "
                         f"samples, asked for {args.first}..{args.first + args.num - 1}")
    for index in range(args.first, args.first + args.num):
        yield with_camera(dataset[index], args)


def with_camera(sample: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The sample with --fx / --baseline in its meta where it has none of its own."""
    meta = dict(sample.get("meta") or {})
    for key, value in (("fx", getattr(args, "fx", None)), ("baseline", getattr(args, "baseline", None))):
        if meta.get(key) is None and value is not None:
            meta[key] = value
    return {**sample, "meta": meta}


def _camera(sample: dict[str, Any], height: int, width: int) -> StereoCamera:
    meta = sample.get("meta") or {}
    if meta.get("fx") is None or meta.get("baseline") is None:
        raise SystemExit("pmt-bag-write: the samples carry no calibration (fx, baseline) for "
                         "camera_info: pass --fx and --baseline")
    fx = float(meta["fx"])
    return StereoCamera.rectified(width=width, height=height, fx=fx, fy=float(meta.get("fy", fx)),
                       cx=float(meta.get("cx", (width - 1) / 2)),
                       cy=float(meta.get("cy", (height - 1) / 2)),
                       baseline=float(meta["baseline"]))


def _stamped(msg, stamp_ns: int):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def frame_messages(sample: dict[str, Any], *, stamp_ns: int, right_offset_ns: int,
                   topics: StereoTopics, args: argparse.Namespace) -> list[tuple[str, int, Any]]:
    """(topic, stamp, rclpy message) of one frame: infos first, as cameras publish them."""
    left, right = _to_uint8_rgb(sample["left"]), _to_uint8_rgb(sample["right"])
    camera = _camera(sample, *left.shape[:2])
    left_info, right_info = camera_infos(camera, left_frame_id=args.left_frame_id,
                                         right_frame_id=args.right_frame_id)
    right_stamp = stamp_ns + right_offset_ns
    messages = [(topics.left_info, stamp_ns, left_info),
                (topics.right_info, right_stamp, right_info),
                (topics.left_image, stamp_ns, numpy_to_image(left, "rgb8")),
                (topics.right_image, right_stamp, numpy_to_image(right, "rgb8"))]
    for (_, _, msg), frame_id in zip(messages, [args.left_frame_id, args.right_frame_id] * 2):
        msg.header.frame_id = frame_id
    if not args.no_ground_truth:
        header = Header(frame_id=args.left_frame_id)
        seg = np.asarray(sample["seg"])
        seg = np.where((seg >= 0) & (seg < IGNORE_LABEL), seg, IGNORE_LABEL).astype(np.uint8)
        messages.append((topics.gt_seg, stamp_ns, numpy_to_image(seg, "mono8", header)))
        disparity = np.asarray(sample["disparity"], dtype=np.float32)
        valid = np.isfinite(disparity) & (disparity > 0)
        if args.gt_disparity_as == "image":  # raw left disparity, 0 = no ground truth
            gt = numpy_to_image(np.where(valid, disparity, 0).astype(np.float32), "32FC1", header)
        else:
            # stereo_image_proc's convention: pre-adjusted for cx_l - cx_r, invalid pixels below
            # min_disparity (make_disparity_image writes NaN as min_disparity - 1).
            stereo = camera_from_infos(left_info, right_info)
            adjusted = disparity[valid] - stereo.principal_point_offset
            low = min(0.0, float(np.floor(adjusted.min()))) if adjusted.size else 0.0
            high = max(low + 1.0, float(np.ceil(adjusted.max())) if adjusted.size else 1.0)
            gt = make_disparity_image(np.where(valid, disparity, np.nan), header, stereo,
                                      min_disparity=low, max_disparity=high)
        messages.append((topics.gt_disparity, stamp_ns, gt))
    return [(topic, stamp, _stamped(msg, stamp)) for topic, stamp, msg in messages]


def write_bag(frames, out: Path, args: argparse.Namespace,
              topics: StereoTopics = StereoTopics()) -> dict[str, Any]:
    """Write ``frames`` (dataset samples) to the bag ``out``; returns a summary."""
    store = typestore()
    types = {topics.left_image: IMAGE, topics.right_image: IMAGE, topics.left_info: CAMERA_INFO,
             topics.right_info: CAMERA_INFO, topics.gt_seg: IMAGE,
             topics.gt_disparity: IMAGE if args.gt_disparity_as == "image" else DISPARITY_IMAGE}
    right_offset_ns = int(round(args.right_stamp_offset * 1e9))
    count, first_stamp, last_stamp, size = 0, None, None, None
    with writing_bag(out, storage=args.storage, compression=args.compression,
                     overwrite=args.overwrite) as writer:
        connections: dict[str, Any] = {}
        for index, sample in enumerate(frames):
            stamp = frame_stamps(index, start_time=args.start_time, rate=args.rate)
            for topic, log_time, msg in frame_messages(sample, stamp_ns=stamp, topics=topics,
                                                       right_offset_ns=right_offset_ns, args=args):
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, types[topic],
                                                               typestore=store)
                writer.write(connections[topic], log_time, serialize_message(msg))
            first_stamp = stamp if first_stamp is None else first_stamp
            last_stamp, count = stamp, count + 1
            size = list(np.asarray(sample["seg"]).shape)
    return {"bag": str(out), "frames": count, "storage": args.storage,
            "compression": args.compression, "topics": sorted(connections),
            "image_size": size, "rate_hz": args.rate, "first_stamp_ns": first_stamp,
            "last_stamp_ns": last_stamp}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num < 1:
        raise SystemExit("pmt-bag-write: --num must be at least 1")
    if not args.rate > 0:
        raise SystemExit("pmt-bag-write: --rate must be positive")
    if args.out.exists() and not args.overwrite:  # before rendering anything
        print(f"pmt-bag-write: bag {args.out} exists already; choose another path or pass "
              f"--overwrite", file=sys.stderr)
        return 2
    try:
        summary = write_bag(dataset_frames(args), args.out, args)
    except BagError as error:
        print(f"pmt-bag-write: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {summary['frames']} frames to {args.out} ({args.storage}, "
              f"{', '.join(summary['topics'])})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
