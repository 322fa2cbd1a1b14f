"""The three PMT branches (paper §3.3-3.5, Tables A.11-A.13), in the published wiring.

Each branch ends in a "head": an L conv (5x5, dilation 2, on the left image) concatenated
with the branch features, a 1x1 reducer, an hourglass and the prediction conv. As published
the heads run at full resolution; `head_scale` moves them to H/s and an `Upsampler` brings
the prediction back (the fast variant).

Comments in the `forward`s name the Appendix A table row each line implements; where the code
differs from the tables, docs/architecture.md says how and why. Widths come in as keyword
arguments (`build_model` scales the tables' widths); no branch reads the ModelConfig.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Hourglass, LConv, PointwiseReLU, Upsampler, correlation_1d, resize


def head_size(image: torch.Tensor, scale: int) -> tuple[int, int]:
    h, w = image.shape[-2:]
    # Ceil, so upsampling covers the image. Written with positive operands only: ONNX
    # exports integer division as truncation, which is not floor for negative numbers.
    return ((h + scale - 1) // scale, (w + scale - 1) // scale)


class Head(nn.Module):
    """L conv + 1x1 reducer + hourglass + k x k prediction conv, then upsampling to H x W.

    The last rows of each branch table; in the comments below "a / b / c" names the row of
    Table A.11 (coarse) / A.12 (disparity) / A.13 (refined segmentation).
    """

    def __init__(self, in_channels: int, width: int, out_channels: int, *, kernel_size: int,
                 scale: int, upsample: str, hourglass_stride: int, separable: bool,
                 guide_on_pooled_image: bool = False, convex_scale: int | None = None) -> None:
        super().__init__()
        self.scale = scale
        self.l_conv = LConv(on_pooled_image=guide_on_pooled_image)
        self.reduce = PointwiseReLU(in_channels + 1, width)
        self.hourglass = Hourglass(width, width, kernel_size=kernel_size, stride=hourglass_stride,
                                   final_layer=False, separable=separable)
        self.predict = nn.Conv2d(width, out_channels, kernel_size, padding=kernel_size // 2)
        self.upsample = Upsampler(upsample, feature_channels=width, scale=scale,
                                  convex_scale=convex_scale)

    def forward(self, features: torch.Tensor, left: torch.Tensor, *, mode: str) -> torch.Tensor:
        size = head_size(left, self.scale)
        l_conv = self.l_conv(left, self.scale)        # L conv 0 / 1 / 2: conv2D(5x5, 1) of Left
        # convdec 0 / 3 / (resized attention products): resize to L conv dim; cat 1 / 4 / 8
        x = torch.cat([resize(features, size, mode), l_conv], 1)
        x = self.reduce(x)                            # conv1d 1 / 3 / -: conv1D(1x1, width)
        x = self.hourglass(x)                         # convdec 1 / 4 / 6: hourglass(k x k, width)
        prediction = self.predict(x)                  # conv2d 0 / deconv2d 0 / conv2d 1
        return self.upsample(prediction, x, left.shape[-2:])   # resize to Left dim


class CoarseSegmentationBranch(nn.Module):
    """Table A.11: cat(F4_L, F4_R) -> x2 -> 1x1 -> hourglass = Fseg (H/16) -> head -> coarse
    logits."""

    def __init__(self, f4_channels: int, *, reduced_channels: int, f_seg_channels: int,
                 num_classes: int, head_scale: int, upsample: str, hourglass_stride: int,
                 separable: bool, views: int = 2, guide_on_pooled_image: bool = False) -> None:
        super().__init__()
        self.reduce = PointwiseReLU(views * f4_channels, reduced_channels)
        self.hourglass = Hourglass(reduced_channels, f_seg_channels, stride=hourglass_stride,
                                   separable=separable)
        self.head = Head(f_seg_channels, f_seg_channels, num_classes, kernel_size=3,
                         scale=head_scale, upsample=upsample,
                         hourglass_stride=hourglass_stride, separable=separable,
                         guide_on_pooled_image=guide_on_pooled_image)

    def forward(self, f4_left: torch.Tensor, f4_right: torch.Tensor | None,
                left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`f4_right` None: the left view's F4 only (the `coarse_views: 1` configs)."""
        h, w = f4_left.shape[-2:]
        x = f4_left if f4_right is None else torch.cat([f4_left, f4_right], 1)  # cat 0: F4_L, F4_R
        x = resize(x, (2 * h, 2 * w), "nearest")                # upscale x2
        x = self.reduce(x)                                      # conv1d 0: conv1D(1x1, 64)
        f_seg = self.hourglass(x)                               # Fseg: hourglass(3x3, 32)
        # L conv 0, convdec 0, cat 1, conv1d 1, convdec 1, conv2d 0, coarse seg
        return self.head(f_seg, left, mode="nearest"), f_seg


class DisparityBranch(nn.Module):
    """Table A.12: corr(SPP(F2_L), SPP(F2_R)) -> 1x1, cat hourglass(Fseg) -> hourglass = Fdisp
    (H/8) -> head -> disparity in pixels (linear, no clamp)."""

    def __init__(self, f2_spp_channels: int, *, f_seg_channels: int, context_channels: int,
                 f_disp_channels: int, max_shift: int, corr_channels: int, use_f_seg: bool,
                 head_scale: int, upsample: str, hourglass_stride: int, separable: bool,
                 guide_on_pooled_image: bool = False, convex_scale: int | None = None) -> None:
        super().__init__()
        self.max_shift = max_shift
        self.fseg_to_disparity = use_f_seg
        self.reduce_corr = PointwiseReLU(2 * max_shift + 1, corr_channels)
        # Table 8 ablation: without Fseg the left SPP features take its place (authors' no_dec1).
        self.context = Hourglass(f_seg_channels if use_f_seg else f2_spp_channels,
                                 context_channels, stride=hourglass_stride, separable=separable)
        self.fuse = Hourglass(context_channels + corr_channels, f_disp_channels,
                              stride=hourglass_stride, separable=separable)
        self.scale = head_scale
        self.head = Head(f_disp_channels, f_disp_channels, 1, kernel_size=5, scale=head_scale,
                         upsample=upsample, hourglass_stride=hourglass_stride,
                         separable=separable, guide_on_pooled_image=guide_on_pooled_image,
                         convex_scale=convex_scale)

    def forward(self, f2_left: torch.Tensor, f2_right: torch.Tensor, f_seg: torch.Tensor,
                left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        corr = correlation_1d(f2_left, f2_right, self.max_shift)     # corr: correlation layer
        corr = self.reduce_corr(corr)                                # conv1d 2: conv1D(1x1, 128)
        size = corr.shape[-2:]
        context = resize(f_seg, size, "nearest") if self.fseg_to_disparity else f2_left
        context = self.context(context)                              # convdec 2: hourglass(3x3, 128)
        context = resize(context, size, "bilinear")                  #   resize to conv1d 2 dim
        f_disp = self.fuse(torch.cat([context, corr], 1))            # cat 3; Fdisp: hourglass(3x3, 64)
        # L conv 1, convdec 3, cat 4, conv1d 3, convdec 4, deconv2d 0, disp. The head predicts
        # in head-resolution pixels; disparity scales with resolution.
        disparity = self.head(f_disp, left, mode="nearest") * self.scale
        return disparity, f_disp, None   # regression: no distribution over candidates


class RefinedSegmentationBranch(nn.Module):
    """Table A.13: cat(SPP(F1_L), SPP(F1_R)) -> 1x1 -> hourglass = s (H/4); s mixed with Fdisp
    and with Fseg in two sub-branches whose sigmoid attention maps are crossed; hourglass; head.
    """

    def __init__(self, f1_spp_channels: int, *, f_seg_channels: int, f_disp_channels: int,
                 reduced_channels: int, s_channels: int, head_width: int, num_classes: int,
                 use_task_features: bool, input_scale: int, head_scale: int, upsample: str,
                 hourglass_stride: int, separable: bool,
                 guide_on_pooled_image: bool = False) -> None:
        super().__init__()
        def hourglass(in_channels: int, out_channels: int) -> Hourglass:
            return Hourglass(in_channels, out_channels, stride=hourglass_stride,
                             separable=separable)

        self.use_task_features = use_task_features
        # 4 as published; 8 pools F1' first so every hourglass below runs at H/8 or lower.
        self.input_pool = input_scale // 4
        self.reduce = PointwiseReLU(2 * f1_spp_channels, reduced_channels)
        self.hourglass = hourglass(reduced_channels, s_channels)
        if use_task_features:
            self.seg_context = hourglass(f_seg_channels, s_channels)
            self.with_disp = hourglass(s_channels + f_disp_channels, s_channels)
            self.with_seg = hourglass(2 * s_channels, s_channels)
            self.disp_attention = nn.Sequential(nn.Conv2d(s_channels, 1, 1), nn.Sigmoid())
            self.seg_attention = nn.Sequential(nn.Conv2d(s_channels, 1, 1), nn.Sigmoid())
        self.fuse = hourglass(2 * s_channels if use_task_features else s_channels, s_channels)
        self.head = Head(s_channels, head_width, num_classes, kernel_size=3, scale=head_scale,
                         upsample=upsample, hourglass_stride=hourglass_stride,
                         separable=separable, guide_on_pooled_image=guide_on_pooled_image)

    def forward(self, f1_left: torch.Tensor, f1_right: torch.Tensor, f_seg: torch.Tensor,
                f_disp: torch.Tensor, left: torch.Tensor
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        s = torch.cat([f1_left, f1_right], 1)                   # cat 5: concat SPP_1^L, SPP_1^R
        if self.input_pool > 1:
            s = F.avg_pool2d(s, self.input_pool, self.input_pool, ceil_mode=True)
        s = self.reduce(s)                                      # conv1d 4: conv1D(1x1, 128)
        s = self.hourglass(s)                                   # convdec 5: hourglass(3x3, 64)
        attention = None
        if self.use_task_features:
            size = s.shape[-2:]
            # Fseg enters at H/8 (as published: nearest x2 of the H/16 map) before its hourglass.
            f_seg_h8 = resize(f_seg, f_disp.shape[-2:], "nearest")
            f_seg = resize(self.seg_context(f_seg_h8), size, "nearest")  # Fseg: resize to convdec 5 dim
            f_disp = resize(f_disp, size, "nearest")            # Fdisp: resize to convdec 5 dim
            s_d = self.with_disp(torch.cat([s, f_disp], 1))     # cat 7 (+ hourglass, published)
            s_s = self.with_seg(torch.cat([s, f_seg], 1))       # cat 6 (+ hourglass, published)
            att_d = self.disp_attention(s_d)                    # disp att: conv1D(1x1, 1), sigmoid
            att_s = self.seg_attention(s_s)                     # seg att: conv1D(1x1, 1), sigmoid
            # seg att * ..., disp att * ...: crossed, disparity features weighted by the
            # segmentation attention and vice versa (published; the table weights convdec 5).
            s = torch.cat([s_d * att_s, s_s * att_d], 1)
            attention = (att_s, att_d)
        s = self.fuse(s)                                        # (published: one more hourglass)
        # L conv 2, cat 8, convdec 6: hourglass(3x3, 32), conv2d 1, ref seg
        return self.head(s, left, mode="nearest"), attention
