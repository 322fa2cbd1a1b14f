"""The residual disparity refinement at H/4 (`disparity_refinement_scale: 4`): run 7's stage,
and the light one edge.yaml has carried since run 14 (models/pmt_synthetic_edge.pt)."""
import dataclasses
from pathlib import Path

import pytest
import torch

from pmt_perception.checkpoint import load_checkpoint, load_model, save_checkpoint
from pmt_perception.config import load_model_config
from pmt_perception.export import export_onnx, onnx_parity
from pmt_perception.network import build_model
from pmt_perception.network.disparity_refinement import DisparityRefinement, warp_by_disparity
from pmt_perception.training.state import slim_checkpoint

TINY_EDGE = dict(spp_f1_windows=(8, 4), spp_f2_windows=(4, 2), max_disparity=32)


def test_warp_brings_the_right_view_onto_the_left_one():
    torch.manual_seed(0)
    right = torch.randn(1, 4, 6, 40)
    left = torch.zeros_like(right)
    left[..., 5:] = right[..., :-5]                   # left(x) = right(x - 5): disparity 5
    warped = warp_by_disparity(right, torch.full((1, 1, 6, 40), 5.0))
    assert torch.allclose(warped[..., 5:], left[..., 5:], atol=1e-5)
    assert warped[..., :4].abs().max() == 0          # x - 5 < 0: outside the right image
    # A sub-pixel disparity interpolates between the two neighbours.
    half = warp_by_disparity(right, torch.full((1, 1, 6, 40), 4.5))
    assert torch.allclose(half[..., 10:], (right[..., 5:-5] + right[..., 6:-4]) / 2, atol=1e-5)


def test_a_new_refinement_starts_from_the_disparity_it_is_given():
    torch.manual_seed(0)
    refine = DisparityRefinement(12, max_disparity=64).eval()
    coarse = torch.full((1, 1, 5, 7), 24.0)           # input pixels, H/8 grid of a 40 x 56 image
    features = torch.randn(2, 12, 10, 14)
    with torch.no_grad():
        out = refine(coarse, features[:1], features[1:], torch.rand(1, 3, 40, 56))
    # Zero residual, and convex upsampling of a constant is that constant (away from the
    # border, where the 3 x 3 neighbourhood is zero-padded until the mask learns to avoid it).
    assert out.shape == (1, 1, 40, 56)
    inner = out[..., 4:-4, 4:-4]
    assert torch.allclose(inner, torch.full_like(inner, 24.0), atol=1e-4)


def test_the_residual_learns_from_both_views_and_the_disparity():
    torch.manual_seed(0)
    refine = DisparityRefinement(12, max_disparity=64).train()
    torch.nn.init.normal_(refine.residual.weight, std=0.1)   # as after a first training step
    coarse = torch.full((1, 1, 5, 7), 24.0, requires_grad=True)
    left_features = torch.randn(1, 12, 10, 14, requires_grad=True)
    right_features = torch.randn(1, 12, 10, 14, requires_grad=True)
    refine(coarse, left_features, right_features, torch.rand(1, 3, 40, 56)).mean().backward()
    for tensor in (coarse, left_features, right_features):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_refinement_runs_at_quarter_resolution_on_a_cost_volume_at_eighth_only():
    edge = build_model(load_model_config("edge", disparity_refinement_scale=4))
    assert edge.disparity_refinement is not None and edge.disparity.upsample is None
    assert edge.disparity_refinement.upsample.mask is not None      # convex x4
    assert build_model(load_model_config("fast")).disparity_refinement is None
    for bad in (dict(disparity_refinement_scale=2), dict(cost_volume_scale=4),
                dict(disparity_head="regression")):
        with pytest.raises(ValueError, match="disparity_refinement_scale"):
            load_model_config("edge", **{"disparity_refinement_scale": 4, **bad})


# The dataclass defaults: run 5-7's stage.
RUN7_REFINEMENT = dict(disparity_refinement_scale=4, disparity_refinement_channels=24,
                       disparity_refinement_dilations=(1, 2, 4, 8, 1),
                       disparity_refinement_convex_scale=None)
LIGHT_REFINEMENT = dict(disparity_refinement_scale=4, disparity_refinement_channels=16,
                        disparity_refinement_dilations=(1, 2, 4), disparity_refinement_convex_scale=2)


def test_the_stage_takes_its_width_dilations_and_convex_factor_from_the_config():
    refine = build_model(load_model_config("edge", **LIGHT_REFINEMENT)).disparity_refinement
    assert refine.enter[0].out_channels == 16
    assert [layer[0].dilation[0] for layer in refine.body] == [1, 2, 4]
    # Convex x2 at H/4 writes as many weights as edge's convex x4 at H/8; bilinear does the rest.
    assert refine.upsample.convex_scale == 2 and refine.upsample.rest is not None
    assert refine.upsample.mask[-1].out_channels == 9 * 2 ** 2
    # Run 5-7's stage: 24 channels, five layers, convex as far as convex_upsample_scale says.
    run7 = build_model(load_model_config("edge", **RUN7_REFINEMENT)).disparity_refinement
    assert run7.enter[0].out_channels == 24 and len(run7.body) == 5
    assert run7.upsample.convex_scale == 4 and run7.upsample.rest is None
    for field, bad in (("disparity_refinement_channels", 0), ("disparity_refinement_dilations", ()),
                       ("disparity_refinement_dilations", (1, 0)),
                       ("disparity_refinement_convex_scale", 3)):
        with pytest.raises(ValueError, match=field):
            load_model_config("edge", **{**LIGHT_REFINEMENT, field: bad})


def test_a_checkpoint_without_the_stage_gains_it_with_change_parts_only(tmp_path):
    torch.manual_seed(0)
    config = load_model_config("edge", **TINY_EDGE, disparity_refinement_scale=0)
    model = build_model(config)
    source = save_checkpoint(tmp_path / "before.pt", model=model, config=config,
                             class_names=[str(i) for i in range(19)], palette=[[0, 0, 0]] * 19)
    change = {"disparity_refinement_scale": 4}
    with pytest.raises(RuntimeError, match="Missing key"):
        slim_checkpoint(source, tmp_path / "refused.pt", config_changes=change)
    assert not (tmp_path / "refused.pt").exists()
    slim_checkpoint(source, tmp_path / "after.pt", half=False, config_changes=change, change_parts=True)
    after = load_checkpoint(tmp_path / "after.pt")
    assert after["model_config"]["disparity_refinement_scale"] == 4
    state = after["model_state"]
    # Shared parts keep their weights; the H/8 upsampler is gone, the refinement is new.
    before = model.state_dict()
    assert torch.equal(state["disparity.match.1.weight"], before["disparity.match.1.weight"])
    assert not any(k.startswith("disparity.upsample") for k in state)
    assert any(k.startswith("disparity_refinement.") for k in state)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [RUN7_REFINEMENT, LIGHT_REFINEMENT],
                         ids=["run7_stage", "light_stage"])
def test_refined_edge_onnx_parity_at_two_sizes(tmp_path, stage):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(load_model_config("edge", **TINY_EDGE, soft_argmin_window=0,
                                          **stage)).eval()
    assert model.config.disparity_refinement_scale == 4
    with torch.no_grad():            # a trained residual: the warp is part of the graph's output
        torch.nn.init.normal_(model.disparity_refinement.residual.weight, std=0.1)
    path = export_onnx(model, tmp_path / "refined.onnx", size=(64, 96))
    worst = onnx_parity(model, path, [(64, 96), (96, 160)])
    assert worst["disparity"] < 1e-3


def test_refinement_is_off_in_configs_that_do_not_ask_for_it_and_light_in_edge():
    for variant in ("paper", "fast", "fast_mobile"):
        assert load_model_config(variant).disparity_refinement_scale == 0
    edge = load_model_config("edge")
    for key, value in LIGHT_REFINEMENT.items():
        assert getattr(edge, key) == value, key
    assert dataclasses.replace(edge, disparity_refinement_scale=0)   # run 12's graph stays valid


def test_the_default_model_has_the_light_stage_and_the_faster_one_ships_beside_it():
    models = Path(__file__).resolve().parent.parent / "models"
    default, faster = models / "pmt_synthetic_edge.pt", models / "pmt_synthetic_edge_no_refinement.pt"
    if not (default.exists() and faster.exists()):
        pytest.skip("the edge models are not shipped in this checkout")
    # The node loads the first models/*.pt: the graph of today's edge.yaml.
    assert sorted(models.glob("*.pt"))[0] == default
    model, _ = load_model(default)               # weights_only load, every weight fits its config
    for key, value in LIGHT_REFINEMENT.items():
        assert getattr(model.config, key) == value, key
    assert model.disparity_refinement is not None and model.disparity.upsample is None
    model, _ = load_model(faster)                # run 12: convex x4 at H/8, no stage
    assert model.disparity_refinement is None and model.disparity.upsample.convex_scale == 4
