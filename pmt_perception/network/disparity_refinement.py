"""Residual refinement of the cost volume's disparity at H/4 (StereoNet's edge-aware
refinement, with AnyNet's warping error as the matching cue), then learned convex
upsampling to the input size.

Why: at H/8 a volume cell on a depth edge holds foreground and background, and convex
upsampling from H/8 can only place the edge within its 8-pixel cell. On the Middlebury Aloe
pair 11 of the adapted model's 14.6 D1 points lie within 4 px of a depth edge (docs/adapt.md).
This stage sees the H/4 features of both views: where the upsampled disparity puts a pixel on
the wrong surface, the left features and the right features warped by that disparity
disagree, and the residual moves it. It stays matching-based (the cue is a photometric
difference), so it transfers as the cost volume does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNReLU, Upsampler, pool_image, resize


def warp_by_disparity(right: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    """right(y, x - d(y, x)) for every left pixel (bilinear; zeros outside the image).
    `disparity` B x 1 x h x w in pixels of this grid. The pixel grid is built from cumulative
    sums of ones rather than torch.arange(w), so an ONNX trace keeps H and W dynamic."""
    ones = torch.ones_like(disparity)
    xs, ys = ones.cumsum(-1) - 1, ones.cumsum(-2) - 1
    last_x, last_y = xs[..., -1:], ys[..., -1:, :]              # w - 1 and h - 1
    grid = torch.cat([2 * (xs - disparity) / last_x - 1, 2 * ys / last_y - 1], 1)
    return F.grid_sample(right, grid.permute(0, 2, 3, 1).to(right.dtype), mode="bilinear",
                         padding_mode="zeros", align_corners=True)


class DisparityRefinement(nn.Module):
    """disparity at H/8 -> bilinear to H/4 -> + residual(left features, |left - warped right|,
    disparity, left image) -> ReLU -> convex upsampling to H x W (x4, or by `convex_scale`
    then bilinear for the rest)."""

    def __init__(self, feature_channels: int, *, max_disparity: int, channels: int = 24,
                 matching_channels: int = 16, dilations: tuple[int, ...] = (1, 2, 4, 8, 1),
                 convex_scale: int | None = None, patch_guide_channels: int = 0) -> None:
        super().__init__()
        self.scale = 4
        self.disparity_norm = max_disparity / self.scale       # the network sees disparity in ~[0, 1]
        self.compress = nn.Conv2d(feature_channels, matching_channels, 1)   # shared by both views
        self.enter = ConvBNReLU(2 * matching_channels + 1 + 3, channels)
        self.body = nn.Sequential(*(ConvBNReLU(channels, channels, dilation=d) for d in dilations))
        self.residual = nn.Conv2d(channels, 1, 3, padding=1)
        # Zero residual at initialisation: a checkpoint trained without this stage starts from
        # its own disparity, upsampled.
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)
        self.upsample = Upsampler("convex", feature_channels=channels, scale=self.scale,
                                  convex_scale=convex_scale, patch_guide_channels=patch_guide_channels)

    def forward(self, disparity: torch.Tensor, features_left: torch.Tensor,
                features_right: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
        """`disparity` B x 1 x h8 x w8 in input pixels; features at H/4; `left` the normalised
        full-size left image. Returns B x 1 x H x W in input pixels."""
        size = features_left.shape[-2:]
        disparity = resize(disparity, size, "bilinear") / self.scale          # H/4 pixels
        matching_left, matching_right = self.compress(
            torch.cat([features_left, features_right], 0)).chunk(2, 0)
        error = (matching_left - warp_by_disparity(matching_right, disparity.float())).abs()
        image = resize(pool_image(left, self.scale), size, "nearest")
        x = self.enter(torch.cat([matching_left, error, disparity.to(error.dtype) / self.disparity_norm,
                                  image.to(error.dtype)], 1))
        x = self.body(x)
        disparity = F.relu(disparity + self.residual(x).to(disparity.dtype))
        return self.upsample(disparity * self.scale, x, left.shape[-2:], image=left)
