"""Settings of `pmt-adapt` and the node's online adaptation (config/adapt.yaml) and their
learning-rate schedules: one place for what both read."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Optional

from .adapt_replay import ReplaySettings
from .cli import parse_size as parse_hxw
from .config import config_dir, load_yaml


@dataclasses.dataclass(frozen=True)
class AdaptSettings:
    steps: int
    lr: float
    lr_schedule: str           # constant | cosine (offline runs; online steps use `lr`)
    online_warmup_steps: int   # online: lr ramps linearly to `lr` over the first updates
    grad_clip: float
    parameters: Any            # "disparity" | "all" | list of module names
    crop: tuple[int, int]
    size: Optional[tuple[int, int]]
    precision: str
    device: str
    seed: int
    weights: dict
    occlusion: dict
    sgbm: dict
    cache_pairs: int
    save_every: int
    bag_frames: int
    replay: ReplaySettings

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"adapt: steps must be >= 0, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"adapt: lr must be > 0, got {self.lr}")
        if any(c % 32 for c in self.crop) or (any(self.crop) and min(self.crop) < 32):
            raise ValueError(f"adapt: crop must be multiples of 32 (>= 32) or [0, 0], got {list(self.crop)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"adapt: lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"adapt: precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.online_warmup_steps < 0:
            raise ValueError(f"adapt: online_warmup_steps must be >= 0, got {self.online_warmup_steps}")
        if self.bag_frames < 1:
            raise ValueError(f"adapt: bag_frames must be >= 1, got {self.bag_frames}")
        unknown = set(self.weights) - {"photometric", "smoothness", "distillation", "proxy",
                                         "proxy_distribution", "proxy_holes"}
        if unknown:
            raise ValueError(f"adapt: unknown loss weights {sorted(unknown)}")


def default_settings_path() -> Path:
    return config_dir() / "adapt.yaml"


def load_settings(path: Optional[Path] = None, **overrides: Any) -> AdaptSettings:
    """config/adapt.yaml (or `path`) with `overrides` (None values ignored); ValueError naming
    the file for unknown or missing keys."""
    path = Path(path) if path is not None else default_settings_path()
    data = load_yaml(path)
    replay_overrides = {key: overrides.pop(f"replay_{key}", None) for key in ("weight", "data")}
    data.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(data.get("replay"), dict):
        data["replay"] = {**data["replay"], **{k: v for k, v in replay_overrides.items() if v is not None}}
    fields = {f.name for f in dataclasses.fields(AdaptSettings)}
    unknown, missing = set(data) - fields, fields - set(data)
    if unknown or missing:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    data["crop"] = tuple(int(c) for c in data["crop"])
    data["size"] = None if data["size"] is None else tuple(int(c) for c in data["size"])
    data["weights"] = {k: float(v) for k, v in data["weights"].items()}
    try:
        if not isinstance(data["replay"], ReplaySettings):
            data["replay"] = ReplaySettings.from_dict(data["replay"])
        return AdaptSettings(**data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error


def parse_size(text: str) -> tuple[int, int]:
    """HxW of at least 32x32 (the package's one HxW parser)."""
    return parse_hxw(text, minimum=32)


def parse_crop(text: str) -> tuple[int, int]:
    """HxW, or 0x0 for whole images."""
    return (0, 0) if text.strip() in ("0", "0x0") else parse_size(text)


def scheduled_lr(settings: AdaptSettings, step: int) -> float:
    """The learning rate of offline step `step` (0-based): constant, or cosine from `lr` to 0
    over `steps` (a function of the step alone, so a resumed run follows the same schedule)."""
    if settings.lr_schedule == "constant" or settings.steps <= 0:
        return settings.lr
    return 0.5 * settings.lr * (1.0 + math.cos(math.pi * step / settings.steps))


def online_lr(settings: AdaptSettings, update: int) -> float:
    """The learning rate of online update `update` (0-based): a linear warm-up to `lr` over
    `online_warmup_steps`, then constant. Full-size first steps on all parameters made the
    first frames of an adapting node worse before they got better (docs/adapt.md)."""
    warmup = settings.online_warmup_steps
    return settings.lr if warmup <= 0 else settings.lr * min(1.0, (update + 1) / warmup)
