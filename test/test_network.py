"""PMT network: shapes, gradients, parameter counts, input validation, pretrained loading."""
import json
import os
import warnings

import pytest
import torch

from pmt_perception.config import load_model_config
from pmt_perception.info import main as info_main
from pmt_perception.network import PMTOutput, build_model, count_parameters, initial_weights
from pmt_perception.network.backbone import BACKBONES, FeatureTaps, imagenet_weights
from pmt_perception.network.blocks import Hourglass, correlation_1d

# A small-input configuration of the same graph: SPP windows shrunk so 64 px inputs are legal.
TINY = dict(spp_f1_windows=(8, 4), spp_f2_windows=(4, 2), backbone="resnet18")


def tiny_config(**overrides):
    return load_model_config("paper", **{**TINY, **overrides})


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return build_model(load_model_config("paper"))


@pytest.mark.parametrize("size", [(256, 256), (288, 352)])
def test_paper_output_shapes(paper_model, size):
    left = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = paper_model.eval()(left, torch.rand_like(left))
    assert isinstance(out, PMTOutput)
    assert out.coarse_logits.shape == (1, 19, *size)
    assert out.refined_logits.shape == (1, 19, *size)
    assert out.disparity.shape == (1, 1, *size)
    assert out.seg_attention.shape == out.disp_attention.shape == (1, 1, size[0] // 4, size[1] // 4)
    assert 0 <= out.seg_attention.min() and out.seg_attention.max() <= 1


@pytest.mark.parametrize("variant", ["paper", "fast"])
@pytest.mark.parametrize("size", [(64, 64), (96, 160), (70, 100)])
def test_variant_shapes_any_size(variant, size):
    """Sizes that are not multiples of 32 still give full-size outputs (odd sizes too)."""
    model = build_model(load_model_config(variant, **TINY)).eval()
    left = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(left, left)
    assert out.coarse_logits.shape == out.refined_logits.shape == (2, 19, *size)
    assert out.disparity.shape == (2, 1, *size)


def test_paper_parameter_counts(paper_model):
    counts = count_parameters(paper_model)
    # Issue: unique trainable parameters within 2 % of 10.2-10.6M with 19 classes.
    assert 10.2e6 * 0.98 <= counts["unique"] <= 10.6e6 * 1.02
    # The paper's 18.0M counts the Siamese backbone + SPP twice.
    assert abs(counts["siamese_counted"] - 18.0e6) / 18.0e6 < 0.02


@pytest.mark.parametrize("overrides", [dict(), dict(fseg_to_disparity=False)])
def test_siamese_count_is_what_runs_on_both_views(overrides):
    """The paper's count doubles what runs once per view. Which modules do is measured here
    from a forward pass (a module that sees the 2B batch of both views), not read back from
    the `siamese_modules` list the count is computed from."""
    model = build_model(tiny_config(**overrides)).eval()
    batch, on_both_views = 1, set()

    def record(module, inputs, _output):
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].shape[0] == 2 * batch:
            on_both_views.add(module)
    hooks = [m.register_forward_hook(record) for m in model.modules() if next(
        m.parameters(recurse=False), None) is not None]
    with torch.no_grad():
        model(torch.rand(batch, 3, 64, 64), torch.rand(batch, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    twice = sum(p.numel() for m in on_both_views for p in m.parameters(recurse=False))
    assert count_parameters(model)["siamese_modules"] == twice > 0


@pytest.mark.slow
def test_every_parameter_gets_a_gradient_paper(paper_model):
    # Batch 2 at 320 px: with one pair at 256 px the 32-px SPP window pools to a single pixel
    # and BatchNorm over two values cancels its gradient exactly (degenerate, not dead).
    model = paper_model.train()
    left = torch.rand(2, 3, 320, 320)
    out = model(left, torch.rand_like(left))
    sum(o.float().mean() for o in out if o is not None).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("overrides", [
    dict(), dict(hourglass_stride=2, coarse_head_scale=4, disparity_head_scale=4,
                 refined_head_scale=4, upsample="convex"),
    dict(fseg_to_disparity=False), dict(fseg_fdisp_to_refined=False),
    dict(backbone="mobilenet_v3_large"), dict(backbone="mobilenet_v3_small"),
    dict(backbone="efficientnet_b2"),
])
def test_every_parameter_gets_a_gradient(overrides):
    """No dead parameters in any configuration (the published code carries ~1.2M)."""
    torch.manual_seed(0)
    model = build_model(tiny_config(**overrides)).train()
    left = torch.rand(2, 3, 64, 96)
    out = model(left, torch.rand_like(left))
    sum(o.float().mean() for o in out if o is not None).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_table8_switches_change_the_graph():
    full = count_parameters(build_model(tiny_config()))["unique"]
    no_seg_to_disp = build_model(tiny_config(fseg_to_disparity=False))
    no_task_features = build_model(tiny_config(fseg_fdisp_to_refined=False))
    assert count_parameters(no_task_features)["unique"] < full
    assert not hasattr(no_task_features.refined_segmentation, "disp_attention")
    with torch.no_grad():
        out = no_task_features.eval()(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert out.seg_attention is None and out.disp_attention is None
    # Without Fseg the disparity context hourglass reads the left SPP features instead.
    assert no_seg_to_disp.disparity.context.c1[0].in_channels == no_seg_to_disp.spp_f2.out_channels


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_taps_strides_and_channels(name):
    taps = FeatureTaps(name).eval()
    with torch.no_grad():
        f1, f2, f4 = taps(torch.rand(1, 3, 128, 192))
    assert f1.shape[-2:] == (32, 48) and f2.shape[-2:] == (16, 24) and f4.shape[-2:] == (4, 6)
    assert taps.channels == (f1.shape[1], f2.shape[1], f4.shape[1])


def test_densenet_taps_match_design():
    assert FeatureTaps("densenet121").channels == (128, 256, 1024)


@pytest.mark.parametrize("make_inputs, message", [
    (lambda: (torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)), "B x 3 x H x W"),
    (lambda: (torch.rand(3, 64, 64), torch.rand(3, 64, 64)), "B x 3 x H x W"),
    (lambda: (torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 96)), "shapes differ"),
    (lambda: (torch.rand(1, 3, 16, 64), torch.rand(1, 3, 16, 64)), "too small"),
    (lambda: (torch.zeros(1, 3, 64, 64, dtype=torch.uint8),) * 2, "float"),
    (lambda: ([[0.0]], [[0.0]]), "torch.Tensor"),
])
def test_bad_inputs_raise_value_error(make_inputs, message):
    model = build_model(tiny_config()).eval()
    with pytest.raises(ValueError, match=message):
        model(*make_inputs())


def test_paper_rejects_inputs_below_the_spp_windows(paper_model):
    with pytest.raises(ValueError, match="256x256"):
        paper_model(torch.rand(1, 3, 240, 320), torch.rand(1, 3, 240, 320))


def test_correlation_matches_a_shifted_copy():
    """If right = left shifted by d pixels, channel (max_shift - d) of the correlation peaks."""
    torch.manual_seed(0)
    left = torch.randn(1, 256, 8, 40)  # enough channels that the true shift dominates
    d = 3
    right = torch.zeros_like(left)
    right[..., :-d] = left[..., d:]        # right(x) = left(x + d): left(x) = right(x - d)
    corr = correlation_1d(left, right, max_shift=8)
    assert corr.shape == (1, 17, 8, 40)
    inner = corr[..., 10:30]
    assert (inner.argmax(1) == 8 - d).all()
    expected = (left[..., 10:30] * right[..., 10 - d:30 - d]).sum(1)
    torch.testing.assert_close(inner[:, 8 - d], expected)


@pytest.mark.parametrize("stride", [1, 2])
def test_hourglass_keeps_resolution(stride):
    block = Hourglass(8, 16, stride=stride)
    assert block(torch.rand(2, 8, 15, 22)).shape == (2, 16, 15, 22)


def test_pretrained_weights_load_from_the_torchvision_cache(tmp_path, monkeypatch):
    """The real weights API: a file in $TORCH_HOME/hub/checkpoints under the official name is
    what torchvision loads (no network needed once cached)."""
    import torchvision

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    reference = torchvision.models.resnet18()
    with torch.no_grad():
        reference.conv1.weight.fill_(0.125)
        reference.layer4[1].bn2.running_var.fill_(3.0)   # last stage: every stage is copied
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / os.path.basename(weights.url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for choice in ("imagenet", weights):
        model = build_model(tiny_config(), weights=choice)
        assert torch.all(model.backbone.stage1[0].weight == 0.125)
        assert torch.all(model.backbone.stage3[1][1].bn2.running_var == 3.0)
    # Without weights (every checkpoint load) the cache is not read, whatever `pretrained` says.
    assert not torch.all(build_model(tiny_config(pretrained=True)).backbone.stage1[0].weight == 0.125)


def test_training_asks_for_imagenet_weights_through_pretrained():
    assert initial_weights(tiny_config(pretrained=True)) == "imagenet"
    assert initial_weights(tiny_config(pretrained=False)) is None


def test_model_construction_never_downloads(monkeypatch):
    import pmt_perception.network.backbone as backbone

    real = backbone.torchvision.models.get_model
    asked = []
    monkeypatch.setattr(backbone.torchvision.models, "get_model",
                        lambda name, weights=None: asked.append(weights) or real(name, weights=None))
    build_model(tiny_config(pretrained=True))
    assert asked == [None]


@pytest.mark.parametrize("weights, message", [
    ("imagenet21k", "'imagenet'"), (imagenet_weights("densenet121"), "resnet18")])
def test_weights_that_do_not_fit_raise_value_error(weights, message):
    with pytest.raises(ValueError, match=message):
        build_model(tiny_config(), weights=weights)


def test_missing_pretrained_weights_warn_and_fall_back(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache; this machine has no internet
    import pmt_perception.network.backbone as backbone

    def unreachable(*_args, **_kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr(backbone.torchvision.models, "get_model",
                        lambda name, weights=None: unreachable() if weights else
                        __import__("torchvision").models.resnet18())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(tiny_config(), weights="imagenet")
    assert any("random initialisation" in str(w.message) for w in caught)
    assert isinstance(model.backbone, FeatureTaps)


def test_config_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("variant: x\nnum_clases: 19\n")
    with pytest.raises(ValueError, match="num_clases"):
        load_model_config(bad)


def test_pmt_info_json(capsys):
    assert info_main(["--variant", "paper", "--size", "480x720", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["unique"] == count_parameters(
        build_model(load_model_config("paper")))["unique"]
    # The published graph costs ~563 GFLOP per pair at 480x720, most in the disparity head.
    assert 500 < info["gflops"]["total"] < 650
    assert info["gflops"]["disparity"] > info["gflops"]["backbone"]
    # Per-part parameters cover the whole model, part by part.
    assert sum(info["parameters_per_part"].values()) == info["parameters"]["unique"]
    assert set(info["parameters_per_part"]) >= {"backbone", "disparity", "refined_segmentation"}
