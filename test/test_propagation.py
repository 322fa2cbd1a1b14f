"""The refinement stage's propagation (`disparity_refinement_propagation`): each pixel also
tests the disparities of its neighbours to the left and to the right."""
import pytest
import torch

from pmt_perception.checkpoint import load_model, save_checkpoint
from pmt_perception.config import load_model_config
from pmt_perception.export import export_onnx, onnx_parity
from pmt_perception.network import build_model
from pmt_perception.network.disparity_refinement import (
    DisparityRefinement,
    neighbour_correlation,
    neighbour_disparities,
)
from pmt_perception.training.state import slim_checkpoint

TINY_EDGE = dict(spp_f1_windows=(8, 4), spp_f2_windows=(4, 2), max_disparity=32)


def test_neighbours_are_the_disparities_step_pixels_left_and_right():
    columns = torch.arange(10.0).expand(2, 1, 3, 10)            # disparity = x
    neighbours = neighbour_disparities(columns, 2)
    assert neighbours.shape == (2, 1, 3, 20)                      # both sides side by side
    left_side, right_side = neighbours.chunk(2, -1)
    assert left_side[0, 0, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]   # border column's own
    assert right_side[0, 0, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 9, 9]


def test_the_neighbour_that_carries_the_true_disparity_matches_best():
    torch.manual_seed(0)
    right = torch.randn(1, 16, 6, 40)
    left = torch.zeros_like(right)
    left[..., 4:] = right[..., :-4]                               # every pixel at disparity 4
    neighbours = torch.cat([torch.full((1, 1, 6, 40), 4.0), torch.full((1, 1, 6, 40), 1.0)], -1)
    correlation = neighbour_correlation(left, right, neighbours, groups=4)
    assert correlation.shape == (1, 8, 6, 40)                     # 2 neighbours x 4 groups
    true_one, wrong_one = correlation[..., 4:].split(4, 1)
    assert torch.allclose(true_one, torch.ones_like(true_one), atol=1e-5)   # cosine of equals
    assert wrong_one.abs().mean() < 0.5                           # unrelated noise


def test_propagation_starts_at_zero_and_learns_from_both_views():
    torch.manual_seed(0)
    plain = DisparityRefinement(12, max_disparity=64).eval()
    propagating = DisparityRefinement(12, max_disparity=64, propagation=2).eval()
    propagating.load_state_dict(plain.state_dict(), strict=False)
    torch.nn.init.normal_(plain.residual.weight, std=0.1)         # as after training
    propagating.residual.load_state_dict(plain.residual.state_dict())
    coarse = torch.rand(1, 1, 5, 7) * 30
    features, image = torch.randn(2, 12, 10, 14), torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(plain(coarse, features[:1], features[1:], image),
                           propagating(coarse, features[:1], features[1:], image))
    propagating.train()
    right = features[1:].clone().requires_grad_()
    propagating(coarse, features[:1], right, image).mean().backward()
    assert propagating.propagation_enter.weight.grad.abs().sum() > 0
    assert right.grad.abs().sum() > 0


def test_a_checkpoint_gains_propagation_with_change_parts_and_keeps_its_outputs(tmp_path):
    torch.manual_seed(0)
    config = load_model_config("edge", **TINY_EDGE)
    model = build_model(config).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.disparity_refinement.residual.weight, std=0.1)
    source = save_checkpoint(tmp_path / "before.pt", model=model, config=config,
                             class_names=[str(i) for i in range(19)], palette=[[0, 0, 0]] * 19)
    change = {"disparity_refinement_propagation": 2}
    with pytest.raises(RuntimeError, match="Missing key"):
        slim_checkpoint(source, tmp_path / "refused.pt", config_changes=change)
    slim_checkpoint(source, tmp_path / "after.pt", half=False, config_changes=change,
                    change_parts=True)
    grown, _ = load_model(tmp_path / "after.pt")
    assert grown.config.disparity_refinement_propagation == 2
    left, right = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        before, after = model(left, right), grown(left, right)
    assert all(torch.equal(a, b) for a, b in zip(before, after) if torch.is_tensor(a))


def test_propagation_settings_are_checked():
    assert load_model_config("paper").disparity_refinement_propagation == 0
    with pytest.raises(ValueError, match="disparity_refinement_propagation"):
        load_model_config("edge", disparity_refinement_propagation=-1)
    with pytest.raises(ValueError, match="propagation groups"):
        DisparityRefinement(12, max_disparity=64, propagation=2, propagation_groups=5)


@pytest.mark.slow
def test_propagating_edge_onnx_parity_at_two_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(load_model_config("edge", **TINY_EDGE, soft_argmin_window=0,
                                          disparity_refinement_propagation=2)).eval()
    with torch.no_grad():            # trained weights: the neighbours' warps reach the output
        torch.nn.init.normal_(model.disparity_refinement.residual.weight, std=0.1)
        torch.nn.init.normal_(model.disparity_refinement.propagation_enter.weight, std=0.1)
    path = export_onnx(model, tmp_path / "propagating.onnx", size=(64, 96))
    worst = onnx_parity(model, path, [(64, 96), (96, 160)])
    assert worst["disparity"] < 1e-3
