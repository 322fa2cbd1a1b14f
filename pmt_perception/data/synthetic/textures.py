"""Procedural surface materials: periodic texture images sampled at surface coordinates.

A material is looked up at a surface point's own 2-D coordinates (metres along the surface), not
at image positions, so the left and right views see the same texture, shifted by exactly the
disparity. Textures are periodic (FFT noise with integer frequencies, patterns with integer
repeat counts) so they tile without seams, and each keeps a mip pyramid (2x2 box averages, which
keep periodicity): a pixel samples the level whose texel matches its footprint on the surface,
so distant ground does not alias into noise that differs between the views.
"""
from __future__ import annotations

import colorsys
import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass
class TextureLayer:
    pyramid: list[np.ndarray]       # level 0 (S, S, C) float32, then (S/2, S/2, C), ...
    texels_per_metre: float

    @classmethod
    def from_image(cls, image: np.ndarray, *, texels_per_metre: float) -> "TextureLayer":
        image = np.ascontiguousarray(image, dtype=np.float32)
        levels = [image]
        while levels[-1].shape[0] > 4:
            top = levels[-1]
            half = top.shape[0] // 2
            # INTER_AREA at exactly half size is the 2x2 box average (and 10x faster than numpy's).
            level = cv2.resize(top, (half, half), interpolation=cv2.INTER_AREA)
            levels.append(np.ascontiguousarray(level.reshape(half, half, *top.shape[2:]), dtype=np.float32))
        return cls(pyramid=levels, texels_per_metre=texels_per_metre)

    def sample(self, uv: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Bilinear lookups at `uv` (N, 2) metres on the level matching `footprint` (N,) metres/pixel."""
        coords = uv * np.float32(self.texels_per_metre)
        texels = footprint * np.float32(self.texels_per_metre)
        top = len(self.pyramid) - 1
        level = np.clip(np.log2(np.maximum(texels, 1.0)), 0, top).astype(np.int8)  # floor: >= 0
        low, high = int(level.min()), int(level.max())
        channels = self.pyramid[0].shape[2]
        if low == high:  # small objects: one level, no masks
            return self._lookup(low, coords)
        out = np.empty((len(uv), channels), dtype=np.float32)
        for value in range(low, high + 1):
            select = np.flatnonzero(level == value)
            if select.size:
                out[select] = self._lookup(value, coords[select])
        return out

    def _lookup(self, level: int, coords: np.ndarray) -> np.ndarray:
        """Bilinear, wrapping lookups of (N, 2) texel coordinates at one pyramid level.

        remap wants maps under 32767 per side, so the N points are laid out as rows of 1024; and
        it converts coordinates to 16-bit fixed point, so they are wrapped into [0, size) first.
        """
        image = self.pyramid[level]
        count = len(coords)
        padded = -(-count // _REMAP_ROW) * _REMAP_ROW
        maps = np.empty((padded, 2), dtype=np.float32)
        np.multiply(coords, np.float32(1.0 / 2 ** level), out=maps[:count])
        np.mod(maps[:count], np.float32(image.shape[0]), out=maps[:count])
        maps[count:] = 0.0
        looked_up = cv2.remap(image, maps.reshape(-1, _REMAP_ROW, 2), None, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_WRAP)
        return looked_up.reshape(padded, -1)[:count]


_REMAP_ROW = 1024


@dataclasses.dataclass
class Material:
    """Albedo = product of the colour layers' samples (a detail and an optional macro layer).

    `alpha` (single channel, coverage in [0, 1]) makes holes where it is below 0.5, as leaf cards
    do in game engines: the hole is part of the geometry, so depth and labels see it too.
    `emissive` surfaces (the sky) ignore lighting. `gradient` multiplies the albedo by a colour
    that varies linearly along the surface's v coordinate (the sky's horizon-to-zenith fade).
    `specular` > 0 adds a white Blinn-Phong highlight of the sun with exponent `shininess`: it
    depends on the eye, so it sits at different surface points in the two views, as on real
    shiny surfaces (the geometry, and so the ground truth, is unaffected).
    """

    layers: list[TextureLayer]
    alpha: TextureLayer | None = None
    emissive: bool = False
    gradient: tuple[float, float, np.ndarray, np.ndarray] | None = None  # v0, v1, colour@v0, colour@v1
    specular: float = 0.0
    shininess: float = 1.0

    def albedo(self, uv: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        colour = self.layers[0].sample(uv, footprint)
        for layer in self.layers[1:]:
            colour *= layer.sample(uv, footprint)
        if self.gradient is not None:
            v0, v1, start, end = self.gradient
            weight = np.clip((uv[:, 1:2] - v0) / (v1 - v0), 0.0, 1.0)
            colour *= start + (end - start) * weight
        return colour

    def is_hole(self, uv: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        if self.alpha is None:
            return np.zeros(len(uv), dtype=bool)
        return self.alpha.sample(uv, footprint)[:, 0] < 0.5


# --------------------------------------------------------------------------- texture images
def fractal_noise(rng: np.random.Generator, size: int, *, beta: float, low: float = 1.0,
                  high: float | None = None) -> np.ndarray:
    """Periodic noise with power spectrum 1/f^beta between `low` and `high` cycles per tile;
    zero mean, unit standard deviation, float32 (size, size)."""
    fy = np.fft.fftfreq(size) * size
    fx = np.fft.rfftfreq(size) * size
    freq = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    band = (freq >= low) & (freq <= (high if high is not None else size / 2))
    amplitude = np.zeros_like(freq)
    amplitude[band] = freq[band] ** (-beta / 2.0)
    spectrum = amplitude * (rng.standard_normal(freq.shape) + 1j * rng.standard_normal(freq.shape))
    image = np.fft.irfft2(spectrum, s=(size, size))
    return ((image - image.mean()) / (image.std() + 1e-12)).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    return coords[None, :], coords[:, None]  # u along columns, v along rows


def stripes(size: int, *, count: int, along_v: bool, sharpness: float) -> np.ndarray:
    """`count` periods of a smoothed square wave in [-1, 1] across the tile."""
    u, v = _grid(size)
    phase = (v if along_v else u) * count * 2 * np.pi
    wave = np.tanh(sharpness * np.sin(phase)) / np.tanh(sharpness)
    return np.broadcast_to(wave, (size, size)).astype(np.float32)


def bricks(rng: np.random.Generator, size: int, *, rows: int, columns: int,
           mortar: float) -> tuple[np.ndarray, np.ndarray]:
    """Running-bond bricks: (per-brick brightness offsets in ~[-1, 1], mortar mask). `rows` even."""
    u, v = _grid(size)
    row_pos = np.broadcast_to(v * rows, (size, size))
    row = np.floor(row_pos).astype(int)
    col_pos = u * columns + 0.5 * (row % 2)
    col = np.floor(col_pos).astype(int) % columns
    shade = rng.uniform(-1, 1, size=(rows, columns))[row, col]
    is_mortar = ((row_pos % 1.0) < mortar * 2) | ((col_pos % 1.0) < mortar)
    return shade.astype(np.float32), is_mortar


def checker(size: int, *, count: int) -> np.ndarray:
    u, v = _grid(size)
    return np.where((np.floor(u * count) + np.floor(v * count)) % 2 == 0, 1.0, -1.0).astype(np.float32)


# --------------------------------------------------------------------------- colours
def hsv_colour(hue: float, saturation: float, value: float) -> np.ndarray:
    """HSV in [0, 1] -> linear RGB float32 (3,), treating V as display value (gamma 2.2)."""
    rgb = np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float32)
    return rgb ** 2.2


def tint(pattern: np.ndarray, colour: np.ndarray, contrast: float) -> np.ndarray:
    """Colour image from a zero-centred pattern: colour * (1 + contrast * pattern), kept >= 0."""
    return np.maximum(colour[None, None, :] * (1.0 + contrast * pattern[..., None]), 0.0)


def two_colour(pattern01: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Blend between two colours with a pattern in [0, 1]."""
    weight = np.clip(pattern01, 0.0, 1.0)[..., None]
    return first[None, None, :] * (1.0 - weight) + second[None, None, :] * weight
