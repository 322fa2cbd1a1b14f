"""Training losses of PMT: cross-entropy + Lovasz-softmax for segmentation, masked L1 for
disparity.

The paper's total loss (DESIGN.md §3) is

    L = w_l1 * L1(disparity) + w_ce * CE(coarse) + w_ce_ref * CE(refined) + w_lov * Lovasz(refined)

with every weight 1 in config/loss/paper.yaml. `uncertainty_weighting: true` replaces the fixed
weights by Kendall et al.'s (2018) learned homoscedastic-uncertainty weights.

Targets follow the dataset contract: `seg` (B, H, W) int64 with `ignore_index`
(labels.IGNORE_LABEL) where no label exists, `disparity` (B, H, W) float32 pixels with 0 (or a
non-finite value) where no ground truth exists. Every loss here averages over valid pixels only
and is 0 - never NaN - when there are none, so a crop that happens to hold no labels does not
poison a training step.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pmt_perception.config import LossConfig

TASK_GROUPS = ("disparity", "coarse", "refined")


def _zero_with_grad(reference: torch.Tensor) -> torch.Tensor:
    """A 0 that is still attached to `reference`'s graph, so backward() works on an empty batch."""
    return reference.sum() * 0.0


def _check_logits_and_labels(logits: torch.Tensor, target: torch.Tensor, *, what: str) -> None:
    if logits.dim() != 4:
        raise ValueError(f"{what}: expected (B, C, H, W) scores, got shape {tuple(logits.shape)}")
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"{what}: labels of shape {tuple(target.shape)} do not match scores of "
                         f"shape {tuple(logits.shape)}; expected (B, H, W) = "
                         f"{(logits.shape[0], *logits.shape[2:])}")
    if target.dtype.is_floating_point:
        raise ValueError(f"{what}: labels must be an integer tensor, got {target.dtype}")


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int,
                  class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean pixel-wise cross-entropy over pixels whose label is not `ignore_index`.

    Unlike `F.cross_entropy(reduction="mean")`, which divides 0 by 0 when every pixel is ignored,
    this returns 0 in that case. With `class_weights` (C,), each pixel counts with its class's
    weight, and the sum is divided by the valid pixels' summed weights (a weighted mean).
    """
    _check_logits_and_labels(logits, target, what="cross_entropy")
    if class_weights is not None and class_weights.shape != (logits.shape[1],):
        raise ValueError(f"cross_entropy: {class_weights.numel()} class weights for "
                         f"{logits.shape[1]} classes")
    # float32: a "sum" reduction over a whole batch of pixels in fp16/bf16 loses most digits.
    summed = F.cross_entropy(logits.float(), target, weight=class_weights,
                             ignore_index=ignore_index, reduction="sum")
    valid = target != ignore_index
    if class_weights is None:
        return summed / valid.sum().clamp(min=1)
    return summed / class_weights[target[valid]].sum().clamp(min=1e-6)


def lovasz_grad(foreground_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss (Berman et al. 2018, Alg. 1).

    `foreground_sorted` (N, K) holds 0/1 ground truth of K classes with each column's pixels sorted
    by decreasing error. Row i of the result is Delta_J({1..i}) - Delta_J({1..i-1}), where
    Delta_J(M) = 1 - |gt \\ M| / |gt u M| is the Jaccard loss of mispredicting the first i pixels.
    """
    positives = foreground_sorted.sum(dim=0, keepdim=True)
    intersection = positives - foreground_sorted.cumsum(dim=0)
    union = positives + (1.0 - foreground_sorted).cumsum(dim=0)
    # union >= 1 from the first row on: either the pixel is foreground (positives >= 1) or it is
    # a false positive (the cumsum of 1 - fg >= 1), so the division is always defined.
    jaccard = 1.0 - intersection / union
    grad = jaccard.clone()
    grad[1:] = jaccard[1:] - jaccard[:-1]
    return grad


def _lovasz_flat(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax of (N, C) probabilities against (N,) valid labels, over present classes."""
    num_classes = probabilities.shape[1]
    foreground = F.one_hot(labels, num_classes).to(probabilities.dtype)
    errors = (foreground - probabilities).abs()
    # All classes at once: sort each column, the permutation is a constant for autograd.
    errors_sorted, order = torch.sort(errors, dim=0, descending=True)
    foreground_sorted = torch.gather(foreground, 0, order)
    per_class = (errors_sorted * lovasz_grad(foreground_sorted)).sum(dim=0)
    present = foreground.sum(dim=0) > 0
    return per_class[present].mean()


def lovasz_softmax(probabilities: torch.Tensor, target: torch.Tensor, *, ignore_index: int,
                   per_image: bool = False) -> torch.Tensor:
    """Lovasz-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018) of softmax probabilities.

    `probabilities` (B, C, H, W) must already be a softmax over C (call `logits.softmax(1)`).
    Classes: only those present in the ground truth ("present" in the reference code).
    Pooling: by default ONE loss over all valid pixels of the whole batch, which is the
    standard for training (per_image=False in the reference code); `per_image=True` averages the
    loss of each image that has at least one valid pixel instead. Returns 0 with a gradient path
    when no pixel is valid.
    """
    _check_logits_and_labels(probabilities, target, what="lovasz_softmax")
    num_classes = probabilities.shape[1]
    # (B, C, H, W) -> (B, H*W, C) so each image's pixels are rows.
    flat = probabilities.flatten(2).transpose(1, 2)
    labels = target.flatten(1)
    valid = labels != ignore_index
    out_of_range = valid & ((labels < 0) | (labels >= num_classes))
    if bool(out_of_range.any()):
        raise ValueError(f"lovasz_softmax: label(s) {labels[out_of_range].unique().tolist()} are "
                         f"neither in [0, {num_classes}) nor the ignore index {ignore_index}")
    if per_image:
        losses = [_lovasz_flat(flat[b][valid[b]], labels[b][valid[b]])
                  for b in range(flat.shape[0]) if bool(valid[b].any())]
        return torch.stack(losses).mean() if losses else _zero_with_grad(probabilities)
    if not bool(valid.any()):
        return _zero_with_grad(probabilities)
    return _lovasz_flat(flat[valid], labels[valid])


def masked_l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |prediction - target| over pixels with valid ground truth (target > 0 and finite).

    `prediction` is (B, 1, H, W) or (B, H, W), `target` (B, H, W). Returns 0 with a gradient path
    when no pixel is valid (sparse SGM ground truth, e.g. Cityscapes, can leave a crop empty).
    """
    if prediction.dim() == target.dim() + 1 and prediction.shape[1] == 1:
        prediction = prediction.squeeze(1)
    if prediction.shape != target.shape:
        raise ValueError(f"masked_l1: prediction of shape {tuple(prediction.shape)} does not "
                         f"match ground truth of shape {tuple(target.shape)}")
    valid = torch.isfinite(target) & (target > 0)
    # Zero the invalid targets BEFORE subtracting: inf/NaN ground truth would otherwise put NaN
    # into the gradient even though the pixel is masked out of the sum.
    clean_target = torch.where(valid, target, torch.zeros_like(target))
    absolute_error = (prediction - clean_target).abs() * valid
    return absolute_error.sum() / valid.sum().clamp(min=1)


def downsample_disparity(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) ground truth -> (B, h, w) in pixels of the h x w grid (h = ceil(H / s)): the
    mean of each s x s block's valid pixels divided by s; 0 where under half the block is
    valid. Blocks past the image edge count their missing pixels as invalid."""
    b, height, width = target.shape
    scale = -(-height // size[0])
    valid = (torch.isfinite(target) & (target > 0)).float()
    clean = torch.where(valid > 0, target, torch.zeros_like(target))
    pad = (0, size[1] * scale - width, 0, size[0] * scale - height)
    total = F.avg_pool2d(F.pad(clean, pad).unsqueeze(1), scale).squeeze(1)
    share = F.avg_pool2d(F.pad(valid, pad).unsqueeze(1), scale).squeeze(1)
    mean = total / share.clamp(min=1e-6)
    return torch.where(share >= 0.5, mean / scale, torch.zeros_like(mean))


def disparity_distribution_loss(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of candidate probabilities (B, D, h, w) against the ground truth (B, H, W),
    as a two-bin soft target: disparity 4.3 candidates puts 0.7 on candidate 4 and 0.3 on 5, so
    the expectation of the target is the true disparity. Pixels without ground truth, or beyond
    the last candidate, are left out."""
    candidates = probability.shape[1]
    low_res = downsample_disparity(target.float(), tuple(probability.shape[-2:]))
    valid = (low_res > 0) & (low_res <= candidates - 1)
    clamped = low_res.clamp(0, candidates - 1 - 1e-4)
    lower = clamped.floor().long()
    upper_weight = (clamped - lower.float()).unsqueeze(1)
    soft = torch.zeros_like(probability, dtype=torch.float32)
    soft.scatter_(1, lower.unsqueeze(1), 1 - upper_weight)
    soft.scatter_add_(1, (lower + 1).unsqueeze(1), upper_weight)
    log_probability = probability.float().clamp(min=1e-8).log()
    per_pixel = -(soft * log_probability).sum(1)
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


class PMTLossOutput(NamedTuple):
    total: torch.Tensor              # scalar, differentiable
    terms: dict[str, torch.Tensor]   # detached scalars for logging


def _unpack_prediction(prediction: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    names = ("coarse_logits", "disparity", "refined_logits")
    if all(hasattr(prediction, name) for name in names):
        return tuple(getattr(prediction, name) for name in names)
    if isinstance(prediction, (tuple, list)) and len(prediction) >= 3:
        return tuple(prediction[:3])
    raise ValueError("PMTLoss: prediction must have attributes coarse_logits, disparity and "
                     "refined_logits (a PMTOutput) or be a 3-tuple of them, got "
                     f"{type(prediction)}")


class PMTLoss(nn.Module):
    """The paper's sum of branch losses, optionally with Kendall uncertainty weighting.

    forward(prediction, seg=..., disparity=...) -> PMTLossOutput(total, terms), where
    `prediction` is a PMTOutput or any object with attributes `coarse_logits` (B, C, H, W),
    `disparity` (B, 1, H, W) and `refined_logits` (B, C, H, W). Terms whose weight is 0 are not
    computed (Lovasz sorts every pixel of every class) and are absent from `terms`.

    Fixed weights (uncertainty_weighting: false):
        total = w_l1*L1 + w_ce*CE(coarse) + w_ce_ref*CE(refined) + w_lov*Lovasz(refined)

    Uncertainty weighting (uncertainty_weighting: true), Kendall, Gal, Cipolla, CVPR 2018, with
    one learned log-variance s = log(sigma^2) per task group, each starting at 0:
        disparity (regression):      0.5 * exp(-s_d) * w_l1 * L1                       + 0.5*s_d
        coarse seg (classification):       exp(-s_c) * w_ce * CE(coarse)               + 0.5*s_c
        refined seg (classification):      exp(-s_r) * (w_ce_ref*CE + w_lov*Lovasz)    + 0.5*s_r
    The config weights stay as fixed factors inside each group (so 0 still switches a term off);
    a group whose weights are all 0 leaves its s out of the sum (0.5*s alone would run to -inf).
    Under DDP the log-variances are not inside the wrapped network: all-reduce their gradients
    (or wrap network and loss together), or each rank learns different weights.
    THE OPTIMIZER MUST INCLUDE THIS MODULE'S PARAMETERS (`loss.parameters()`, the
    `log_variances` ParameterDict) next to the network's, or the weights never learn; they belong
    in checkpoints too (`loss.state_dict()`). Move the module to the network's device.
    """

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        weights = {"disparity_l1": config.disparity_l1, "coarse_ce": config.coarse_ce,
                   "refined_ce": config.refined_ce, "refined_lovasz": config.refined_lovasz,
                   "disparity_distribution": config.disparity_distribution}
        negative = {name: w for name, w in weights.items() if w < 0}
        if negative:
            raise ValueError(f"PMTLoss: loss weights must be >= 0, got {negative}")
        if not any(w > 0 for w in weights.values()):
            raise ValueError("PMTLoss: every loss weight is 0, nothing would be trained")
        self.config = config
        self.weights = weights
        weights_per_class = (torch.tensor(config.class_weights, dtype=torch.float32)
                             if config.class_weights is not None else None)
        # A buffer, so `.to(device)` moves it with the module; not saved (the config has it).
        self.register_buffer("class_weights", weights_per_class, persistent=False)
        self.log_variances = nn.ParameterDict(
            {group: nn.Parameter(torch.zeros(())) for group in TASK_GROUPS}
            if config.uncertainty_weighting else {})

    def forward(self, prediction: Any, *, seg: torch.Tensor,
                disparity: torch.Tensor) -> PMTLossOutput:
        coarse_logits, predicted_disparity, refined_logits = _unpack_prediction(prediction)
        ignore = self.config.ignore_index
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if w["disparity_l1"] > 0:
            terms["disparity_l1"] = masked_l1(predicted_disparity, disparity)
        probability = getattr(prediction, "disparity_probability", None)
        if w["disparity_distribution"] > 0 and probability is not None:
            terms["disparity_distribution"] = disparity_distribution_loss(probability, disparity)
        if w["coarse_ce"] > 0:
            terms["coarse_ce"] = cross_entropy(coarse_logits, seg, ignore_index=ignore,
                                               class_weights=self.class_weights)
        if w["refined_ce"] > 0:
            terms["refined_ce"] = cross_entropy(refined_logits, seg, ignore_index=ignore,
                                                class_weights=self.class_weights)
        if w["refined_lovasz"] > 0:
            # float32 softmax: fp16 probabilities lose the small errors Lovasz sorts.
            probabilities = refined_logits.float().softmax(dim=1)
            terms["refined_lovasz"] = lovasz_softmax(probabilities, seg, ignore_index=ignore)

        weighted = {name: w[name] * value for name, value in terms.items()}
        if self.config.uncertainty_weighting:
            total, extra_logs = self._uncertainty_weighted(weighted)
        else:
            total, extra_logs = sum(weighted.values()), {}
        logs = {name: value.detach() for name, value in terms.items()}
        logs.update(extra_logs)
        logs["total"] = total.detach()
        return PMTLossOutput(total=total, terms=logs)

    def _uncertainty_weighted(self, weighted: dict[str, torch.Tensor]
                              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        groups = {
            "disparity": [weighted[n] for n in ("disparity_l1", "disparity_distribution")
                          if n in weighted],
            "coarse": [weighted[n] for n in ("coarse_ce",) if n in weighted],
            "refined": [weighted[n] for n in ("refined_ce", "refined_lovasz") if n in weighted],
        }
        # Regression's Gaussian likelihood gives 1/(2 sigma^2); a softmax with temperature
        # sigma^2 gives 1/sigma^2 for classification. Both add log(sigma) = 0.5 * s.
        scale = {"disparity": 0.5, "coarse": 1.0, "refined": 1.0}
        parts, logs = [], {}
        for group, losses in groups.items():
            if not losses:
                continue
            s = self.log_variances[group]
            parts.append(scale[group] * torch.exp(-s) * sum(losses) + 0.5 * s)
            logs[f"log_variance_{group}"] = s.detach()
        return sum(parts), logs
