"""The residual disparity refinement at H/4 (`disparity_refinement_scale: 4`: edge run 7's graph;
today's edge.yaml leaves it out for speed)."""
import dataclasses

import pytest
import torch

from pmt_perception.checkpoint import load_checkpoint, save_checkpoint
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
def test_refined_edge_onnx_parity_at_two_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(load_model_config("edge", **TINY_EDGE, soft_argmin_window=0,
                                          disparity_refinement_scale=4)).eval()
    assert model.config.disparity_refinement_scale == 4
    with torch.no_grad():            # a trained residual: the warp is part of the graph's output
        torch.nn.init.normal_(model.disparity_refinement.residual.weight, std=0.1)
    path = export_onnx(model, tmp_path / "refined.onnx", size=(64, 96))
    worst = onnx_parity(model, path, [(64, 96), (96, 160)])
    assert worst["disparity"] < 1e-3


def test_refinement_is_off_in_configs_that_do_not_ask_for_it():
    for variant in ("paper", "fast", "fast_mobile"):
        assert load_model_config(variant).disparity_refinement_scale == 0
    assert load_model_config("edge").disparity_refinement_scale == 0   # run 7 had it (4)
    assert dataclasses.replace(load_model_config("edge"), disparity_refinement_scale=4)
