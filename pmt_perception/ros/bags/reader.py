"""A bag -> synchronized stereo frames with the node's pairing rules, and ground truth.

The four inputs go through the same :class:`~pmt_perception.ros.sync.InputSynchronizer` the
node builds (message_filters when installed, else the package's equivalent), fed in log-time
order: exact stamps by default, ``approximate=True`` with ``slop`` for unsynchronized cameras.
Ground truth (``ground_truth/seg``, ``ground_truth/disparity``) is matched to a set by the
left image's stamp, exactly. Messages are deserialized with rosbags' typestore; the package's
conversions read those objects directly (they duck-type on the fields).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from pmt_perception.ros.bags.io import BagError, bag_topics, read_messages, typestore
from pmt_perception.ros.bags.layout import DISPARITY_IMAGE, StereoTopics

__all__ = ["StereoFrame", "ReadStatistics", "read_stereo_frames", "disparity_from_message",
           "raw_disparity_from_disparity_image"]

# A set waits this long (bag log time) for its ground truth before it goes out without it.
_GROUND_TRUTH_WAIT_NS = 1_000_000_000


@dataclass
class StereoFrame:
    stamp_ns: int                      # the left image's header stamp
    left: np.ndarray                   # H x W x 3 uint8 RGB
    right: np.ndarray
    camera: object                     # geometry.StereoCamera from the two camera infos
    seg: Optional[np.ndarray] = None   # H x W int64 class ids, 255 = unlabeled
    disparity: Optional[np.ndarray] = None  # H x W float32 raw left disparity, 0 = none

    def sample(self, index: int, *, tensors: bool = True) -> dict:
        """The dataset sample contract (ignore / 0 where the bag has no ground truth).

        ``tensors`` (default): exactly what a dataset yields (data.base.to_sample: 3xHxW float
        images), so a bag scores bit for bit as the dataset it was written from. False keeps
        the HxWx3 uint8 images, which is what the live node feeds its Predictor.
        """
        from pmt_perception.data.base import to_sample

        height, width = self.left.shape[:2]
        seg = self.seg if self.seg is not None else np.full((height, width), 255, np.int64)
        disparity = (self.disparity if self.disparity is not None
                     else np.zeros((height, width), np.float32))
        raw = {"left": self.left, "right": self.right, "seg": seg, "disparity": disparity,
               "meta": {"sample_id": f"stamp_{self.stamp_ns}", "index": index,
                        "stamp_ns": self.stamp_ns, "fx": float(self.camera.fx),
                        "baseline": float(self.camera.baseline)}}
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


def raw_disparity_from_disparity_image(msg, principal_point_offset: float, *,
                                       mask_invalid: bool = True) -> np.ndarray:
    """Raw left disparity from a DisparityImage (values pre-adjusted for cx_l - cx_r, as
    stereo_image_proc and the node publish). ``mask_invalid``: pixels below min_disparity (the
    message's "invalid") become 0 = no ground truth. The node's own output is read with
    ``mask_invalid=False``: it predicts every pixel, and an out-of-range prediction must be
    scored as the network made it, as offline evaluation does."""
    from pmt_perception.ros.conversions import image_to_numpy

    values = image_to_numpy(msg.image).astype(np.float32)
    valid = np.isfinite(values)
    if mask_invalid:
        valid &= values >= np.float32(msg.min_disparity)
    return np.where(valid, values + np.float32(principal_point_offset), 0).astype(np.float32)


def disparity_from_message(msgtype: str, msg, principal_point_offset: float) -> np.ndarray:
    from pmt_perception.ros.conversions import image_to_numpy

    if msgtype == DISPARITY_IMAGE:
        return raw_disparity_from_disparity_image(msg, principal_point_offset)
    values = image_to_numpy(msg).astype(np.float32)  # a 32FC1 Image of raw disparity
    return np.where(np.isfinite(values) & (values > 0), values, 0).astype(np.float32)


def read_stereo_frames(path: str | os.PathLike, *, topics: StereoTopics = StereoTopics(),
                       approximate: bool = False, slop: float = 0.01, queue_size: int = 5,
                       statistics: ReadStatistics | None = None) -> Iterator[StereoFrame]:
    """Synchronized stereo frames of the bag at ``path``, in stamp order."""
    from pmt_perception.ros.conversions import camera_from_infos, to_rgb8
    from pmt_perception.ros.sync import InputSynchronizer, stamp_nanoseconds

    path = Path(path)
    stats = statistics if statistics is not None else ReadStatistics()
    present = bag_topics(path)
    missing = [t for t in (topics.left_image, topics.right_image) if t not in present]
    if missing:
        raise BagError(f"bag {path} has no {' or '.join(missing)} (topics: "
                       f"{', '.join(sorted(present)) or 'none'}); set the topic options")
    for info_topic in (topics.left_info, topics.right_info):
        if info_topic not in present:
            raise BagError(f"bag {path} has no {info_topic}: the camera infos are needed for "
                           f"the disparity convention (topics: {', '.join(sorted(present))})")
    gt_topics = [t for t in (topics.gt_seg, topics.gt_disparity) if t in present]
    index_of = {topic: i for i, topic in enumerate(topics.inputs())}
    store = typestore()

    completed: list[tuple[int, tuple]] = []   # (log time when completed, messages)
    synchronizer = InputSynchronizer(input_count=4, queue_size=queue_size,
                                     approximate=approximate, slop=slop)
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
            from pmt_perception.ros.conversions import image_to_numpy

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

    synchronizer.register_callback(lambda *msgs: completed.append((log_time, msgs)))
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
