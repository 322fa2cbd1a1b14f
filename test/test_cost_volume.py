"""The matching disparity head (cost volume + soft-argmin) and the `edge` variant."""
import dataclasses

import pytest
import torch

from pmt_perception.config import load_loss_config, load_model_config
from pmt_perception.export import export_onnx, onnx_parity
from pmt_perception.losses import PMTLoss, disparity_distribution_loss, downsample_disparity
from pmt_perception.network import build_model, count_parameters, to_channels_last
from pmt_perception.network.cost_volume import FactorizedConv3d, groupwise_correlation_volume, soft_argmin
from pmt_perception.onnx_runners import OnnxRuntimeModel

# Small-input edge: SPP windows shrunk so 64-px inputs are legal; 32 px of disparity range.
TINY_EDGE = dict(spp_f1_windows=(8, 4), spp_f2_windows=(4, 2), max_disparity=32)


def test_volume_peaks_at_the_true_shift():
    torch.manual_seed(0)
    # Unit vectors per group and pixel: the correlation of a vector with itself is the maximum.
    right = torch.nn.functional.normalize(torch.randn(1, 4, 4, 5, 40), dim=2).reshape(1, 16, 5, 40)
    shift = 3
    left = torch.zeros_like(right)
    left[..., shift:] = right[..., :-shift]          # left(x) = right(x - 3): disparity 3
    volume = groupwise_correlation_volume(left, right, num_disparities=8, groups=4)
    assert volume.shape == (1, 4, 8, 5, 40)
    # Away from the left border every group scores disparity 3 best.
    assert (volume[..., 10:].argmax(2) == shift).all()
    # Zero where x - d leaves the image.
    assert torch.all(volume[:, :, 7, :, :7] == 0)


def test_cosine_volume_is_one_at_the_match_whatever_the_feature_scale():
    torch.manual_seed(0)
    right = torch.randn(1, 16, 5, 40)
    left = torch.zeros_like(right)
    left[..., 3:] = 7.5 * right[..., :-3]          # disparity 3, and a gain of 7.5
    volume = groupwise_correlation_volume(left, right, num_disparities=8, groups=4, cosine=True)
    assert torch.allclose(volume[:, :, 3, :, 10:], torch.ones(1, 4, 5, 30), atol=1e-5)
    assert volume.abs().max() <= 1 + 1e-5
    assert (volume[..., 10:].argmax(2) == 3).all()
    # The dot product instead grows with the gain: a brighter camera scores higher everywhere.
    dot = groupwise_correlation_volume(left, right, num_disparities=8, groups=4)
    assert dot[:, :, 3, :, 10:].mean() > 2


def test_volume_accepts_images_narrower_than_the_range():
    volume = groupwise_correlation_volume(torch.rand(1, 8, 3, 5), torch.rand(1, 8, 3, 5),
                                          num_disparities=12, groups=2)
    assert volume.shape == (1, 2, 12, 3, 5)


def test_volume_rejects_channels_that_do_not_split_into_groups():
    with pytest.raises(ValueError, match="groups"):
        groupwise_correlation_volume(torch.rand(1, 6, 2, 2), torch.rand(1, 6, 2, 2),
                                     num_disparities=2, groups=4)


def test_soft_argmin_range_and_sharp_limit():
    scores = torch.randn(2, 10, 4, 4)
    disparity, probability = soft_argmin(scores)
    assert disparity.shape == (2, 1, 4, 4)
    assert torch.allclose(probability.sum(1), torch.ones(2, 4, 4))
    assert disparity.min() >= 0 and disparity.max() <= 9
    sharp = torch.full((1, 10, 1, 1), -1e4)
    sharp[0, 6] = 0
    assert soft_argmin(sharp)[0].item() == pytest.approx(6.0)


def test_windowed_soft_argmin_takes_the_stronger_mode_of_a_bimodal_cell():
    # A depth edge: 0.55 on candidate 2 (+0.05 on 3), 0.4 on candidate 8.
    probability = torch.full((1, 10, 1, 1), 1e-9)
    probability[0, [2, 3, 8], 0, 0] = torch.tensor([0.55, 0.05, 0.4])
    scores = probability.log()
    assert soft_argmin(scores)[0].item() == pytest.approx(0.55 * 2 + 0.05 * 3 + 0.4 * 8, abs=1e-4)
    disparity, full = soft_argmin(scores, window=1)      # candidates 1..3 only, renormalised
    assert disparity.item() == pytest.approx((0.55 * 2 + 0.05 * 3) / 0.6, abs=1e-4)
    assert torch.allclose(full, scores.softmax(1))       # what the distribution loss reads
    assert soft_argmin(scores, window=9)[0].item() == pytest.approx(soft_argmin(scores)[0].item())


def test_factorized_conv3d_keeps_the_volume_shape_and_sees_neighbouring_disparities():
    conv = FactorizedConv3d(4, 6).eval()
    with torch.no_grad():   # positive weights: no ReLU can hide where the voxel reaches
        for parameter in conv.parameters():
            parameter.abs_()
    volume = torch.zeros(1, 4, 7, 5, 5)
    volume[:, :, 3, 2, 2] = 1                     # one voxel
    out = conv(volume)
    assert out.shape == (1, 6, 7, 5, 5)
    reached = (out - conv(torch.zeros_like(volume))).abs().sum((0, 1)) > 0
    # A 3x3x3 receptive field: disparities 2..4 and the 3x3 spatial neighbourhood, no further.
    assert reached[2:5, 1:4, 1:4].all()
    assert not reached[0].any() and not reached[6].any()


def edge_model(**overrides):
    torch.manual_seed(0)
    return build_model(load_model_config("edge", **{**TINY_EDGE, **overrides}))


@pytest.mark.parametrize("size", [(64, 64), (70, 100), (96, 160)])
def test_edge_output_shapes_and_disparity_range(size):
    model = edge_model().eval()
    left = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(left, torch.rand_like(left))
    assert out.coarse_logits.shape == out.refined_logits.shape == (2, 19, *size)
    assert out.disparity.shape == (2, 1, *size)
    # Soft-argmin over 0..max_disparity, convex upsampling: never negative, never past the range.
    assert out.disparity.min() >= 0 and out.disparity.max() <= 32
    assert out.seg_attention is not None and out.disp_attention is not None


@pytest.mark.parametrize("overrides", [{}, {"cost_volume_scale": 4, "disparity_refinement_scale": 0},
                                       {"disparity_refinement_scale": 0}, {"hourglass_conv": "standard"}])
def test_every_edge_parameter_gets_a_gradient(overrides):
    model = edge_model(**overrides).train()
    left = torch.rand(2, 3, 64, 96)
    out = model(left, torch.rand_like(left))
    sum(o.float().mean() for o in out if o is not None).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_matching_head_is_available_to_every_variant():
    for variant in ("paper", "fast", "fast_mobile"):
        config = load_model_config(variant, disparity_head="cost_volume",
                                   spp_f1_windows=(8, 4), spp_f2_windows=(4, 2))
        model = build_model(config).eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
        assert out.disparity.shape == (1, 1, 64, 64)


def test_paper_keeps_the_published_regression_head():
    assert load_model_config("paper").disparity_head == "regression"
    assert load_model_config("edge").disparity_head == "cost_volume"


def test_edge_upsamples_class_logits_bilinearly_and_disparity_by_convex_weights():
    config = load_model_config("edge")
    assert config.segmentation_upsample_mode == "bilinear" and config.upsample == "convex"
    model = build_model(config)
    assert model.coarse_segmentation.head.upsample.mask is None
    assert model.refined_segmentation.head.upsample.mask is None
    # Today's edge: the light H/4 refinement, convex x2 of its x4, then bilinear x2.
    assert model.disparity.upsample is None
    assert model.disparity_refinement.upsample.mask is not None
    assert model.disparity_refinement.upsample.convex_scale == 2
    # Without the stage (run 12): convex x4 of the volume's x8, then bilinear x2.
    h8 = build_model(dataclasses.replace(config, disparity_refinement_scale=0))
    assert h8.disparity_refinement is None
    assert h8.disparity.upsample.mask is not None and h8.disparity.upsample.convex_scale == 4
    # null keeps the older configs' graph: segmentation follows `upsample`.
    fast = load_model_config("fast")
    assert fast.segmentation_upsample is None
    assert fast.segmentation_upsample_mode == fast.upsample
    with pytest.raises(ValueError, match="segmentation_upsample"):
        load_model_config("edge", segmentation_upsample="cubic")
    with pytest.raises(ValueError, match="cost_volume_correlation"):
        load_model_config("edge", cost_volume_correlation="ncc")


def test_edge_is_smaller_than_fast_mobile():
    edge = count_parameters(build_model(load_model_config("edge")))
    mobile = count_parameters(build_model(load_model_config("fast_mobile")))
    assert edge["heads"] < mobile["heads"] / 2


def test_channels_last_skips_five_dimensional_weights():
    model = to_channels_last(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv3d(4, 4, 3)))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model[1].weight.dim() == 5


@pytest.mark.slow
def test_edge_onnx_parity_at_two_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    # Window 0: a random-init volume is nearly flat, so with a window the argmax is a coin toss
    # that summation order may flip (a jump of pixels, not a runtime difference).
    model = edge_model(soft_argmin_window=0).eval()
    path = export_onnx(model, tmp_path / "edge.onnx", size=(64, 96))
    worst = onnx_parity(model, path, [(64, 96), (96, 160)])
    assert worst["disparity"] < 1e-3
    assert worst["coarse_logits"] < 1e-3 and worst["refined_logits"] < 1e-3
    # The window exports too: with peaked candidate scores (as a trained model has) it agrees.
    # A true stereo pair (the right view a shifted copy): on two unrelated random images some
    # cells of an untrained volume tie between candidates, and a tie may break either way.
    windowed = edge_model(soft_argmin_window=1).eval()
    with torch.no_grad():
        windowed.disparity.raw_score_scale.fill_(300.0)
    path = export_onnx(windowed, tmp_path / "edge_window.onnx", size=(64, 96))
    runner = OnnxRuntimeModel(path, device=torch.device("cpu"))
    for size in [(64, 96), (96, 160)]:
        left = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
        right = torch.roll(left, -16, dims=-1)
        with torch.no_grad():
            reference = windowed(left, right).disparity
        assert (reference - runner(left, right).disparity).abs().max() < 1e-2


def test_downsampled_ground_truth_is_in_low_resolution_pixels():
    target = torch.full((1, 16, 16), 12.0)
    target[:, :8, :8] = 0                       # one block without ground truth
    low = downsample_disparity(target, (2, 2))
    assert low.tolist() == [[[0.0, 1.5], [1.5, 1.5]]]


def test_distribution_loss_by_hand():
    target = torch.full((1, 16, 16), 12.0)      # 1.5 candidates at H/8: half on 1, half on 2
    uniform = torch.full((1, 4, 2, 2), 0.25)
    expected = -torch.log(torch.tensor(0.25)).item()
    assert disparity_distribution_loss(uniform, target).item() == pytest.approx(expected)
    right = torch.tensor([0.0, 0.5, 0.5, 0.0]).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    # The soft target itself: cross-entropy = its entropy, log 2, the minimum.
    assert disparity_distribution_loss(right, target).item() == pytest.approx(0.6931, abs=1e-3)
    # Beyond the last candidate: no ground truth for this loss.
    assert disparity_distribution_loss(uniform, torch.full((1, 16, 16), 40.0)).item() == 0


def test_distribution_loss_reaches_the_network_only_through_the_cost_volume_head():
    loss = PMTLoss(load_loss_config("paper", disparity_distribution=1.0))
    model = edge_model().train()
    left = torch.rand(2, 3, 64, 96)
    out = model(left, torch.rand_like(left))
    seg = torch.zeros(2, 64, 96, dtype=torch.long)
    result = loss(out, seg=seg, disparity=torch.full((2, 64, 96), 9.0))
    assert "disparity_distribution" in result.terms and result.terms["disparity_distribution"] > 0
    regression = build_model(load_model_config("paper", spp_f1_windows=(8, 4), spp_f2_windows=(4, 2)))
    out = regression(left, left)
    assert out.disparity_probability is None
    assert "disparity_distribution" not in loss(out, seg=seg, disparity=torch.full((2, 64, 96), 9.0)).terms
