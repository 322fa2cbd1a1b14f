"""Runtime backends of the Predictor: the auto rules, and parity of every backend with fp32 eager.

Parity tolerances (tiny random-init models, random images; stated once here):
- fp32 backends (onnxruntime, openvino fp32, torch.compile fp32): >= 99.5 % of labels equal to
  fp32 eager, disparity max abs error <= 0.01 px (they differ only in summation order);
- bf16 (eager autocast, openvino bf16): >= 90 % of labels equal, disparity mean abs error
  <= 0.25 px (bf16 keeps 8 bits of mantissa: logits near a tie may flip).
"""
import importlib.util
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from pmt_perception import inference, runtime
from pmt_perception.config import config_dir, load_model_config
from pmt_perception.export import export_onnx
from pmt_perception.inference import Predictor
from pmt_perception.network import build_model
from pmt_perception.onnx_runners import OpenVinoModel
from pmt_perception.runtime import cpu_flags, cpu_has_native_bf16, resolve_runtime

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
TINY = dict(spp_f1_windows=(8, 4), spp_f2_windows=(4, 2), num_classes=5)
# Every shipped variant, `edge` too once its config exists; paper/fast on ResNet-18 taps to stay
# tiny (the backbone is not what differs between backends).
VARIANTS = {"paper": dict(backbone="resnet18"), "fast": dict(backbone="resnet18"),
            "fast_mobile": {}, "edge": dict(max_disparity=48, soft_argmin_window=0)}
# edge without its soft-argmin window here: random weights give flat candidate distributions
# whose argmax any rounding flips, a jump that says nothing about the backend (test_cost_volume
# checks the windowed export on peaked scores).
VARIANTS = {name: kw for name, kw in VARIANTS.items() if (config_dir() / "model" / f"{name}.yaml").is_file()}
FP32_LABELS, FP32_DISPARITY_MAX = 0.995, 0.01
BF16_LABELS, BF16_DISPARITY_MEAN = 0.90, 0.25
SIZE = (70, 101)  # odd on purpose: padding and cropping run too


def tiny_model(variant):
    torch.manual_seed(0)
    return build_model(load_model_config(variant, **TINY, **VARIANTS[variant])).eval()


def random_pair(seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(2))


def agreement(out, reference):
    return (out.labels == reference.labels).mean(), np.abs(out.disparity - reference.disparity)


@pytest.fixture(scope="module", params=list(VARIANTS))
def case(request, tmp_path_factory):
    """(variant, model, exported .onnx path, fp32 eager reference prediction)."""
    model = tiny_model(request.param)
    path = export_onnx(model, tmp_path_factory.mktemp(request.param) / "m.onnx", size=(64, 96))
    left, right = random_pair()
    reference = Predictor(model, device="cpu", backend="eager", precision="fp32").predict(left, right)
    return request.param, model, path, reference


# ----------------------------------------------------------------------------- auto rules
@pytest.mark.parametrize("device, native_bf16, installed, expected", [
    (CUDA, False, {"onnxruntime", "openvino"}, ("eager", "fp16")),
    (CPU, True, {"onnxruntime", "openvino"}, ("openvino", "bf16")),
    (CPU, False, {"onnxruntime", "openvino"}, ("openvino", "fp32")),
    (CPU, True, {"onnxruntime"}, ("eager", "bf16")),
    (CPU, False, {"onnxruntime"}, ("onnxruntime", "fp32")),
    (CPU, False, set(), ("eager", "fp32")),
])
def test_auto_picks_the_fast_runtime(monkeypatch, device, native_bf16, installed, expected):
    monkeypatch.setattr(runtime, "backend_available",
                        lambda b: b in ("eager", "compile") or b in installed)
    assert resolve_runtime("auto", "auto", device, native_bf16=native_bf16) == expected


def test_auto_precision_follows_an_explicit_backend():
    assert resolve_runtime("eager", "auto", CPU, native_bf16=True) == ("eager", "bf16")
    assert resolve_runtime("eager", "auto", CPU, native_bf16=False) == ("eager", "fp32")
    assert resolve_runtime("compile", "auto", CUDA) == ("compile", "fp16")
    assert resolve_runtime("onnxruntime", "auto", CPU, native_bf16=True) == ("onnxruntime", "fp32")
    assert resolve_runtime("auto", "auto", CPU, onnx_file=True, native_bf16=True) == ("onnxruntime", "fp32")


@pytest.mark.parametrize("backend, precision, device, message", [
    ("eager", "fp16", CPU, "bf16"),
    ("onnxruntime", "bf16", CPU, "fp32"),
    ("openvino", "fp32", CUDA, "CPU"),
    ("tensorrt", "fp32", CPU, "backend must be one of"),
    ("eager", "int4", CPU, "precision must be one of"),
])
def test_impossible_runtimes_are_refused(backend, precision, device, message):
    with pytest.raises(ValueError, match=message):
        resolve_runtime(backend, precision, device, native_bf16=False)


def test_an_onnx_file_needs_an_onnx_backend():
    with pytest.raises(ValueError, match="onnxruntime or openvino"):
        resolve_runtime("eager", "fp32", CPU, onnx_file=True)


def test_a_missing_package_is_named(monkeypatch):
    monkeypatch.setattr(runtime, "backend_available", lambda b: b != "openvino")
    with pytest.raises(ValueError, match="pip install openvino"):
        resolve_runtime("openvino", "fp32", CPU)


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert "avx512_bf16" in cpu_flags(str(cpuinfo))
    assert cpu_has_native_bf16(frozenset({"avx2", "amx_bf16", "amx_tile"}))
    assert not cpu_has_native_bf16(frozenset({"avx2", "avx512f", "fma"}))  # emulated bf16
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


# ----------------------------------------------------------------------------- Predictor
def test_predictor_reports_what_auto_chose():
    predictor = Predictor(tiny_model("fast_mobile"), device="cpu", backend="auto", precision="auto")
    assert predictor.requested == ("auto", "auto")
    assert (predictor.backend, predictor.precision) == resolve_runtime("auto", "auto", CPU)
    assert predictor.describe().startswith(f"{predictor.backend} {predictor.precision} on cpu")
    assert "asked auto/auto" in predictor.describe()
    left, right = random_pair()
    out = predictor.predict(left, right)
    assert out.labels.shape == out.disparity.shape == SIZE


def test_compile_flag_is_the_compile_backend_and_conflicts_are_refused():
    model = tiny_model("fast_mobile")
    with pytest.raises(ValueError, match="contradicts"):
        Predictor(model, device="cpu", backend="onnxruntime", compile=True)
    assert Predictor(model, device="cpu", compile=True).backend == "compile"  # compiles lazily


def test_default_backend_keeps_the_previous_behaviour(case):
    _, model, path, _ = case
    assert Predictor(model, device="cpu").backend == "eager"
    assert Predictor(path, device="cpu").backend == "onnxruntime"


# ----------------------------------------------------------------------------- parity
def test_onnxruntime_matches_fp32_eager(case):
    _, model, path, reference = case
    out = Predictor(path, device="cpu", backend="onnxruntime").predict(*random_pair())
    labels, disparity = agreement(out, reference)
    assert labels >= FP32_LABELS and disparity.max() <= FP32_DISPARITY_MAX, (labels, disparity.max())


def test_onnxruntime_exports_a_model_in_memory():
    model = tiny_model("fast_mobile")
    left, right = random_pair()
    reference = Predictor(model, device="cpu").predict(left, right)
    predictor = Predictor(model, device="cpu", backend="onnxruntime")
    out = predictor.predict(left, right, confidence=True, extras=True)
    labels, disparity = agreement(out, reference)
    assert labels >= FP32_LABELS and disparity.max() <= FP32_DISPARITY_MAX
    assert out.seg_confidence.shape == SIZE and out.coarse_labels.shape == SIZE
    assert out.seg_attention is None  # the exported graph returns the three predictions only
    assert predictor.model.to("cpu") is predictor.model  # callers may "move" it like a module


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_matches_fp32_eager(case, precision):
    pytest.importorskip("openvino")
    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip("OpenVINO's bf16 hint needs avx512_bf16 / AMX")
    _, _, path, reference = case
    predictor = Predictor(path, device="cpu", backend="openvino", precision=precision)
    out = predictor.predict(*random_pair())
    labels, disparity = agreement(out, reference)
    if precision == "fp32":
        assert labels >= FP32_LABELS and disparity.max() <= FP32_DISPARITY_MAX, (labels, disparity.max())
    else:
        assert labels >= BF16_LABELS and disparity.mean() <= BF16_DISPARITY_MEAN, (labels, disparity.mean())
    assert predictor.warmup_seconds is not None  # the first frame of a size compiles: timed


def test_openvino_lean_graph_gives_the_full_graphs_labels_and_disparity(case):
    """predict() without confidence / extras runs OpenVINO's lean graph (labels argmaxed in the
    graph, coarse logits pruned); it must answer what the full graph answers."""
    pytest.importorskip("openvino")
    _, _, path, _ = case
    predictor = Predictor(path, device="cpu", backend="openvino", precision="fp32")
    left, right = random_pair()
    lean_u8 = predictor.predict(left, right)       # uint8 numpy: converted inside the graph
    as_float = [torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in (left, right)]
    lean = predictor.predict(*as_float)            # float tensors: the float-input lean graph
    full = predictor.predict(left, right, extras=True)
    for out in (lean_u8, lean):
        assert out.labels.dtype == np.uint8 and out.labels.shape == SIZE == out.disparity.shape
        assert out.disparity.dtype == np.float32
        assert (out.labels == full.labels).mean() >= 0.999  # ties may break differently
        assert np.abs(out.disparity - full.disparity).max() <= 1e-4
    model = predictor.model
    kinds = {key[-1] for key in model._compiled}   # three graphs were built, one per kind
    assert {model.LEAN, model.LEAN_U8} <= kinds and len(model._compiled) == 3
    for kind in (model.LEAN, model.LEAN_U8):
        graph = next(c for k, (c, _) in model._compiled.items() if k[-1] == kind)
        names = [o.get_names() for o in graph.outputs]
        assert len(names) == 2 and "labels" in names[0] | names[1] and "disparity" in names[0] | names[1]
    u8_graph = next(c for k, (c, _) in model._compiled.items() if k[-1] == model.LEAN_U8)
    assert [str(i.get_element_type()) for i in u8_graph.inputs] == ["<Type: 'uint8_t'>"] * 2


def test_openvino_streams_run_frames_side_by_side_with_the_same_answers(tmp_path):
    """streams=2: two threads predict at once (a lone frame on the latency graph, the one that
    comes while it runs on a stream) and every frame gets what one stream gives it. One variant
    is enough: the streams are the runtime's, not the graph's."""
    pytest.importorskip("openvino")
    path = export_onnx(tiny_model("edge"), tmp_path / "edge.onnx", size=(64, 96))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)   # OpenVINO gets torch's thread count; two streams need two
    try:
        check_two_streams(path)
    finally:
        torch.set_num_threads(threads)


def check_two_streams(path):
    pairs = [random_pair(seed) for seed in range(4)]
    single = Predictor(path, device="cpu", backend="openvino", precision="fp32")
    expected = [single.predict(*pair) for pair in pairs]
    predictor = Predictor(path, device="cpu", backend="openvino", precision="fp32", streams=2)
    assert predictor.streams == 2 and "2 streams" in predictor.describe()
    inside, most_inside, lock = [0], [0], threading.Lock()
    model_call = predictor.model.labels_and_disparity_u8

    def counted(*args):   # how many frames are inside OpenVINO at once
        with lock:
            inside[0] += 1
            most_inside[0] = max(most_inside[0], inside[0])
        try:
            time.sleep(0.05)   # long enough for the other thread to come in
            return model_call(*args)
        finally:
            with lock:
                inside[0] -= 1

    graphs_used, request = set(), predictor.model._request

    def recorded(*args, side_by_side=False):
        graphs_used.add("streams" if side_by_side else "latency")
        return request(*args, side_by_side=side_by_side)

    predictor.model.labels_and_disparity_u8, predictor.model._request = counted, recorded
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(lambda pair: predictor.predict(*pair), pairs * 2))
    # A frame that found the other running took a stream; the first (alone) every thread.
    assert most_inside[0] == 2 and graphs_used == {"latency", "streams"}
    for out, reference in zip(outputs, expected * 2):
        assert np.array_equal(out.labels, reference.labels)
        assert np.abs(out.disparity - reference.disparity).max() <= 1e-5


def test_streams_are_refused_or_capped_where_they_cannot_run(case):
    pytest.importorskip("openvino")
    _, model, path, _ = case
    assert Predictor(model, device="cpu", backend="eager", streams=2).streams == 1   # one at a time
    capped = Predictor(path, device="cpu", backend="openvino", streams=64)
    assert capped.streams == torch.get_num_threads()
    with pytest.raises(ValueError, match="streams must be >= 1"):
        Predictor(path, device="cpu", backend="openvino", streams=0)
    with pytest.raises(ValueError, match="streams must be 1.."):
        OpenVinoModel(path, streams=torch.get_num_threads() + 1)


def test_eager_bf16_matches_fp32_eager(case):
    _, model, _, reference = case
    out = Predictor(model, device="cpu", backend="eager", precision="bf16").predict(*random_pair())
    labels, disparity = agreement(out, reference)
    assert labels >= BF16_LABELS and disparity.mean() <= BF16_DISPARITY_MEAN, (labels, disparity.mean())


@pytest.mark.slow
def test_torch_compile_matches_fp32_eager():
    """One variant only: inductor compiles for minutes on a 2-core CPU, whatever the model."""
    model = tiny_model("fast")
    reference = Predictor(model, device="cpu").predict(*random_pair())
    predictor = Predictor(model, device="cpu", backend="compile", precision="fp32")
    out = predictor.predict(*random_pair())
    labels, disparity = agreement(out, reference)
    assert labels >= FP32_LABELS and disparity.max() <= FP32_DISPARITY_MAX, (labels, disparity.max())
    assert predictor.warmup_seconds is not None and predictor.warmup_seconds > 0


def test_the_in_memory_export_is_reused_until_the_weights_change(monkeypatch):
    calls = []
    original = inference.export_onnx_bytes
    monkeypatch.setattr(inference, "export_onnx_bytes",
                        lambda m, **kw: calls.append(1) or original(m, **kw))
    model = tiny_model("fast_mobile")
    first = inference.onnx_export_of(model, fold_bn=True)
    assert inference.onnx_export_of(model, fold_bn=True) is first and len(calls) == 1
    with torch.no_grad():
        next(model.parameters()).add_(1.0)   # e.g. online adaptation changed the weights
    assert inference.onnx_export_of(model, fold_bn=True) is not first and len(calls) == 2


# ----------------------------------------------------------------------------- benchmarks
def load_bench(name):
    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_benchmark_plans_every_variant_on_every_runtime():
    bench = load_bench("inference")
    rows = bench.plan(quick=True, native_bf16=False, installed={"onnxruntime", "openvino"})
    pmt = {(r["variant"], r["backend"], r["precision"]) for r in rows if r["kind"] == "pmt"}
    assert pmt == {(v, b, "fp32") for v in VARIANTS for b in ("eager", "onnxruntime", "openvino")}
    assert all(tuple(r["size"]) == (480, 720) for r in rows)
    two = {r["backend"] for r in rows if r["kind"] == "two_nets"}
    assert two == {"eager", "onnxruntime", "openvino"}
    full = bench.plan(quick=False, native_bf16=True, installed={"onnxruntime"})
    runtimes = {(r["backend"], r["precision"]) for r in full if r["kind"] == "pmt"}
    assert {("eager", "bf16"), ("compile", "bf16"), ("auto", "auto")} <= runtimes
    assert not any(r["backend"] == "openvino" for r in full)   # not installed: not planned
    with_nncf = bench.plan(quick=True, native_bf16=False, installed={"openvino", "nncf"})
    int8 = {(r["kind"], r["variant"]) for r in with_nncf if r["precision"] == "int8"}
    assert int8 == {*(("pmt", v) for v in VARIANTS), ("two_nets", bench.TWO_NETS)}
    assert all(r["backend"] == "openvino" for r in with_nncf if r["precision"] == "int8")


def test_gpu_benchmark_parses_its_arguments():
    gpu = load_bench("gpu")
    args = gpu.parse_args([])
    assert args.size == (480, 720) and set(args.variants) == set(VARIANTS)
    assert "eager-fp16" in args.modes and "cudagraphs-fp16" in args.modes
    args = gpu.parse_args(["--variants", "fast", "--modes", "tensorrt-fp16", "--size", "256x512"])
    assert args.variants == ["fast"] and args.modes == ["tensorrt-fp16"] and args.size == (256, 512)
    for bad in (["--modes", "int8"], ["--variants", "no_such_variant"], ["--iters", "0"]):
        with pytest.raises(SystemExit):
            gpu.parse_args(bad)


def test_gpu_benchmark_without_cuda_says_so(monkeypatch, capsys):
    gpu = load_bench("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--variants", "fast"]) == gpu.NO_CUDA_STATUS
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_bf16_without_native_support_stays_on_eager_autocast():
    assert resolve_runtime("auto", "bf16", CPU, native_bf16=False) == ("eager", "bf16")
