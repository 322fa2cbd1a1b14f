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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path
from .config import ModelConfig, from_dict, load_model_config, share_dir, to_plain
from .network import PMTNet, build_model

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
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path}: an exported ONNX model, not a PyTorch checkpoint (.pt); "
                              "pass the .pt it was exported from")
    _check_container(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused, it is not a weights-only checkpoint (it holds pickled Python "
            f"objects that could run code): {str(error).splitlines()[0]}") from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{path}: corrupted or truncated checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not a pmt_perception checkpoint (format {found!r})")
    for key in ("model_state", "model_config", "class_names", "palette"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    _check_classes(path, payload)
    return payload


# torch.save writes a zip archive (it starts with a local file header); files from torch < 1.6
# (and plain pickle.dump) start with the pickle protocol byte 0x80. Anything else was never
# written by torch. (A truncated zip still starts with its header: torch.load then reports it.)
_ZIP_HEADER, _PICKLE_PROTOCOL = b"PK\x03\x04", b"\x80"


def _check_container(path: Path) -> None:
    """A clear error for a file that is no torch checkpoint at all (random bytes, an image,
    text), before torch.load reports it as a pickle it refuses to run."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    if head.startswith(_ZIP_HEADER) or head[:1] == _PICKLE_PROTOCOL:
        return
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither the zip archive torch.save "
                          f"writes nor a pickle; the file starts with {head!r})")


def _check_classes(path: Path, payload: dict) -> None:
    """The class table must describe the model's outputs: a checkpoint whose class_names has
    another length than model_config.num_classes would publish ids no name explains."""
    num_classes = payload["model_config"].get("num_classes") \
        if isinstance(payload["model_config"], dict) else None
    names, palette = payload["class_names"], payload["palette"]
    if num_classes is None:
        raise CheckpointError(f"{path}: model_config lacks num_classes")
    if len(names) != num_classes:
        raise CheckpointError(f"{path}: {len(names)} class names ({', '.join(map(str, names))}) "
                              f"for a model with {num_classes} outputs; the class table does not "
                              "belong to these weights")
    if len(palette) < num_classes:
        raise CheckpointError(f"{path}: palette has {len(palette)} colours for {num_classes} "
                              "classes")


def model_config_of(payload: dict, *, source: str = "checkpoint") -> ModelConfig:
    """The checkpoint's ModelConfig as stored. Its `pretrained` is the training recipe's flag:
    build_model never reads it, so rebuilding a trained model downloads nothing."""
    return from_dict(ModelConfig, payload["model_config"], source=source)


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"):
    """(model in eval mode with the checkpoint's weights, payload)."""
    payload = load_checkpoint(path, map_location=map_location)
    model = build_model(model_config_of(payload, source=str(path)))
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["model_state"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit its model config ({error})") from error
    return model.eval(), payload


# --- which network to run: a checkpoint, the shipped model, or untrained -------------------
# The node, the demo and pmt-evaluate on a bag choose the same way.
@dataclass
class LoadedModel:
    model: PMTNet            # on the CPU, eval mode
    class_names: list[str] | None
    palette: object | None
    description: str         # for logs: where the weights came from
    trained: bool


def shipped_checkpoint() -> Path | None:
    """The first models/*.pt of the installation (sorted by name), or None."""
    models = share_dir() / "models"
    found = sorted(models.glob("*.pt")) if models.is_dir() else []
    return found[0] if found else None


def load_network(checkpoint: str, *, untrained_variant: str, untrained_seed: int) -> LoadedModel:
    """``checkpoint`` if given (errors propagate: an explicit path must exist), else the shipped
    model, else a freshly built ``untrained_variant`` with random weights from the seed."""
    path = Path(checkpoint) if checkpoint else shipped_checkpoint()
    if path is not None:
        model, payload = load_model(path)
        return LoadedModel(model=model, class_names=payload.get("class_names"),
                           palette=payload.get("palette"), description=f"checkpoint {path}",
                           trained=True)
    torch.manual_seed(int(untrained_seed))
    model = build_model(load_model_config(untrained_variant)).eval()
    return LoadedModel(
        model=model, class_names=None, palette=None, trained=False,
        description=(f"UNTRAINED '{untrained_variant}' network (random weights, seed "
                     f"{untrained_seed}): no checkpoint given and none in {share_dir() / 'models'}"))
