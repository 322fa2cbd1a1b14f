"""Training recipe files: each states only what differs from the file it `extends:`.

    extends: synthetic_cpu_2k           # config/train/synthetic_cpu_2k.yaml
    model: edge
    model_overrides: {_replace_: true}  # none of the base's model_overrides

A file means its base with the file's keys on top. A value replaces the base's, except a
mapping, which is deep-merged into the base's mapping (lists are replaced whole), so
`data_overrides: {root: x}` keeps the base's `data_overrides.augment`. `_replace_: true` inside
a mapping drops the base's keys of that mapping instead (mmengine calls it `_delete_`); without
it a file could never shrink a mapping it inherits. A base may extend another; a cycle is an
error. `extends:` names a file next to the extending one, else one under config/train/, or is a
path to a .yaml file (relative to the extending file).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Collection, Mapping

from pmt_perception.config import config_dir, load_yaml

EXTENDS = "extends"
REPLACE = "_replace_"


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` over `base`: mappings deep-merged unless they carry `_replace_: true`; the
    markers are consumed, so the result has none."""
    merged = {key: copy.deepcopy(value) for key, value in base.items()}
    for key, value in update.items():
        if isinstance(value, Mapping):
            value = dict(value)
            replace = value.pop(REPLACE, False)
            if not isinstance(replace, bool):
                raise ValueError(f"{key}.{REPLACE} must be true or false, got {replace!r}")
            inherited = merged.get(key)
            keep = isinstance(inherited, Mapping) and not replace
            merged[key] = merge(inherited if keep else {}, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_recipe(path: str | Path, *, known: Collection[str]) -> tuple[dict[str, Any], list[Path]]:
    """(the file's settings with its `extends` chain applied, the chain from `path` to its root).

    A key outside `known` is a ValueError naming the file that holds it.
    """
    chain: list[Path] = []
    layers: list[dict[str, Any]] = []
    current: Path | None = Path(path)
    while current is not None:
        if current.resolve() in (p.resolve() for p in chain):
            names = " -> ".join(p.name for p in [*chain, current])
            raise ValueError(f"{chain[0]}: `extends` forms a cycle: {names}")
        chain.append(current)
        data = load_yaml(current)
        parent = data.pop(EXTENDS, None)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{current}: unknown key(s) {unknown} for a training config")
        layers.append(data)
        current = None if parent is None else _locate(parent, current)
    settings: dict[str, Any] = {}
    for data in reversed(layers):            # the root first, the named file last
        settings = merge(settings, data)
    return settings, chain


def describe(chain: list[Path]) -> str:
    """`a.yaml (extends b.yaml, c.yaml)`: where a setting may come from, for error messages."""
    if len(chain) == 1:
        return str(chain[0])
    return f"{chain[0]} (extends {', '.join(p.name for p in chain[1:])})"


def _locate(name: Any, child: Path) -> Path:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{child}: extends must name a training config, got {name!r}")
    if name.endswith((".yaml", ".yml")):
        candidates = [child.parent / name]     # an absolute name stays absolute
    else:
        candidates = [child.parent / f"{name}.yaml", config_dir() / "train" / f"{name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ValueError(f"{child}: extends {name!r}, but there is no "
                     f"{' or '.join(str(c) for c in candidates)}")
