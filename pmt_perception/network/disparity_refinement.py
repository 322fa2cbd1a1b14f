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

With `propagation` s > 0 the stage also tests its neighbours' disparities (PatchMatch's
propagation; run 16 had it, not shipped): the cosine correlation of the two views' features
at the disparities of the pixels s H/4 pixels to the left and to the right. Near a depth edge
the upsampled disparity blends the two surfaces over an H/8 cell; the neighbours one cell
away carry each surface's own value, and the correlation says which one this pixel matches,
whatever the size of the jump. Left and right only: each neighbour costs a warp of the right
view's features, and occlusion edges cross the scanline.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNReLU, Upsampler, pool_image, resize


def warp_by_disparity(right: torch.Tensor, disparity: torch.Tensor,
                      mode: str = "bilinear") -> torch.Tensor:
    """right(y, x - d(y, x)) for every left pixel (bilinear or nearest; zeros outside the image).
    `disparity` B x 1 x h x w in pixels of this grid."""
    return sample_columns(right, pixel_columns(disparity) - disparity, mode)


def pixel_columns(like: torch.Tensor) -> torch.Tensor:
    """x of every pixel of `like`'s grid. Cumulative sums of ones rather than torch.arange(w),
    so an ONNX trace keeps H and W dynamic."""
    return torch.ones_like(like).cumsum(-1) - 1


def sample_columns(right: torch.Tensor, columns: torch.Tensor, mode: str) -> torch.Tensor:
    """right(y, columns(y, x)): `columns` B x 1 x h x n in pixels of right's grid, n any width
    (several samplings side by side share one grid sample and one copy of `right`)."""
    ys = torch.ones_like(columns).cumsum(-2) - 1
    last_x = pixel_columns(right[:, :1, :1])[..., -1:]              # w - 1, B x 1 x 1 x 1
    last_y = ys[..., -1:, :]                                         # h - 1
    grid = torch.cat([2 * columns / last_x - 1, 2 * ys / last_y - 1], 1)
    return F.grid_sample(right, grid.permute(0, 2, 3, 1).to(right.dtype), mode=mode,
                         padding_mode="zeros", align_corners=True)


# The neighbours' offsets from a pixel's own disparity enter in units of 4 H/4 pixels: the
# jumps that matter are a few H/4 pixels, which max_disparity's scale would leave near zero.
OFFSET_UNIT = 4.0


def neighbour_disparities(disparity: torch.Tensor, step: int) -> torch.Tensor:
    """The disparities of the pixels `step` to the left and to the right of each pixel (the
    border column's own beyond the image), side by side: B x 1 x h x 2w. Negative slice ends
    keep H and W dynamic in ONNX."""
    padded = F.pad(disparity, (step, step, 0, 0), mode="replicate")
    return torch.cat([padded[..., :-2 * step], padded[..., 2 * step:]], -1)


def neighbour_correlation(left: torch.Tensor, right: torch.Tensor, neighbours: torch.Tensor,
                          groups: int) -> torch.Tensor:
    """B x (2 * groups) x h x w: per channel group, the cosine of left's features and the right
    view's warped by each neighbour's disparity (gain-blind, as the cost volume's). Nearest
    sampling: the cue is which surface matches, and it costs half of bilinear's."""
    b, c, h, w = left.shape
    columns = pixel_columns(left[:, :1]).repeat(1, 1, 1, 2) - neighbours
    warped = sample_columns(right, columns, "nearest")              # B x C x h x 2w
    unit_left = F.normalize(left.reshape(b, groups, c // groups, h, 1, w), dim=2)
    unit_warped = F.normalize(warped.reshape(b, groups, c // groups, h, 2, w), dim=2)
    cosine = (unit_left * unit_warped).sum(2)                       # B x G x h x 2 x w
    return cosine.permute(0, 3, 1, 2, 4).reshape(b, 2 * groups, h, w)


class DisparityRefinement(nn.Module):
    """disparity at H/8 -> bilinear to H/4 -> + residual(left features, |left - warped right|,
    disparity, left image[, how well the views match at the neighbours' disparities and how far
    those lie]) -> ReLU -> convex upsampling to H x W (x4, or by `convex_scale` then bilinear
    for the rest)."""

    def __init__(self, feature_channels: int, *, max_disparity: int, channels: int = 24,
                 matching_channels: int = 16, dilations: tuple[int, ...] = (1, 2, 4, 8, 1),
                 convex_scale: int | None = None, patch_guide_channels: int = 0,
                 propagation: int = 0, propagation_groups: int = 4) -> None:
        super().__init__()
        self.scale = 4
        self.disparity_norm = max_disparity / self.scale       # the network sees disparity in ~[0, 1]
        self.compress = nn.Conv2d(feature_channels, matching_channels, 1)   # shared by both views
        self.enter = ConvBNReLU(2 * matching_channels + 1 + 3, channels)
        if matching_channels % propagation_groups:
            raise ValueError(f"{matching_channels} matching channels do not split into "
                             f"{propagation_groups} propagation groups")
        self.propagation, self.propagation_groups = propagation, propagation_groups
        if propagation:
            # Each neighbour's correlation groups and its offset from the pixel's own disparity.
            # Added to the entry's output and zero at initialisation: a checkpoint trained
            # without propagation starts from its own stage.
            self.propagation_enter = nn.Conv2d(2 * propagation_groups + 2, channels, 3, padding=1,
                                               bias=False)
            nn.init.zeros_(self.propagation_enter.weight)
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
        own = disparity.float()                        # warps and offsets in fp32 under autocast
        warped = warp_by_disparity(matching_right, own)
        error = (matching_left - warped).abs()
        image = resize(pool_image(left, self.scale), size, "nearest")
        x = self.enter(torch.cat([matching_left, error, disparity.to(error.dtype) / self.disparity_norm,
                                  image.to(error.dtype)], 1))
        if self.propagation:
            neighbours = neighbour_disparities(own, self.propagation)
            correlation = neighbour_correlation(matching_left, matching_right, neighbours,
                                                self.propagation_groups)
            offsets = (neighbours - own.repeat(1, 1, 1, 2)) / OFFSET_UNIT
            x = x + self.propagation_enter(torch.cat([correlation, *offsets.chunk(2, -1)], 1).to(x.dtype))
        x = self.body(x)
        disparity = F.relu(disparity + self.residual(x).to(disparity.dtype))
        return self.upsample(disparity * self.scale, x, left.shape[-2:], image=left)
