"""Self-supervised stereo losses: what adapts a disparity network to a camera without labels.

All functions take batched tensors, images B x 3 x H x W in [0, 1] and disparities B x 1 x H x W
in pixels of the same resolution, left-referenced (a left pixel x matches right pixel x - d).

    warp_right_to_left      the right image sampled at x - d (bilinear) + where that is inside
    ssim                    3x3 SSIM map as in Monodepth (reflection padding, mean pooling)
    photometric_error       0.85 * (1 - SSIM) / 2 + 0.15 * L1, per pixel
    photometric_loss        its mean over valid (inside, non-occluded) pixels
    right_disparity         the right view's disparity from a left-referenced network: run it on
                            the mirrored, swapped pair (flip(right), flip(left)), flip back
    left_right_consistency  occlusion / mismatch mask from left and right disparities
    edge_aware_smoothness   disparity gradients, down-weighted at image edges
    distillation_loss       KL(teacher || student) of segmentation logits, per pixel
    sgbm_proxy              OpenCV SGBM's confident pixels (uniqueness + left-right check)
    proxy_l1_loss           sparse L1 against them
    proxy_holes             SGBM's holes filled as the KITTI devkit does (row-wise background)
    proxy_distribution_loss cross-entropy of a cost volume's candidates against them

No ROS, no files: pmt_perception/adapt.py composes them (offline `pmt-adapt` in adapt_cli.py,
online in the node).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .baselines import SGBM_PRESETS, SGBMBaseline, SGBMSettings, fill_holes_like_kitti
from .losses import disparity_distribution_loss

# Monodepth's SSIM constants for images in [0, 1]: (0.01 * L)^2, (0.03 * L)^2 with L = 1.
SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2
SSIM_WEIGHT = 0.85


def _check_pair(image: torch.Tensor, disparity: torch.Tensor, what: str) -> None:
    if image.dim() != 4 or disparity.dim() != 4 or disparity.shape[1] != 1:
        raise ValueError(f"{what}: expected images B x C x H x W and disparity B x 1 x H x W, got "
                         f"{tuple(image.shape)} and {tuple(disparity.shape)}")
    if image.shape[0] != disparity.shape[0] or image.shape[-2:] != disparity.shape[-2:]:
        raise ValueError(f"{what}: image {tuple(image.shape)} and disparity "
                         f"{tuple(disparity.shape)} differ in batch or size")


def warp_right_to_left(right: torch.Tensor, disparity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(right sampled at (x - d, y), bilinear; valid mask B x 1 x H x W, True where x - d lies in
    [0, W - 1]). Outside the image the border value is sampled (and masked by `valid`); the
    gradient reaches `disparity` through the sampling position."""
    _check_pair(right, disparity, "warp_right_to_left")
    batch, _, height, width = right.shape
    xs = torch.arange(width, device=right.device, dtype=disparity.dtype).view(1, 1, 1, width)
    ys = torch.arange(height, device=right.device, dtype=disparity.dtype).view(1, 1, height, 1)
    source_x = xs - disparity                                             # B x 1 x H x W
    grid_x = 2.0 * source_x / max(width - 1, 1) - 1.0
    grid_y = (2.0 * ys / max(height - 1, 1) - 1.0).expand_as(grid_x)
    grid = torch.cat([grid_x, grid_y], 1).permute(0, 2, 3, 1)             # B x H x W x 2
    warped = F.grid_sample(right, grid.to(right.dtype), mode="bilinear", padding_mode="border",
                           align_corners=True)
    valid = (source_x >= 0) & (source_x <= width - 1) & torch.isfinite(disparity)
    return warped, valid


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM over 3x3 windows (reflection-padded, so the map has the input's size),
    per channel, as Monodepth computes it. 1 = identical neighbourhoods."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim: expected two B x C x H x W tensors of one shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return numerator / denominator


def photometric_error(target: torch.Tensor, reconstruction: torch.Tensor, *,
                      alpha: float = SSIM_WEIGHT) -> torch.Tensor:
    """B x 1 x H x W: alpha * (1 - SSIM) / 2 (clamped to [0, 1]) + (1 - alpha) * |L1|, each
    averaged over the colour channels."""
    dissimilarity = ((1.0 - ssim(target, reconstruction)) / 2.0).clamp(0.0, 1.0)
    l1 = (target - reconstruction).abs()
    return (alpha * dissimilarity + (1.0 - alpha) * l1).mean(1, keepdim=True)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` (broadcast) is true; 0 (still in the graph) where none is."""
    mask = mask.to(values.dtype).expand_as(values)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def photometric_loss(left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor, *,
                     mask: Optional[torch.Tensor] = None, alpha: float = SSIM_WEIGHT) -> torch.Tensor:
    """Mean photometric error of the left image against the right one warped by `disparity`,
    over pixels whose x - d is inside the image (and where `mask`, e.g. non-occluded, holds)."""
    warped, valid = warp_right_to_left(right, disparity)
    if mask is not None:
        valid = valid & mask.bool()
    return masked_mean(photometric_error(left, warped, alpha=alpha), valid)


def right_disparity(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The right view's disparity (right pixel x matches left pixel x + d) from a network that
    predicts left-referenced disparity: mirrored, the right image becomes a left image whose
    match lies to its right, i.e. a valid left-referenced pair (flip(right), flip(left)).
    `forward(left, right)` returns the disparity B x 1 x H x W."""
    mirrored = forward(torch.flip(right, dims=[-1]), torch.flip(left, dims=[-1]))
    return torch.flip(mirrored, dims=[-1])


def left_right_consistency(disparity_left: torch.Tensor, disparity_right: torch.Tensor, *,
                           threshold: float = 1.0, relative: float = 0.0) -> torch.Tensor:
    """Boolean B x 1 x H x W: True where the left disparity agrees with the right disparity at
    its match, |d_L(x) - d_R(x - d_L(x))| <= threshold + relative * d_L, and the match is inside
    the image. False marks occlusions and mismatches."""
    warped, valid = warp_right_to_left(disparity_right, disparity_left)
    limit = threshold + relative * disparity_left.abs()
    return valid & ((disparity_left - warped).abs() <= limit)


def edge_aware_smoothness(disparity: torch.Tensor, image: torch.Tensor, *,
                          normalize: bool = True) -> torch.Tensor:
    """mean |dx d| exp(-|dx I|) + mean |dy d| exp(-|dy I|) (image gradients averaged over the
    channels). `normalize` divides d by its per-image mean first (Monodepth2), so the term does
    not simply push the disparity scale down."""
    _check_pair(image, disparity, "edge_aware_smoothness")
    if normalize:
        disparity = disparity / (disparity.mean((2, 3), keepdim=True).abs() + 1e-7)
    grad_d_x = (disparity[..., :, :-1] - disparity[..., :, 1:]).abs()
    grad_d_y = (disparity[..., :-1, :] - disparity[..., 1:, :]).abs()
    grad_i_x = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)
    grad_i_y = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
    return (grad_d_x * torch.exp(-grad_i_x)).mean() + (grad_d_y * torch.exp(-grad_i_y)).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per pixel, averaged over pixels: 0 when the student predicts the
    teacher's distribution. Teacher probabilities B x C x H x W (softmax of the frozen model)."""
    if student_logits.shape != teacher_probabilities.shape:
        raise ValueError(f"distillation_loss: student {tuple(student_logits.shape)} and teacher "
                         f"{tuple(teacher_probabilities.shape)} differ")
    teacher = teacher_probabilities.float()
    log_student = F.log_softmax(student_logits.float(), dim=1)
    log_teacher = torch.log(teacher.clamp_min(1e-12))
    return (teacher * (log_teacher - log_student)).sum(1).mean()


def sgbm_settings(preset: str = "3way", *, num_disparities: Optional[int] = None,
                  uniqueness_ratio: Optional[int] = None,
                  disp12_max_diff: Optional[int] = None) -> SGBMSettings:
    """An SGBM preset of pmt_perception.baselines with its search range / checks overridden.
    The proxy labels need the left-right check on (disp12_max_diff >= 0)."""
    if preset not in SGBM_PRESETS:
        raise ValueError(f"unknown SGBM preset {preset!r}; known: {sorted(SGBM_PRESETS)}")
    changes = {k: v for k, v in (("num_disparities", num_disparities),
                                 ("uniqueness_ratio", uniqueness_ratio),
                                 ("disp12_max_diff", disp12_max_diff)) if v is not None}
    settings = dataclasses.replace(SGBM_PRESETS[preset], **changes)
    if settings.disp12_max_diff < 0:
        raise ValueError("SGBM proxy labels need the left-right check: disp12_max_diff >= 0")
    return settings


def sgbm_proxy(left: np.ndarray, right: np.ndarray, settings: SGBMSettings | str = "3way") -> np.ndarray:
    """H x W float32 disparities SGBM keeps after its uniqueness test, left-right check and
    speckle filter; NaN everywhere else (no hole filling: these are sparse labels). The search
    range shrinks (multiples of 16) for images too narrow for it; none fits: all NaN."""
    if isinstance(settings, str):
        settings = sgbm_settings(settings)
    width = np.asarray(left).shape[1] if not isinstance(left, torch.Tensor) else left.shape[-1]
    fits = (width - settings.block_size) // 16 * 16
    if fits < 16:
        return np.full(np.asarray(left).shape[:2], np.nan, np.float32)
    if settings.num_disparities > fits:
        settings = dataclasses.replace(settings, num_disparities=fits)
    return SGBMBaseline(settings).predict(left, right).raw_disparity


def proxy_holes(proxy: np.ndarray) -> np.ndarray:
    """Labels for the pixels SGBM left empty (NaN in `proxy`): each takes the smaller of its
    row's nearest labels to the left and right, the background, as the KITTI devkit fills
    holes. Most holes are occlusions beside a foreground edge, where the background is right
    and where neither the photometric loss (masked) nor the proxy says anything. NaN where
    the proxy has a label or the row has none."""
    filled = fill_holes_like_kitti(proxy)
    return np.where(np.isfinite(proxy) | (filled <= 0), np.nan, filled).astype(np.float32)


def proxy_l1_loss(disparity: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
    """Mean |d - proxy| over pixels where the proxy is finite and > 0 (B x 1 x H x W each)."""
    if disparity.shape != proxy.shape:
        raise ValueError(f"proxy_l1_loss: disparity {tuple(disparity.shape)} and proxy "
                         f"{tuple(proxy.shape)} differ")
    valid = torch.isfinite(proxy) & (proxy > 0)
    target = torch.where(valid, proxy, torch.zeros_like(proxy))
    return masked_mean((disparity - target).abs(), valid)


def proxy_distribution_loss(probability: torch.Tensor, proxy: torch.Tensor, scale: int) -> torch.Tensor:
    """Cross-entropy of the cost volume's candidate probabilities (B x D x h x w) against the
    proxy labels (B x 1 x H x W, NaN where SGBM kept nothing), as the training's
    disparity_distribution term: L1 on the soft-argmin moves a pixel's mean, this moves its
    whole distribution onto the proxy's candidate. `scale`: the volume's stride (h = H_in /
    scale). The proxy may be smaller than H_in x W_in (the network's input was padded): what
    lies past it counts as unlabelled."""
    (h, w), (height, width) = probability.shape[-2:], proxy.shape[-2:]
    pad = (0, w * scale - width, 0, h * scale - height)
    padded = F.pad(proxy.float(), pad, value=float("nan")) if any(pad) else proxy.float()
    return disparity_distribution_loss(probability, padded.squeeze(1))
