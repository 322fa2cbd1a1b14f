"""The matching-based disparity branch: a group-wise correlation cost volume over non-negative
disparities, aggregated in 3-D with Fseg as context, read out by soft-argmin (GC-Net, GwcNet).

The published branch regresses disparity from correlation features with 2-D convolutions, so
it can learn the training scenes' depth priors instead of matching, and it fails on real
cameras. Here the output is an expectation over disparity candidates weighted by how well the
two views match at each candidate: what the network learns is how to score matches, which
transfers across domains. The paper's connections stay: Fseg (H/16) is the context that
aggregation sees, and Fdisp (features at the volume's resolution) feeds the refined
segmentation branch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNReLU, Hourglass, LConv, Upsampler, resize


def groupwise_correlation_volume(left: torch.Tensor, right: torch.Tensor, *,
                                 num_disparities: int, groups: int,
                                 cosine: bool = False) -> torch.Tensor:
    """B x G x D x H x W: channel group g at disparity d holds the mean over the group's
    channels of left(y, x) * right(y, x - d), d = 0..D-1; zero where x - d leaves the image.
    `cosine`: each group's vectors are unit-normalised first and the products summed, so the
    score is the cosine of the two vectors (1 for identical features, whatever their scale).

    Only non-negative disparities: in a rectified left-reference pair a point never appears
    to the right in the right image. Plain slicing and padding (no compiled extension), so it
    exports to ONNX with dynamic H and W.
    """
    b, c, h, w = left.shape
    if c % groups:
        raise ValueError(f"{c} matching channels do not split into {groups} groups")
    left = left.reshape(b, groups, c // groups, h, w)
    right = right.reshape(b, groups, c // groups, h, w)
    if cosine:
        left, right = F.normalize(left, dim=2), F.normalize(right, dim=2)
    if torch.onnx.is_in_onnx_export():
        volume = blockwise_correlation(left, right, num_disparities)
        return volume if cosine else volume / (c // groups)
    reduce = torch.sum if cosine else torch.mean
    # One zero-padded copy: slice d of it is right shifted by d, for any W (even W <= D).
    padded = F.pad(right, (num_disparities - 1, 0))
    start = num_disparities - 1
    slices = [reduce(left * padded[..., start - d:start - d + w], 2) for d in range(num_disparities)]
    return torch.stack(slices, dim=2)


def blockwise_correlation(left: torch.Tensor, right: torch.Tensor,
                          num_disparities: int) -> torch.Tensor:
    """B x G x D x H x W: the sum over the C channels of left(y, x) * right(y, x - d),
    d = 0..D-1, zero where x - d leaves the image (`left`, `right`: B x G x C x H x W). The
    form exported graphs run. In a row, the pixels of a block of D columns only meet
    right-view pixels of that block and the one before it, so one small matrix product per
    block (D x C times C x 2D) gives every product they need; row i of the D x 2D result holds
    disparities D-1..0 at columns i+1..i+D, which a reshape to rows of 2D+1 lines up. The
    sliced form had OpenVINO build D shifted copies of the right features and reorder them
    (~3 ms of a 35 ms `edge` frame, 2 cores); this moves a sixth of that data."""
    b, g, c, h, w = left.shape
    d = num_disparities
    blocks = (w + d - 1) // d     # not -(-w // d): the tracer loses the negation (a constant)
    padded_w = blocks * d
    # Pixels before channels (B G H W C): each block of a row is a D x C matrix.
    left_rows = F.pad(left, (0, padded_w - w)).permute(0, 1, 3, 4, 2).reshape(b, g, h, blocks, d, c)
    right_rows = F.pad(right, (d, padded_w - w)).permute(0, 1, 3, 4, 2).reshape(b, g, h, blocks + 1, d, c)
    pairs = torch.cat([right_rows[:, :, :, :-1], right_rows[:, :, :, 1:]], 4)   # block before, block
    products = torch.matmul(left_rows, pairs.transpose(-1, -2))                # B G H blocks D 2D
    # Entry (i, i + 1 + m) holds disparity D-1-m: flat index i * (2D + 1) + 1 + m.
    flat = F.pad(products.reshape(b, g, h, blocks, 2 * d * d)[..., 1:], (0, d + 1))
    band = flat.reshape(b, g, h, blocks, d, 2 * d + 1)[..., :d]
    # A gather, not flip(): ONNX's negative-step Slice runs on OpenVINO's reference kernel.
    in_order = band.index_select(-1, torch.arange(d - 1, -1, -1, device=left.device))
    return in_order.reshape(b, g, h, padded_w, d)[:, :, :, :w].permute(0, 1, 4, 2, 3)


def soft_argmin(cost: torch.Tensor, window: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(expected disparity B x 1 x H x W in volume pixels, probabilities B x D x H x W) from
    scores B x D x H x W (higher = better match). `window` > 0: the expectation over the
    candidates within `window` of the most probable one only, renormalised (the probabilities
    returned stay the full softmax)."""
    probability = cost.softmax(dim=1)
    candidates = torch.arange(cost.shape[1], device=cost.device, dtype=probability.dtype).view(1, -1, 1, 1)
    weights = probability
    if window > 0:
        # Where the distribution has two modes (a depth edge) this picks the stronger one
        # instead of averaging foreground and background.
        best = probability.argmax(1, keepdim=True).to(probability.dtype)
        weights = probability * ((candidates - best).abs() <= window).to(probability.dtype)
        weights = weights / weights.sum(1, keepdim=True)
    disparity = (weights * candidates).sum(1, keepdim=True)
    return disparity, probability


class FactorizedConv3d(nn.Module):
    """A 3x3x3 convolution over (D, H, W) factorised as 3x3 over (H, W), then 3 over D, each
    with BatchNorm; ReLU at the end (unless `last`).

    Why not nn.Conv3d: PyTorch's CPU 3-D convolution has no oneDNN training path; its backward
    took 1.3 s per layer on a 8-channel volume at batch 4 on this CPU, against milliseconds for
    the same work as 2-D convolutions. The factorised form (as P3D / R(2+1)D do for video) runs
    on the fast 2-D kernels, exports to ONNX as plain Conv nodes, and keeps the receptive field.
    """

    def __init__(self, in_channels: int, out_channels: int, *, last: bool = False) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.spatial_bn = nn.BatchNorm2d(out_channels)
        self.along_d = nn.Conv2d(out_channels, out_channels, (3, 1), padding=(1, 0), bias=last)
        self.along_d_bn = nn.Identity() if last else nn.BatchNorm2d(out_channels)
        self.last = last

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return self.as_conv3d(volume)
        b, c, d, h, w = volume.shape
        x = volume.transpose(1, 2).reshape(b * d, c, h, w)          # D folded into the batch
        x = torch.relu(self.spatial_bn(self.spatial(x)))
        c = x.shape[1]
        x = x.reshape(b, d, c, h * w).transpose(1, 2)                # B, C, D, H*W
        x = self.along_d_bn(self.along_d(x))
        if not self.last:
            x = torch.relu(x)
        return x.reshape(b, c, d, h, w)

    def as_conv3d(self, volume: torch.Tensor) -> torch.Tensor:
        """The same function as two Conv3d, kernels 1x3x3 and 3x1x1, for exported graphs: an
        inference runtime runs them in the volume's own layout, where the 2-D form moves the
        whole volume between (B*D, C, H, W) and (B, C, D, H*W) twice per layer (on OpenVINO
        those transposes and reorders took about as long as the convolutions)."""
        x = F.conv3d(volume, self.spatial.weight.unsqueeze(2), self.spatial.bias, padding=(0, 1, 1))
        x = torch.relu(_channel_affine(self.spatial_bn, x))
        x = F.conv3d(x, self.along_d.weight.unsqueeze(-1), self.along_d.bias, padding=(1, 0, 0))
        x = _channel_affine(self.along_d_bn, x)
        return x if self.last else torch.relu(x)


def _channel_affine(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An eval-mode BatchNorm2d (or the Identity that folding leaves) applied to a 5-D volume."""
    if isinstance(norm, nn.Identity):
        return x
    return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                        training=False, eps=norm.eps)


class CostVolumeAggregation(nn.Module):
    """Three (factorised) 3x3x3 conv-BN-ReLU layers with a residual, then one score per
    (d, y, x)."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.enter = FactorizedConv3d(in_channels, channels)
        self.middle = nn.Sequential(FactorizedConv3d(channels, channels),
                                    FactorizedConv3d(channels, channels))
        self.score = FactorizedConv3d(channels, 1, last=True)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        x = self.enter(volume)
        return self.score(self.middle(x) + x).squeeze(1)


class CostVolumeDisparityBranch(nn.Module):
    """match(F'_L), match(F'_R) -> group-wise correlation (0..max_disparity at H/s)
    + Fseg context -> 3-D aggregation -> soft-argmin -> learned upsampling to H x W;
    Fdisp = hourglass(cat(context, scores)) at H/s for the refined segmentation branch."""

    def __init__(self, feature_channels: int, *, context_channels: int, scale: int,
                 max_disparity: int, groups: int, aggregation_channels: int,
                 fdisp_channels: int, upsample: str | None, hourglass_stride: int,
                 separable: bool, correlation: str = "dot", soft_argmin_window: int = 0,
                 guide_on_pooled_image: bool = False, convex_scale: int | None = None,
                 patch_guide_channels: int = 0) -> None:
        super().__init__()
        self.scale, self.soft_argmin_window = scale, soft_argmin_window
        self.cosine = correlation == "cosine"
        self.num_disparities = -(-max_disparity // scale)
        match_channels = 8 * groups   # GwcNet's 8 channels per group
        self.match = nn.Sequential(ConvBNReLU(feature_channels, match_channels),
                                   nn.Conv2d(match_channels, match_channels, 1))
        self.groups = groups
        context_width = fdisp_channels
        self.context = Hourglass(context_channels, context_width, stride=hourglass_stride,
                                 separable=separable)
        # Context enters the volume as a few channels repeated along the disparity axis.
        self.context_to_volume = nn.Conv2d(context_width, groups, 1)
        self.aggregate = CostVolumeAggregation(2 * groups, aggregation_channels)
        # The raw correlation also enters the scores directly (learned scale): the loss then
        # reaches the matching features in one step instead of through the randomly initialised
        # aggregation, which is what makes matching learnable within a short CPU schedule.
        # Cosines lie in [-1, 1]: a scale of 10 makes the initial softmax over candidates
        # peaked enough for the expectation to sit near the best match from the first step.
        self.raw_score_scale = nn.Parameter(torch.tensor(10.0 if self.cosine else 1.0))
        self.fuse = Hourglass(context_width + self.num_disparities, fdisp_channels,
                              stride=hourglass_stride, separable=separable)
        # upsample None: the disparity leaves at H/s, for a refinement stage that upsamples it.
        self.l_conv = self.upsample = None
        if upsample is not None:
            # The paper's per-branch "L conv" of the left image, here guiding the learned
            # upsampling of the disparity.
            self.l_conv = LConv(on_pooled_image=guide_on_pooled_image)
            self.upsample = Upsampler(upsample, feature_channels=fdisp_channels + 1, scale=scale,
                                      convex_scale=convex_scale,
                                      patch_guide_channels=patch_guide_channels)

    def forward(self, features_left: torch.Tensor, features_right: torch.Tensor,
                f_seg: torch.Tensor, left: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(disparity B x 1 x H x W in input pixels (H/s x W/s without an upsampler), Fdisp,
        candidate probabilities B x D x H/s x W/s: what the distribution loss supervises)."""
        # Replaces Table A.12's corr + conv1d 2 (see docs/architecture.md): matching features
        # of both views in one batched pass, then a volume over non-negative disparities.
        match_left, match_right = self.match(torch.cat([features_left, features_right], 0)).chunk(2, 0)
        volume = groupwise_correlation_volume(match_left, match_right,
                                              num_disparities=self.num_disparities,
                                              groups=self.groups, cosine=self.cosine)
        size = volume.shape[-2:]
        context = self.context(resize(f_seg, size, "nearest"))      # convdec 2: hourglass(Fseg)
        context_volume = self.context_to_volume(context).unsqueeze(2).expand_as(volume)
        scores = self.aggregate(torch.cat([volume, context_volume], 1)) \
            + self.raw_score_scale * volume.mean(1)
        # Soft-argmin in fp32: a bf16 expectation over D candidates loses sub-pixel precision.
        disparity, probability = soft_argmin(scores.float(), self.soft_argmin_window)
        f_disp = self.fuse(torch.cat([context, scores.to(context.dtype)], 1))  # cat 3; Fdisp
        if self.upsample is None:
            return disparity * self.scale, f_disp, probability
        l_conv = self.l_conv(left, self.scale)                     # L conv 1
        guide = torch.cat([f_disp, resize(l_conv, size, "nearest").to(f_disp.dtype)], 1)
        # Pixels of the volume's resolution -> pixels of the input resolution (disp).
        disparity = self.upsample(disparity * self.scale, guide, left.shape[-2:], image=left)
        return disparity, f_disp, probability
