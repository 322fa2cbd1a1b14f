"""Classical stereo baselines in the evaluator's prediction format: OpenCV StereoSGBM.

Three settings:
- `ros`: what a ROS 2 user gets from stereo_image_proc's disparity node switched to SGBM
  (stereo_algorithm: 1) with every other parameter at its default (image_pipeline,
  disparity_node.cpp): grey input, prefilter_cap 31, correlation_window_size 15,
  min_disparity 0, disparity_range 64, uniqueness_ratio 15, speckle_size 100, speckle_range 4,
  disp12_max_diff 0, P1 200, P2 400, full_dp false.
- `tuned`: the usual OpenCV recipe (P1 = 8*3*b^2, P2 = 32*3*b^2 with a small block on colour
  input), the search range widened to cover the scenes' disparities, chosen on the synthetic
  *validation* split and reported on the test split.
- `3way`: OpenCV's stereo_match sample (3-way mode, block 5, 128 disparities) as used for the
  Middlebury Aloe figures in shared/data/real_stereo/README.md; for real pairs with large
  disparities (`pmt-evaluate --data middlebury --sgbm 3way`).

SGBM leaves pixels without a disparity (occlusions, uniqueness and speckle rejects). The
evaluator scores two versions: the raw map on the pixels it kept (with its density), and the
map with holes filled as the KITTI devkit does before scoring (each hole takes the smaller,
i.e. farther, of its row neighbours), so SGBM is scored on every pixel like the network.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import cv2
import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class SGBMSettings:
    min_disparity: int
    num_disparities: int      # multiple of 16
    block_size: int           # odd
    p1: int
    p2: int
    disp12_max_diff: int      # < 0 disables the left-right check (OpenCV's convention)
    prefilter_cap: int
    uniqueness_ratio: int
    speckle_window_size: int
    speckle_range: int
    mode: int                 # cv2.STEREO_SGBM_MODE_*
    grey: bool                # ROS matches mono8 images

    def __post_init__(self) -> None:
        if self.num_disparities <= 0 or self.num_disparities % 16:
            raise ValueError(f"num_disparities must be a positive multiple of 16, got {self.num_disparities}")
        if self.block_size < 1 or self.block_size % 2 == 0:
            raise ValueError(f"block_size must be odd and >= 1, got {self.block_size}")


SGBM_PRESETS = {
    "ros": SGBMSettings(min_disparity=0, num_disparities=64, block_size=15, p1=200, p2=400,
                        disp12_max_diff=0, prefilter_cap=31, uniqueness_ratio=15,
                        speckle_window_size=100, speckle_range=4, mode=cv2.STEREO_SGBM_MODE_SGBM,
                        grey=True),
    # Best of a small grid (block 3/5/7, uniqueness 5/10, SGBM/HH mode, with/without the
    # left-right check) by D1 on 25 synthetic validation pairs.
    "tuned": SGBMSettings(min_disparity=0, num_disparities=80, block_size=3, p1=8 * 3 * 3 ** 2,
                          p2=32 * 3 * 3 ** 2, disp12_max_diff=1, prefilter_cap=63,
                          uniqueness_ratio=5, speckle_window_size=100, speckle_range=2,
                          mode=cv2.STEREO_SGBM_MODE_HH, grey=False),
    # The SGBM row of shared/data/real_stereo/README.md (Middlebury Aloe at half size, max
    # ~106 px; D1 11.7 %, EPE 2.2 px reproduced with these values): 3-way mode, colour,
    # P1 = 8*cn*b^2, P2 = 32*cn*b^2, 128 disparities, OpenCV's default preFilterCap (0).
    "3way": SGBMSettings(min_disparity=0, num_disparities=128, block_size=5, p1=8 * 3 * 5 ** 2,
                         p2=32 * 3 * 5 ** 2, disp12_max_diff=1, prefilter_cap=0,
                         uniqueness_ratio=10, speckle_window_size=100, speckle_range=2,
                         mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY, grey=False),
}


@dataclasses.dataclass
class DisparityOnlyPrediction:
    """The evaluator's prediction interface for a method without segmentation."""

    disparity: np.ndarray                 # H x W float32 px, holes filled (scored everywhere)
    raw_disparity: np.ndarray             # H x W float32 px, NaN where the method gave none
    labels: Optional[np.ndarray] = None
    coarse_labels: Optional[np.ndarray] = None
    timings: dict = dataclasses.field(default_factory=dict)


def fill_holes_like_kitti(disparity: np.ndarray) -> np.ndarray:
    """Fill NaN holes row by row with min(left neighbour, right neighbour), the KITTI devkit's
    background interpolation; a hole at a row end takes its one neighbour; an empty row stays 0."""
    disparity = np.asarray(disparity, dtype=np.float32)
    height, width = disparity.shape
    valid = np.isfinite(disparity)
    columns = np.broadcast_to(np.arange(width), (height, width))
    # Index of the nearest valid pixel to the left / right of each pixel (-1 / width: none).
    left_index = np.maximum.accumulate(np.where(valid, columns, -1), axis=1)
    right_index = np.minimum.accumulate(np.where(valid, columns, width)[:, ::-1], axis=1)[:, ::-1]
    padded = np.concatenate([np.full((height, 1), np.inf, np.float32),
                             np.where(valid, disparity, np.inf).astype(np.float32),
                             np.full((height, 1), np.inf, np.float32)], axis=1)
    rows = np.arange(height)[:, None]
    from_left = padded[rows, left_index + 1]
    from_right = padded[rows, right_index + 1]
    filled = np.minimum(from_left, from_right)
    filled = np.where(np.isfinite(filled), filled, 0.0).astype(np.float32)
    return np.where(valid, disparity, filled)


def _to_uint8_hwc(image: Any) -> np.ndarray:
    """HxWx3 uint8 from HxWx3 uint8 or 3xHxW float [0, 1] (the dataset contract)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.is_floating_point():
            return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        image = image.numpy()
    image = np.asarray(image)
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected HxWx3 uint8 or 3xHxW float images, got {image.dtype} {image.shape}")


class SGBMBaseline:
    """`predict(left, right)` with the evaluator's interface; images RGB."""

    def __init__(self, settings: SGBMSettings | str = "ros") -> None:
        if isinstance(settings, str):
            if settings not in SGBM_PRESETS:
                raise ValueError(f"unknown SGBM preset {settings!r}; known: {sorted(SGBM_PRESETS)}")
            settings = SGBM_PRESETS[settings]
        self.settings = settings
        s = settings
        self.matcher = cv2.StereoSGBM_create(
            minDisparity=s.min_disparity, numDisparities=s.num_disparities, blockSize=s.block_size,
            P1=s.p1, P2=s.p2, disp12MaxDiff=s.disp12_max_diff, preFilterCap=s.prefilter_cap,
            uniquenessRatio=s.uniqueness_ratio, speckleWindowSize=s.speckle_window_size,
            speckleRange=s.speckle_range, mode=s.mode)

    def predict(self, left: Any, right: Any) -> DisparityOnlyPrediction:
        start = time.perf_counter()
        left_u8, right_u8 = _to_uint8_hwc(left), _to_uint8_hwc(right)
        if self.settings.grey:
            left_u8 = cv2.cvtColor(left_u8, cv2.COLOR_RGB2GRAY)
            right_u8 = cv2.cvtColor(right_u8, cv2.COLOR_RGB2GRAY)
        else:
            left_u8 = cv2.cvtColor(left_u8, cv2.COLOR_RGB2BGR)
            right_u8 = cv2.cvtColor(right_u8, cv2.COLOR_RGB2BGR)
        t1 = time.perf_counter()
        fixed_point = self.matcher.compute(left_u8, right_u8)  # int16, disparity * 16
        t2 = time.perf_counter()
        disparity = fixed_point.astype(np.float32) / 16.0
        # Invalid pixels come back as (min_disparity - 1) * 16.
        raw = np.where(fixed_point >= self.settings.min_disparity * 16, disparity, np.nan)
        raw = raw.astype(np.float32)
        filled = fill_holes_like_kitti(raw)
        t3 = time.perf_counter()
        return DisparityOnlyPrediction(disparity=filled, raw_disparity=raw,
                                       timings={"pre": t1 - start, "model": t2 - t1,
                                                "post": t3 - t2})

    def describe(self) -> dict[str, Any]:
        return {"method": "opencv_stereo_sgbm", **dataclasses.asdict(self.settings)}
