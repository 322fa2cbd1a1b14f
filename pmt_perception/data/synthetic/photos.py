"""Photo textures: a random crop of a real photograph, made seamless and recoloured.

The crop (random size, position, rotation, mirror) is resized to the texture size, its colours
changed (hue, saturation, contrast, brightness, sometimes grey), and made periodic by blending it
with a copy rolled by half a tile, one axis at a time, where the blend weight is 0 at the tile's
border and 1 across its middle. Each pass is periodic along its axis and keeps the other pass's
periodicity, so the tile wraps without seams; the blend is variance-preserving, so the mixed
band keeps the photo's contrast. A periodic tile is what `TextureLayer` needs: lookups at surface
coordinates that wrap, and a mip pyramid of 2x2 averages, give both views the same texture
shifted by exactly the disparity.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .photo_cache import PhotoLibrary
from .settings import TextureSettings

BLEND_BAND = 0.25   # the blend ramps over this fraction of the tile from each border


def _ramp(size: int) -> np.ndarray:
    """Weight of the unrolled tile along one axis: 0 at the border, 1 from BLEND_BAND inwards."""
    position = (np.arange(size, dtype=np.float32) + 0.5) / size
    edge = np.minimum(position, 1.0 - position) / BLEND_BAND
    edge = np.clip(edge, 0.0, 1.0)
    return edge * edge * (3.0 - 2.0 * edge)  # smoothstep


def make_seamless(image: np.ndarray) -> np.ndarray:
    """(S, S, C) float32 -> a periodic tile of the same size (np.roll-wrap continuous)."""
    size = image.shape[0]
    if image.shape[1] != size:
        raise ValueError(f"make_seamless needs a square image, got {image.shape[:2]}")
    mean = image.mean(axis=(0, 1), keepdims=True)
    out = image.astype(np.float32) - mean
    ramp = _ramp(size)
    for axis in (1, 0):
        weight = ramp[None, :, None] if axis == 1 else ramp[:, None, None]
        rolled = np.roll(out, size // 2, axis=axis)
        norm = np.sqrt(weight ** 2 + (1.0 - weight) ** 2)
        out = (weight * out + (1.0 - weight) * rolled) / norm
    return out + mean


def random_crop(rng: np.random.Generator, photo: np.ndarray, size: int,
                settings: TextureSettings) -> np.ndarray:
    """A rotated square crop of `photo` (H, W, 3), resampled to (size, size, 3)."""
    height, width = photo.shape[:2]
    shorter = min(height, width)
    side = rng.uniform(*settings.photo_crop) * shorter
    angle = math.radians(rng.uniform(*settings.photo_rotation_deg))
    # The rotated square's bounding box must fit inside the photo.
    spread = abs(math.cos(angle)) + abs(math.sin(angle))
    side = min(side, shorter / spread)
    # Shrink the photo first (area averaging) so the rotation samples it at about 1 px per texel.
    scale = min(1.0, size / side)
    if scale < 0.95:
        photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    side_px = side * scale
    half = 0.5 * side_px * spread
    rows, cols = photo.shape[:2]
    cx = rng.uniform(half, max(half, cols - half))
    cy = rng.uniform(half, max(half, rows - half))
    step = side_px / size
    cos, sin = math.cos(angle) * step, math.sin(angle) * step
    mirror = -1.0 if rng.uniform() < 0.5 else 1.0
    centre = (size - 1) / 2
    # dst (x, y) -> src: centre of crop + rotation * scaled offset from the tile's centre.
    matrix = np.array([[mirror * cos, -sin, 0.0], [mirror * sin, cos, 0.0]], dtype=np.float64)
    matrix[:, 2] = [cx - matrix[0, 0] * centre - matrix[0, 1] * centre,
                    cy - matrix[1, 0] * centre - matrix[1, 1] * centre]
    return cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def recolour(rng: np.random.Generator, image: np.ndarray, settings: TextureSettings,
             tint: np.ndarray | None = None) -> np.ndarray:
    """Colour changes on an sRGB (S, S, 3) float32 image in [0, 1]. `tint` (linear RGB) replaces
    the colours by the image's brightness times that colour (vegetation stays green)."""
    if tint is not None or rng.uniform() < settings.photo_grey_fraction:
        grey = image.mean(axis=2, keepdims=True)
        colour = tint if tint is not None else np.ones(3, np.float32)
        image = grey * (colour ** (1 / 2.2) / max(float(np.max(colour ** (1 / 2.2))), 1e-3))
    hsv = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * rng.uniform(-settings.photo_hue_shift,
                                                            settings.photo_hue_shift), 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*settings.photo_saturation), 0.0, 1.0)
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    mean = image.mean(axis=(0, 1), keepdims=True)
    image = mean + (image - mean) * np.float32(rng.uniform(*settings.photo_contrast))
    image *= np.float32(rng.uniform(*settings.photo_brightness))
    image *= rng.uniform(0.92, 1.08, size=3).astype(np.float32)  # a slight colour cast
    return np.clip(image, 0.0, 1.0)


def detail(image: np.ndarray) -> float:
    """Mean absolute grey-level step between neighbouring texels (sRGB, 0-1 scale)."""
    grey = image.mean(axis=2)
    return float(0.5 * (np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()))


MIN_DETAIL = 0.012  # below: a crop of sky, a wall or a blurred background; try another crop
CROP_TRIES = 4


def photo_texture(rng: np.random.Generator, library: PhotoLibrary, size: int,
                  settings: TextureSettings, tint: np.ndarray | None = None) -> np.ndarray:
    """A seamless, recoloured photo tile (size, size, 3): linear RGB float32, albedo in [0, 1].

    Crops without detail are redrawn (up to CROP_TRIES, keeping the most detailed): uniform
    surfaces come from the texture-poor recipes, in the share the config sets."""
    best, best_detail = None, -1.0
    for _ in range(CROP_TRIES):
        photo = library.image(int(rng.integers(len(library))))
        crop = random_crop(rng, photo, size, settings)
        crop_detail = detail(crop)
        if crop_detail > best_detail:
            best, best_detail = crop, crop_detail
        if crop_detail >= MIN_DETAIL:
            break
    srgb = make_seamless(recolour(rng, best, settings, tint))
    return np.clip(srgb, 0.0, 1.0) ** np.float32(2.2)
