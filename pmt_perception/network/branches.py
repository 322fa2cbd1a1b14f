"""The three PMT branches (paper §3.3-3.5, Tables A.11-A.13), in the published wiring.

Each branch ends in a "head": an L conv (5x5, dilation 2, on the left image) concatenated
with the branch features, a 1x1 reducer, an hourglass and the prediction conv. As published
the heads run at full resolution; `*_head_scale` in the config moves them to H/s and an
`Upsampler` brings the prediction back (the fast variant).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .blocks import (ConvBNReLU, Hourglass, PointwiseReLU, Upsampler, correlation_1d, resize)


def hourglass_builder(config: ModelConfig):
    """Hourglass(in, out) with the variant's stride and conv type."""
    def build(in_channels: int, out_channels: int, **kwargs) -> Hourglass:
        return Hourglass(in_channels, out_channels, stride=config.hourglass_stride,
                         separable=config.separable, **kwargs)
    return build


def head_size(image: torch.Tensor, scale: int) -> tuple[int, int]:
    h, w = image.shape[-2:]
    # Ceil, so upsampling covers the image. Written with positive operands only: ONNX
    # exports integer division as truncation, which is not floor for negative numbers.
    return ((h + scale - 1) // scale, (w + scale - 1) // scale)


class Head(nn.Module):
    """L conv + 1x1 reducer + hourglass + k x k prediction conv, then upsampling to H x W."""

    def __init__(self, in_channels: int, width: int, out_channels: int, *, kernel_size: int,
                 scale: int, upsample: str, config: ModelConfig) -> None:
        super().__init__()
        self.scale = scale
        self.l_conv = ConvBNReLU(3, 1, kernel_size=5, dilation=2)
        self.reduce = PointwiseReLU(in_channels + 1, width)
        self.hourglass = Hourglass(width, width, kernel_size=kernel_size,
                                   stride=config.hourglass_stride, final_layer=False,
                                   separable=config.separable)
        self.predict = nn.Conv2d(width, out_channels, kernel_size, padding=kernel_size // 2)
        self.upsample = Upsampler(upsample, feature_channels=width, scale=scale)

    def forward(self, features: torch.Tensor, left: torch.Tensor, *, mode: str) -> torch.Tensor:
        size = head_size(left, self.scale)
        l_conv = self.l_conv(left)
        if self.scale > 1:  # fixed-kernel pooling (not adaptive): exports with dynamic H, W
            l_conv = F.avg_pool2d(l_conv, self.scale, self.scale, ceil_mode=True)
        x = self.reduce(torch.cat([resize(features, size, mode), l_conv], 1))
        x = self.hourglass(x)
        return self.upsample(self.predict(x), x, left.shape[-2:])


class CoarseSegmentationBranch(nn.Module):
    """cat(F4_L, F4_R) -> x2 -> 1x1 -> hourglass = Fseg (H/16) -> head -> coarse logits."""

    def __init__(self, f4_channels: int, *, config: ModelConfig) -> None:
        super().__init__()
        w, hourglass = config.width, hourglass_builder(config)
        self.reduce = PointwiseReLU(2 * f4_channels, w(64))
        self.hourglass = hourglass(w(64), w(32))
        self.head = Head(w(32), w(32), config.num_classes, kernel_size=3,
                         scale=config.coarse_head_scale,
                         upsample=config.segmentation_upsample_mode, config=config)

    def forward(self, f4_left: torch.Tensor, f4_right: torch.Tensor,
                left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = f4_left.shape[-2:]
        x = resize(torch.cat([f4_left, f4_right], 1), (2 * h, 2 * w), "nearest")
        f_seg = self.hourglass(self.reduce(x))
        return self.head(f_seg, left, mode="nearest"), f_seg


class DisparityBranch(nn.Module):
    """corr(SPP(F2_L), SPP(F2_R)) -> 1x1, cat hourglass(Fseg) -> hourglass = Fdisp (H/8)
    -> head -> disparity in pixels (linear, no clamp)."""

    def __init__(self, f2_spp_channels: int, *, config: ModelConfig) -> None:
        super().__init__()
        self.max_shift = config.corr_max_shift
        self.fseg_to_disparity = config.fseg_to_disparity
        w, hourglass = config.width, hourglass_builder(config)
        self.reduce_corr = PointwiseReLU(2 * self.max_shift + 1, config.corr_channels)
        # Table 8 ablation: without Fseg the left SPP features take its place (authors' no_dec1).
        context_in = w(32) if self.fseg_to_disparity else f2_spp_channels
        self.context = hourglass(context_in, w(128))
        self.fuse = hourglass(w(128) + config.corr_channels, w(64))
        self.scale = config.disparity_head_scale
        self.head = Head(w(64), w(64), 1, kernel_size=5, scale=self.scale,
                         upsample=config.upsample, config=config)

    def forward(self, f2_left: torch.Tensor, f2_right: torch.Tensor, f_seg: torch.Tensor,
                left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        corr = self.reduce_corr(correlation_1d(f2_left, f2_right, self.max_shift))
        size = corr.shape[-2:]
        context = resize(f_seg, size, "nearest") if self.fseg_to_disparity else f2_left
        context = resize(self.context(context), size, "bilinear")
        f_disp = self.fuse(torch.cat([context, corr], 1))
        # The head predicts in head-resolution pixels; disparity scales with resolution.
        disparity = self.head(f_disp, left, mode="nearest") * self.scale
        return disparity, f_disp, None   # regression: no distribution over candidates


class RefinedSegmentationBranch(nn.Module):
    """cat(SPP(F1_L), SPP(F1_R)) -> 1x1 -> hourglass = s (H/4); s mixed with Fdisp and with
    Fseg in two sub-branches whose sigmoid attention maps are crossed; hourglass; head."""

    def __init__(self, f1_spp_channels: int, *, f_disp_channels: int, config: ModelConfig) -> None:
        super().__init__()
        w, hourglass = config.width, hourglass_builder(config)
        self.use_task_features = config.fseg_fdisp_to_refined
        # 4 as published; 8 pools F1' first so every hourglass below runs at H/8 or lower.
        self.input_pool = config.refined_branch_scale // 4
        self.reduce = PointwiseReLU(2 * f1_spp_channels, w(128))
        self.hourglass = hourglass(w(128), w(64))
        if self.use_task_features:
            self.seg_context = hourglass(w(32), w(64))
            self.with_disp = hourglass(w(64) + f_disp_channels, w(64))
            self.with_seg = hourglass(w(128), w(64))
            self.disp_attention = nn.Sequential(nn.Conv2d(w(64), 1, 1), nn.Sigmoid())
            self.seg_attention = nn.Sequential(nn.Conv2d(w(64), 1, 1), nn.Sigmoid())
        self.fuse = hourglass(w(128) if self.use_task_features else w(64), w(64))
        self.head = Head(w(64), w(32), config.num_classes, kernel_size=3,
                         scale=config.refined_head_scale,
                         upsample=config.segmentation_upsample_mode, config=config)

    def forward(self, f1_left: torch.Tensor, f1_right: torch.Tensor, f_seg: torch.Tensor,
                f_disp: torch.Tensor, left: torch.Tensor
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        s = torch.cat([f1_left, f1_right], 1)
        if self.input_pool > 1:
            s = F.avg_pool2d(s, self.input_pool, self.input_pool, ceil_mode=True)
        s = self.hourglass(self.reduce(s))
        attention = None
        if self.use_task_features:
            size = s.shape[-2:]
            # Fseg enters at H/8 (as published: nearest x2 of the H/16 map) before its hourglass.
            f_seg_h8 = resize(f_seg, f_disp.shape[-2:], "nearest")
            s_d = self.with_disp(torch.cat([s, resize(f_disp, size, "nearest")], 1))
            s_s = self.with_seg(torch.cat([s, resize(self.seg_context(f_seg_h8), size, "nearest")], 1))
            att_d, att_s = self.disp_attention(s_d), self.seg_attention(s_s)
            # Crossed: disparity features weighted by segmentation attention and vice versa.
            s = torch.cat([s_d * att_s, s_s * att_d], 1)
            attention = (att_s, att_d)
        s = self.fuse(s)
        return self.head(s, left, mode="nearest"), attention
