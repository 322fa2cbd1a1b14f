"""Export: ONNX parity with PyTorch at several sizes, the ONNX Runtime backend, TorchScript."""
import json

import numpy as np
import pytest
import torch

from pmt_perception.checkpoint import save_checkpoint
from pmt_perception.config import load_model_config
from pmt_perception.export import export_onnx, export_torchscript, main as export_main, onnx_parity
from pmt_perception.inference import Predictor
from pmt_perception.network import build_model

SMALL = dict(backbone="resnet18", spp_f1_windows=(8, 4), spp_f2_windows=(4, 2), num_classes=4)


@pytest.fixture(scope="module", params=["paper", "fast"])
def model(request):
    torch.manual_seed(0)
    return build_model(load_model_config(request.param, **SMALL)).eval()


def test_onnx_matches_pytorch_at_dynamic_sizes(model, tmp_path):
    path = export_onnx(model, tmp_path / "m.onnx", size=(64, 96))
    # Trace size, other multiples of 32, and odd sizes: H and W are dynamic in the graph.
    worst = onnx_parity(model, path, [(64, 96), (96, 128), (70, 101)])
    assert worst["disparity"] < 1e-3 and worst["refined_logits"] < 1e-3, worst


def test_predictor_runs_the_onnx_backend(model, tmp_path):
    path = export_onnx(model, tmp_path / "m.onnx", size=(64, 96),
                       metadata={"class_names": list("abcd"), "palette": [[1, 2, 3]] * 4})
    onnx_predictor = Predictor(path, device="cpu")
    torch_predictor = Predictor(model, device="cpu")
    rng = np.random.default_rng(0)
    left, right = (rng.integers(0, 256, (50, 75, 3), dtype=np.uint8) for _ in range(2))
    a, b = onnx_predictor.predict(left, right), torch_predictor.predict(left, right)
    assert onnx_predictor.backend == "onnxruntime" and onnx_predictor.class_names == list("abcd")
    np.testing.assert_allclose(a.disparity, b.disparity, atol=1e-3)
    assert (a.labels == b.labels).mean() > 0.999
    with pytest.raises(ValueError, match="fp32"):
        Predictor(path, device="cpu", precision="bf16")


def test_torchscript_export_runs(model, tmp_path):
    path = export_torchscript(model, tmp_path / "m.ts", size=(64, 96))
    scripted = torch.jit.load(str(path))
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x, x)[1], model(x, x).disparity, atol=1e-4, rtol=1e-4)


def test_pmt_export_command(model, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.pt", model=model, config=model.config,
                           class_names=list("abcd"), palette=[[0, 0, 0]] * 4)
    assert export_main([str(ckpt), "--out", str(tmp_path / "m.onnx"), "--size", "64x96", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "onnx" and max(summary["onnx_max_abs_diff"].values()) < 1e-3
    assert Predictor(tmp_path / "m.onnx", device="cpu").class_names == list("abcd")


def test_pmt_evaluate_names_a_garbage_onnx_file_and_exits_2(tmp_path, capsys):
    from pmt_perception.evaluate import main as evaluate_main

    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\x08\x07 this is not a protobuf \xff\xfe" * 10)
    code = evaluate_main(["--checkpoint", str(garbage), "--data", "synthetic", "--limit", "1",
                          "--out", str(tmp_path / "out")])
    assert code == 2
    message = capsys.readouterr().err
    assert str(garbage) in message and "not a readable ONNX model" in message
