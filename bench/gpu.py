"""GPU benchmark: FPS of every PMT variant at 480x720, batch 1, next to the paper's Table 9.

    python bench/gpu.py                                   # all variants, default modes
    python bench/gpu.py --variants edge fast --modes eager-fp16 cudagraphs-fp16 tensorrt-fp16
    python bench/gpu.py --markdown bench/RESULTS.md --json gpu.json

Needs a CUDA GPU: without one it exits with status 2 and says so (it is never part of the test
suite; test/test_backends.py checks only its argument parsing and that error). Modes:

    eager-fp32       the model in fp32, channels-last, BatchNorm folded
    eager-fp16       the same under fp16 autocast (what Predictor(precision="auto") runs on CUDA)
    cudagraphs-fp16  eager-fp16 captured once in a CUDA graph and replayed (batch-1 frames are
                     launch-bound; no compilation)
    compile-fp16     torch.compile(mode="max-autotune-no-cudagraphs") under fp16 autocast
                     (minutes of compilation per variant; not in the default set)
    tensorrt-fp16    ONNX export -> TensorRT engine with FP16 kernels at the fixed input size,
                     where `tensorrt` imports (pip install tensorrt)

"model ms" is the forward pass alone on device-resident inputs (CUDA events, median of
--iters after --warmup); "predictor ms" (eager and compile modes) is `Predictor.predict` end to
end: uint8 numpy in, labels + disparity numpy out, copies included. The paper's Table 9 gives
0.15 s/frame for PMT on an NVIDIA A100; "x paper" = 0.15 s / model s.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pmt_perception.cli import parse_size  # noqa: E402  (after the path insert)
from pmt_perception.config import load_model_config  # noqa: E402
from pmt_perception.export import build_tensorrt_engine, export_onnx  # noqa: E402
from pmt_perception.inference import Predictor  # noqa: E402
from pmt_perception.network import build_model  # noqa: E402
from pmt_perception.network.batchnorm_folding import fold_batchnorm  # noqa: E402

PAPER_TABLE9_SECONDS = 0.15          # PMT, one frame, NVIDIA A100 (paper, Table 9)
VARIANTS = ("paper", "fast", "fast_mobile", "edge")
MODES = ("eager-fp32", "eager-fp16", "cudagraphs-fp16", "compile-fp16", "tensorrt-fp16")
DEFAULT_MODES = ("eager-fp32", "eager-fp16", "cudagraphs-fp16", "tensorrt-fp16")
NO_CUDA_STATUS = 2


class NoCudaError(RuntimeError):
    pass


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/gpu.py", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=None,
                        help=f"default: those of {VARIANTS} with a config/model/*.yaml")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES))
    parser.add_argument("--size", type=parse_size, default=(480, 720), help="HxW, default 480x720")
    parser.add_argument("--iters", type=int, default=50, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per row first")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N")
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    parser.add_argument("--json", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    known = [v for v in VARIANTS if (ROOT / "config" / "model" / f"{v}.yaml").is_file()]
    args.variants = args.variants or known
    unknown = [v for v in args.variants if not (ROOT / "config" / "model" / f"{v}.yaml").is_file()
               and not Path(v).is_file()]
    if unknown:
        parser.error(f"no model config for {unknown} (config/model/ has {known})")
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be >= 1 and --warmup >= 0")
    return args


def require_cuda(device: str) -> torch.device:
    if not torch.cuda.is_available():
        raise NoCudaError(
            f"bench/gpu.py needs a CUDA GPU: torch.cuda.is_available() is False here (torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}). Run it on a "
            "GPU machine; for CPU numbers use bench/inference.py.")
    return torch.device(device)


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401  (optional dependency seam)
    except ImportError:
        return False
    return True


def channels_last(model):
    """Channels-last 4-D (conv) weights; the cost volume's 5-D Conv3d weights stay as they are."""
    for parameter in model.parameters():
        if parameter.dim() == 4:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)
    return model


# ----------------------------------------------------------------------------- timing
def cuda_time(call, *, iters: int, warmup: int) -> float:
    """Median seconds of `call()` measured with CUDA events."""
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1000)
    return statistics.median(samples)


def wall_time(call, *, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def padded(size: tuple[int, int], config) -> tuple[int, int]:
    """The size the Predictor feeds the network (multiple of 32, at least the SPP minimum)."""
    need = config.min_input_size
    return tuple(max(need, -(-s // 32) * 32) for s in size)


def forward_runner(mode: str, model, inputs):
    """A no-argument callable running one forward pass in `mode` on device tensors."""
    fp16 = mode.endswith("fp16")
    if mode in ("eager-fp32", "eager-fp16"):
        def run():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
                return model(*inputs)
        return run
    if mode == "compile-fp16":
        compiled = torch.compile(model, mode="max-autotune-no-cudagraphs", dynamic=False)

        def run():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                return compiled(*inputs)
        return run
    if mode == "cudagraphs-fp16":
        static = [x.clone() for x in inputs]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            for _ in range(3):  # warm up kernels / cuDNN choices outside the capture
                model(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            model(*static)
        return graph.replay
    if mode == "tensorrt-fp16":
        return tensorrt_runner(model, inputs)
    raise ValueError(f"unknown mode {mode!r}")


def tensorrt_runner(model, inputs):
    import tensorrt as trt  # optional dependency seam

    folder = Path(tempfile.mkdtemp(prefix="pmt_trt_"))
    size = tuple(inputs[0].shape[-2:])
    onnx_path = export_onnx(model.float().cpu(), folder / "model.onnx", size=size)
    model.to(inputs[0].device)
    engine_path = build_tensorrt_engine(onnx_path, folder / "model.engine", size=size, fp16=True)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    context = engine.create_execution_context()
    buffers = {"left": inputs[0].contiguous(), "right": inputs[1].contiguous()}
    for name in ("left", "right"):  # the ONNX graph has dynamic H, W: fix them for this engine
        context.set_input_shape(name, tuple(buffers[name].shape))
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        if name not in buffers:
            shape = tuple(context.get_tensor_shape(name))
            dtype = torch.float16 if engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
            buffers[name] = torch.empty(shape, dtype=dtype, device=inputs[0].device)
        context.set_tensor_address(name, buffers[name].data_ptr())
    stream = torch.cuda.current_stream()
    return lambda: context.execute_async_v3(stream.cuda_stream)


# ----------------------------------------------------------------------------- one variant
def bench_variant(variant: str, modes, *, size, device, iters, warmup) -> list[dict]:
    torch.manual_seed(0)
    config = load_model_config(variant)
    model = fold_batchnorm(build_model(config).eval())[0].to(device)
    model = channels_last(model)
    height, width = padded(size, config)
    inputs = [torch.rand(1, 3, height, width, device=device).contiguous(
        memory_format=torch.channels_last) for _ in range(2)]
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    right = np.roll(left, -16, axis=1)
    rows = []
    for mode in modes:
        row = {"variant": variant, "mode": mode, "size": list(size)}
        try:
            start = time.perf_counter()
            run = forward_runner(mode, model, inputs)
            run()
            torch.cuda.synchronize()
            row["setup_seconds"] = time.perf_counter() - start
            row["model_seconds"] = cuda_time(run, iters=iters, warmup=warmup)
            if mode in ("eager-fp32", "eager-fp16", "compile-fp16"):
                predictor = Predictor(model, device=str(device), backend=mode.split("-")[0],
                                      precision=mode.split("-")[1], fold_bn=False)
                row["predictor_seconds"] = wall_time(functools.partial(predictor.predict, left, right),
                                                     iters=iters, warmup=warmup)
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        except Exception as error:  # noqa: BLE001 - one failing mode must not lose the others
            row["error"] = f"{type(error).__name__}: {error}"[:300]
        print(json.dumps(row), flush=True)
        rows.append(row)
        torch.cuda.reset_peak_memory_stats(device)
    return rows


def markdown_table(rows, *, command: str, gpu: str) -> str:
    lines = [f"### GPU inference ({datetime.date.today()})", "",
             f"Command: `{command}`  ",
             f"Machine: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}. Batch 1, "
             "one stereo pair; model ms = forward on device tensors (CUDA events, median); "
             f"predictor ms = Predictor.predict end to end. Paper Table 9: PMT "
             f"{PAPER_TABLE9_SECONDS:.2f} s/frame on an A100.", "",
             "| variant | mode | size | model ms | FPS (model) | predictor ms | x paper Table 9 | "
             "setup s | peak GPU MB |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['variant']} | {row['mode']} | {row['size'][0]}x{row['size'][1]} "
                         f"| failed: {row['error']} | | | | | |")
            continue
        model_s = row["model_seconds"]
        predictor = row.get("predictor_seconds")
        lines.append(f"| {row['variant']} | {row['mode']} | {row['size'][0]}x{row['size'][1]} | "
                     f"{1000 * model_s:.1f} | {1 / model_s:.1f} | "
                     f"{'-' if predictor is None else f'{1000 * predictor:.1f}'} | "
                     f"{PAPER_TABLE9_SECONDS / model_s:.1f}x | {row['setup_seconds']:.1f} | "
                     f"{row['peak_gpu_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        device = require_cuda(args.device)
    except NoCudaError as error:
        print(f"error: {error}", file=sys.stderr)
        return NO_CUDA_STATUS
    modes = list(args.modes)
    if "tensorrt-fp16" in modes and not tensorrt_available():
        print("tensorrt does not import here: skipping tensorrt-fp16 (pip install tensorrt)",
              file=sys.stderr)
        modes.remove("tensorrt-fp16")
    torch.backends.cudnn.benchmark = True
    rows = []
    for variant in args.variants:
        rows += bench_variant(variant, modes, size=args.size, device=device, iters=args.iters,
                              warmup=args.warmup)
    command = "python bench/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown_table(rows, command=command, gpu=torch.cuda.get_device_name(device))
    print(table)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as handle:
            handle.write("\n" + table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
