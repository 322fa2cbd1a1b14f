"""Typed data settings, read from config/data/<dataset>.yaml (the only place defaults live).

Every data config has the same top level:

    dataset: cityscapes | kitti2015 | trimbot2020 | sroses | synthetic
    root: where the dataset lies (null for on-the-fly synthetic data)
    train_split / val_split: the split names `build_dataset` uses for training and validation
    loader: dataset-specific layout settings (checked by the dataset's own dataclass)
    augment: StereoAugment settings (DESIGN.md §3: the paper's ranges)
    class_uniform: class-uniform sampling of rare classes
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..config import from_dict, load_yaml, resolve_config_path


def _check_range(owner: object, name: str, *, low: float, high: float | None = None) -> None:
    first, second = getattr(owner, name)
    if first > second or first < low or (high is not None and second > high):
        limit = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{type(owner).__name__}.{name}: range {first}..{second} "
                         f"is reversed or outside {limit}")


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    enabled: bool
    # Each photometric transform (brightness, contrast, saturation, blur) is applied with this
    # probability, with parameters drawn uniformly from its range, identically to both views.
    photometric_probability: float
    brightness: tuple[float, float]
    contrast: tuple[float, float]
    saturation: tuple[float, float]
    blur_sigma: tuple[float, float]
    # Zoom factor (uniform); disparity is multiplied by the exact horizontal scale.
    zoom: tuple[float, float]
    crop_size: tuple[int, int]  # H, W of the training crop

    def __post_init__(self) -> None:
        if not 0.0 <= self.photometric_probability <= 1.0:
            raise ValueError("augment.photometric_probability must be in [0, 1]")
        for name in ("brightness", "contrast", "saturation", "blur_sigma"):
            _check_range(self, name, low=0.0)
        _check_range(self, "zoom", low=0.05, high=20.0)
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ValueError(f"augment.crop_size must be (H, W) >= 1, got {self.crop_size}")


@dataclasses.dataclass(frozen=True)
class ClassUniformSettings:
    enabled: bool
    # Share of draws that first pick a class uniformly, then an image that contains it; the rest
    # are uniform over images.
    class_fraction: float
    # Where the per-image class-presence table is cached; null: ~/.cache/pmt_perception.
    cache_dir: str | None

    def __post_init__(self) -> None:
        if not 0.0 <= self.class_fraction <= 1.0:
            raise ValueError("class_uniform.class_fraction must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str
    root: str | None
    train_split: str
    val_split: str
    loader: dict[str, Any]
    augment: AugmentSettings
    class_uniform: ClassUniformSettings


def load_data_config(name_or_path: str | os.PathLike = "synthetic", **overrides: Any) -> DataConfig:
    """config/data/<name>.yaml (or a path) with top-level keyword overrides (e.g. root=...)."""
    path = resolve_config_path(name_or_path, "data")
    data = {**load_yaml(path), **overrides}
    return from_dict(DataConfig, data, source=str(path))
