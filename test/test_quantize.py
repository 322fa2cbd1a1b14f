"""INT8 post-training quantisation (`pmt-export --int8`, quantize.py) on a small fast model."""
import json

import cv2
import numpy as np
import pytest
import torch

from pmt_perception.checkpoint import save_checkpoint
from pmt_perception.config import load_model_config
from pmt_perception.export import export_onnx_bytes, main as export_main
from pmt_perception.inference import Predictor
from pmt_perception.network import build_model
from pmt_perception.onnx_runners import OnnxRuntimeModel
from pmt_perception.quantize import DEFAULT_KEEP_FLOAT, calibration_pairs, quantize_onnx, to_feed

pytest.importorskip("nncf")
onnx = pytest.importorskip("onnx")

SMALL = dict(backbone="resnet18", spp_f1_windows=(8, 4), spp_f2_windows=(4, 2), num_classes=4)
SIZE = (64, 96)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(load_model_config("fast", **SMALL)).eval()


def textured_pairs(count):
    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(count):
        left = cv2.GaussianBlur(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8), (5, 5), 1.0)
        pairs.append(to_feed(left, np.roll(left, -4, axis=1)))
    return pairs


def quantized_nodes(proto) -> set[str]:
    """Names of the nodes that read a DequantizeLinear's output (those that run in int8)."""
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in proto.graph.node if n.op_type != "QuantizeLinear"
            and dequantized.intersection(n.input)}


def test_quantized_model_keeps_metadata_runs_and_stays_close(model):
    data = export_onnx_bytes(model, metadata={"class_names": list("abcd")})
    calibration = textured_pairs(4)
    quantized = quantize_onnx(data, calibration, description={"pairs": 4})
    proto = onnx.load_from_string(quantized)
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["class_names"] == list("abcd") and meta["quantization"] == {"pairs": 4}
    assert "model_config" in meta and quantized_nodes(proto)
    left, right = torch.from_numpy(calibration[0]["left"]), torch.from_numpy(calibration[0]["right"])
    out = OnnxRuntimeModel(quantized, device=torch.device("cpu"))(left, right)
    with torch.inference_mode():
        reference = model(left, right)
    assert out.disparity.shape == reference.disparity.shape and torch.isfinite(out.disparity).all()
    # int8 is not exact, but a quantised copy of the same net stays near it.
    scale = reference.disparity.abs().mean().item() + 1e-6
    assert (out.disparity - reference.disparity).abs().mean().item() < 0.25 * scale + 0.05


def test_keep_float_leaves_matching_nodes_unquantised(model):
    data = export_onnx_bytes(model)
    def int8_nodes(**keep):
        return quantized_nodes(onnx.load_from_string(quantize_onnx(data, textured_pairs(2),
                                                                   description={}, **keep)))
    everything, kept = int8_nodes(), int8_nodes(keep_float=[".*/backbone/.*"])
    backbone = {name for name in everything if "backbone" in name}
    assert backbone and not (kept & backbone) and kept  # the heads are still int8


def test_calibration_pairs_from_a_folder_are_evenly_spaced_and_resized(tmp_path):
    for side in ("left", "right"):
        (tmp_path / side).mkdir()
        for i in range(5):
            cv2.imwrite(str(tmp_path / side / f"{i}.png"), np.full((40, 60, 3), 40 * i, np.uint8))
    pairs = calibration_pairs(str(tmp_path), 3, (32, 64))
    assert [p["left"].shape for p in pairs] == [(1, 3, 32, 64)] * 3
    assert [round(float(p["left"].mean()) * 255) for p in pairs] == [0, 80, 160]  # pairs 0, 2, 4
    with pytest.raises(ValueError, match="at least 1"):
        calibration_pairs(str(tmp_path), 0, (32, 64))


def test_calibration_falls_back_to_generated_scenes():
    pairs = calibration_pairs(None, 2, (64, 96))
    assert len(pairs) == 2 and pairs[0]["right"].shape == (1, 3, 64, 96)
    assert not np.array_equal(pairs[0]["left"], pairs[1]["left"])


def test_pmt_export_int8_writes_a_model_the_predictor_runs(model, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.pt", model=model, config=model.config,
                           class_names=list("abcd"), palette=[[0, 0, 0]] * 4)
    for side in ("left", "right"):
        (tmp_path / "pairs" / side).mkdir(parents=True)
    for i, feed in enumerate(textured_pairs(3)):
        for side in ("left", "right"):
            image = (feed[side][0].transpose(1, 2, 0) * 255).round().astype(np.uint8)
            cv2.imwrite(str(tmp_path / "pairs" / side / f"{i}.png"), image)
    out = tmp_path / "m_int8.onnx"
    assert export_main([str(ckpt), "--out", str(out), "--size", "64x96", "--int8", "--calibration",
                        str(tmp_path / "pairs"), "--calibration-pairs", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["int8"]
    assert summary["pairs"] == 3 and summary["kept_float"] == list(DEFAULT_KEEP_FLOAT)
    assert 0.0 <= summary["label_agreement"] <= 1.0
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["m_int8.onnx"]  # no fp32 side file left
    predictor = Predictor(out, device="cpu")
    assert "int8" in predictor.describe() and predictor.class_names == list("abcd")
    result = predictor.predict(np.zeros((64, 96, 3), np.uint8), np.zeros((64, 96, 3), np.uint8))
    assert result.labels.shape == (64, 96)
    with pytest.raises(SystemExit):
        export_main([str(ckpt), "--out", str(tmp_path / "m.ts"), "--int8"])


def test_a_failed_int8_export_leaves_no_file_under_the_int8_name(model, tmp_path):
    ckpt = save_checkpoint(tmp_path / "m.pt", model=model, config=model.config,
                           class_names=list("abcd"), palette=[[0, 0, 0]] * 4)
    # The calibration folder is missing: quantisation cannot run.
    with pytest.raises((FileNotFoundError, ValueError)):
        export_main([str(ckpt), "--out", str(tmp_path / "m_int8.onnx"), "--size", "64x96", "--int8",
                     "--calibration", str(tmp_path / "no_such_folder")])
    assert not list(tmp_path.glob("*.onnx"))
