"""The `pmt-train` command line: a recipe under config/train/ sets the defaults, flags win.

timm-style: every TrainConfig field is a flag (`lr` -> `--lr`, `batch_size` -> `--batch-size`),
so the flags and the config cannot drift apart and a typo is an argparse error, not a silently
ignored setting. Values on the command line are parsed as YAML (`--crop-size "[128, 256]"`,
`--grad-clip-norm null`, `--channels-last false`), and mappings given on the command line are
deep-merged into the recipe's (`--data-overrides "{root: out}"`; `{_replace_: true, ...}`
replaces it). The recipe's `extends:` chain is resolved first (recipes.py), the result is a
typed TrainConfig (settings.py), and the run directory gets it as `config.yaml`, which is itself
a valid `--config` for an exact re-run.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import yaml

from pmt_perception.config import resolve_config_path

from .recipes import describe, load_recipe, merge
from .settings import TrainConfig, train_config_from_dict

FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


class ResolvedSettings(NamedTuple):
    config: TrainConfig
    resume: str | None       # the --resume argument, as given
    source: str              # the --config file: the run files record it as config_source


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
        "or a path); every training setting is also a flag here, and flags win. Values are YAML.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default="synthetic",
                        help="training config: a name under config/train/ or a YAML path "
                             "(with --resume and no --config: the run's own config.yaml)")
    parser.add_argument("--resume", default=None, metavar="CHECKPOINT_OR_RUN_DIR",
                        help="continue a run exactly where its checkpoint left off: a checkpoint "
                        "file, or a run directory (its last.pt); 'auto' resumes run_dir/last.pt "
                        "when it exists and starts fresh otherwise")
    hints = typing.get_type_hints(TrainConfig)
    for key, default in defaults.items():
        # A plain string setting (a name, a path, a device) is taken as typed: `--run-dir 2024`
        # is a folder, not the number YAML would make of it.
        kind = str if hints.get(key) is str else (lambda text, d=default: parse_value(text, d))
        # The formatter appends the config file's value: "(default: ...)".
        parser.add_argument(_flag(key), dest=key, default=default, metavar="VALUE", type=kind,
                            help="YAML value; overrides the config file")
    return parser


def resolve_settings(argv: Sequence[str] | None = None, *, prog: str = "pmt-train"
                     ) -> ResolvedSettings:
    """The typed settings from the recipe (its `extends` chain applied) and the command line."""
    # First pass: only --config, to know which file provides the defaults of the second.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--resume")
    pre.add_argument("--run-dir")
    known, _ = pre.parse_known_args(argv)
    path = resolve_config_path(known.config or _resumed_run_config(known.resume, known.run_dir)
                               or "synthetic", "train")
    recipe, chain = load_recipe(path, known=FIELDS)
    source = describe(chain)
    defaults = train_config_from_dict(recipe, source=source).to_dict()
    args = build_parser(defaults, prog=prog).parse_args(argv)
    given = {key: getattr(args, key) for key in defaults}
    # A mapping on the command line refines the file's mapping instead of replacing it (unless
    # it says `_replace_: true`), as a recipe refines the one it extends.
    settings = merge(defaults, given)
    config = train_config_from_dict(settings, source=f"{source} + command line")
    return ResolvedSettings(config, args.resume, str(path))


def _resumed_run_config(resume: str | None, run_dir: str | None) -> str | None:
    """`--resume` without `--config`: the run's own <run_dir>/config.yaml (what `pmt-train
    --resume auto --run-dir DIR`, as the stop message suggests, means), if there is one."""
    if resume is None:
        return None
    folder = Path(run_dir) if run_dir else None
    if resume != "auto":
        folder = Path(resume) if Path(resume).is_dir() else Path(resume).parent
    if folder is None or not (folder / "config.yaml").is_file():
        return None
    print(f"[pmt-train] resuming with the run's own settings: {folder / 'config.yaml'}", flush=True)
    return str(folder / "config.yaml")


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
