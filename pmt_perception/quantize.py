"""INT8 post-training quantisation of an exported PMT model (`pmt-export --int8`).

NNCF's post-training quantisation inserts QuantizeLinear / DequantizeLinear pairs into the
ONNX graph, with ranges measured on calibration pairs: the user's own (a left/ + right/
folder, a Middlebury scene, a bag: whatever `pmt-adapt --data` takes) or, without any, scenes
of the synthetic generator. OpenVINO runs such a graph with int8 kernels (the Predictor's
`openvino` backend); ONNX Runtime runs it too. The file stays an ordinary pmt_perception ONNX
model (metadata: model config, classes, palette) plus a `quantization` entry saying how it
was calibrated, so everything that takes an .onnx takes it.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .adapt_sources import list_pairs, load_pair

SYNTHETIC = "synthetic"
# Left in float by default (ONNX node-name patterns; the PMT module path is in every name):
# - the backbone's first stage (stem convolution and H/2-H/4 blocks): quantised, OpenVINO's CPU
#   int8 kernels lost the `edge` model's accuracy (synthetic D1 23.6 -> 53 %; the stem alone
#   in float: 30 %) where ONNX Runtime ran the same graph within 2 points;
# - the cost volume (cosine correlation of unit-normalised features) and its aggregation,
#   whose soft-argmin is sensitive to the rounding of every candidate's score: without them in
#   float D1 rose by 3.6 points, with them by 0.4 (docs/performance.md).
DEFAULT_KEEP_FLOAT = (".*/backbone/stage1/.*", ".*/disparity/(match|aggregate)/.*")


def to_feed(left: np.ndarray, right: np.ndarray) -> dict[str, np.ndarray]:
    """HxWx3 uint8 RGB pair -> the exported graph's inputs (1x3xHxW float32 in [0, 1])."""
    def planar(image):
        return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    return {"left": planar(left), "right": planar(right)}


def calibration_pairs(source: Optional[str], count: int, size: tuple[int, int], *,
                      seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` pairs at `size` as graph inputs: evenly spaced over `source`'s pairs, or
    generated scenes (their `val` seed stream) when `source` is None or "synthetic"."""
    if count < 1:
        raise ValueError(f"calibration needs at least 1 pair, got {count}")
    if source in (None, SYNTHETIC):
        from .data.synthetic import load_generator_settings
        from .data.synthetic.generator import generate_pair, sample_seed
        settings = load_generator_settings(SYNTHETIC)
        pairs = (generate_pair(settings, seed=sample_seed(seed, "val", i), size=size) for i in range(count))
        return [to_feed(pair.left, pair.right) for pair in pairs]
    found = list_pairs(Path(source))
    if not found:
        raise ValueError(f"calibration: no stereo pairs in {source}")
    chosen = [found[i] for i in np.linspace(0, len(found) - 1, min(count, len(found))).round().astype(int)]
    return [to_feed(*load_pair(pair, size)[:2]) for pair in chosen]


def quantize_onnx(data: bytes, calibration: Sequence[dict[str, np.ndarray]], *,
                  description: dict, keep_float: Sequence[str] = ()) -> bytes:
    """The int8 (QDQ) version of serialized ONNX model `data`; `description` (calibration
    source, pairs, size) is stored as its `quantization` metadata. `keep_float`: regular
    expressions of ONNX node names (e.g. `.*/disparity/match/.*`) left in float."""
    try:
        import nncf
    except ImportError as error:
        raise RuntimeError("INT8 quantisation needs NNCF: pip install nncf "
                           "(or pip install 'pmt_perception[runtimes]')") from error
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    model = onnx.load_from_string(data)
    # overflow_fix ENABLE: 7-bit weights everywhere, so that CPUs without VNNI (AVX2), which
    # multiply u8 x s8 into saturating int16 pairs, cannot overflow (NNCF's advice for them).
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout is for --json
        quantized = nncf.quantize(model, nncf.Dataset(list(calibration)),
                                  subset_size=len(calibration),
                                  preset=nncf.QuantizationPreset.MIXED,
                                  ignored_scope=nncf.IgnoredScope(patterns=list(keep_float),
                                                                  validate=False),
                                  advanced_parameters=AdvancedQuantizationParameters(
                                      overflow_fix=OverflowFix.ENABLE))
    kept = {p.key: p.value for p in model.metadata_props}
    del quantized.metadata_props[:]
    for key, value in {**kept, "quantization": json.dumps(description)}.items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, value
    return quantized.SerializeToString()


def int8_agreement(reference: torch.nn.Module, quantized,
                   calibration: Sequence[dict[str, np.ndarray]]) -> dict:
    """How far the int8 model is from its fp32 source on `calibration`: refined-label agreement
    and the mean / 99th-percentile absolute disparity difference (px)."""
    agree, diffs = [], []
    for feed in calibration:
        left, right = torch.from_numpy(feed["left"]), torch.from_numpy(feed["right"])
        with torch.inference_mode():
            fp32 = reference(left, right)
        int8 = quantized(left, right)
        agree.append((fp32.refined_logits.argmax(1) == int8.refined_logits.argmax(1)).float().mean().item())
        diffs.append((fp32.disparity - int8.disparity).abs().flatten())
    diff = torch.cat(diffs)
    return {"label_agreement": float(np.mean(agree)), "disparity_mean_abs_diff_px": diff.mean().item(),
            "disparity_p99_abs_diff_px": torch.quantile(diff[:: max(1, diff.numel() // 100000)], 0.99).item()}
