"""Edits to an OpenVINO graph before it is compiled: uint8 image inputs, and class labels
(argmax over channels) computed inside the graph, from the low-resolution logits where the
graph upsamples them bilinearly.

Why the labels get their own construction: an `edge` frame at 480x720 spent ~5 ms of its
~35 ms (2-core CPU, bf16) upsampling 19 class maps by 8 to full size, changing their layout
and taking the argmax over them, for one byte per pixel. Bilinear upsampling mixes the 2 x 2
nearest low-resolution logit vectors, so where those four cells agree on the winner the
mixture has the same winner; where they disagree the winner is almost always one of their
four winners. `candidate_labels` therefore blends, per output pixel, only the logits of those
four candidate classes (4 maps instead of 19) and takes the best; the full argmax differs
where a class that wins in none of the four cells wins the mixture: 0.09 % of the pixels of
`edge` run 11 on the synthetic test split and on Aloe, all on class boundaries, and
no change of its synthetic refined mIoU (65.49 % through either graph, OpenVINO bf16).
"""
from __future__ import annotations

import numpy as np

CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))   # (dy, dx) of the 2 x 2 cells an output pixel mixes


def u8_image_inputs(network, names: tuple[str, ...]):
    """OpenVINO `network` whose float NCHW inputs `names` (RGB in [0, 1]) take B x H x W x 3
    uint8 arrays instead: the cast, the / 255 and the layout change run inside the compiled
    graph (OpenVINO's preprocessing). Done in torch they cost more than their arithmetic: torch's
    thread pool was still spinning when OpenVINO's started (+3.5 ms on a 43 ms frame, 2 cores)."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    steps = PrePostProcessor(network)
    for name in names:
        steps.input(name).tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        steps.input(name).model().set_layout(ov.Layout("NCHW"))
        steps.input(name).preprocess().convert_element_type(ov.Type.f32).scale(255.0)
    return steps.build()


def argmax_in_graph(network, logits: str, labels: str, *, drop: tuple[str, ...] = ()):
    """OpenVINO `network` (modified in place) with output `labels`, the class of each pixel of
    output `logits` (B x 1 x H x W int32), in place of the outputs named in `drop` (`logits`
    among them or not): OpenVINO then prunes what only the dropped outputs needed. Where
    `logits` is a bilinear upsampling by an even factor of static shape, the labels come from
    the low-resolution logits (`candidate_labels`); otherwise a TopK over the channels."""
    import openvino.opset13 as ops

    results = {name: r for r in network.get_results() for name in r.input_value(0).get_names()}
    source = results[logits].input_value(0)
    for name in drop:
        network.remove_result(results[name])
    factor = bilinear_factor(source.get_node())
    if factor:
        label_map = candidate_labels(source.get_node().input_value(0), factor)
    else:
        label_map = ops.topk(source, ops.constant(np.int64(1)), axis=1, mode="max",
                             sort="none", index_element_type="i32").output(1)
    label_map.get_tensor().set_names({labels})
    network.add_results([ops.result(label_map)])
    return network


def bilinear_factor(node) -> int:
    """f when `node` is a bilinear (half-pixel) upsampling of a static B x C x h x w map to
    B x C x f*h x f*w with f even, else 0."""
    if node.get_type_name() != "Interpolate":
        return 0
    attributes = node.get_attributes()
    if (attributes.get("mode") not in ("linear", "linear_onnx")
            or attributes.get("coordinate_transformation_mode") != "half_pixel"
            or attributes.get("antialias") or any(attributes.get("pads_begin", []))
            or any(attributes.get("pads_end", []))):
        return 0
    before, after = node.input_value(0).get_partial_shape(), node.get_output_partial_shape(0)
    if before.is_dynamic or after.is_dynamic or len(before) != 4:
        return 0
    (b, c, h, w), (b2, c2, big_h, big_w) = before.to_shape(), after.to_shape()
    factor = big_h // h
    if (b, c) != (b2, c2) or factor < 2 or factor % 2 or (big_h, big_w) != (factor * h, factor * w):
        return 0
    return factor


def bilinear_taps(factor: int) -> np.ndarray:
    """factor x 2: the weights on the upper and lower cell (or left and right) of the output
    pixels at offsets 0..factor-1 inside a cell whose corners are two neighbouring
    low-resolution pixel centres (half-pixel centres: a cell spans factor output pixels,
    starting factor / 2 pixels after the first centre's output pixel)."""
    t = (np.arange(factor) + 0.5) / factor
    return np.stack([1 - t, t], axis=1).astype(np.float32)


def candidate_labels(low_logits, factor: int):
    """The labels of the bilinear x `factor` upsampling of `low_logits` (B x C x h x w, static),
    from the four candidate classes of each output pixel (module docstring). B x 1 x f*h x f*w
    int32. Edges clamp as the upsampling's do (replicate padding)."""
    import openvino.opset13 as ops

    def constant(values):
        return ops.constant(np.array(values, np.int64))

    def pad_by_one(tensor):   # one more pixel on every side, repeating the edge
        return ops.pad(tensor, constant([0, 0, 1, 1]), constant([0, 0, 1, 1]), "edge")

    def window(tensor, channels, top, left, height, width):
        return ops.slice(tensor, constant([0, 0, top, left]),
                         constant([b, channels, top + height, left + width]), constant([1] * 4))

    b, c, h, w = low_logits.get_partial_shape().to_shape()
    # A cell between each pair of neighbouring centres, the edges included: h+1 x w+1 of them.
    padded = pad_by_one(low_logits)                                          # B x C x h+2 x w+2
    winner = ops.topk(padded, ops.constant(np.int64(1)), axis=1, mode="max", sort="none",
                      index_element_type="i32").output(1)                  # B x 1 x h+2 x w+2
    candidates = [window(winner, 1, dy, dx, h + 1, w + 1) for dy, dx in CORNERS]  # per cell
    # Logit of candidate k at corner j, ordered j * 4 + k: B x 16 x cells. The gather runs on
    # the whole padded grid and its (small) result is cut after: OpenVINO 2026.4's CPU plugin
    # refused a Slice feeding GatherElements's data ("data and indices must have equal or
    # intersecting dimensions": it fused the two with the wrong shape).
    winner_margin = pad_by_one(winner)
    values = []
    for dy, dx in CORNERS:
        # Grid point q is corner (dy, dx) of cell q - (dy, dx), whose candidate (ky, kx) is
        # the winner at q - (dy, dx) + (ky, kx).
        indices = ops.concat([window(winner_margin, 1, 1 + ky - dy, 1 + kx - dx, h + 2, w + 2)
                              for ky, kx in CORNERS], axis=1)
        gathered = ops.gather_elements(padded, indices, axis=1)
        values.append(window(gathered, 4, dy, dx, h + 1, w + 1))
    # One 1x1 convolution mixes them for all factor^2 pixel offsets of a cell: output
    # channel k * f^2 + (y * f + x) = sum_j weight(y, x, j) * values[j * 4 + k].
    taps, offsets = bilinear_taps(factor), factor * factor
    weights = np.zeros((4 * offsets, 16, 1, 1), np.float32)
    for j, (dy, dx) in enumerate(CORNERS):
        per_offset = np.outer(taps[:, dy], taps[:, dx]).reshape(-1)
        for k in range(4):
            weights[k * offsets:(k + 1) * offsets, j * 4 + k, 0, 0] = per_offset
    mixed = ops.convolution(ops.concat(values, axis=1), ops.constant(weights), [1, 1], [0, 0],
                            [0, 0], [1, 1])
    scores = ops.split(mixed, ops.constant(np.int64(1)), 4).outputs()   # 4 x (B x f^2 x cells)
    best, label = scores[0], candidates[0]
    for score, candidate in zip(scores[1:], candidates[1:]):
        better = ops.greater(score, best)
        best = ops.maximum(best, score)
        label = ops.select(better, candidate, label)                     # B x f^2 x cells
    full = ops.depth_to_space(label, "blocks_first", factor)            # B x 1 x f(h+1) x f(w+1)
    half = factor // 2               # the first and last half cells fall outside the image
    return window(full, 1, half, half, factor * h, factor * w).output(0)
