"""Dataset-level evaluation metrics for segmentation and disparity.

Both accumulators sum over a whole dataset before dividing (a per-image mean of IoUs would weigh
a small image like a large one, and is not what the paper or the Cityscapes benchmark report),
and both count only pixels with valid ground truth: seg != ignore_index, disparity > 0 and
finite. All ratios are fractions in [0, 1] (multiply by 100 for the paper's percentages); a
ratio whose denominator is 0 is NaN. Each accumulator keeps its running sums in ONE CPU tensor
(`confusion`, `sums`) so that a distributed evaluation can all-reduce it and go on; `merge`
does the same for two accumulators in one process.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .labels import CITYSCAPES_CATEGORY_NAMES, CITYSCAPES_CATEGORY_OF_TRAIN_ID, IGNORE_LABEL

# D1 (DESIGN.md §3): an error "bad" if larger than 3 px; KITTI also needs it to exceed 5 % of gt.
D1_THRESHOLD_PX = 3.0
# Middlebury's bad-1 / bad-2: shares of errors larger than 1 px / 2 px.
BAD_THRESHOLDS_PX = (1.0, 2.0)
KITTI_RELATIVE_THRESHOLD = 0.05



def _as_tensor(values: Any, *, what: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach()
    if isinstance(values, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(values))
    raise ValueError(f"{what} must be a torch.Tensor or numpy.ndarray, got {type(values)}")


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, Any]:
    """IoU, accuracies and (for 2 classes) P/R/F1 from a (C, C) confusion matrix.

    Rows are ground truth, columns predictions (as sklearn.metrics.confusion_matrix).
    - iou_per_class[c] = TP / (TP + FP + FN); NaN when class c is in neither GT nor prediction.
    - miou: mean over classes with a defined IoU, i.e. those in the GT or the prediction. A class
      only predicted (a false alarm everywhere) counts with IoU 0, as the Cityscapes benchmark.
    - pixel_accuracy: trace / all valid pixels.
    - mean_class_accuracy: mean over classes present in the GT of TP / (TP + FN).
    - for C == 2, precision, recall and f1 of class 1 (the foreground of binary datasets).
    """
    matrix = confusion.to(torch.float64)
    true_positive = matrix.diagonal()
    gt_count = matrix.sum(dim=1)
    predicted_count = matrix.sum(dim=0)
    union = gt_count + predicted_count - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), math.nan)
    class_accuracy = torch.where(gt_count > 0, true_positive / gt_count.clamp(min=1), math.nan)
    total = float(matrix.sum())
    defined_iou = iou[~iou.isnan()]
    defined_accuracy = class_accuracy[~class_accuracy.isnan()]
    scores: dict[str, Any] = {
        "miou": float(defined_iou.mean()) if len(defined_iou) else math.nan,
        "iou_per_class": iou.tolist(),
        "pixel_accuracy": _ratio(float(true_positive.sum()), total),
        "mean_class_accuracy": (float(defined_accuracy.mean()) if len(defined_accuracy)
                                else math.nan),
        "num_pixels": int(total),
    }
    if matrix.shape[0] == 2:
        tp, fp, fn = float(matrix[1, 1]), float(matrix[0, 1]), float(matrix[1, 0])
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        scores["precision"] = precision
        scores["recall"] = recall
        # 2PR/(P+R) == 2TP/(2TP+FP+FN), which stays defined when only one of P and R is.
        scores["f1"] = _ratio(2 * tp, 2 * tp + fp + fn)
    return scores


def group_confusion(confusion: torch.Tensor, group_of_class: tuple[int, ...]) -> torch.Tensor:
    """Sum a (C, C) confusion matrix into (G, G) over groups of classes (classes -> categories).

    Equivalent to mapping both ground truth and prediction through `group_of_class` before
    counting, which is how the Cityscapes category metrics are defined.
    """
    if len(group_of_class) != confusion.shape[0]:
        raise ValueError(f"group_confusion: {len(group_of_class)} group ids for a "
                         f"{confusion.shape[0]}-class confusion matrix")
    groups = torch.as_tensor(group_of_class, dtype=torch.int64)
    num_groups = int(groups.max()) + 1
    one_hot = torch.nn.functional.one_hot(groups, num_groups).to(confusion.dtype)
    return one_hot.T @ confusion @ one_hot


def cityscapes_category_scores(confusion: torch.Tensor) -> dict[str, Any]:
    """Scores of the 7 Cityscapes categories from the 19-train-id confusion matrix."""
    if confusion.shape != (19, 19):
        raise ValueError("cityscapes_category_scores needs the 19-class train-id confusion "
                         f"matrix, got shape {tuple(confusion.shape)}")
    return scores_from_confusion(group_confusion(confusion, CITYSCAPES_CATEGORY_OF_TRAIN_ID))


class SegmentationMetrics:
    """Confusion-matrix accumulator: update per batch, compute once per dataset."""

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_LABEL) -> None:
        if num_classes < 2:
            raise ValueError(f"SegmentationMetrics: num_classes must be >= 2, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"SegmentationMetrics: ignore_index {ignore_index} is a class id "
                             f"(num_classes {num_classes})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.confusion.zero_()

    def update(self, prediction: Any, target: Any) -> None:
        """Count label maps of any (equal) shape; torch (any device) or numpy integer arrays."""
        prediction = _as_tensor(prediction, what="prediction")
        target = _as_tensor(target, what="target")
        if prediction.shape != target.shape:
            raise ValueError(f"SegmentationMetrics.update: prediction shape "
                             f"{tuple(prediction.shape)} != target shape {tuple(target.shape)}")
        if prediction.is_floating_point() or target.is_floating_point():
            raise ValueError("SegmentationMetrics.update: expects class-id maps (integer arrays), "
                             "not scores; take argmax over classes first")
        prediction = prediction.to(target.device).reshape(-1).long()
        target = target.reshape(-1).long()
        valid = target != self.ignore_index
        prediction, target = prediction[valid], target[valid]
        for name, labels in (("target", target), ("prediction", prediction)):
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(f"SegmentationMetrics.update: {name} holds ids outside "
                                 f"[0, {self.num_classes}) other than ignore {self.ignore_index}")
        # One bincount of gt*C + pred gives the whole matrix in a single pass on the data's device.
        counts = torch.bincount(target * self.num_classes + prediction,
                                minlength=self.num_classes ** 2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes).cpu()

    def merge(self, other: SegmentationMetrics) -> None:
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError("SegmentationMetrics.merge: num_classes/ignore_index differ "
                             f"({other.num_classes}/{other.ignore_index} vs "
                             f"{self.num_classes}/{self.ignore_index})")
        self.confusion += other.confusion

    def compute(self) -> dict[str, Any]:
        """See `scores_from_confusion`; a 19-class matrix also gets `category_*` Cityscapes keys.

        The category keys assume 19 classes are the Cityscapes train ids; a caller with another
        19-class dataset should ignore them.
        """
        scores = scores_from_confusion(self.confusion)
        if self.num_classes == 19:
            categories = cityscapes_category_scores(self.confusion)
            scores["category_miou"] = categories["miou"]
            scores["category_iou"] = dict(zip(CITYSCAPES_CATEGORY_NAMES,
                                              categories["iou_per_class"]))
        return scores


class DisparityMetrics:
    """Running sums of disparity errors over pixels with valid ground truth (gt > 0, finite).

    compute() -> epe (mean |err| px), d1 (share of |err| > bad_pixel_threshold px: the paper's
    D1), kitti_d1 (share of |err| > threshold px AND |err| > relative_threshold * gt: KITTI
    2015's D1-all), bad_1 / bad_2 (share of |err| > 1 px / > 2 px, Middlebury's bad-1.0 /
    bad-2.0), rmse (px), abs_rel (mean |err|/gt), sq_rel (mean err^2/gt), num_pixels.
    A non-finite prediction at a valid pixel counts as an infinite error, so a diverged network
    shows as inf instead of silently passing D1.
    """

    _FIELDS = ("count", "abs", "squared", "abs_rel", "sq_rel", "bad", "kitti_bad", "bad_1", "bad_2")

    def __init__(self, *, bad_pixel_threshold: float = D1_THRESHOLD_PX,
                 relative_threshold: float = KITTI_RELATIVE_THRESHOLD) -> None:
        if bad_pixel_threshold < 0 or relative_threshold < 0:
            raise ValueError("DisparityMetrics: thresholds must be >= 0, got "
                             f"{bad_pixel_threshold} px and {relative_threshold}")
        self.bad_pixel_threshold = float(bad_pixel_threshold)
        self.relative_threshold = float(relative_threshold)
        self.sums = torch.zeros(len(self._FIELDS), dtype=torch.float64)

    def reset(self) -> None:
        self.sums.zero_()

    def update(self, prediction: Any, target: Any) -> None:
        """Disparity maps in pixels: prediction (B, 1, H, W) or the target's shape, any shape."""
        prediction = _as_tensor(prediction, what="prediction")
        target = _as_tensor(target, what="target")
        if prediction.dim() == target.dim() + 1 and prediction.shape[1] == 1:
            prediction = prediction.squeeze(1)
        if prediction.shape != target.shape:
            raise ValueError("DisparityMetrics.update: prediction shape "
                             f"{tuple(prediction.shape)} != target shape {tuple(target.shape)}")
        # float64: sums of squared errors over millions of pixels lose digits in float32.
        target = target.to(torch.float64).reshape(-1)
        prediction = prediction.to(device=target.device, dtype=torch.float64).reshape(-1)
        valid = torch.isfinite(target) & (target > 0)
        gt, predicted = target[valid], prediction[valid]
        error = torch.nan_to_num((predicted - gt).abs(), nan=math.inf)
        bad = error > self.bad_pixel_threshold
        batch = torch.stack([
            torch.tensor(float(gt.numel()), dtype=torch.float64, device=gt.device),
            error.sum(),
            (error ** 2).sum(),
            (error / gt).sum(),
            (error ** 2 / gt).sum(),
            bad.sum().to(torch.float64),
            (bad & (error > self.relative_threshold * gt)).sum().to(torch.float64),
            *((error > threshold).sum().to(torch.float64) for threshold in BAD_THRESHOLDS_PX),
        ])
        self.sums += batch.cpu()

    def merge(self, other: DisparityMetrics) -> None:
        if ((other.bad_pixel_threshold, other.relative_threshold)
                != (self.bad_pixel_threshold, self.relative_threshold)):
            raise ValueError("DisparityMetrics.merge: thresholds differ")
        self.sums += other.sums

    def compute(self) -> dict[str, float]:
        s = dict(zip(self._FIELDS, self.sums.tolist()))
        count = s["count"]
        return {
            "epe": _ratio(s["abs"], count),
            "d1": _ratio(s["bad"], count),
            "kitti_d1": _ratio(s["kitti_bad"], count),
            "bad_1": _ratio(s["bad_1"], count),
            "bad_2": _ratio(s["bad_2"], count),
            "rmse": math.sqrt(s["squared"] / count) if count > 0 else math.nan,
            "abs_rel": _ratio(s["abs_rel"], count),
            "sq_rel": _ratio(s["sq_rel"], count),
            "num_pixels": int(count),
        }
