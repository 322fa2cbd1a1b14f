"""ROS 2 bags as a data source: synchronized stereo frames (+ ground truth) of a bag, read with
the pure-Python ``rosbags`` library only (no rclpy, no message classes).

    config = load_data_config("bag", root="runs/bags/synth20")     # pmt-evaluate --data bag
    for sample in build_dataset(config, split="all"):               # the §4 sample contract
        ...

The four inputs are paired with the node's rules (data/stamp_sync.py, the package's
message_filters equivalent), fed in log-time order: exact stamps by default, ``approximate``
with ``slop`` for unsynchronized cameras; the defaults are the node's (config/stereo_seg.yaml),
the topic names its defaults (pmt_perception/topics.py). Ground truth (``ground_truth/seg``,
``ground_truth/disparity``) is matched to a set by the left image's stamp, exactly. Messages are
deserialized with rosbags' typestore and decoded by data/ros_messages.py.

A bag is a stream, so :class:`BagStereo` is an IterableDataset: it is read front to back, once
per iteration, and never held in memory.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from pmt_perception.config import config_dir, from_dict, load_yaml
from pmt_perception.topics import StereoTopics

from .bag_io import BagError, bag_topics, read_messages, typestore
from .base import IGNORE_LABEL, Transform, to_sample
from .ros_messages import (
    camera_from_infos,
    disparity_from_message,
    image_to_numpy,
    stamp_nanoseconds,
    to_rgb8,
)
from .stamp_sync import ApproximateTimeSynchronizer, MessageInput, TimeSynchronizer

__all__ = ["StereoFrame", "ReadStatistics", "SyncSettings", "node_sync_settings",
           "read_stereo_frames", "BagSettings", "BagStereo"]

# A set waits this long (bag log time) for its ground truth before it goes out without it.
_GROUND_TRUTH_WAIT_NS = 1_000_000_000


@dataclass(frozen=True)
class SyncSettings:
    approximate: bool
    slop: float         # seconds
    queue_size: int


def node_sync_settings(path: str | os.PathLike | None = None) -> SyncSettings:
    """The node's pairing defaults (approximate_sync, sync_slop, sync_queue_size) from its
    parameter file, so a bag is paired as the live node would pair it with default settings."""
    path = Path(path) if path is not None else config_dir() / "stereo_seg.yaml"
    try:
        values = load_yaml(path)["/**"]["ros__parameters"]
        return SyncSettings(approximate=bool(values["approximate_sync"]),
                            slop=float(values["sync_slop"]),
                            queue_size=int(values["sync_queue_size"]))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: no node sync parameters ({error})") from None


@dataclass
class StereoFrame:
    stamp_ns: int                      # the left image's header stamp
    left: np.ndarray                   # H x W x 3 uint8 RGB
    right: np.ndarray
    camera: Any                        # geometry.StereoCamera from the two camera infos
    seg: Optional[np.ndarray] = None   # H x W int64 class ids, 255 = unlabeled
    disparity: Optional[np.ndarray] = None  # H x W float32 raw left disparity, 0 = none

    def raw_sample(self, index: int) -> dict:
        """The raw sample of data/base.py (ignore / 0 where the bag has no ground truth)."""
        height, width = self.left.shape[:2]
        seg = self.seg if self.seg is not None else np.full((height, width), IGNORE_LABEL,
                                                            np.int64)
        disparity = (self.disparity if self.disparity is not None
                     else np.zeros((height, width), np.float32))
        return {"left": self.left, "right": self.right, "seg": seg, "disparity": disparity,
                "meta": {"dataset": "bag", "sample_id": f"stamp_{self.stamp_ns}",
                         "index": index, "stamp_ns": self.stamp_ns,
                         "fx": float(self.camera.fx), "baseline": float(self.camera.baseline)}}

    def sample(self, index: int, *, tensors: bool = True) -> dict:
        """The dataset sample contract. ``tensors`` (default): exactly what a dataset yields
        (data.base.to_sample), so a bag scores bit for bit as the dataset it was written from.
        False keeps the HxWx3 uint8 images, which is what the live node feeds its Predictor."""
        raw = self.raw_sample(index)
        return to_sample(raw) if tensors else raw


@dataclass
class ReadStatistics:
    left_images: int = 0       # left images in the bag
    frames: int = 0            # synchronized sets delivered
    with_seg: int = 0
    with_disparity: int = 0
    unreadable: list = field(default_factory=list)  # (stamp, reason) of sets that failed

    @property
    def unpaired(self) -> int:
        return self.left_images - self.frames - len(self.unreadable)


def _synchronizer(approximate: bool, slop: float, queue_size: int) -> TimeSynchronizer:
    inputs = [MessageInput() for _ in range(4)]
    if approximate:
        return ApproximateTimeSynchronizer(inputs, queue_size, slop)
    return TimeSynchronizer(inputs, queue_size)


def _check_topics(path: Path, topics: StereoTopics) -> list[str]:
    """The ground-truth topics the bag has; BagError when an input topic is missing."""
    present = bag_topics(path)
    missing = [t for t in (topics.left_image, topics.right_image) if t not in present]
    if missing:
        raise BagError(f"bag {path} has no {' or '.join(missing)} (topics: "
                       f"{', '.join(sorted(present)) or 'none'}); set the topic options")
    for info_topic in (topics.left_info, topics.right_info):
        if info_topic not in present:
            raise BagError(f"bag {path} has no {info_topic}: the camera infos are needed for "
                           f"the disparity convention (topics: {', '.join(sorted(present))})")
    return [t for t in (topics.gt_seg, topics.gt_disparity) if t in present]


def read_stereo_frames(path: str | os.PathLike, *, topics: StereoTopics = StereoTopics(),
                       approximate: bool | None = None, slop: float | None = None,
                       queue_size: int | None = None,
                       statistics: ReadStatistics | None = None) -> Iterator[StereoFrame]:
    """Synchronized stereo frames of the bag at ``path``, in stamp order. Pairing settings left
    None are the node's (config/stereo_seg.yaml)."""
    node = node_sync_settings()
    approximate = node.approximate if approximate is None else approximate
    slop = node.slop if slop is None else slop
    queue_size = node.queue_size if queue_size is None else queue_size
    path = Path(path)
    stats = statistics if statistics is not None else ReadStatistics()
    gt_topics = _check_topics(path, topics)
    index_of = {topic: i for i, topic in enumerate(topics.inputs())}
    store = typestore()

    completed: list[tuple[int, tuple]] = []   # (log time when completed, messages)
    synchronizer = _synchronizer(approximate, slop, queue_size)
    ground_truth: dict[str, dict[int, tuple[str, object]]] = {t: {} for t in gt_topics}
    log_time = 0

    def frame_of(msgs) -> StereoFrame | None:
        left, right, left_info, right_info = msgs
        stamp = stamp_nanoseconds(left)
        try:
            camera = camera_from_infos(left_info, right_info)
            # Copies: to_rgb8 may return read-only views onto the message bytes.
            frame = StereoFrame(stamp, np.array(to_rgb8(left)), np.array(to_rgb8(right)), camera)
            if frame.left.shape != frame.right.shape:
                raise ValueError(f"left {frame.left.shape} and right {frame.right.shape} differ")
        except ValueError as error:  # a bad set is reported, the rest of the bag still counts
            stats.unreadable.append((stamp, str(error)))
            return None
        seg = ground_truth.get(topics.gt_seg, {}).pop(stamp, None)
        if seg is not None:
            frame.seg = image_to_numpy(seg[1]).astype(np.int64)
            stats.with_seg += 1
        disparity = ground_truth.get(topics.gt_disparity, {}).pop(stamp, None)
        if disparity is not None:
            frame.disparity = disparity_from_message(disparity[0], disparity[1],
                                                     camera.principal_point_offset)
            stats.with_disparity += 1
        stats.frames += 1
        return frame

    def ready(entry, *, at_end: bool) -> bool:
        completed_at, msgs = entry
        stamp = stamp_nanoseconds(msgs[0])
        has_all = all(stamp in ground_truth[t] for t in gt_topics)
        return at_end or has_all or log_time - completed_at > _GROUND_TRUTH_WAIT_NS

    def flush(*, at_end: bool) -> Iterator[StereoFrame]:
        while completed and ready(completed[0], at_end=at_end):
            frame = frame_of(completed.pop(0)[1])
            if frame is not None:
                yield frame

    synchronizer.registerCallback(lambda *msgs: completed.append((log_time, msgs)))
    wanted = [*topics.inputs(), *gt_topics]
    for topic, msgtype, log_time, data in read_messages(path, wanted):
        try:
            msg = store.deserialize_cdr(data, msgtype)
        except Exception as error:  # noqa: BLE001 - a corrupt record is the bag's problem
            raise BagError(f"bag {path}: a {topic} message at {log_time} ns cannot be "
                           f"deserialized ({type(error).__name__}: {error})") from error
        if topic in ground_truth:
            ground_truth[topic][stamp_nanoseconds(msg)] = (msgtype, msg)
        else:
            if topic == topics.left_image:
                stats.left_images += 1
            synchronizer.add(index_of[topic], msg)
        yield from flush(at_end=False)
    yield from flush(at_end=True)


@dataclass(frozen=True)
class BagSettings:
    """config/data/bag.yaml `loader`: topic names and pairing; None = the node's defaults."""

    left_image: Optional[str] = None
    right_image: Optional[str] = None
    left_info: Optional[str] = None
    right_info: Optional[str] = None
    gt_seg: Optional[str] = None
    gt_disparity: Optional[str] = None
    approximate_sync: Optional[bool] = None
    sync_slop: Optional[float] = None
    sync_queue_size: Optional[int] = None

    def topics(self) -> StereoTopics:
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(StereoTopics)
                 if getattr(self, f.name) is not None}
        return StereoTopics(**given)

    def sync(self) -> SyncSettings:
        node = node_sync_settings()
        return SyncSettings(
            approximate=node.approximate if self.approximate_sync is None else self.approximate_sync,
            slop=node.slop if self.sync_slop is None else float(self.sync_slop),
            queue_size=node.queue_size if self.sync_queue_size is None
            else int(self.sync_queue_size))


class BagStereo(torch.utils.data.IterableDataset):
    """The synchronized stereo frames of one bag as dataset samples, in stamp order.

    Bags carry no class table: ``class_names`` is empty and a network's own classes are used
    (as for disparity-only datasets). ``statistics`` counts what the last iteration read.
    """

    name = "bag"
    class_names: tuple[str, ...] = ()
    palette = np.zeros((0, 3), dtype=np.uint8)

    def __init__(self, path: str | os.PathLike, *, settings: BagSettings = BagSettings(),
                 transform: Transform | None = None):
        self.path = Path(path)
        self.topics = settings.topics()
        self.sync = settings.sync()
        self.transform = transform
        self.statistics = ReadStatistics()
        _check_topics(self.path, self.topics)  # a missing or unreadable bag fails here

    @classmethod
    def from_config(cls, root: str | Path, *, split: str, loader: dict[str, Any],
                    transform: Transform | None = None) -> "BagStereo":
        if split != "all":
            raise ValueError(f"a bag is one stream of frames: split must be 'all', got {split!r}")
        return cls(root, settings=from_dict(BagSettings, loader or {}, source="bag loader"),
                   transform=transform)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.statistics = ReadStatistics()
        frames = read_stereo_frames(self.path, topics=self.topics,
                                    approximate=self.sync.approximate, slop=self.sync.slop,
                                    queue_size=self.sync.queue_size, statistics=self.statistics)
        for index, frame in enumerate(frames):
            raw = frame.raw_sample(index)
            yield to_sample(self.transform(raw) if self.transform is not None else raw)

    def describe(self) -> dict[str, Any]:
        """What was read, for reports: the bag, its topics, the pairing and the counts."""
        read = self.statistics
        return {"bag": str(self.path), "topics": dataclasses.asdict(self.topics),
                "approximate_sync": self.sync.approximate, "sync_slop": self.sync.slop,
                "sync_queue_size": self.sync.queue_size, "left_images": read.left_images,
                "frames": read.frames, "unpaired_left_images": read.unpaired,
                "unreadable_sets": [list(entry) for entry in read.unreadable]}
