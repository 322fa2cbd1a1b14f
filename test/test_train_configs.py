"""Every shipped training config resolves (all keys present, types right) and names real parts;
every one but the base recipe extends it."""
from pathlib import Path

import pytest

from pmt_perception.config import config_dir, load_model_config, load_yaml, resolve_config_path
from pmt_perception.training.options import resolve_settings
from pmt_perception.training.recipes import load_recipe
from pmt_perception.training.settings import TrainConfig

BASE = "paper"   # the paper's recipe: no data, no run_dir; every other file extends it
TRAIN_CONFIGS = sorted(p.stem for p in (config_dir() / "train").glob("*.yaml") if p.stem != BASE)
FIELDS = [f.name for f in TrainConfig.__dataclass_fields__.values()]


def test_there_is_a_training_config_per_dataset():
    """Every trainable dataset has a recipe; evaluation-only data (train_split: none, e.g.
    Middlebury) must not have one."""
    datasets = {p.stem: load_yaml(p) for p in (config_dir() / "data").glob("*.yaml")}
    trainable = {name for name, data in datasets.items() if data.get("train_split") != "none"}
    assert trainable <= set(TRAIN_CONFIGS)
    assert "middlebury" not in trainable and "middlebury" not in TRAIN_CONFIGS


def test_the_base_recipe_states_every_setting_but_data_and_run_dir():
    """One place documents every key; a key added to TrainConfig without a value there fails."""
    base = load_yaml(config_dir() / "train" / f"{BASE}.yaml")
    assert sorted(set(FIELDS) - set(base)) == ["data", "run_dir"]


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_training_config_resolves(name, tmp_path):
    config = resolve_settings(["--config", name, "--run-dir", str(tmp_path)]).config
    assert config.run_dir == str(tmp_path)
    assert Path(resolve_config_path(config.data, "data")).is_file()
    assert resolve_config_path(config.loss, "loss").is_file()
    load_model_config(config.model, **dict(config.model_overrides))
    _, chain = load_recipe(resolve_config_path(name, "train"), known=FIELDS)
    assert chain[-1].stem == BASE, [p.name for p in chain]
