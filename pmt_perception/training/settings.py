"""`TrainConfig`: the typed, frozen settings of one `pmt-train` run.

Loaded as strictly as ModelConfig: an unknown or missing key, or a value of the wrong type, is a
`ValueError` that names the key and the file. The values themselves live in config/train/*.yaml
(`paper.yaml` documents every key); this class gives them types and checks them. The recipe files
and their `extends:` chains are resolved in `recipes.py`, the command line in `options.py`.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from typing import Any, Mapping, Optional

from pmt_perception.config import from_dict, to_plain

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("none", "cosine", "poly", "step")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
POSITIVE_INTS = ("batch_size", "iterations", "eval_interval", "checkpoint_interval", "log_interval")


# kw_only: fields keep the order of the recipe files (init_checkpoint next to the model) even
# though init_checkpoint has a default and the fields after it do not.
@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run (DESIGN.md §3 recipe); see config/train/paper.yaml for each key."""

    data: str
    data_overrides: Mapping[str, Any]      # deep-merged into config/data/<data>.yaml
    train_split: str
    val_split: str
    val_samples: Optional[int]             # None: the whole validation split
    model: str
    model_overrides: Mapping[str, Any]     # keyword overrides of config/model/<model>.yaml
    # Weights to start from (not a resume). Default only for run directories written before the
    # key existed (their config.yaml lacks it); every recipe states it through paper.yaml.
    init_checkpoint: Optional[str] = None
    loss: str
    loss_overrides: Mapping[str, Any]
    optimizer: str
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    batch_size: int                        # global: split over the torchrun processes
    iterations: int                        # the LR schedule spans these
    stop_after: Optional[int]              # end this invocation early; None: at `iterations`
    lr_schedule: str
    warmup_iterations: int
    min_lr_ratio: float
    grad_clip_norm: Optional[float]
    precision: str
    channels_last: bool
    sync_batchnorm: bool
    eval_interval: int
    early_stopping_metric: str
    early_stopping_patience: int           # 0: never stop early
    best_metric: str
    checkpoint_interval: int
    snapshot_steps: tuple[int, ...]
    log_interval: int
    image_interval: int                    # 0: no TensorBoard images
    workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int
    seed: int
    deterministic: bool
    threads: Optional[int]                 # None: torch's default
    device: str
    run_dir: str

    def __post_init__(self) -> None:
        # Frozen all the way down: the override mappings become read-only views, so no part of
        # a run can change the settings the checkpoint and config.yaml record.
        for name in ("data_overrides", "model_overrides", "loss_overrides"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))
        choices = {"optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES, "precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in POSITIVE_INTS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists: what config.yaml and the checkpoints hold."""
        return to_plain(self)


def train_config_from_dict(data: Mapping[str, Any], *, source: str) -> TrainConfig:
    """A TrainConfig from a resolved mapping; every problem is a ValueError naming `source`."""
    values = dict(data)
    hints = typing.get_type_hints(TrainConfig)
    for name in sorted(set(values) & set(hints)):
        values[name] = _checked(name, values[name], hints[name], source)
    try:
        return from_dict(TrainConfig, values, source=source)   # unknown / missing keys
    except ValueError as error:
        if str(error).startswith(source):
            raise
        raise ValueError(f"{source}: {error}") from None      # a check of __post_init__


def _checked(name: str, value: Any, hint: Any, source: str) -> Any:
    """`value` if it has type `hint` (an integral float counts as an int); else ValueError."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        element = args[0]
        if isinstance(value, (list, tuple)) and (args[-1] is Ellipsis or len(value) == len(args)):
            return tuple(_checked(name, item, element, source) for item in value)
    elif origin is collections.abc.Mapping:
        if isinstance(value, Mapping):
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return value
    raise ValueError(f"{source}: {name} must be {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "a list of numbers"
    if typing.get_origin(hint) is collections.abc.Mapping:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number",
            str: "a string"}.get(hint, str(hint))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return types.MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value
