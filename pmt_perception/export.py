"""pmt-export: a checkpoint -> ONNX (dynamic batch, H, W) / TorchScript / TensorRT engine.

The ONNX file carries the model config, class names and palette as metadata, so the
Predictor can run it through ONNX Runtime (`Predictor("model.onnx")`) or OpenVINO with
nothing else. Every ONNX export is checked against PyTorch on fresh inputs and the max abs
difference of each output is reported. The Predictor's onnxruntime / openvino backends use
the same export in memory (`export_onnx_bytes`) and the runners below.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from .atomic import atomic_path, write_bytes_atomic
from .checkpoint import CheckpointError, load_model, unwrap
from .cli import parse_size, stops_cleanly
from .config import ModelConfig, from_dict, to_plain
from .network import PMTNet, PMTOutput
from .openvino_graph import argmax_in_graph, u8_image_inputs

OUTPUT_NAMES = ("coarse_logits", "disparity", "refined_logits")


class ExportWrapper(nn.Module):
    """PMTNet with a plain tuple of the three predictions (exporters want tensors only)."""

    def __init__(self, model: PMTNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, left: torch.Tensor, right: torch.Tensor):
        out = self.model(left, right)
        return out.coarse_logits, out.disparity, out.refined_logits


def export_onnx(model: PMTNet, path: str | os.PathLike, *, size: tuple[int, int],
                opset: int = 17, metadata: Optional[dict] = None) -> Path:
    """Trace at `size`; batch, H and W stay dynamic (any size the network accepts)."""
    path = Path(path)
    data = export_onnx_bytes(model, size=size, opset=opset, metadata=metadata)
    return write_bytes_atomic(path, data)


def export_onnx_bytes(model: PMTNet, *, size: Optional[tuple[int, int]] = None, opset: int = 17,
                      metadata: Optional[dict] = None) -> bytes:
    """The serialized ONNX model (what `export_onnx` writes). `size`: the trace size, by
    default a small one the network accepts (H != W so that neither is baked in; wider than
    the cost volume's disparity range, whose slices must all be non-empty when traced)."""
    import onnx

    model = unwrap(model)
    if any(p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).cpu()
    if size is None:
        side = max(64, -(-model.config.min_input_size // 32) * 32)
        disparity_range = getattr(model.config, "max_disparity", 0)
        size = (side, max(side + 32, -(-(disparity_range + 64) // 32) * 32))
    # eval() on the wrapper too: the exporter restores the wrapper's mode recursively.
    wrapper = ExportWrapper(model).eval()
    example = torch.rand(1, 3, *size)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    torch.onnx.export(wrapper, (example, example), buffer, input_names=["left", "right"],
                      output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=False,
                      dynamic_axes={"left": dynamic, "right": dynamic,
                                    **{name: dynamic for name in OUTPUT_NAMES}})
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in {"model_config": to_plain(model.config), **(metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return proto.SerializeToString()


def read_onnx_metadata(source: str | os.PathLike | bytes) -> tuple[bytes, dict, ModelConfig]:
    """(serialized model, metadata, model config) of an ONNX file or serialized model."""
    import onnx

    if isinstance(source, bytes):
        data, name = source, "ONNX model"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        data, name = path.read_bytes(), str(path)
    try:
        meta = {p.key: json.loads(p.value) for p in onnx.load_from_string(data).metadata_props}
    except Exception as error:  # protobuf DecodeError, bad JSON in metadata: not our export
        raise CheckpointError(f"{name}: not a readable ONNX model ({error.__class__.__name__}: "
                              f"{error}); export one with pmt-export") from None
    if "model_config" not in meta:
        raise CheckpointError(f"{name}: no pmt_perception model_config metadata (export it with pmt-export)")
    return data, meta, from_dict(ModelConfig, meta["model_config"], source=name)


def export_torchscript(model: PMTNet, path: str | os.PathLike, *, size: tuple[int, int]) -> Path:
    path = Path(path)
    wrapper = ExportWrapper(unwrap(model)).eval()
    example = torch.rand(1, 3, *size)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, (example, example), check_trace=False)
    with atomic_path(path) as tmp:
        traced.save(str(tmp))
    return path


def build_tensorrt_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *,
                          size: tuple[int, int], fp16: bool = True) -> Path:
    """Serialize a TensorRT engine for one input size (needs `tensorrt` and a GPU)."""
    try:
        import tensorrt as trt
    except ImportError as error:
        raise RuntimeError("TensorRT is not installed here; export ONNX and build the engine "
                           "on the target (trtexec --onnx=model.onnx --fp16)") from error
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name in ("left", "right"):
        shape = (1, 3, *size)
        profile.set_shape(name, shape, shape, shape)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT engine build failed")
    return write_bytes_atomic(engine_path, bytes(engine))


class OnnxRuntimeModel:
    """An exported model (file or serialized bytes) behind the PMTNet call signature, run by
    ONNX Runtime with as many threads as torch uses (torch.set_num_threads applies)."""

    def __init__(self, source: str | os.PathLike | bytes, *, device: torch.device) -> None:
        import onnxruntime as ort

        data, self.metadata, self.config = read_onnx_metadata(source)
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(data, sess_options=options, providers=providers)
        self.device = device

    def __call__(self, left: torch.Tensor, right: torch.Tensor) -> PMTOutput:
        feeds = {"left": left.float().contiguous().cpu().numpy(),
                 "right": right.float().contiguous().cpu().numpy()}
        coarse, disparity, refined = (torch.from_numpy(a).to(self.device)
                                      for a in self.session.run(list(OUTPUT_NAMES), feeds))
        return PMTOutput(coarse, disparity, refined)

    def to(self, *_args, **_kwargs) -> "OnnxRuntimeModel":
        return self  # the session owns its memory; callers may treat it like a module


class OpenVinoModel:
    """An exported model run by OpenVINO's CPU plugin, fp32 or bf16 (its inference precision
    hint; bf16 only pays on CPUs with avx512_bf16 / AMX). OpenVINO is fastest on static
    shapes, so one graph is compiled per input size (the first frame of a size pays for it;
    the latest `MAX_SIZES` stay compiled).

    `streams`: how many calls may run at once, from different threads. A call that starts
    while no other runs gets every thread (the latency graph); one that starts while another
    runs goes to a second compile of the graph whose threads are split into `streams` streams
    (one infer request each). So a lone frame is as fast as with one stream, and when frames
    keep coming faster than the model (two in flight most of the time), they run side by side
    on one thread each: no thread then waits for another at every layer, which on a loaded
    2-core CPU gives more frames a second (docs/performance.md).
    """

    MAX_SIZES = 4
    # `labels_and_disparity` compiles a lean copy of the graph: the coarse logits' full-size
    # upsampling is pruned and the argmax runs inside OpenVINO, so 19 x H x W float logits are
    # never copied out (about 15 % of an `edge` frame on a 2-core CPU: docs/performance.md).
    LEAN = "lean"
    LEAN_U8 = "lean_u8"   # the lean graph taking uint8 images (labels_and_disparity_u8)

    def __init__(self, source: str | os.PathLike | bytes, *, precision: str = "fp32",
                 streams: int = 1) -> None:
        import openvino as ov

        if precision not in ("fp32", "bf16"):
            raise ValueError(f"OpenVINO runs fp32 or bf16, got {precision!r}")
        threads = torch.get_num_threads()
        if not 1 <= streams <= threads:
            raise ValueError(f"streams must be 1..{threads} (the threads OpenVINO gets: "
                             f"torch.get_num_threads()), got {streams}")
        data, self.metadata, self.config = read_onnx_metadata(source)
        self.core = ov.Core()
        self.network = self.core.read_model(io.BytesIO(data))
        self.streams = streams
        self.properties = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                           "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        # size key -> (compiled model, its idle infer requests): the latency graph (one
        # request, every thread) and, with streams > 1, the side-by-side graph.
        self._compiled: dict[tuple, tuple] = {}
        self._compiled_streams: dict[tuple, tuple] = {}
        self._compile_lock = threading.Lock()
        self._running = 0                  # calls inside `_run` now
        self._running_lock = threading.Lock()
        self.device = torch.device("cpu")

    def _request(self, shape: tuple[int, ...], lean: bool = False, u8: bool = False, *,
                 side_by_side: bool = False):
        """(compiled graph, queue of its idle infer requests) for B x 3 x H x W `shape`; `u8`:
        the inputs are B x H x W x 3 uint8 (u8_image_inputs). A new size compiles the latency
        graph and, with streams > 1, the side-by-side one too (no frame waits for it later)."""
        key = (*shape, self.LEAN_U8 if u8 else self.LEAN) if lean else shape
        with self._compile_lock:  # one compilation per size, however many threads call
            if key not in self._compiled:
                if len(self._compiled) >= self.MAX_SIZES:
                    oldest = next(iter(self._compiled))
                    self._compiled.pop(oldest)
                    self._compiled_streams.pop(oldest, None)
                network = self.network.clone()
                network.reshape({"left": list(shape), "right": list(shape)})
                if lean:
                    network = argmax_in_graph(network, "refined_logits", "labels",
                                              drop=("coarse_logits", "refined_logits"))
                if u8:
                    network = u8_image_inputs(network, ("left", "right"))
                self._compiled[key] = self._compile(network, self.properties, requests=1)
                if self.streams > 1:
                    self._compiled_streams[key] = self._compile(
                        network, {**self.properties, "NUM_STREAMS": self.streams},
                        requests=self.streams)
            return (self._compiled_streams if side_by_side else self._compiled)[key]

    def _compile(self, network, properties: dict, requests: int) -> tuple:
        compiled = self.core.compile_model(network, "CPU", properties)
        idle = queue.SimpleQueue()
        for _ in range(requests):
            idle.put(compiled.create_infer_request())
        return compiled, idle

    def _run(self, key_shape: tuple[int, ...], inputs: dict, names: tuple[str, ...], *,
             lean: bool, u8: bool = False) -> list[np.ndarray]:
        """One inference on an idle infer request (a request serves one call at a time): the
        latency graph's when no other call runs, else (streams > 1) a side-by-side one."""
        with self._running_lock:
            side_by_side = self.streams > 1 and self._running > 0
            self._running += 1
        try:
            compiled, idle = self._request(key_shape, lean, u8, side_by_side=side_by_side)
            request = idle.get()
            try:
                # infer() copies the outputs out of the request's buffers (its next call reuses them).
                results = request.infer(inputs)
            finally:
                idle.put(request)
        finally:
            with self._running_lock:
                self._running -= 1
        return [results[compiled.output(name)] for name in names]

    def _infer(self, left: torch.Tensor, right: torch.Tensor, names: tuple[str, ...], lean: bool):
        arrays = self._run(tuple(left.shape), {"left": left.float().contiguous().cpu().numpy(),
                                               "right": right.float().contiguous().cpu().numpy()},
                           names, lean=lean)
        return [torch.from_numpy(array) for array in arrays]

    def __call__(self, left: torch.Tensor, right: torch.Tensor) -> PMTOutput:
        return PMTOutput(*self._infer(left, right, OUTPUT_NAMES, lean=False))

    def labels_and_disparity(self, left: torch.Tensor,
                             right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B x 1 x H x W refined labels (int32) and disparity, from the lean graph."""
        labels, disparity = self._infer(left, right, ("labels", "disparity"), lean=True)
        return labels, disparity

    def labels_and_disparity_u8(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`labels_and_disparity` from B x H x W x 3 uint8 RGB arrays, converted inside the
        graph; numpy in and out, no torch op between frames. Returns B x 1 x H x W int32
        labels and float32 disparity (copies: the next call reuses OpenVINO's buffers)."""
        b, h, w, _ = left.shape
        labels, disparity = self._run((b, 3, h, w), {"left": left, "right": right},
                                      ("labels", "disparity"), lean=True, u8=True)
        return labels, disparity

    def to(self, *_args, **_kwargs) -> "OpenVinoModel":
        return self


def onnx_parity(model: PMTNet, onnx_path: str | os.PathLike, sizes: list[tuple[int, int]],
                *, seed: int = 0) -> dict[str, float]:
    """Max abs difference per output between PyTorch and ONNX Runtime over `sizes`."""
    runner = OnnxRuntimeModel(onnx_path, device=torch.device("cpu"))
    model = unwrap(model).eval()
    generator = torch.Generator().manual_seed(seed)
    worst = {name: 0.0 for name in OUTPUT_NAMES}
    for size in sizes:
        left, right = (torch.rand(1, 3, *size, generator=generator) for _ in range(2))
        with torch.no_grad():
            reference = model(left, right)
        exported = runner(left, right)
        for name in OUTPUT_NAMES:
            diff = (getattr(reference, name) - getattr(exported, name)).abs().max().item()
            worst[name] = max(worst[name], diff)
    return worst


def quantize_file(model: PMTNet, fp32_path: Path, onnx_path: Path, args: argparse.Namespace) -> dict:
    """Write the int8 version of the fp32 export `fp32_path` to `onnx_path`; how close it stays."""
    from .quantize import DEFAULT_KEEP_FLOAT, calibration_pairs, int8_agreement, quantize_onnx

    keep_float = [p for p in (args.keep_float or DEFAULT_KEEP_FLOAT) if p != "none"]
    pairs = calibration_pairs(args.calibration, args.calibration_pairs, args.size)
    description = {"method": "nncf post-training int8 (QDQ), mixed preset",
                   "calibration": args.calibration or "synthetic", "pairs": len(pairs),
                   "size": list(args.size), "kept_float": keep_float}
    write_bytes_atomic(onnx_path, quantize_onnx(fp32_path.read_bytes(), pairs, description=description,
                                                keep_float=keep_float))
    runner = OnnxRuntimeModel(onnx_path, device=torch.device("cpu"))
    return {**description, **int8_agreement(unwrap(model).eval(), runner, pairs[:4])}


@stops_cleanly
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pmt-export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint (.pt) written by pmt-train")
    parser.add_argument("--out", required=True, help="output path (.onnx, .ts or .engine)")
    parser.add_argument("--format", choices=("onnx", "torchscript", "tensorrt"), default=None,
                        help="default: from the --out suffix")
    parser.add_argument("--size", type=parse_size, default=(480, 720),
                        help="trace size HxW (ONNX stays dynamic in H, W; TensorRT is fixed)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--int8", action="store_true",
                        help="ONNX only: INT8 post-training quantisation (NNCF) for the openvino / "
                             "onnxruntime backends (docs/performance.md: what it gains here)")
    parser.add_argument("--calibration", default=None,
                        help="--int8: pairs to calibrate on (a left/ + right/ folder, a Middlebury "
                             "scene or a bag, resized to --size; default: synthetic scenes)")
    parser.add_argument("--calibration-pairs", type=int, default=32,
                        help="--int8: how many calibration pairs")
    parser.add_argument("--keep-float", action="append", default=None, metavar="REGEX",
                        help="--int8: ONNX node names (regular expression, repeatable) left in "
                             "float (default: quantize.DEFAULT_KEEP_FLOAT, the backbone's first "
                             "stage and the cost volume; 'none': nothing)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    args = parser.parse_args(argv)
    out = Path(args.out)
    fmt = args.format or {".onnx": "onnx", ".ts": "torchscript", ".pt": "torchscript",
                          ".engine": "tensorrt"}.get(out.suffix)
    if fmt is None:
        parser.error(f"cannot tell the format from {out.name!r}; pass --format")
    if args.int8 and fmt != "onnx":
        parser.error("--int8 writes ONNX (run it with the openvino or onnxruntime backend)")
    model, payload = load_model(args.checkpoint)
    summary: dict = {"checkpoint": args.checkpoint, "format": fmt, "out": str(out)}
    if fmt == "torchscript":
        export_torchscript(model, out, size=args.size)
    else:
        onnx_path = out if fmt == "onnx" else out.with_suffix(".onnx")
        # --int8: the fp32 graph goes to a side file, so that `out` never holds a float model
        # under an int8 name, even when quantisation fails or is interrupted.
        fp32_path = onnx_path.with_name(onnx_path.stem + ".fp32-partial.onnx") if args.int8 else onnx_path
        try:
            export_onnx(model, fp32_path, size=args.size, opset=args.opset,
                        metadata={"class_names": payload["class_names"], "palette": payload["palette"]})
            h, w = args.size
            summary["onnx_max_abs_diff"] = onnx_parity(model, fp32_path, [(h, w), (h + 32, w - 32)])
            if args.int8:
                summary["int8"] = quantize_file(model, fp32_path, onnx_path, args)
        finally:
            if args.int8:
                fp32_path.unlink(missing_ok=True)
        if fmt == "tensorrt":
            build_tensorrt_engine(onnx_path, out, size=args.size)
    print(json.dumps(summary, indent=2) if args.json else
          "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
