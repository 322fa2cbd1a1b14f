"""pmt-export: a checkpoint -> ONNX (dynamic batch, H, W) / TorchScript / TensorRT engine.

The ONNX file carries the model config, class names and palette as metadata, so the
Predictor can run it through ONNX Runtime (`Predictor("model.onnx")`) or OpenVINO with
nothing else. Every ONNX export is checked against PyTorch on fresh inputs and the max abs
difference of each output is reported. The Predictor's onnxruntime / openvino backends use
the same export in memory (`export_onnx_bytes`) and the runners of onnx_runners.py.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import os
import sys
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .atomic import atomic_path, write_bytes_atomic
from .checkpoint import load_model, unwrap
from .cli import parse_size, stops_cleanly
from .config import to_plain
from .network import PMTNet
from .onnx_runners import OUTPUT_NAMES, OnnxRuntimeModel


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
