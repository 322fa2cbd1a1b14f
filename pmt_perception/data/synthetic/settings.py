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
    """A rectified pinhole stereo rig; square pixels (fy = fx). Focal length and baseline are
    drawn per scene from their ranges (uniform), so the same layout statistics come with varying
    disparity ranges and object-size-to-disparity relations."""

    focal_per_width: Range
    # Principal point as a fraction of (W - 1) and (H - 1): 0.5 puts it on the image centre
    # in the convention where pixel (u, v) has its centre at integer coordinates.
    cx_fraction: float
    cy_fraction: float
    baseline_m: Range

    def __post_init__(self) -> None:
        _check_range(self, "focal_per_width")
        _check_range(self, "baseline_m")
        if self.focal_per_width[0] <= 0 or self.baseline_m[0] <= 0:
            raise ValueError("camera.focal_per_width and camera.baseline_m must be > 0")


@dataclasses.dataclass(frozen=True)
class SceneSettings:
    reference_width: int
    # Hard limit: no surface comes closer than fx * B / max_disparity_px.
    max_disparity_px: float
    # Per scene, the upper ends of object_disparity_px and ground_max_disparity_px are multiplied
    # by a factor drawn from this range (<= 1): some scenes are all far, some reach the limit.
    disparity_range_scale: Range
    # Objects are placed at disparities drawn log-uniformly from this range.
    object_disparity_px: Range
    # The camera height is raised until the ground's largest disparity stays below this.
    ground_max_disparity_px: float
    camera_height_m: Range
    camera_pitch_deg: Range
    camera_roll_deg: Range
    # The backdrop ("sky") plane's disparity: its distance follows from the scene's fx * B, so it
    # stays behind every object (object_disparity_px starts above it) whatever the rig.
    backdrop_disparity_px: Range
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
    # Small objects (boxes, spheres, cylinders, labelled as such) floating in front of the scene,
    # at any rotation, FlyingThings-style: their disparity and extent in px at reference_width.
    floaters: CountRange
    floater_disparity_px: Range
    floater_size_px: Range
    # Share of surfaces given a nearly uniform material, where stereo matching is ambiguous.
    texture_poor_fraction: float
    texture_size: int

    def __post_init__(self) -> None:
        for name in ("object_disparity_px", "camera_height_m", "camera_pitch_deg", "camera_roll_deg",
                     "backdrop_disparity_px", "thin_width_px", "floater_disparity_px", "floater_size_px"):
            _check_range(self, name)
        _check_range(self, "disparity_range_scale", lower=0.01)
        for name in ("walls", "boxes", "spheres", "cylinders", "bushes", "leaves_per_bush", "poles",
                     "branches_per_pole", "floaters"):
            _check_range(self, name, lower=0)
        if self.disparity_range_scale[1] > 1.0:
            raise ValueError("scene.disparity_range_scale must stay <= 1 (it only narrows ranges)")
        if self.backdrop_disparity_px[0] <= 0 or self.backdrop_disparity_px[1] >= self.object_disparity_px[0]:
            raise ValueError("scene.backdrop_disparity_px must be > 0 and below object_disparity_px")
        if self.object_disparity_px[1] > self.max_disparity_px:
            raise ValueError("scene.object_disparity_px must stay below scene.max_disparity_px")
        if self.floater_disparity_px[1] > self.max_disparity_px:
            raise ValueError("scene.floater_disparity_px must stay below scene.max_disparity_px")
        if self.ground_max_disparity_px > self.max_disparity_px:
            raise ValueError("scene.ground_max_disparity_px must stay below scene.max_disparity_px")
        if not 0.0 <= self.texture_poor_fraction <= 1.0:
            raise ValueError("scene.texture_poor_fraction must be in [0, 1]")
        if self.texture_size < 16 or self.texture_size & (self.texture_size - 1):
            raise ValueError("scene.texture_size must be a power of two >= 16")


@dataclasses.dataclass(frozen=True)
class TextureSettings:
    """Photographs as surface textures (see photos.py) and shiny surfaces.

    `photo_dir` is the folder `pmt-fetch-textures` fills; null, missing or empty: procedural
    textures only (one warning says so). A leading ~ is the user's home.
    """

    photo_dir: str | None
    photo_fraction: float         # share of (not texture-poor, non-sky) materials made from a photo
    photo_crop: Range             # crop side as a fraction of the photo's shorter side
    photo_rotation_deg: Range
    photo_hue_shift: float        # +- fraction of the hue circle
    photo_saturation: Range       # multiplier
    photo_contrast: Range         # multiplier around the crop's mean
    photo_brightness: Range       # multiplier (display values)
    photo_grey_fraction: float    # share of photo textures turned grey before tinting
    specular_fraction: float      # share of object materials (boxes, spheres, cylinders, poles) that shine
    specular_strength: Range      # peak highlight / sun irradiance
    shininess: Range              # Blinn-Phong exponent

    def __post_init__(self) -> None:
        for name in ("photo_fraction", "photo_grey_fraction", "specular_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"textures.{name} must be in [0, 1]")
        _check_range(self, "photo_crop", lower=0.01)
        if self.photo_crop[1] > 1.0:
            raise ValueError("textures.photo_crop must stay <= 1 (a fraction of the photo)")
        _check_range(self, "photo_rotation_deg")
        for name in ("photo_saturation", "photo_contrast", "photo_brightness", "specular_strength"):
            _check_range(self, name, lower=0.0)
        _check_range(self, "shininess", lower=1.0)


@dataclasses.dataclass(frozen=True)
class PhotometricSettings:
    """Per-scene lighting and camera response. The `view_*` ranges make the two views differ
    a little, as two real sensors and lenses do: the right view's gain, per-channel colour and
    gamma are the left's times factors drawn from them."""

    sun_elevation_deg: Range
    sun_intensity: Range
    ambient: Range
    exposure: Range
    white_balance: Range        # per-channel gain
    gamma: Range
    vignetting: Range           # relative darkening at the image corners
    blur_sigma: Range           # Gaussian, pixels at reference_width
    noise_sigma: Range          # additive Gaussian on the [0, 1] scale; independent per view
    view_gain: Range            # right/left exposure ratio
    view_colour: Range          # right/left per-channel ratio, on top of view_gain
    view_gamma: Range           # right/left gamma ratio

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
    textures: TextureSettings
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
