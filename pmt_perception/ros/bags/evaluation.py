"""`pmt-evaluate --bag`: the Predictor over a bag's stereo frames -> the dataset report + more.

The metrics come from the same accumulator as dataset evaluation (evaluation/report.py), so a
bag written from a dataset scores exactly as the dataset does. On top, for every bag (with or
without ground truth): per-frame timing, output statistics (class shares, disparity quantiles)
and temporal stability between consecutive frames (share of pixels whose label flips, median
absolute disparity change). Frames without ground truth score nothing (seg 255, disparity 0).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from pmt_perception.ros.bags.layout import StereoTopics

__all__ = ["add_bag_arguments", "FrameStatistics", "score_pairs", "bag_topics_from_args",
           "evaluate_bag"]

_DISPARITY_QUANTILES = (0.05, 0.5, 0.95)


def add_bag_arguments(parser: argparse.ArgumentParser) -> None:
    """The --bag option of pmt-evaluate and its topic / pairing options (the node's defaults)."""
    defaults = StereoTopics()
    group = parser.add_argument_group("ROS 2 bag input (instead of --data)")
    group.add_argument("--bag", type=Path, default=None,
                       help="evaluate the stereo frames of this bag (sqlite3 or MCAP folder); "
                            "without --checkpoint the shipped model is used")
    for name, value in vars(defaults).items():
        group.add_argument(f"--{name.replace('_', '-')}-topic", dest=f"{name}_topic",
                           default=value, help=f"topic of {name.replace('_', ' ')}")
    group.add_argument("--approximate-sync", action="store_true",
                       help="pair stamps within --sync-slop instead of identical stamps")
    group.add_argument("--sync-slop", type=float, default=0.01, help="seconds")
    group.add_argument("--sync-queue-size", type=int, default=5)


def bag_topics_from_args(args: argparse.Namespace) -> StereoTopics:
    return StereoTopics(**{name: getattr(args, f"{name}_topic") for name in vars(StereoTopics())})


class FrameStatistics:
    """Per-frame timing, output statistics and frame-to-frame stability of predictions."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.frames: list[dict[str, Any]] = []
        self.class_pixels = np.zeros(256, np.int64)
        self.disparity_samples: list[np.ndarray] = []
        self._previous: Optional[tuple[np.ndarray, np.ndarray]] = None

    def add(self, sample: dict[str, Any], prediction: Any) -> None:
        labels = getattr(prediction, "labels", None)
        labels = None if labels is None else np.asarray(labels)
        disparity = np.asarray(prediction.disparity, dtype=np.float32)
        meta = sample.get("meta") or {}
        row: dict[str, Any] = {"index": len(self.frames), "stamp_ns": meta.get("stamp_ns")}
        for stage, seconds in (getattr(prediction, "timings", None) or {}).items():
            row[f"{stage}_ms"] = 1000.0 * float(seconds)
        if labels is not None:
            self.class_pixels += np.bincount(labels.reshape(-1), minlength=256)[:256]
        finite = disparity[np.isfinite(disparity)]
        # A strided subsample keeps the quantiles cheap on long bags.
        self.disparity_samples.append(finite[:: max(1, finite.size // 4096)])
        previous = self._previous
        if previous is not None and previous[1].shape == disparity.shape:
            if labels is not None and previous[0] is not None:
                row["label_flip_fraction"] = float(np.mean(labels != previous[0]))
            change = np.abs(disparity - previous[1])
            row["disparity_change_median_px"] = float(np.median(change[np.isfinite(change)]))
        self._previous = (labels, disparity)
        self.frames.append(row)

    def _series(self, key: str) -> dict[str, Optional[float]]:
        values = np.asarray([row[key] for row in self.frames if key in row], np.float64)
        if values.size == 0:
            return {"mean": None, "median": None, "max": None, "pairs": 0}
        return {"mean": float(values.mean()), "median": float(np.median(values)),
                "max": float(values.max()), "pairs": int(values.size)}

    def report(self, class_names: Sequence[str]) -> dict[str, Any]:
        total = int(self.class_pixels.sum())
        shares = {name: (float(self.class_pixels[i]) / total if total else None)
                  for i, name in enumerate(class_names)}
        samples = np.concatenate(self.disparity_samples) if self.disparity_samples else np.zeros(0)
        quantiles = ({f"p{int(q * 100)}": float(np.quantile(samples, q))
                      for q in _DISPARITY_QUANTILES} if samples.size else {})
        return {
            "output_statistics": {
                "class_pixel_share": shares,
                "disparity_px": {"mean": float(samples.mean()) if samples.size else None,
                                 "min": float(samples.min()) if samples.size else None,
                                 "max": float(samples.max()) if samples.size else None,
                                 **quantiles},
            },
            "temporal_stability": {
                "label_flip_fraction": self._series("label_flip_fraction"),
                "disparity_change_median_px": self._series("disparity_change_median_px"),
            },
            "frames": self.frames,
        }


def score_pairs(pairs: Iterable[tuple[dict, Any]], *, class_names: Sequence[str],
                figure_samples: int = 4):
    """(accumulator, report): the dataset report of ``pairs`` plus FrameStatistics."""
    from pmt_perception.evaluation.report import evaluate_pairs

    statistics = FrameStatistics(len(class_names))
    counts = {"seg": 0, "disparity": 0}

    def observed() -> Iterator[tuple[dict, Any]]:
        for sample, prediction in pairs:
            statistics.add(sample, prediction)
            counts["seg"] += bool((np.asarray(sample["seg"]) != 255).any())
            counts["disparity"] += bool((np.asarray(sample["disparity"]) > 0).any())
            yield sample, prediction

    accumulator = evaluate_pairs(observed(), num_classes=len(class_names),
                                 class_names=list(class_names), figure_samples=figure_samples)
    report = accumulator.report()
    report.update(statistics.report(class_names))
    report["ground_truth"] = {"frames_with_seg": counts["seg"],
                              "frames_with_disparity": counts["disparity"]}
    return accumulator, report


def evaluate_bag(args: argparse.Namespace) -> int:
    """pmt-evaluate's path for --bag (called from pmt_perception.evaluate)."""
    import torch

    from pmt_perception.evaluate import build_method, prediction_pairs, write_outputs
    from pmt_perception.ros.bags.io import BagError, bag_topics
    from pmt_perception.ros.bags.reader import ReadStatistics, read_stereo_frames
    from pmt_perception.ros.model_source import shipped_checkpoint

    if args.sgbm:
        raise SystemExit("pmt-evaluate: --bag evaluates networks; --sgbm needs --data")
    if args.checkpoint is None:
        args.checkpoint = shipped_checkpoint()  # the node's choice when its checkpoint is ""
        if args.checkpoint is None:
            raise SystemExit("pmt-evaluate: no --checkpoint and no shipped models/*.pt")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        bag_topics(args.bag)  # a missing or unreadable bag fails before the model loads
    except BagError as error:
        print(f"pmt-evaluate: {error}", file=sys.stderr)
        return 2
    method, description, class_names, palette = build_method(args)
    read = ReadStatistics()
    frames = read_stereo_frames(args.bag, topics=bag_topics_from_args(args),
                                approximate=args.approximate_sync, slop=args.sync_slop,
                                queue_size=args.sync_queue_size, statistics=read)
    samples = (frame.sample(index) for index, frame in enumerate(frames)
               if args.limit is None or index < args.limit)
    start = time.perf_counter()
    try:
        accumulator, report = score_pairs(prediction_pairs(method, samples, warmup=args.warmup),
                                          class_names=class_names,
                                          figure_samples=args.figure_samples)
    except BagError as error:
        print(f"pmt-evaluate: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        if read.frames == 0:
            print(f"pmt-evaluate: bag {args.bag}: no synchronized stereo frames "
                  f"({read.left_images} left images, {len(read.unreadable)} unreadable sets; "
                  f"try --approximate-sync or the topic options)", file=sys.stderr)
            return 2
        raise
    report["method"] = description
    report["dataset"] = {"bag": str(args.bag), "topics": vars(bag_topics_from_args(args)),
                         "approximate_sync": args.approximate_sync, "sync_slop": args.sync_slop,
                         "left_images": read.left_images, "frames": read.frames,
                         "unpaired_left_images": read.unpaired,
                         "unreadable_sets": [list(entry) for entry in read.unreadable],
                         "limit": args.limit}
    return write_outputs(report, accumulator, palette, args=args, description=description,
                         start=start)
