"""Synthetic stereo scenes with exact ground truth, rendered by ray casting (see DESIGN.md and
config/data/synthetic.yaml). Entry points: `generate_pair`, `SyntheticStereo`, `SyntheticFolder`,
`write_folder`, `load_generator_settings`. Surfaces are textured with crops of real photographs
(photos.py) from a cache that `pmt-fetch-textures` fills once (photo_cache.py, fetch_textures.py),
or procedurally (materials.py) without it."""
from __future__ import annotations

import os

from ...config import from_dict, load_yaml, resolve_config_path
from .classes import CLASS_NAMES, PALETTE
from .dataset import SyntheticFolder, SyntheticStereo, write_folder
from .generator import SyntheticPair, generate_pair, render_pair, sample_seed
from .settings import GeneratorSettings


def load_generator_settings(name_or_path: str | os.PathLike = "synthetic") -> GeneratorSettings:
    """The `loader` section of a data config (config/data/<name>.yaml or a path)."""
    path = resolve_config_path(name_or_path, "data")
    data = load_yaml(path)
    if "loader" not in data:
        raise ValueError(f"{path}: no 'loader' section with generator settings")
    return from_dict(GeneratorSettings, data["loader"], source=f"{path}:loader")


__all__ = ["CLASS_NAMES", "PALETTE", "GeneratorSettings", "SyntheticFolder", "SyntheticPair",
           "SyntheticStereo", "generate_pair", "load_generator_settings", "render_pair", "sample_seed",
           "write_folder"]
