"""Labels computed inside an OpenVINO graph (pmt_perception.openvino_graph): from the low-
resolution logits of a bilinear upsampling (four candidate classes a pixel), or by a TopK over
the channels where the graph does anything else."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

ov = pytest.importorskip("openvino")
ops = pytest.importorskip("openvino.opset13")

from pmt_perception.openvino_graph import argmax_in_graph, bilinear_factor  # noqa: E402

CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


def upsampling_graph(shape, factor, *, mode="linear_onnx", transform="half_pixel", out=None):
    """Parameter (B x C x h x w) -> Interpolate to `out` (default factor x) named 'logits'."""
    b, c, h, w = shape
    out = out or (h * factor, w * factor)
    source = ops.parameter(list(shape), ov.Type.f32)
    up = ops.interpolate(source, ops.constant(np.array(out, np.int64)), mode=mode,
                         shape_calculation_mode="sizes", coordinate_transformation_mode=transform,
                         axes=ops.constant(np.array([2, 3], np.int64)))
    up.output(0).get_tensor().set_names({"logits"})
    return ov.Model([ops.result(up)], [source])


def labels_in_graph(logits: np.ndarray, factor: int, **graph) -> tuple[np.ndarray, object]:
    network = argmax_in_graph(upsampling_graph(logits.shape, factor, **graph), "logits",
                              "labels", drop=("logits",))
    compiled = ov.Core().compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled.create_infer_request().infer([logits])[0][:, 0], network


def four_candidate_reference(logits: torch.Tensor, factor: int) -> torch.Tensor:
    """The rule, written plainly: per output pixel, the bilinear mix of only the classes that
    win in its four neighbouring low-resolution pixels; the best of those."""
    b, c, h, w = logits.shape
    padded = F.pad(logits, (1, 1, 1, 1), mode="replicate")
    winner = padded.argmax(1, keepdim=True)
    candidates = torch.cat([winner[:, :, dy:dy + h + 1, dx:dx + w + 1] for dy, dx in CORNERS], 1)
    t = (torch.arange(factor) + 0.5) / factor
    taps = torch.stack([1 - t, t])
    mixed = 0
    for dy, dx in CORNERS:
        values = padded[:, :, dy:dy + h + 1, dx:dx + w + 1].gather(1, candidates)
        mixed = mixed + values[:, :, :, None, :, None] * taps[dy][:, None, None] * taps[dx]
    best = mixed.argmax(1, keepdim=True)
    labels = candidates[:, :, :, None, :, None].expand_as(mixed).gather(1, best)
    labels = labels.reshape(b, (h + 1) * factor, (w + 1) * factor)
    half = factor // 2
    return labels[:, half:half + h * factor, half:half + w * factor]


def smooth_logits(shape, seed=0, scale=8.0) -> torch.Tensor:
    torch.manual_seed(seed)
    b, c, h, w = shape
    noise = torch.randn(b, c, 4 * h, 4 * w)
    return F.adaptive_avg_pool2d(F.avg_pool2d(noise, 9, 1, 4), (h, w)) * scale


def region_logits(classes: int, size: tuple[int, int], *, seed: int, noise: float):
    """Logits like a trained head's: a clear winner over regions with boundaries, plus noise."""
    torch.manual_seed(seed)
    regions = F.interpolate(torch.randn(1, classes, 4, 6), size=size, mode="bilinear",
                            align_corners=False).argmax(1)
    logits = 6.0 * F.one_hot(regions, classes).permute(0, 3, 1, 2).float()
    return logits + noise * torch.randn(1, classes, *size)


def full_argmax(logits: torch.Tensor, factor: int) -> np.ndarray:
    up = F.interpolate(logits, scale_factor=factor, mode="bilinear", align_corners=False)
    return up.argmax(1).numpy()


@pytest.mark.parametrize("shape, factor", [((1, 19, 12, 17), 8), ((2, 5, 9, 7), 4),
                                           ((1, 3, 5, 6), 2)])
def test_candidate_labels_follow_the_four_candidate_rule(shape, factor):
    logits = smooth_logits(shape)
    labels, _ = labels_in_graph(logits.numpy(), factor)
    assert labels.shape == (shape[0], shape[2] * factor, shape[3] * factor)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, four_candidate_reference(logits, factor).numpy())


def test_candidate_labels_are_the_full_argmax_where_the_four_cells_agree():
    """A mix of vectors that share their winner has that winner: exact there, edges included."""
    factor, shape = 8, (1, 6, 12, 17)
    logits = region_logits(6, shape[2:], seed=1, noise=1.5)
    labels, _ = labels_in_graph(logits.numpy(), factor)
    winner = F.pad(logits, (1, 1, 1, 1), mode="replicate").argmax(1)[0]
    cells = [winner[dy:dy + shape[2] + 1, dx:dx + shape[3] + 1] for dy, dx in CORNERS]
    agree = (cells[0] == cells[1]) & (cells[0] == cells[2]) & (cells[0] == cells[3])
    half = factor // 2
    agree_pixels = agree.repeat_interleave(factor, 0).repeat_interleave(factor, 1)
    agree_pixels = agree_pixels[half:half + shape[2] * factor, half:half + shape[3] * factor].numpy()
    assert 0.05 < agree_pixels.mean() < 0.95   # the test sees both kinds of cell
    full = full_argmax(logits, factor)[0]
    np.testing.assert_array_equal(labels[0][agree_pixels], full[agree_pixels])


def test_candidate_labels_agree_with_the_full_argmax_on_confident_logits():
    """On logits like a trained head's the rule misses almost nothing (on `edge` run 11 it
    differs at 0.09 % of the pixels)."""
    factor = 8
    logits = region_logits(8, (20, 30), seed=2, noise=0.5)
    labels, _ = labels_in_graph(logits.numpy(), factor)
    assert (labels == full_argmax(logits, factor)).mean() >= 0.999


@pytest.mark.parametrize("graph", [dict(transform="align_corners"), dict(mode="nearest"),
                                   dict(out=(30, 40))])
def test_other_upsamplings_fall_back_to_a_topk_over_the_full_logits(graph):
    """align_corners, nearest and a non-integer scale are not the rule's bilinear: the labels
    are then the argmax of the graph's own full-size logits."""
    shape = (1, 6, 12, 17)
    assert bilinear_factor(upsampling_graph(shape, 3, **graph).get_results()[0]
                           .input_value(0).get_node()) == 0
    logits = smooth_logits(shape, seed=3)
    labels, network = labels_in_graph(logits.numpy(), 3, **graph)
    kinds = {node.get_type_name() for node in network.get_ordered_ops()}
    assert "TopK" in kinds and "GatherElements" not in kinds
    full = ov.Core().compile_model(upsampling_graph(shape, 3, **graph), "CPU",
                                   {"INFERENCE_PRECISION_HINT": "f32"})
    up = full.create_infer_request().infer([logits.numpy()])[0]
    np.testing.assert_array_equal(labels, up.argmax(1))


def test_odd_factors_fall_back_too():
    shape = (1, 4, 6, 7)
    assert bilinear_factor(upsampling_graph(shape, 3).get_results()[0].input_value(0)
                           .get_node()) == 0
    assert bilinear_factor(upsampling_graph(shape, 4).get_results()[0].input_value(0)
                           .get_node()) == 4
