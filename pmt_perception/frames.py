"""Per-frame array work around the network, for the Predictor: resizing images and label /
disparity maps, cropping the lean OpenVINO graph's outputs, and the photometric confidence of
a disparity map. Plain numpy / torch functions, no model."""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

ImageLike = Union[np.ndarray, torch.Tensor]


def crop_lean_outputs(labels: np.ndarray, disparity: np.ndarray, height: int,
                       width: int) -> tuple[np.ndarray, np.ndarray]:
    """The lean OpenVINO graph's 1 x 1 x H' x W' int32 labels and float disparity, cropped to
    `height` x `width`: uint8 labels and contiguous float32 disparity. In numpy: torch's ops
    right after an OpenVINO call wait for its thread pool and took 3 ms here, numpy's 0.3 ms
    (`edge`, 480x720, 2 cores)."""
    return (labels[0, 0, :height, :width].astype(np.uint8),
            np.ascontiguousarray(disparity[0, 0, :height, :width], dtype=np.float32))


def resize_image(source: ImageLike, batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-like (antialiased bilinear) resize of the input image `source`, already checked and
    converted to the float `batch`. A uint8 image on the CPU is resized as uint8 (torch's fast
    path: 3 ms instead of 14 ms for a 480x720 view at 2/3; within 1/255 of the float result),
    then converted; anything else is resized as the float batch."""
    uint8 = source.dtype == np.uint8 if isinstance(source, np.ndarray) else source.dtype == torch.uint8
    if not (uint8 and batch.device.type == "cpu"):
        return F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
    image = torch.from_numpy(np.ascontiguousarray(source)) if isinstance(source, np.ndarray) else source
    nchw = image.to(batch.device).permute(2, 0, 1).unsqueeze(0)   # channels-last view of HxWx3
    small = F.interpolate(nchw, size=size, mode="bilinear", antialias=True, align_corners=False)
    return small.float().div_(255.0).contiguous(memory_format=(
        torch.channels_last if batch.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format))


def resize_map(map_: torch.Tensor, size: tuple[int, int], *, nearest: bool = False) -> torch.Tensor:
    """An h x w map resized to `size`: nearest for class ids, bilinear for real values."""
    if nearest:
        return F.interpolate(map_[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(map_.dtype)
    return F.interpolate(map_[None, None].float(), size=size, mode="bilinear",
                         align_corners=False)[0, 0]


def photometric_confidence(left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor,
                           *, scale: float = 0.1) -> torch.Tensor:
    """Disparity confidence in [0, 1]: how well the right image, sampled at x - d, explains
    the left image (exp(-|L - R(x - d)| / scale), colour-averaged and smoothed over 5x5),
    and 0 where x - d leaves the image. One grid_sample; it flags mismatches and occlusions
    in textured regions, and cannot tell right from wrong in texture-free ones."""
    _, height, width = left.shape
    xs = torch.arange(width, device=disparity.device, dtype=torch.float32).expand(height, width)
    ys = torch.arange(height, device=disparity.device, dtype=torch.float32).unsqueeze(1).expand(height, width)
    source_x = xs - disparity
    grid = torch.stack([2 * source_x / max(width - 1, 1) - 1, 2 * ys / max(height - 1, 1) - 1], -1)
    warped = F.grid_sample(right.unsqueeze(0).float(), grid.unsqueeze(0), align_corners=True)
    error = (left.float() - warped[0]).abs().mean(0, keepdim=True)
    error = F.avg_pool2d(error.unsqueeze(0), 5, stride=1, padding=2, count_include_pad=False)[0, 0]
    inside = (source_x >= 0) & (source_x <= width - 1) & torch.isfinite(disparity)
    return torch.exp(-error / scale) * inside
