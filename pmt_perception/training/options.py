"""Training settings: a YAML file under config/train/ sets the defaults, the command line wins.

timm-style: every top-level key of the YAML becomes a flag (`lr` -> `--lr`, `batch_size` ->
`--batch-size`), so the set of flags and the config file cannot drift apart and a typo is an
argparse error, not a silently ignored setting. Values on the command line are parsed as YAML
(`--crop-size "[128, 256]"`, `--grad-clip-norm null`, `--channels-last false`), and mappings
given on the command line are deep-merged into the file's (`--data-overrides "{root: out}"`).
The fully resolved settings are written into the run directory as `config.yaml`, which is
itself a valid `--config` for an exact re-run.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from pmt_perception.config import load_yaml, resolve_config_path

# Keys every training config must define (the loop reads them all); a file that lacks one is
# an error here rather than a KeyError deep in a run.
REQUIRED_KEYS = (
    "data", "data_overrides", "train_split", "val_split", "val_samples",
    "model", "model_overrides", "loss", "loss_overrides",
    "optimizer", "lr", "weight_decay", "betas", "batch_size", "iterations", "lr_schedule",
    "warmup_iterations", "min_lr_ratio", "stop_after", "grad_clip_norm", "precision", "channels_last",
    "sync_batchnorm", "eval_interval", "early_stopping_metric", "early_stopping_patience",
    "best_metric", "checkpoint_interval", "snapshot_steps", "log_interval", "image_interval", "workers",
    "pin_memory", "persistent_workers", "prefetch_factor", "seed", "deterministic", "threads",
    "run_dir", "device",
)
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("none", "cosine", "poly", "step")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` over `base`, recursing into mappings both have (lists are replaced whole)."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_value(text: str, default: Any) -> Any:
    """A command-line string as YAML, coerced to the default's type where that is unambiguous.

    YAML 1.1 reads `1e-3` (no dot) as a string and `5` as an int; for a float setting both
    mean a number, so they are converted rather than rejected.
    """
    value = yaml.safe_load(text)
    if isinstance(default, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value is None or default is None:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value
    if isinstance(default, bool) and not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) \
            and value.is_integer():
        return int(value)
    return value


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def build_parser(defaults: Mapping[str, Any], *, prog: str = "pmt-train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Train PMT. Defaults come from --config (config/train/<name>.yaml "
        "or a path); every key of that file is also a flag here, and flags win. Values are YAML.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default="synthetic",
                        help="training config: a name under config/train/ or a YAML path")
    parser.add_argument("--resume", default=None, metavar="CHECKPOINT_OR_RUN_DIR",
                        help="continue a run exactly where its checkpoint left off: a checkpoint "
                        "file, or a run directory (its last.pt); 'auto' resumes run_dir/last.pt "
                        "when it exists and starts fresh otherwise")
    for key, default in defaults.items():
        # The formatter appends the config file's value: "(default: ...)".
        parser.add_argument(_flag(key), dest=key, default=default, metavar="VALUE",
                            type=lambda text, d=default: parse_value(text, d),
                            help="YAML value; overrides the config file")
    return parser


def check_settings(settings: Mapping[str, Any], *, source: str) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in settings]
    if missing:
        raise ValueError(f"{source}: training config lacks key(s) {missing}")
    choices = {"optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES, "precision": PRECISIONS}
    for key, allowed in choices.items():
        if settings[key] not in allowed:
            raise ValueError(f"{source}: {key} must be one of {allowed}, got {settings[key]!r}")
    for key in ("batch_size", "iterations", "eval_interval", "checkpoint_interval",
                "log_interval"):
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise ValueError(f"{source}: {key} must be a positive integer, got {settings[key]!r}")
    for key in ("data_overrides", "model_overrides", "loss_overrides"):
        if not isinstance(settings[key], Mapping):
            raise ValueError(f"{source}: {key} must be a mapping, got {settings[key]!r}")
    if not isinstance(settings["snapshot_steps"], list):
        raise ValueError(f"{source}: snapshot_steps must be a list of steps, got "
                         f"{settings['snapshot_steps']!r}")
    if not settings["lr"] > 0:
        raise ValueError(f"{source}: lr must be > 0, got {settings['lr']!r}")


def resolve_settings(argv: Sequence[str] | None = None, *, prog: str = "pmt-train"
                     ) -> tuple[dict[str, Any], str | None]:
    """(resolved settings, resume argument) from the config file and the command line."""
    # First pass: only --config, to know which file provides the defaults of the second.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default="synthetic")
    known, _ = pre.parse_known_args(argv)
    path = resolve_config_path(known.config, "train")
    file_settings = load_yaml(path)
    check_settings(file_settings, source=str(path))
    parser = build_parser(file_settings, prog=prog)
    args = parser.parse_args(argv)
    settings = {key: getattr(args, key) for key in file_settings}
    # A mapping on the command line refines the file's mapping instead of replacing it.
    for key, file_value in file_settings.items():
        if isinstance(file_value, Mapping) and isinstance(settings[key], Mapping):
            settings[key] = deep_merge(file_value, settings[key])
    check_settings(settings, source=f"{path} + command line")
    settings["config_source"] = str(path)
    return settings, args.resume


def resolve_resume_path(resume: str | None, run_dir: Path) -> Path | None:
    if resume is None:
        return None
    if resume == "auto":
        candidate = run_dir / "last.pt"
        return candidate if candidate.is_file() else None
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return path
