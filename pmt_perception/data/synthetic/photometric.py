"""The camera response: linear radiance -> 8-bit image, with per-scene random parameters.

Exposure, white balance, vignetting, defocus blur, noise level and gamma are drawn once per scene.
The right view develops with a slightly different gain, per-channel colour and gamma (ratios drawn
per scene: two real sensors and lenses never match exactly, and a matcher must not rely on equal
intensities). The noise *realisations* are independent per view, as on two physical sensors.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from .settings import PhotometricSettings

_LUT_SIZE = 4096


@dataclasses.dataclass(frozen=True)
class CameraResponse:
    exposure: float
    white_balance: tuple[float, float, float]
    vignetting: float
    blur_sigma: float      # pixels at this image size
    noise_sigma: float
    gamma: float
    # The right view's per-channel gain and gamma relative to the left (1, 1, 1) and 1: identical.
    right_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    right_gamma: float = 1.0

    @classmethod
    def sample(cls, rng: np.random.Generator, settings: PhotometricSettings, *,
               width_scale: float) -> "CameraResponse":
        """`width_scale` = W / reference width: defocus blur is an optical size, so it grows with W."""
        low, high = settings.white_balance
        base = dict(exposure=float(rng.uniform(*settings.exposure)),
                    white_balance=tuple(float(g) for g in rng.uniform(low, high, size=3)),
                    vignetting=float(rng.uniform(*settings.vignetting)),
                    blur_sigma=float(rng.uniform(*settings.blur_sigma)) * width_scale,
                    noise_sigma=float(rng.uniform(*settings.noise_sigma)),
                    gamma=float(rng.uniform(*settings.gamma)))
        gain = rng.uniform(*settings.view_gain) * rng.uniform(*settings.view_colour, size=3)
        return cls(**base, right_gain=tuple(float(g) for g in gain),
                   right_gamma=float(rng.uniform(*settings.view_gamma)))

    def develop(self, radiance: np.ndarray, noise_rng: np.random.Generator | None,
                view: str = "left") -> np.ndarray:
        """Linear (H, W, 3) float32 -> (H, W, 3) uint8 RGB. `noise_rng` None: no sensor noise.
        `view` "right" applies right_gain and right_gamma on top of the shared response."""
        if view not in ("left", "right"):
            raise ValueError(f"view must be 'left' or 'right', got {view!r}")
        height, width = radiance.shape[:2]
        gain = np.float32(self.exposure) * np.asarray(self.white_balance, dtype=np.float32)
        gamma = self.gamma
        if view == "right":
            gain = gain * np.asarray(self.right_gain, dtype=np.float32)
            gamma = gamma * self.right_gamma
        image = radiance * gain  # a new array: the caller's radiance stays as rendered
        if self.vignetting > 0:
            image *= _vignette(height, width, self.vignetting)[..., None]
        if self.blur_sigma > 0.05:
            image = cv2.GaussianBlur(image, (0, 0), self.blur_sigma, borderType=cv2.BORDER_REFLECT)
        if noise_rng is not None and self.noise_sigma > 0:
            # Zero-mean uniform noise with the drawn standard deviation: 3x cheaper to draw than
            # Gaussian and, after gamma and 8-bit quantisation, not distinguishable by eye.
            noise = noise_rng.random(image.shape, dtype=np.float32)
            noise -= np.float32(0.5)
            noise *= np.float32(self.noise_sigma * np.sqrt(12.0))
            image += noise
        # Gamma through a lookup table on 12-bit codes: a power per pixel costs 10x more.
        image *= np.float32(_LUT_SIZE - 1)
        image += np.float32(0.5)
        np.clip(image, 0.0, _LUT_SIZE - 1, out=image)
        codes = image.astype(np.uint16)
        table = (np.linspace(0.0, 1.0, _LUT_SIZE) ** (1.0 / gamma) * 255.0 + 0.5).astype(np.uint8)
        return table[codes]


def _vignette(height: int, width: int, strength: float) -> np.ndarray:
    """1 at the centre falling to 1 - strength at the corners (cos^4-like, as a quadratic)."""
    ys = (np.arange(height, dtype=np.float32) - (height - 1) / 2) / ((height - 1) / 2)
    xs = (np.arange(width, dtype=np.float32) - (width - 1) / 2) / ((width - 1) / 2)
    radius2 = (ys[:, None] ** 2 + xs[None, :] ** 2) / 2.0
    return 1.0 - np.float32(strength) * radius2
