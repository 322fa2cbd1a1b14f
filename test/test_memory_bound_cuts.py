"""The cuts of memory-bound work behind the fast `edge` graph (issue 11): the L conv on the
pooled image, convex upsampling by part of a head's scale, a right view that stops at F2,
turning a checkpoint of another backbone into a start for training, and the export-only forms
that compute the same function with fewer memory passes (bilinear by phases, 3-D convolutions
for the factorised aggregation, the correlation by blocks, the image pooled by a convolution)."""
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pmt_perception.checkpoint import load_checkpoint, save_checkpoint
from pmt_perception.config import load_model_config
from pmt_perception.export import export_onnx, onnx_parity
from pmt_perception.network import build_model
from pmt_perception.network.batchnorm_folding import fold_batchnorm
from pmt_perception.network.blocks import BilinearByPhases, LConv, Upsampler, pool_image
from pmt_perception.network.cost_volume import (
    FactorizedConv3d,
    blockwise_correlation,
    groupwise_correlation_volume,
)
from pmt_perception.training.state import slim_checkpoint

TINY_EDGE = dict(spp_f1_windows=(8, 4), spp_f2_windows=(4, 2), max_disparity=32)
# Every cut at once, as today's edge.yaml has them, and edge run 7's graph without them.
CUTS = dict(backbone="mobilenet_v3_small", guide_on_pooled_image=True, coarse_views=1,
            disparity_refinement_scale=0, convex_upsample_scale=4)
RUN7_GRAPH = dict(backbone="mobilenet_v3_large", guide_on_pooled_image=False, coarse_views=2,
                  disparity_refinement_scale=4, convex_upsample_scale=None)


def edge_model(**overrides):
    torch.manual_seed(0)
    return build_model(load_model_config("edge", **{**TINY_EDGE, **overrides}))


@pytest.mark.parametrize("size", [(64, 96), (70, 101)])
def test_l_conv_pools_after_as_published_or_before_on_request(size):
    torch.manual_seed(0)
    image = torch.rand(1, 3, *size)
    published, pooled_first = LConv().eval(), LConv(on_pooled_image=True).eval()
    pooled_first.load_state_dict(published.state_dict())
    with torch.no_grad():
        after = published(image, 8)
        before = pooled_first(image, 8)
        assert torch.equal(after, F.avg_pool2d(published(image), 8, 8, ceil_mode=True))
        assert torch.equal(before, published(F.avg_pool2d(image, 8, 8, ceil_mode=True)))
    # Both land on the head grid ceil(H / 8) x ceil(W / 8); at scale 1 they are the same conv.
    assert after.shape == before.shape == (1, 1, -(-size[0] // 8), -(-size[1] // 8))
    assert torch.equal(published(image, 1), pooled_first(image, 1))
    # The checkpoint keys of the published L conv (a ConvBNReLU) stay as they were.
    assert "0.weight" in published.state_dict()


@pytest.mark.parametrize("convex_scale", [2, 4])
def test_partly_convex_upsampling_covers_the_image_and_keeps_a_constant(convex_scale):
    torch.manual_seed(0)
    upsampler = Upsampler("convex", feature_channels=6, scale=8, convex_scale=convex_scale).eval()
    features = torch.randn(1, 6, 9, 13)
    prediction = torch.full((1, 1, 9, 13), 5.0)
    with torch.no_grad():
        out = upsampler(prediction, features, (70, 101))
        varying = upsampler(torch.rand(1, 1, 9, 13), features, (70, 101))
    assert out.shape == varying.shape == (1, 1, 70, 101)
    # Convex weights and bilinear both mix neighbours with weights that sum to one (away from
    # the border, where the convex 3x3 neighbourhood reads zero padding).
    inner = out[..., 16:56, 16:88]
    torch.testing.assert_close(inner, torch.full_like(inner, 5.0))
    # The mask predicts weights for the convex part only: 9 per sub-pixel of convex_scale.
    assert upsampler.mask[-1].out_channels == 9 * convex_scale ** 2
    assert Upsampler("convex", feature_channels=6, scale=8, convex_scale=16).convex_scale == 8


@pytest.mark.parametrize("scale, convex_scale", [(8, 4), (4, 2), (4, 4)])
def test_one_channel_convex_upsampling_matches_the_many_channel_product(scale, convex_scale):
    """A disparity (one channel) takes a multiply-and-sum path, class logits the batched matrix
    product: the same weights on the same neighbours, so one channel of a stack comes out as
    that channel alone does."""
    torch.manual_seed(0)
    upsampler = Upsampler("convex", feature_channels=6, scale=scale, convex_scale=convex_scale).eval()
    features, disparity = torch.randn(2, 6, 9, 13), torch.rand(2, 1, 9, 13) * 40
    size = (9 * scale - 3, 13 * scale - 2)
    with torch.no_grad():
        alone = upsampler(disparity, features, size)
        stacked = upsampler(torch.cat([disparity, torch.rand_like(disparity)], 1), features, size)
    assert alone.shape == (2, 1, *size)
    torch.testing.assert_close(alone, stacked[:, :1], rtol=1e-6, atol=1e-4)
    assert not torch.allclose(alone, stacked[:, 1:])


def test_left_only_coarse_branch_never_reads_the_right_views_deepest_features():
    model = edge_model(coarse_views=1).eval()
    batches = []
    model.backbone.stage3.register_forward_hook(lambda _m, inputs, _o: batches.append(inputs[0].shape[0]))
    left = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        first = model(left, torch.rand_like(left))
        second = model(left, torch.rand_like(left))
    assert batches == [2, 2]                                    # the left views only, not 2 x 2
    torch.testing.assert_close(first.coarse_logits, second.coarse_logits)
    assert not torch.allclose(first.disparity, second.disparity)   # matching still sees the right view
    both = edge_model(coarse_views=2)
    f4_channels = model.backbone.channels[2]
    assert model.coarse_segmentation.reduce[0].in_channels == f4_channels
    assert both.coarse_segmentation.reduce[0].in_channels == 2 * f4_channels


def test_bad_cut_settings_raise_value_error():
    with pytest.raises(ValueError, match="convex_upsample_scale"):
        load_model_config("edge", convex_upsample_scale=3)
    with pytest.raises(ValueError, match="coarse_views"):
        load_model_config("edge", coarse_views=0)


@pytest.mark.parametrize("overrides", [CUTS, {**CUTS, "disparity_refinement_scale": 4}])
def test_every_parameter_of_the_cut_graph_gets_a_gradient(overrides):
    model = edge_model(**overrides).train()
    left = torch.rand(2, 3, 64, 96)
    out = model(left, torch.rand_like(left))
    sum(o.float().mean() for o in out if o is not None).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.slow
def test_cut_graph_onnx_parity_at_two_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    model = edge_model(**CUTS, soft_argmin_window=0).eval()
    path = export_onnx(model, tmp_path / "cut.onnx", size=(64, 96))
    worst = onnx_parity(model, path, [(64, 96), (70, 101)])
    assert worst["disparity"] < 1e-3
    assert worst["coarse_logits"] < 1e-3 and worst["refined_logits"] < 1e-3


def test_change_parts_starts_another_backbone_from_the_heads_it_can_keep(tmp_path):
    torch.manual_seed(0)
    config = load_model_config("edge", **TINY_EDGE, **RUN7_GRAPH)
    model = build_model(config)
    source = save_checkpoint(tmp_path / "large.pt", model=model, config=config,
                             class_names=[str(i) for i in range(19)], palette=[[0, 0, 0]] * 19)
    with pytest.raises(RuntimeError, match="size mismatch|Missing key"):
        slim_checkpoint(source, tmp_path / "refused.pt", config_changes=CUTS)
    slim_checkpoint(source, tmp_path / "small.pt", half=False, config_changes=CUTS, change_parts=True)
    after = load_checkpoint(tmp_path / "small.pt")
    assert after["model_config"]["backbone"] == "mobilenet_v3_small"
    state, before = after["model_state"], model.state_dict()
    # A head that keeps its shape keeps its weights...
    key = "refined_segmentation.hourglass.c2.0.weight"
    assert torch.equal(state[key], before[key])
    # ...a reshaped input layer and every backbone tensor start afresh, even one whose shape
    # happens to match (both MobileNetV3 stems are 3 -> 16 channels, 3x3).
    stem = "backbone.stage1.0.0.weight"
    assert state[stem].shape == before[stem].shape and not torch.equal(state[stem], before[stem])
    reduce = "coarse_segmentation.reduce.0.weight"
    assert state[reduce].shape != before[reduce].shape
    build_model(load_model_config("edge", **{**TINY_EDGE, **CUTS})).load_state_dict(
        {k: v.float() for k, v in state.items()})


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bilinear_by_phases_is_interpolates_bilinear_upsampling(factor):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 11)
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    torch.testing.assert_close(BilinearByPhases(factor)(x), expected, atol=1e-5, rtol=1e-5)
    assert dict(BilinearByPhases(factor).state_dict()) == {}   # a constant, no checkpoint key


@pytest.mark.parametrize("last", [False, True])
def test_factorised_aggregation_exports_as_3d_convolutions_of_the_same_function(last):
    torch.manual_seed(0)
    layer = FactorizedConv3d(4, 6, last=last)
    with torch.no_grad():   # trained-like statistics, so BatchNorm is not the identity
        for norm in (layer.spatial_bn, layer.along_d_bn):
            if isinstance(norm, torch.nn.BatchNorm2d):
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
                norm.weight.uniform_(0.5, 1.5)
    layer.eval()
    volume = torch.randn(2, 4, 5, 6, 9)
    with torch.no_grad():
        reference = layer(volume)
        torch.testing.assert_close(layer.as_conv3d(volume), reference, atol=1e-5, rtol=1e-5)
        folded, pairs = fold_batchnorm(layer)   # both conv -> BN pairs fold (one when last)
        assert pairs == (1 if last else 2)
        torch.testing.assert_close(folded(volume), reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(folded.as_conv3d(volume), reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("width", [3, 16, 37, 48])
def test_blockwise_correlation_is_the_sliced_correlation(width):
    """Every disparity 0..D-1 at every pixel, zeros where x - d leaves the image, for widths
    below, at and off a multiple of the block (= D)."""
    torch.manual_seed(0)
    disparities = 16
    left, right = torch.randn(2, 3, 4, 5, width), torch.randn(2, 3, 4, 5, width)
    volume = blockwise_correlation(left, right, disparities)
    assert volume.shape == (2, 3, disparities, 5, width)
    for d in range(disparities):
        expected = torch.zeros(2, 3, 5, width)
        if d < width:
            expected[..., d:] = (left[..., d:] * right[..., :width - d]).sum(2)
        torch.testing.assert_close(volume[:, :, d], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cosine", [False, True])
def test_exported_correlation_volume_keeps_its_width_dynamic(cosine):
    """The exported graph (the blockwise form) gives the eager volume at widths other than the
    one it was traced at, including ones that are no multiple of the block."""
    ort = pytest.importorskip("onnxruntime")

    class Volume(torch.nn.Module):
        def forward(self, left, right):
            return groupwise_correlation_volume(left, right, num_disparities=8, groups=4,
                                                cosine=cosine)

    buffer, dynamic = io.BytesIO(), {0: "batch", 2: "height", 3: "width"}
    example = torch.rand(1, 16, 6, 24)
    torch.onnx.export(Volume(), (example, example), buffer, input_names=["left", "right"],
                      dynamic_axes={"left": dynamic, "right": dynamic}, opset_version=17,
                      dynamo=False)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for width in (24, 29, 5):
        left, right = torch.randn(2, 16, 7, width), torch.randn(2, 16, 7, width)
        exported = session.run(None, {"left": left.numpy(), "right": right.numpy()})[0]
        eager = Volume()(left, right).numpy()
        assert exported.shape == eager.shape
        np.testing.assert_allclose(exported, eager, atol=1e-5)


def test_exported_image_pooling_is_ceil_mode_average_pooling():
    """pool_image's convolution form: each patch's mean, the last partial patches too."""
    ort = pytest.importorskip("onnxruntime")

    class Pool(torch.nn.Module):
        def forward(self, image):
            return pool_image(image, 8)

    buffer, dynamic = io.BytesIO(), {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(Pool(), (torch.rand(1, 3, 32, 48),), buffer, input_names=["image"],
                      dynamic_axes={"image": dynamic}, opset_version=17, dynamo=False)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for size in [(32, 48), (30, 45), (7, 9)]:
        image = torch.rand(2, 3, *size)
        exported = session.run(None, {"image": image.numpy()})[0]
        expected = F.avg_pool2d(image, 8, 8, ceil_mode=True).numpy()
        assert exported.shape == expected.shape
        np.testing.assert_allclose(exported, expected, atol=1e-6)
