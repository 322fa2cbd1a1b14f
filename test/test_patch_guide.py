"""The patch guide of the cost-volume disparity's convex upsampling (PatchGuide in
network/blocks.py): the image's own 8x8 patches tell the convex weights where inside a cell a
depth edge runs. A checkpoint without it gains it as a no-op start for training."""
import pytest
import torch

from pmt_perception.checkpoint import load_checkpoint, save_checkpoint
from pmt_perception.config import load_model_config
from pmt_perception.export import export_onnx, onnx_parity
from pmt_perception.network import build_model
from pmt_perception.network.blocks import PatchGuide
from pmt_perception.training.components import build_network
from pmt_perception.training.distributed import setup_distributed
from pmt_perception.training.options import resolve_settings
from pmt_perception.training.state import slim_checkpoint

# The guide as run 11 added it, on the H/8 disparity's upsampling (edge.yaml has had an H/4
# stage since run 14; the last test puts the guide there).
TINY_EDGE = dict(spp_f1_windows=(8, 4), spp_f2_windows=(4, 2), max_disparity=32,
                 disparity_refinement_scale=0)
GUIDE = dict(disparity_patch_guide_channels=8)
NO_GUIDE = dict(disparity_patch_guide_channels=0)   # edge.yaml has the guide since run 11


def edge_model(**overrides):
    torch.manual_seed(0)
    return build_model(load_model_config("edge", **{**TINY_EDGE, **overrides}))


def save(model, path):
    return save_checkpoint(path, model=model, config=model.config,
                           class_names=[str(i) for i in range(19)], palette=[[0, 0, 0]] * 19)


def test_a_checkpoint_that_gains_the_guide_computes_what_it_did(tmp_path):
    plain = edge_model(**NO_GUIDE).eval()
    source = save(plain, tmp_path / "plain.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        slim_checkpoint(source, tmp_path / "refused.pt", config_changes=GUIDE)
    slim_checkpoint(source, tmp_path / "guided.pt", half=False, config_changes=GUIDE,
                    change_parts=True)
    payload = load_checkpoint(tmp_path / "guided.pt")
    guided = build_model(load_model_config("edge", **{**TINY_EDGE, **GUIDE})).eval()
    guided.load_state_dict(payload["model_state"])
    left, right = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(plain(left, right).disparity, guided(left, right).disparity)
        # ...until the guide's last layer is no longer zero: then it steers the upsampling.
        torch.nn.init.normal_(guided.disparity.upsample.patch_guide.to_mask.weight)
        assert not torch.allclose(plain(left, right).disparity, guided(left, right).disparity)


def test_the_guide_reads_each_cells_own_patch_and_its_neighbours_only():
    torch.manual_seed(0)
    guide = PatchGuide(4, scale=8, mask_channels=9 * 16).eval()
    torch.nn.init.normal_(guide.to_mask.weight)
    image = torch.rand(1, 3, 64, 96)
    changed = image.clone()
    changed[..., 24:32, 40:48] = 1.0 - changed[..., 24:32, 40:48]   # the patch of cell (3, 5)
    with torch.no_grad():
        moved = (guide(image, (8, 12)) - guide(changed, (8, 12))).abs().amax(1)[0]
    assert moved.shape == (8, 12)
    touched = (moved > 1e-6).nonzero().tolist()
    assert [3, 5] in touched
    assert all(abs(y - 3) <= 1 and abs(x - 5) <= 1 for y, x in touched)


def test_every_guide_parameter_learns_from_the_disparity_loss():
    model = edge_model(**GUIDE).train()
    guide = model.disparity.upsample.patch_guide
    first = guide.patches[0].weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    left = torch.rand(2, 3, 64, 96)
    for _ in range(2):   # the zero last layer passes no gradient back on the first step
        optimizer.zero_grad()
        model(left, torch.rand_like(left)).disparity.mean().backward()
        optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in guide.parameters())
    assert not torch.equal(first, guide.patches[0].weight)


def test_the_guide_needs_the_convex_cost_volume_head():
    with pytest.raises(ValueError, match="disparity_patch_guide_channels"):
        load_model_config("edge", disparity_patch_guide_channels=-1)
    with pytest.raises(ValueError, match="needs disparity_head cost_volume"):
        load_model_config("fast", disparity_patch_guide_channels=8)
    with pytest.raises(ValueError, match="needs disparity_head cost_volume"):
        load_model_config("edge", disparity_patch_guide_channels=8, upsample="bilinear",
                          disparity_refinement_scale=0)
    # The H/4 stage upsamples convexly whatever `upsample` says: the guide steers that.
    assert load_model_config("edge", disparity_patch_guide_channels=8, upsample="bilinear")


def test_with_the_h4_refinement_the_guide_steers_its_upsampling_instead():
    model = edge_model(**GUIDE, disparity_refinement_scale=4).eval()
    assert model.disparity.upsample is None            # the volume's disparity leaves at H/8
    guide = model.disparity_refinement.upsample.patch_guide
    assert guide.patches[0].stride == (4, 4)           # the refinement's grid is H/4
    left, right = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        before = model(left, right).disparity
        torch.nn.init.normal_(guide.to_mask.weight)
        assert not torch.allclose(before, model(left, right).disparity)


def test_training_starts_from_a_checkpoint_saved_before_a_model_field_existed(tmp_path):
    """pmt-train --init-checkpoint compares model configs through ModelConfig: a field added
    since the checkpoint was written takes its default instead of refusing the start."""
    model = edge_model(**NO_GUIDE)
    path = save(model, tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    del payload["model_config"]["disparity_patch_guide_channels"]   # as the older code wrote it
    torch.save(payload, path)
    settings = ["--config", "synthetic_edge", "--channels-last", "false", "--init-checkpoint",
                str(path), "--model-overrides", "{spp_f1_windows: [8, 4], spp_f2_windows: [4, 2], "
                "max_disparity: 32, disparity_patch_guide_channels: 0, disparity_refinement_scale: 0}"]
    network = build_network(resolve_settings(settings).config, 19, setup_distributed("cpu"))
    key = "refined_segmentation.hourglass.c2.0.weight"
    assert torch.equal(network.state_dict()[key], model.state_dict()[key])


@pytest.mark.slow
def test_guided_graph_onnx_parity_at_two_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    model = edge_model(**GUIDE, soft_argmin_window=0).eval()
    torch.nn.init.normal_(model.disparity.upsample.patch_guide.to_mask.weight, std=0.1)
    path = export_onnx(model, tmp_path / "guided.onnx", size=(64, 96))
    worst = onnx_parity(model, path, [(64, 96), (70, 101)])
    assert worst["disparity"] < 1e-3
