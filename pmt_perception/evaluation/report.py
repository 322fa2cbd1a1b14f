"""Metric accumulation over (sample, prediction) pairs, and the JSON report.

Deliberately independent of where pairs come from: a dataset run through a Predictor, SGBM, or
(a later issue) frames replayed from a ROS bag all feed `EvaluationAccumulator.add`. A sample is
the data contract's dict (`seg` HxW, `disparity` HxW, 0 = no ground truth, optional `left` /
`right` for figures); a prediction is anything with `disparity` (HxW px) and optional `labels`
(refined head), `coarse_labels`, `raw_disparity` (NaN = no estimate; methods with holes) and
`timings` (seconds: pre, model, post).

Disparity-only data (Middlebury, bags without label topics: seg all 255) and methods without
segmentation (SGBM) are first-class: segmentation is then reported as absent (None -> null in
JSON, "-" in summaries), never as a score of 0; `num_classes=0` turns segmentation off.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from pmt_perception.labels import IGNORE_LABEL
from pmt_perception.metrics import DisparityMetrics, SegmentationMetrics


def _numpy(value: Any) -> Optional[np.ndarray]:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)

def _image_uint8(image: Any) -> Optional[np.ndarray]:
    """HxWx3 uint8 from the contract's 3xHxW float tensor (or an HxWx3 uint8 array)."""
    array = _numpy(image)
    if array is None:
        return None
    if array.dtype != np.uint8:
        array = (np.clip(array.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)
    return array

def _summary(values_ms: Sequence[float]) -> dict[str, Optional[float]]:
    if not values_ms:
        return {"mean": None, "median": None, "p90": None, "min": None, "max": None}
    array = np.asarray(values_ms, dtype=np.float64)
    return {"mean": float(array.mean()), "median": float(np.median(array)),
            "p90": float(np.percentile(array, 90)), "min": float(array.min()),
            "max": float(array.max())}

class EvaluationAccumulator:
    """Dataset-level metrics of both segmentation heads and the disparity head, timings, and the
    first `figure_samples` pairs kept for figures."""

    def __init__(self, *, num_classes: int, class_names: Sequence[str],
                 ignore_index: int = IGNORE_LABEL, figure_samples: int = 4) -> None:
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        # num_classes 0: nothing to segment (an SGBM run on disparity-only data).
        self.refined = (SegmentationMetrics(num_classes, ignore_index=ignore_index)
                        if num_classes else None)
        self.coarse = (SegmentationMetrics(num_classes, ignore_index=ignore_index)
                       if num_classes else None)
        self.labelled_pixels = 0                  # ground-truth pixels with a class (not ignore)
        self.disparity = DisparityMetrics()
        self.raw_disparity = DisparityMetrics()   # only pixels where the method gave an estimate
        self.raw_counts = [0, 0]                  # estimated & valid GT, valid GT
        self.has_labels = self.has_coarse = self.has_raw = False
        self.timings: list[dict[str, float]] = []
        self.sizes: set[tuple[int, int]] = set()
        self.figure_samples = figure_samples
        self.figure_rows: list[dict[str, Any]] = []
        self.count = 0

    def add(self, sample: dict[str, Any], prediction: Any) -> None:
        seg = _numpy(sample["seg"]).astype(np.int64)
        gt_disparity = _numpy(sample["disparity"]).astype(np.float32)
        predicted = _numpy(prediction.disparity).astype(np.float32)
        if predicted.shape != gt_disparity.shape:
            raise ValueError(f"prediction of {predicted.shape} for a sample of "
                             f"{gt_disparity.shape}: evaluation is at full input size, no crops")
        self.sizes.add(tuple(gt_disparity.shape))
        self.labelled_pixels += int((seg != self.ignore_index).sum())
        labels = _numpy(getattr(prediction, "labels", None))
        if labels is not None and self.refined is not None:
            self.refined.update(labels.astype(np.int64), seg)
            self.has_labels = True
        coarse = _numpy(getattr(prediction, "coarse_labels", None))
        if coarse is not None and self.coarse is not None:
            self.coarse.update(coarse.astype(np.int64), seg)
            self.has_coarse = True
        self.disparity.update(predicted, gt_disparity)
        raw = _numpy(getattr(prediction, "raw_disparity", None))
        if raw is not None:
            estimated = np.isfinite(raw)
            gt_valid = np.isfinite(gt_disparity) & (gt_disparity > 0)
            self.raw_disparity.update(np.where(estimated, raw, 0), np.where(estimated, gt_disparity, 0))
            self.raw_counts[0] += int((estimated & gt_valid).sum())
            self.raw_counts[1] += int(gt_valid.sum())
            self.has_raw = True
        timings = getattr(prediction, "timings", None) or {}
        if timings:
            self.timings.append({k: float(v) for k, v in timings.items()})
        if len(self.figure_rows) < self.figure_samples:
            self.figure_rows.append({
                "left": _image_uint8(sample.get("left")), "right": _image_uint8(sample.get("right")),
                "seg": seg, "disparity": gt_disparity, "pred_disparity": predicted,
                "pred_labels": labels, "sample_id": (sample.get("meta") or {}).get("sample_id")})
        self.count += 1

    # ------------------------------------------------------------------ report
    @property
    def has_label_ground_truth(self) -> bool:
        return self.labelled_pixels > 0

    @property
    def scores_segmentation(self) -> bool:
        """Segmentation is scored: the method segments and some pixel has a class in the GT."""
        return self.has_labels and self.has_label_ground_truth

    def _segmentation(self, metrics: SegmentationMetrics) -> dict[str, Any]:
        scores = metrics.compute()
        scores["iou_per_class"] = dict(zip(self.class_names, scores["iou_per_class"]))
        return scores

    def timing_report(self) -> dict[str, Any]:
        model_ms = [1000 * t.get("model", 0.0) for t in self.timings]
        total_ms = [1000 * sum(t.values()) for t in self.timings]
        mean_total = float(np.mean(total_ms)) if total_ms else None
        return {"samples": len(self.timings), "model_ms": _summary(model_ms),
                "total_ms": _summary(total_ms),
                "fps": 1000.0 / mean_total if mean_total else None}

    def report(self) -> dict[str, Any]:
        if self.count == 0:
            raise ValueError("no (sample, prediction) pairs were evaluated")
        disparity = self.disparity.compute()
        if self.has_raw:
            raw = self.raw_disparity.compute()
            raw["density"] = (self.raw_counts[0] / self.raw_counts[1] if self.raw_counts[1]
                              else math.nan)
            disparity["estimated_pixels_only"] = raw
        return {
            "num_samples": self.count,
            "image_sizes": sorted([list(s) for s in self.sizes]),
            "class_names": self.class_names,
            "segmentation": {
                "refined": self._segmentation(self.refined) if self.scores_segmentation else None,
                "coarse": (self._segmentation(self.coarse)
                           if self.has_coarse and self.has_label_ground_truth else None),
            },
            "segmentation_ground_truth": self.has_label_ground_truth,
            "disparity": disparity,
            "timing": self.timing_report(),
        }

def evaluate_pairs(pairs: Iterable[tuple[dict[str, Any], Any]], *, num_classes: int,
                   class_names: Sequence[str], ignore_index: int = IGNORE_LABEL,
                   figure_samples: int = 4) -> EvaluationAccumulator:
    """Feed every (sample, prediction) pair to a new accumulator and return it."""
    accumulator = EvaluationAccumulator(num_classes=num_classes, class_names=class_names,
                                        ignore_index=ignore_index, figure_samples=figure_samples)
    for sample, prediction in pairs:
        accumulator.add(sample, prediction)
    return accumulator
