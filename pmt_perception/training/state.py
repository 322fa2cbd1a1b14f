"""Training checkpoints: everything a bit-for-bit resume needs, in weights_only-loadable form.

On top of the shipping checkpoint (pmt_perception.checkpoint) a training checkpoint holds the
optimizer, LR scheduler, gradient scaler and loss-module states (the loss has parameters when it
learns uncertainty weights), the step, the sampler position, the best score and early-stopping
counter, the resolved settings, and every rank's RNG states. `torch.load(weights_only=True)`
only admits tensors, numbers, strings, lists, tuples and dicts, so the RNG states - numpy's is a
tuple holding an ndarray, Python's a tuple of ints - are converted to tensors here and back.
"""
from __future__ import annotations

import argparse
import dataclasses
import random
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import yaml

from pmt_perception.checkpoint import CheckpointError, load_checkpoint, model_config_of, save_checkpoint
from pmt_perception.network import build_model

CHECKPOINT_KIND = "training"


def capture_rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
                  "position": int(numpy_state[2]), "has_gauss": int(numpy_state[3]),
                  "cached_gaussian": float(numpy_state[4])},
        "python": {"version": int(python_state[0]),
                   "state": torch.tensor(python_state[1], dtype=torch.int64),
                   "gauss_next": python_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"],
                         numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(int(v) for v in python_state["state"]),
                     python_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def save_training_checkpoint(path: str | Path, *, network: torch.nn.Module, model_config: Any,
                             class_names: Sequence[str], palette: Any, optimizer: Any,
                             scheduler: Any, scaler: Any, criterion: torch.nn.Module,
                             progress: dict[str, Any], rng_states: list[dict[str, Any]],
                             settings: dict[str, Any], metrics: dict[str, Any]) -> Path:
    """One atomic file (temp + rename, via save_checkpoint); `progress` holds step, epoch,
    sampler position, best score and early-stopping counter."""
    return save_checkpoint(
        path, model=network, config=model_config, class_names=list(class_names),
        palette=np.asarray(palette).tolist(), kind=CHECKPOINT_KIND,
        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
        scaler=scaler.state_dict(), loss_state=criterion.state_dict(), progress=dict(progress),
        rng=rng_states, settings=settings, metrics=_plain_metrics(metrics))


def _plain_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Scalar validation metrics only (the per-class lists live in the run's JSON logs)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)}


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    payload = load_checkpoint(path)
    if payload.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not a training checkpoint (no optimizer/step state); "
                         "--resume needs a last.pt or best.pt written by pmt-train")
    for key in ("optimizer", "scheduler", "scaler", "loss_state", "progress", "rng", "settings"):
        if key not in payload:
            raise CheckpointError(f"{path}: training checkpoint lacks {key!r}")
    return payload


def slim_checkpoint(source: str | Path, destination: str | Path, *, half: bool = True,
                    config_changes: Optional[dict[str, Any]] = None,
                    change_parts: bool = False) -> Path:
    """A shipping checkpoint from a training one: weights (fp16 when `half`), model config,
    class names, palette, and the step and validation metrics it was chosen by.
    `config_changes`: model-config fields to change that hold no weights (e.g.
    soft_argmin_window); one that changes the weights' shapes is refused by load_state_dict.
    `change_parts`: the changes may also add parts (they keep their initialisation: a start for
    `pmt-train --init-checkpoint`), drop parts (their weights are discarded) and reshape parts
    (a tensor whose shape changed keeps its initialisation, as does the whole backbone when
    `backbone` changes: weights of another network are no start)."""
    payload = load_checkpoint(source)
    source_config = model_config_of(payload, source=str(source))
    unknown = set(config_changes or {}) - {f.name for f in dataclasses.fields(source_config)}
    if unknown:
        raise ValueError(f"not model-config fields: {sorted(unknown)}")
    config = dataclasses.replace(source_config, **(config_changes or {}))
    model = build_model(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["model_state"].items()}
    reshaped: list[str] = []
    if change_parts:
        own = model.state_dict()
        new_backbone = config.backbone != source_config.backbone
        reshaped = [k for k, v in state.items() if k in own and (
            own[k].shape != v.shape or (new_backbone and k.startswith("backbone.")))]
        state = {k: v for k, v in state.items() if k not in reshaped}
    missing, dropped = model.load_state_dict(state, strict=not change_parts)
    missing = [k for k in missing if k not in reshaped]
    for what, keys in (("new, initialised", missing), ("reshaped, initialised", reshaped),
                       ("dropped", dropped)):
        if keys:
            parts = sorted({".".join(k.split(".")[:2]) for k in keys})
            print(f"{what}: {len(keys)} tensors in {', '.join(parts)}")
    progress = payload.get("progress", {})
    return save_checkpoint(destination, model=model, config=model.config,
                           class_names=payload["class_names"], palette=payload["palette"],
                           half=half, kind="weights",
                           step=int(progress.get("step", payload.get("step", 0))),  # training or shipped
                           metrics=payload.get("metrics", {}),
                           settings=payload.get("settings", {}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pmt_perception.training.state",
        description="Strip a training checkpoint down to a shipping one (weights + config).")
    parser.add_argument("source", help="training checkpoint (e.g. runs/NAME/best.pt)")
    parser.add_argument("destination", help="output file (written atomically)")
    parser.add_argument("--fp32", action="store_true", help="keep fp32 weights (default fp16)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a model-config field that holds no weights, e.g. "
                             "soft_argmin_window=1 (VALUE is YAML; repeatable)")
    parser.add_argument("--change-parts", action="store_true",
                        help="let --set add or reshape parts (randomly initialised: a start "
                             "for pmt-train --init-checkpoint) or drop parts (weights discarded)")
    args = parser.parse_args(argv)
    changes = {}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected FIELD=VALUE")
        changes[field.strip()] = yaml.safe_load(value)
    out = slim_checkpoint(args.source, args.destination, half=not args.fp32, config_changes=changes,
                          change_parts=args.change_parts)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
