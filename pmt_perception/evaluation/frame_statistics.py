"""Per-frame statistics of a stream of predictions (a bag, a live recording): timing, output
statistics (class shares, disparity quantiles) and temporal stability between consecutive frames
(share of pixels whose label flips, median absolute disparity change). Pure numpy; works with or
without ground truth (frames without it score nothing: seg 255, disparity 0).
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from pmt_perception.evaluation.report import evaluate_pairs
from pmt_perception.labels import IGNORE_LABEL

__all__ = ["FrameStatistics", "score_pairs"]

_DISPARITY_QUANTILES = (0.05, 0.5, 0.95)


class FrameStatistics:
    """Per-frame timing, output statistics and frame-to-frame stability of predictions."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.frames: list[dict[str, Any]] = []
        self.class_pixels = np.zeros(256, np.int64)
        self.disparity_samples: list[np.ndarray] = []
        self._previous: Optional[tuple[np.ndarray, np.ndarray]] = None
        self.frames_with_seg = 0
        self.frames_with_disparity = 0

    def add(self, sample: dict[str, Any], prediction: Any) -> None:
        self.frames_with_seg += bool((np.asarray(sample["seg"]) != IGNORE_LABEL).any())
        self.frames_with_disparity += bool((np.asarray(sample["disparity"]) > 0).any())
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
            "ground_truth": {"frames_with_seg": self.frames_with_seg,
                             "frames_with_disparity": self.frames_with_disparity},
        }


def score_pairs(pairs: Iterable[tuple[dict, Any]], *, class_names: Sequence[str],
                figure_samples: int = 4):
    """(accumulator, report): the dataset report of ``pairs`` plus FrameStatistics and how many
    frames had ground truth (the live-node recording of the closed loop is scored so)."""
    statistics = FrameStatistics(len(class_names))

    def observed() -> Iterator[tuple[dict, Any]]:
        for sample, prediction in pairs:
            statistics.add(sample, prediction)
            yield sample, prediction

    accumulator = evaluate_pairs(observed(), num_classes=len(class_names),
                                 class_names=list(class_names), figure_samples=figure_samples)
    report = accumulator.report()
    report.update(statistics.report(class_names))
    return accumulator, report
