"""The rectified pinhole stereo rig the synthetic scenes are seen through.

Coordinates are the LEFT camera's optical frame (REP-103 optical: x right, y down, z forward).
The right camera sits at (baseline, 0, 0) with the same orientation, so both views share the
z axis and a surface point's depth Z is the same number in both. Rays are cast as
origin + t * (dx, dy, 1): with a unit z component, the ray parameter t IS the depth Z, and the
left-view ground-truth disparity is fx * baseline / t exactly.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pmt_perception.geometry import StereoCamera

from .settings import CameraSettings, check_size


@dataclasses.dataclass(frozen=True)
class StereoRig:
    height: int
    width: int
    fx: float
    fy: float
    cx: float
    cy: float
    baseline: float

    @classmethod
    def sample(cls, rng: np.random.Generator, settings: CameraSettings, *,
               size: tuple[int, int]) -> "StereoRig":
        """A rig with focal length and baseline drawn from the settings' ranges. The draws do not
        depend on `size`, so a seed gives the same rig (fx proportional to W) at every size."""
        focal_per_width = float(rng.uniform(*settings.focal_per_width))
        baseline = float(rng.uniform(*settings.baseline_m))
        return cls.build(focal_per_width=focal_per_width, baseline=baseline, size=size,
                         cx_fraction=settings.cx_fraction, cy_fraction=settings.cy_fraction)

    @classmethod
    def build(cls, *, focal_per_width: float, baseline: float, size: tuple[int, int],
              cx_fraction: float = 0.5, cy_fraction: float = 0.5) -> "StereoRig":
        height, width = check_size(size)
        focal = focal_per_width * width
        return cls(height=height, width=width, fx=focal, fy=focal,
                   cx=cx_fraction * (width - 1), cy=cy_fraction * (height - 1), baseline=baseline)

    def stereo_camera(self) -> StereoCamera:
        """The package's one camera model (geometry.StereoCamera) of this rig: what camera
        infos, bags and point clouds of synthetic frames are built from."""
        return StereoCamera.rectified(width=self.width, height=self.height, fx=self.fx,
                                      fy=self.fy, cx=self.cx, cy=self.cy, baseline=self.baseline)

    @property
    def focal_per_width(self) -> float:
        return self.fx / self.width

    @property
    def ray_dx(self) -> np.ndarray:
        """x slope of the ray through each pixel column, float32 (W,)."""
        return ((np.arange(self.width, dtype=np.float64) - self.cx) / self.fx).astype(np.float32)

    @property
    def ray_dy(self) -> np.ndarray:
        """y slope of the ray through each pixel row, float32 (H,)."""
        return ((np.arange(self.height, dtype=np.float64) - self.cy) / self.fy).astype(np.float32)

    def eye_x(self, view: str) -> float:
        if view == "left":
            return 0.0
        if view == "right":
            return self.baseline
        raise ValueError(f"view must be 'left' or 'right', got {view!r}")

    def disparity_from_depth(self, depth: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            disparity = (self.fx * self.baseline) / depth.astype(np.float64)
        return np.where(np.isfinite(depth) & (depth > 0), disparity, 0.0).astype(np.float32)

    def project_bounds(self, low: np.ndarray, high: np.ndarray, *, eye_x: float,
                       margin: int = 2) -> tuple[int, int, int, int] | None:
        """Pixel rectangle (v0, v1, u0, u1), end-exclusive, that contains the axis-aligned box
        [low, high] as seen from (eye_x, 0, 0); None when it is off screen or behind the camera.

        x/z and y/z are monotonic in each coordinate for z > 0, so the box's corners bound them.
        A box reaching behind the camera gets the whole image (rare: nothing is placed that close).
        """
        if high[2] <= 1e-3:
            return None
        if low[2] <= 1e-3:
            return 0, self.height, 0, self.width
        xs = np.array([low[0] - eye_x, high[0] - eye_x])[:, None] / np.array([low[2], high[2]])[None, :]
        ys = np.array([low[1], high[1]])[:, None] / np.array([low[2], high[2]])[None, :]
        u0 = int(np.floor(self.cx + self.fx * xs.min())) - margin
        u1 = int(np.ceil(self.cx + self.fx * xs.max())) + margin + 1
        v0 = int(np.floor(self.cy + self.fy * ys.min())) - margin
        v1 = int(np.ceil(self.cy + self.fy * ys.max())) + margin + 1
        u0, u1 = max(u0, 0), min(u1, self.width)
        v0, v1 = max(v0, 0), min(v1, self.height)
        if u0 >= u1 or v0 >= v1:
            return None
        return v0, v1, u0, u1
