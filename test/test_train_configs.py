"""Every shipped training config resolves (all keys present, types right) and names real parts."""
from pathlib import Path

import pytest

from pmt_perception.config import config_dir, load_model_config, load_yaml, resolve_config_path
from pmt_perception.training.options import resolve_settings

TRAIN_CONFIGS = sorted(p.stem for p in (config_dir() / "train").glob("*.yaml"))


def test_there_is_a_training_config_per_dataset():
    """Every trainable dataset has a recipe; evaluation-only data (train_split: none, e.g.
    Middlebury) must not have one."""
    datasets = {p.stem: load_yaml(p) for p in (config_dir() / "data").glob("*.yaml")}
    trainable = {name for name, data in datasets.items() if data.get("train_split") != "none"}
    assert trainable <= set(TRAIN_CONFIGS)
    assert "middlebury" not in trainable and "middlebury" not in TRAIN_CONFIGS


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_training_config_resolves(name, tmp_path):
    resolved = resolve_settings(["--config", name, "--run-dir", str(tmp_path)])
    settings = resolved[0] if isinstance(resolved, tuple) else resolved
    assert Path(resolve_config_path(settings["data"], "data")).is_file()
    assert resolve_config_path(settings["loss"], "loss").is_file()
    load_model_config(settings["model"], **settings["model_overrides"])
