"""Validation during training: loss and the paper's metrics over a held-out split, all ranks.

Each rank evaluates its share of the validation samples at their full size (padded, never
cropped, like the Predictor), then the loss sums, confusion matrices and disparity error sums
are all-reduced, so every rank ends with the same numbers and takes the same early-stopping and
best-checkpoint decisions.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from pmt_perception.labels import IGNORE_LABEL
from pmt_perception.metrics import DisparityMetrics, SegmentationMetrics

from .distributed import DistributedContext, all_reduce_sum

# Metrics where larger is better; every other metric (loss, d1, epe, ...) is minimised.
MAXIMIZED_METRICS = ("miou", "accuracy", "f1", "precision", "recall")


def metric_mode(name: str) -> str:
    return "max" if name.endswith(MAXIMIZED_METRICS) else "min"


def is_improvement(value: float, best: Optional[float], mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best if mode == "max" else value < best


def pad_to_network(batch: torch.Tensor, min_size: int, multiple: int = 32) -> torch.Tensor:
    """Replicate-pad bottom/right to a multiple of 32 and at least the SPP minimum."""
    height, width = batch.shape[-2:]
    target_h = max(min_size, -(-height // multiple) * multiple)
    target_w = max(min_size, -(-width // multiple) * multiple)
    if (target_h, target_w) == (height, width):
        return batch
    return F.pad(batch, (0, target_w - width, 0, target_h - height), mode="replicate")


@torch.no_grad()
def validate(network: torch.nn.Module, criterion: torch.nn.Module, loader: Any, *,
             context: DistributedContext, autocast_dtype: Optional[torch.dtype],
             channels_last: bool, num_classes: int, ignore_index: int = IGNORE_LABEL,
             keep_first: bool = True) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """(flat metric dict, first sample + its outputs for a figure, or None)."""
    was_training = network.training
    network.eval()
    device = context.device
    refined = SegmentationMetrics(num_classes, ignore_index=ignore_index)
    coarse = SegmentationMetrics(num_classes, ignore_index=ignore_index)
    disparity_metrics = DisparityMetrics()
    term_sums: dict[str, float] = {}
    first = None
    count = 0
    for batch in loader:
        left = batch["left"].to(device, non_blocking=True)
        right = batch["right"].to(device, non_blocking=True)
        seg = batch["seg"].to(device, non_blocking=True)
        gt_disparity = batch["disparity"].to(device, non_blocking=True)
        height, width = left.shape[-2:]
        min_size = network.config.min_input_size
        left_p, right_p = pad_to_network(left, min_size), pad_to_network(right, min_size)
        if channels_last:
            left_p = left_p.contiguous(memory_format=torch.channels_last)
            right_p = right_p.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            output = network(left_p, right_p)
        crop = (..., slice(0, height), slice(0, width))
        output = type(output)(*(t[crop].float() if t is not None and t.shape[-2:] == left_p.shape[-2:]
                                else t for t in output))
        _total, terms = criterion(output, seg=seg, disparity=gt_disparity)
        for name, value in terms.items():
            term_sums[name] = term_sums.get(name, 0.0) + float(value) * left.shape[0]
        count += left.shape[0]
        refined_labels = output.refined_logits.argmax(1)
        refined.update(refined_labels, seg)
        coarse.update(output.coarse_logits.argmax(1), seg)
        disparity_metrics.update(output.disparity, gt_disparity)
        if keep_first and first is None:
            first = {"left": left[0].cpu(), "seg": seg[0].cpu(), "disparity": gt_disparity[0].cpu(),
                     "pred_seg": refined_labels[0].cpu(), "pred_disparity": output.disparity[0, 0].cpu()}
    network.train(was_training)

    names = sorted(term_sums)
    # Every rank must reduce the same keys: the loss terms are the same on all of them because
    # they come from one loss config.
    sums = torch.tensor([term_sums[n] for n in names] + [float(count)], dtype=torch.float64)
    all_reduce_sum(sums, context)
    all_reduce_sum(refined.confusion, context)
    all_reduce_sum(coarse.confusion, context)
    all_reduce_sum(disparity_metrics.sums, context)
    total_count = sums[-1].item()
    metrics: dict[str, Any] = {}
    for index, name in enumerate(names):
        key = "loss" if name == "total" else f"loss_{name}"
        metrics[key] = sums[index].item() / total_count if total_count else math.nan
    refined_scores, coarse_scores = refined.compute(), coarse.compute()
    for prefix, scores in (("refined", refined_scores), ("coarse", coarse_scores)):
        metrics[f"{prefix}_miou"] = scores["miou"]
        metrics[f"{prefix}_pixel_accuracy"] = scores["pixel_accuracy"]
    metrics["refined_iou_per_class"] = refined_scores["iou_per_class"]
    for name, value in disparity_metrics.compute().items():
        if name != "num_pixels":
            metrics[name] = value
    metrics["num_samples"] = int(total_count)
    return metrics, first
