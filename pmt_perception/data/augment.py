"""Joint stereo augmentation (DESIGN.md §3, the paper's Table 2), on raw numpy samples.

Photometric transforms (brightness, contrast, saturation, Gaussian blur) use one set of
parameters for both views, so the pair stays photometrically consistent. The geometric transform
zooms by s and crops: images are resampled bilinearly, labels and disparity by nearest neighbour
(a disparity is never averaged with its neighbours: at object borders that would invent depths
between foreground and background, and in sparse maps it would mix in the zeros meaning "no
ground truth"), and disparity is multiplied by the exact horizontal scale round(W*s)/W, because
zooming the image by s stretches every horizontal offset, and so every disparity, by s.

Pixel mapping is centre-aligned (output centre x' + 0.5 = (x + 0.5) * s), the convention of
cv2.resize's bilinear mode; OpenCV's INTER_NEAREST is not centre-aligned, so nearest indices are
computed here.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from .base import IGNORE_LABEL, RawSample
from .settings import AugmentSettings

# ITU-R BT.601 luma, as torchvision's saturation and contrast adjustments use.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _as_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1.0 / 255.0)
    return image.astype(np.float32, copy=True)


def adjust_pair(left: np.ndarray, right: np.ndarray, *, brightness: float = 1.0, contrast: float = 1.0,
                saturation: float = 1.0, blur_sigma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Apply the same colour transforms to both float32 views; returns new arrays clipped to [0, 1]."""
    left, right = _as_float(left), _as_float(right)
    if brightness != 1.0:
        left *= np.float32(brightness)
        right *= np.float32(brightness)
    if contrast != 1.0:
        # One mean for both views: a per-view mean would treat the two images differently.
        mean = np.float32(0.5 * ((left @ _LUMA).mean() + (right @ _LUMA).mean()))
        left = (left - mean) * np.float32(contrast) + mean
        right = (right - mean) * np.float32(contrast) + mean
    if saturation != 1.0:
        left = _saturate(left, saturation)
        right = _saturate(right, saturation)
    if blur_sigma > 0:
        left = cv2.GaussianBlur(left, (0, 0), blur_sigma, borderType=cv2.BORDER_REFLECT)
        right = cv2.GaussianBlur(right, (0, 0), blur_sigma, borderType=cv2.BORDER_REFLECT)
    return np.clip(left, 0.0, 1.0), np.clip(right, 0.0, 1.0)


def _saturate(image: np.ndarray, factor: float) -> np.ndarray:
    grey = (image @ _LUMA)[..., None]
    return grey + (image - grey) * np.float32(factor)


def _nearest_indices(out_size: int, offset: int, scale: float,
                     source_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source index of each output pixel (centre-aligned nearest) and whether it is inside."""
    zoomed = np.arange(out_size) + offset
    inside = (zoomed >= 0) & (zoomed < round(source_size * scale))
    source = np.clip(np.floor((zoomed + 0.5) / scale).astype(int), 0, source_size - 1)
    return source, inside


def zoom_and_crop(raw: RawSample, *, zoom: float, crop_size: tuple[int, int],
                  offset: tuple[int, int]) -> RawSample:
    """Zoom the sample by `zoom` and cut `crop_size` (H, W) at `offset` (y0, x0) in zoomed pixels.

    Offsets may be negative or run past the zoomed image: what falls outside is padding (images
    0, seg 255, disparity 0). Returns a new raw sample; meta fx/cx/cy follow the transform.
    """
    height, width = raw["seg"].shape[:2]
    zoomed_h, zoomed_w = max(1, round(height * zoom)), max(1, round(width * zoom))
    scale_y, scale_x = zoomed_h / height, zoomed_w / width  # exact scales after rounding
    crop_h, crop_w = crop_size
    y0, x0 = offset

    # Images: bilinear, output pixel (r, c) samples source ((c + x0 + 0.5) / sx - 0.5, ...).
    matrix = np.array([[1.0 / scale_x, 0.0, (x0 + 0.5) / scale_x - 0.5],
                       [0.0, 1.0 / scale_y, (y0 + 0.5) / scale_y - 0.5]])
    rows, rows_inside = _nearest_indices(crop_h, y0, scale_y, height)
    cols, cols_inside = _nearest_indices(crop_w, x0, scale_x, width)
    inside = rows_inside[:, None] & cols_inside[None, :]
    images = {}
    for view in ("left", "right"):
        image = _as_float(raw[view])
        if zoom < 1.0:
            # Shrinking without a low-pass aliases fine texture differently in the two views.
            image = cv2.GaussianBlur(image, (0, 0), 0.5 * np.sqrt(1.0 / zoom ** 2 - 1.0))
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        warped = cv2.warpAffine(image, matrix, (crop_w, crop_h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        images[view] = np.where(inside[..., None], warped, 0.0).astype(np.float32)

    seg = np.asarray(raw["seg"])[rows[:, None], cols[None, :]]
    seg = np.where(inside, seg, IGNORE_LABEL).astype(np.uint8 if seg.dtype == np.uint8 else np.int64)
    disparity = np.asarray(raw["disparity"], dtype=np.float32)[rows[:, None], cols[None, :]]
    disparity = np.where(inside & (disparity > 0), disparity * np.float32(scale_x), 0.0).astype(np.float32)

    meta: dict[str, Any] = dict(raw["meta"])
    if "fx" in meta:
        meta["fx"] = meta["fx"] * scale_x
    if "cx" in meta:
        meta["cx"] = (meta["cx"] + 0.5) * scale_x - 0.5 - x0
    if "cy" in meta:
        meta["cy"] = (meta["cy"] + 0.5) * scale_y - 0.5 - y0
    meta["zoom"] = scale_x
    return {**raw, "left": images["left"], "right": images["right"], "seg": seg, "disparity": disparity,
            "meta": meta}


def random_offset(rng: np.random.Generator, zoomed: int, crop: int) -> int:
    """Crop start: anywhere inside when the image is larger, centred-ish padding when smaller."""
    low, high = min(0, zoomed - crop), max(0, zoomed - crop)
    return int(rng.integers(low, high + 1))


class StereoAugment:
    """Callable raw sample -> raw sample, for a dataset's `transform`.

    Randomness: pass `seed` for a reproducible stream (tests); by default each call draws its
    seed from torch's RNG, which DataLoader seeds differently per worker and per epoch.
    """

    def __init__(self, settings: AugmentSettings, *, seed: int | None = None):
        self.settings = settings
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def _next_rng(self) -> np.random.Generator:
        if self._rng is not None:
            return self._rng
        return np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))

    def __call__(self, raw: RawSample) -> RawSample:
        rng = self._next_rng()
        s = self.settings
        if not s.enabled:
            return raw

        def maybe(value_range: tuple[float, float], neutral: float) -> float:
            applied = rng.uniform() < s.photometric_probability
            return float(rng.uniform(*value_range)) if applied else neutral

        left, right = adjust_pair(raw["left"], raw["right"], brightness=maybe(s.brightness, 1.0),
                                  contrast=maybe(s.contrast, 1.0), saturation=maybe(s.saturation, 1.0),
                                  blur_sigma=maybe(s.blur_sigma, 0.0))
        zoom = float(rng.uniform(*s.zoom))
        height, width = raw["seg"].shape[:2]
        crop_h, crop_w = s.crop_size
        offset = (random_offset(rng, max(1, round(height * zoom)), crop_h),
                  random_offset(rng, max(1, round(width * zoom)), crop_w))
        return zoom_and_crop({**raw, "left": left, "right": right}, zoom=zoom, crop_size=(crop_h, crop_w),
                             offset=offset)
