"""Colours for labels, disparity and errors, and simple figure grids.

Everything here is numpy + OpenCV and vectorised, because the perception node calls
`colorize_labels` / `colorize_disparity` on every frame: a palette lookup is one fancy-index,
a disparity colouring is one normalisation plus one `cv2.applyColorMap`.
All images are RGB (not OpenCV's BGR) HxWx3 uint8 unless a docstring says otherwise.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

# CITYSCAPES_COLORS and cityscapes_palette live in labels.py (datasets carry the palette);
# they stay importable from here.
from .labels import CITYSCAPES_COLORS, IGNORE_LABEL, cityscapes_palette  # noqa: F401

# The paper's disparity-error colours (Figures 8, 9, 11): blue < 3 px, green < 6 px, red beyond.
ERROR_COLORS = {"small": (0, 0, 255), "medium": (0, 255, 0), "large": (255, 0, 0)}
ERROR_THRESHOLDS_PX = (3.0, 6.0)


def distinct_palette(n: int) -> np.ndarray:
    """`n` well-separated RGB colours, uint8 (n, 3); the same `n` always gives the same colours.

    Hues follow the golden-angle sequence (each new hue falls in the largest remaining gap), and
    saturation/value alternate between two levels so neighbouring indices also differ in
    brightness, which keeps classes apart for colour-blind viewers and in greyscale prints.
    """
    if n < 1:
        raise ValueError(f"distinct_palette needs n >= 1, got {n}")
    index = np.arange(n)
    hue = (index * 0.618033988749895) % 1.0
    saturation = np.where(index % 2 == 0, 0.85, 0.6)
    value = np.where(index % 3 == 2, 0.65, 0.95)
    hsv = np.stack([hue * 180.0, saturation * 255.0, value * 255.0], axis=-1)
    hsv = np.round(hsv).astype(np.uint8)[None]  # OpenCV's 8-bit hue range is 0..179
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def colorize_labels(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class ids (HxW, any integer dtype) -> HxWx3 uint8 RGB; 255 and ids without a colour -> black."""
    labels = np.asarray(labels)
    palette = np.asarray(palette, dtype=np.uint8)
    if labels.ndim != 2:
        raise ValueError(f"labels must be HxW, got shape {labels.shape}")
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must be (N, 3), got shape {palette.shape}")
    # One 256-entry table (black beyond the palette) makes the lookup a single fancy-index and
    # maps 255 and any out-of-range id to black without a mask.
    table = np.zeros((257, 3), dtype=np.uint8)
    count = min(len(palette), IGNORE_LABEL)  # the ignore id stays black even for 256 colours
    table[:count] = palette[:count]
    index = labels
    if index.dtype != np.uint8:
        index = np.where((labels >= 0) & (labels < 256), labels, 256).astype(np.intp)
    return table[index]


def colorize_disparity(disparity: np.ndarray, max_disp: float | None = None,
                       colormap: int = cv2.COLORMAP_TURBO) -> np.ndarray:
    """Disparity (HxW float) -> HxWx3 uint8 RGB with a perceptual colormap (TURBO: near is red).

    Invalid pixels (<= 0 or not finite) are black. `max_disp` fixes the colour scale (use the same
    value for prediction and ground truth so they compare); None scales to this image's maximum.
    """
    disparity = np.asarray(disparity, dtype=np.float32)
    if disparity.ndim != 2:
        raise ValueError(f"disparity must be HxW, got shape {disparity.shape}")
    valid = np.isfinite(disparity) & (disparity > 0)
    if max_disp is None:
        max_disp = float(disparity[valid].max()) if valid.any() else 1.0
    if max_disp <= 0:
        raise ValueError(f"max_disp must be > 0, got {max_disp}")
    scaled = np.where(valid, disparity, 0.0) * (255.0 / max_disp)
    indices = np.clip(scaled, 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(indices, colormap)
    rgb = bgr[..., ::-1]
    return np.where(valid[..., None], rgb, 0).astype(np.uint8)


def overlay(image: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend `colors` over `image` (both HxWx3 uint8): alpha = 0 keeps the image, 1 the colours."""
    image = np.asarray(image)
    colors = np.asarray(colors)
    if image.shape != colors.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay needs two HxWx3 images of one size, got {image.shape} and {colors.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return cv2.addWeighted(image.astype(np.uint8), 1.0 - alpha, colors.astype(np.uint8), alpha, 0.0)


def disparity_error_map(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """|pred - gt| coloured as in the paper: blue < 3 px, green < 6 px, red >= 6 px, black without GT."""
    pred = np.asarray(pred, dtype=np.float32)
    gt = np.asarray(gt, dtype=np.float32)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred and gt must be HxW of one size, got {pred.shape} and {gt.shape}")
    valid = np.isfinite(gt) & (gt > 0)
    error = np.abs(np.nan_to_num(pred, nan=np.inf) - gt)
    table = np.array([(0, 0, 0), ERROR_COLORS["small"], ERROR_COLORS["medium"], ERROR_COLORS["large"]],
                     dtype=np.uint8)
    small, medium = ERROR_THRESHOLDS_PX
    bucket = np.where(error < small, 1, np.where(error < medium, 2, 3))
    return table[np.where(valid, bucket, 0)]


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"contact_sheet tiles must be HxW or HxWx3, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"contact_sheet tiles must be uint8, got {image.dtype}")
    return image


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str] | None = None,
                  *, tile_width: int | None = None, gap: int = 4, title_height: int = 22) -> np.ndarray:
    """A grid of images (RGB uint8) with one title per column above the first row.

    Every tile is resized to one common size (the first tile's, or `tile_width` wide at the first
    tile's aspect ratio) so rows of different image sizes still line up. Returns RGB uint8.
    """
    if not rows or not all(rows):
        raise ValueError("contact_sheet needs at least one non-empty row")
    columns = max(len(row) for row in rows)
    if labels is not None and len(labels) != columns:
        raise ValueError(f"contact_sheet got {len(labels)} labels for {columns} columns")
    first = _as_rgb_uint8(rows[0][0])
    height, width = first.shape[:2]
    if tile_width is not None:
        height, width = max(1, round(height * tile_width / width)), tile_width
    top = title_height if labels is not None else 0
    sheet_h = top + len(rows) * height + (len(rows) + 1) * gap
    sheet_w = columns * width + (columns + 1) * gap
    sheet = np.full((sheet_h, sheet_w, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            tile = _as_rgb_uint8(tile)
            if tile.shape[:2] != (height, width):
                # Nearest keeps label and error colours pure (no blended colours that mean nothing).
                tile = cv2.resize(tile, (width, height), interpolation=cv2.INTER_NEAREST)
            y = top + gap + r * (height + gap)
            x = gap + c * (width + gap)
            sheet[y:y + height, x:x + width] = tile
    if labels is not None:
        scale = max(0.4, min(0.7, width / 400))
        for c, text in enumerate(labels):
            x = gap + c * (width + gap) + 2
            cv2.putText(sheet, str(text), (x, title_height - 6), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def write_png_rgb(path, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG atomically (temp file + rename)."""
    # Imported here, not at the top: `data` imports every dataset (and torch, ~2 s), which the
    # monitor node and the other callers of this module's colour functions do not need.
    from pmt_perception.data.io import write_png_atomic

    write_png_atomic(path, np.asarray(image)[..., ::-1])
