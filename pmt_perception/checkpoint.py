"""The one checkpoint format (DESIGN.md §4): written atomically, read with weights_only=True.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
    format            "pmt_perception/1"
    model_state       state dict of the (unwrapped) PMTNet
    model_config      ModelConfig as a plain dict
    class_names       list[str]
    palette           list[[r, g, b]]
    ... training checkpoints add optimizer, scheduler, step, metrics, rng, config, ...
Nothing in it is a pickled object, so `torch.load(weights_only=True)` reads it and a
checkpoint from an untrusted source cannot run code.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path
from .config import ModelConfig, from_dict, to_plain

FORMAT = "pmt_perception/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupted, not weights-only, or not ours."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module, config: ModelConfig,
                    class_names: list[str], palette: Any, half: bool = False,
                    **extra: Any) -> Path:
    """Write atomically (temp file in the same folder + rename): a reader or a crash never
    sees half a checkpoint. `half` stores floating-point weights as fp16 (shipping size)."""
    state = unwrap(model).state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "model_state": {k: v.detach().cpu() for k, v in state.items()},
        "model_config": to_plain(config),
        "class_names": list(class_names),
        "palette": [[int(c) for c in color] for color in palette],
        **extra,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with weights_only=True; any failure is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused, it is not a weights-only checkpoint (it holds pickled Python "
            f"objects that could run code): {str(error).splitlines()[0]}") from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{path}: corrupted or truncated checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pmt_perception checkpoint (format "
                              f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    for key in ("model_state", "model_config", "class_names", "palette"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return payload


def model_config_of(payload: dict, *, source: str = "checkpoint") -> ModelConfig:
    # Never download weights when rebuilding a trained model: the checkpoint has them all.
    return from_dict(ModelConfig, {**payload["model_config"], "pretrained": False}, source=source)


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"):
    """(model in eval mode with the checkpoint's weights, payload)."""
    from .network import build_model

    payload = load_checkpoint(path, map_location=map_location)
    model = build_model(model_config_of(payload, source=str(path)))
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["model_state"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit its model config ({error})") from error
    return model.eval(), payload
