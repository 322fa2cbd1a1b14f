"""Typed settings of the synthetic stereo generator; the values live in config/data/synthetic.yaml.

Distances in metres, angles in degrees, disparities in pixels *at `scene.reference_width`*: the
focal length grows with the image width (fx = focal_per_width * W), so one scene seen at 256x512
or 1024x2048 has the same metric layout and its disparities scale with W.
"""
from __future__ import annotations

import dataclasses

Range = tuple[float, float]
CountRange = tuple[int, int]


def _check_range(owner: object, name: str, *, lower: float | None = None) -> None:
    low, high = getattr(owner, name)
    if low > high:
        raise ValueError(f"{type(owner).__name__}.{name}: range {low}..{high} is reversed")
    if lower is not None and low < lower:
        raise ValueError(f"{type(owner).__name__}.{name}: {low} is below the minimum {lower}")


@dataclasses.dataclass(frozen=True)
class CameraSettings:
    """A rectified pinhole stereo rig; square pixels (fy = fx)."""

    focal_per_width: float
    # Principal point as a fraction of (W - 1) and (H - 1): 0.5 puts it on the image centre
    # in the convention where pixel (u, v) has its centre at integer coordinates.
    cx_fraction: float
    cy_fraction: float
    baseline_m: float

    def __post_init__(self) -> None:
        if self.focal_per_width <= 0 or self.baseline_m <= 0:
            raise ValueError("camera.focal_per_width and camera.baseline_m must be > 0")


@dataclasses.dataclass(frozen=True)
class SceneSettings:
    reference_width: int
    # Hard limit: no surface comes closer than fx * B / max_disparity_px.
    max_disparity_px: float
    # Objects are placed at disparities drawn log-uniformly from this range.
    object_disparity_px: Range
    # The camera height is raised until the ground's largest disparity stays below this.
    ground_max_disparity_px: float
    camera_height_m: Range
    camera_pitch_deg: Range
    camera_roll_deg: Range
    backdrop_distance_m: Range
    walls: CountRange
    boxes: CountRange
    spheres: CountRange
    cylinders: CountRange
    bushes: CountRange
    leaves_per_bush: CountRange
    poles: CountRange
    branches_per_pole: CountRange
    # Width of poles and branches in pixels at reference_width (the S-ROSeS thin-stem case).
    thin_width_px: Range
    # Share of surfaces given a nearly uniform material, where stereo matching is ambiguous.
    texture_poor_fraction: float
    texture_size: int

    def __post_init__(self) -> None:
        for name in ("object_disparity_px", "camera_height_m", "camera_pitch_deg", "camera_roll_deg",
                     "backdrop_distance_m", "thin_width_px"):
            _check_range(self, name)
        for name in ("walls", "boxes", "spheres", "cylinders", "bushes", "leaves_per_bush", "poles",
                     "branches_per_pole"):
            _check_range(self, name, lower=0)
        if self.object_disparity_px[1] > self.max_disparity_px:
            raise ValueError("scene.object_disparity_px must stay below scene.max_disparity_px")
        if self.ground_max_disparity_px > self.max_disparity_px:
            raise ValueError("scene.ground_max_disparity_px must stay below scene.max_disparity_px")
        if not 0.0 <= self.texture_poor_fraction <= 1.0:
            raise ValueError("scene.texture_poor_fraction must be in [0, 1]")
        if self.texture_size < 16 or self.texture_size & (self.texture_size - 1):
            raise ValueError("scene.texture_size must be a power of two >= 16")


@dataclasses.dataclass(frozen=True)
class PhotometricSettings:
    """Per-scene lighting and camera response; the same parameters for both views."""

    sun_elevation_deg: Range
    sun_intensity: Range
    ambient: Range
    exposure: Range
    white_balance: Range        # per-channel gain
    gamma: Range
    vignetting: Range           # relative darkening at the image corners
    blur_sigma: Range           # Gaussian, pixels at reference_width
    noise_sigma: Range          # additive Gaussian on the [0, 1] scale; independent per view

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_range(self, field.name, lower=0.0)


@dataclasses.dataclass(frozen=True)
class GeneratorSettings:
    size: tuple[int, int]                 # H, W of generated pairs
    seed: int
    samples_per_split: dict[str, int]     # on-the-fly dataset length per split
    camera: CameraSettings
    scene: SceneSettings
    photometric: PhotometricSettings

    def __post_init__(self) -> None:
        check_size(self.size)
        if any(count < 1 for count in self.samples_per_split.values()):
            raise ValueError("samples_per_split values must be >= 1")


MIN_SIZE, MAX_SIZE = 64, 4096


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2:
        raise ValueError(f"size must be (H, W), got {size}")
    height, width = int(size[0]), int(size[1])
    if not (MIN_SIZE <= height <= MAX_SIZE and MIN_SIZE <= width <= MAX_SIZE):
        raise ValueError(f"size {height}x{width} is outside {MIN_SIZE}..{MAX_SIZE} per side")
    return height, width
