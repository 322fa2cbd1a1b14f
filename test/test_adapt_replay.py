"""Replay while adapting (adapt_replay.py): settings, the loss against a hand computation, the
pool's sources (generator, pmt-synth folder) and their class check, and an adapter step that
carries the replay term and stays deterministic."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pmt_perception import adapt, adapt_settings
from pmt_perception.adapt_replay import ReplayPool, ReplaySettings, replay_loss
from pmt_perception.checkpoint import load_model
from pmt_perception.data.synthetic import CLASS_NAMES, load_generator_settings, write_folder

torch.set_num_threads(1)

SETTINGS = {"weight": 1.0, "data": "synthetic", "size": [64, 96], "batch": 2, "pool": 3,
            "disparity_weight": 0.5}


def test_settings_validate_and_default_is_on():
    assert adapt_settings.load_settings().replay.enabled
    ReplaySettings.from_dict(SETTINGS)
    for bad, match in (({"size": [60, 96]}, "multiples of 32"), ({"batch": 0}, ">= 1"),
                       ({"weight": -1}, ">= 0"), ({"extra": 1}, "unknown keys")):
        with pytest.raises(ValueError, match=match):
            ReplaySettings.from_dict({**SETTINGS, **bad})


def test_replay_loss_by_hand():
    # Two classes, one pixel of each label; logits chosen so the CE terms are ln(1 + e^-2) etc.
    coarse = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])          # 1 x 2 x 1 x 2
    refined = torch.zeros(1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    disparity_gt = torch.tensor([[[3.0, 0.0]]])                     # second pixel: no GT
    predicted = torch.tensor([[[[5.0, 100.0]]]])
    loss = replay_loss((predicted, coarse, refined), labels, disparity_gt, ignore_index=255,
                       disparity_weight=0.5)
    ce_coarse = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    ce_refined = math.log(2)
    assert loss.item() == pytest.approx(ce_coarse + ce_refined + 0.5 * 2.0, rel=1e-6)


def test_pool_from_generator_is_seeded_and_reuses_pairs():
    settings = ReplaySettings.from_dict(SETTINGS)
    pool = ReplayPool(settings, class_names=CLASS_NAMES, device=torch.device("cpu"), seed=4)
    left, right, labels, disparity = pool.draw(torch.Generator().manual_seed(0))
    assert left.shape == right.shape == (2, 3, 64, 96) and labels.shape == disparity.shape == (2, 64, 96)
    assert labels.dtype == torch.long and 0 <= left.min() and left.max() <= 1
    assert (disparity > 0).all() and len(pool._pairs) <= 3
    again = ReplayPool(settings, class_names=CLASS_NAMES, device=torch.device("cpu"), seed=4)
    assert torch.equal(again.draw(torch.Generator().manual_seed(0))[0], left)
    for step in range(6):
        pool.draw(torch.Generator().manual_seed(step))
    assert len(pool._pairs) <= 3              # the pool bounds what is rendered and kept


def test_pool_from_a_pmt_synth_folder_and_class_check(tmp_path):
    write_folder(tmp_path / "synth", load_generator_settings(), count=2, seed=1, size=(96, 128))
    settings = ReplaySettings.from_dict({**SETTINGS, "data": str(tmp_path / "synth")})
    pool = ReplayPool(settings, class_names=CLASS_NAMES, device=torch.device("cpu"), seed=0)
    left, _, labels, _ = pool.draw(torch.Generator().manual_seed(0))
    assert left.shape[-2:] == (64, 96) and labels.max() < len(CLASS_NAMES)
    with pytest.raises(ValueError, match="not those of the replay data"):
        ReplayPool(settings, class_names=["road", "car"], device=torch.device("cpu"), seed=0)
    too_big = ReplaySettings.from_dict({**SETTINGS, "data": str(tmp_path / "synth"), "size": [128, 128]})
    with pytest.raises(ValueError, match="smaller than replay.size"):
        ReplayPool(too_big, class_names=CLASS_NAMES, device=torch.device("cpu"), seed=0).draw(
            torch.Generator().manual_seed(0))


def test_adapter_step_with_replay_is_deterministic(tmp_path, tiny_checkpoint):
    from test_adapt import small_settings, textured_pair

    config = small_settings(tmp_path, replay={**SETTINGS, "batch": 1, "pool": 2})
    left, right = textured_pair()

    def run_steps():
        model, payload = load_model(tiny_checkpoint)
        settings = adapt_settings.load_settings(config, parameters="all")
        adapter = adapt.Adapter(model, settings, device=torch.device("cpu"),
                                class_names=payload["class_names"])
        pair = adapter.prepare(0, left, right)
        results = [adapter.step(pair, (slice(0, 64), slice(0, 128))) for _ in range(2)]
        return results, adapter.model.state_dict()

    (first, state), (second, state_again) = run_steps(), run_steps()
    assert all(r["applied"] and np.isfinite(r["replay"]) and r["replay"] > 0 for r in first)
    assert [r["total"] for r in first] == [r["total"] for r in second]
    assert all(torch.equal(v, state_again[k]) for k, v in state.items())
    model, _ = load_model(tiny_checkpoint)
    with pytest.raises(ValueError, match="class names"):
        adapt.Adapter(model, adapt_settings.load_settings(config), device=torch.device("cpu"))
