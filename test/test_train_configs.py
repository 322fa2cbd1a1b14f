"""Every shipped training config resolves (all keys present, types right) and names real parts."""
from pathlib import Path

import pytest

from pmt_perception.config import config_dir, load_model_config, resolve_config_path
from pmt_perception.training.options import resolve_settings

TRAIN_CONFIGS = sorted(p.stem for p in (config_dir() / "train").glob("*.yaml"))


def test_there_is_a_training_config_per_dataset():
    datasets = {p.stem for p in (config_dir() / "data").glob("*.yaml")}
    assert datasets <= set(TRAIN_CONFIGS)


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_training_config_resolves(name, tmp_path):
    resolved = resolve_settings(["--config", name, "--run-dir", str(tmp_path)])
    settings = resolved[0] if isinstance(resolved, tuple) else resolved
    assert Path(resolve_config_path(settings["data"], "data")).is_file()
    assert resolve_config_path(settings["loss"], "loss").is_file()
    load_model_config(settings["model"], **settings["model_overrides"])
