"""pmt-export: a checkpoint -> ONNX (dynamic batch, H, W) / TorchScript / TensorRT engine.

The ONNX file carries the model config, class names and palette as metadata, so the
Predictor can run it through ONNX Runtime (`Predictor("model.onnx")`) with nothing else.
Every ONNX export is checked against PyTorch on fresh inputs and the max abs difference
of each output is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from .atomic import atomic_path, write_bytes_atomic
from .checkpoint import load_model, unwrap
from .config import ModelConfig, from_dict, to_plain
from .cli import parse_size
from .network import PMTNet, PMTOutput

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
    import onnx

    path = Path(path)
    # eval() on the wrapper too: the exporter restores the wrapper's mode recursively.
    wrapper = ExportWrapper(unwrap(model)).eval()
    example = torch.rand(1, 3, *size)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp:
        torch.onnx.export(wrapper, (example, example), str(tmp), input_names=["left", "right"],
                          output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=False,
                          dynamic_axes={"left": dynamic, "right": dynamic,
                                        **{name: dynamic for name in OUTPUT_NAMES}})
        proto = onnx.load(str(tmp))
        for key, value in {"model_config": to_plain(model.config), **(metadata or {})}.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.save(proto, str(tmp))
    return path


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
    """An exported model behind the PMTNet call signature, run by ONNX Runtime."""

    def __init__(self, path: str | os.PathLike, *, device: torch.device) -> None:
        import onnx
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        meta = {p.key: json.loads(p.value) for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if "model_config" not in meta:
            raise ValueError(f"{path}: no pmt_perception model_config metadata (export it with pmt-export)")
        self.config: ModelConfig = from_dict(ModelConfig, meta["model_config"], source=str(path))
        self.metadata = meta
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.device = device

    def __call__(self, left: torch.Tensor, right: torch.Tensor) -> PMTOutput:
        feeds = {"left": left.float().contiguous().cpu().numpy(),
                 "right": right.float().contiguous().cpu().numpy()}
        coarse, disparity, refined = (torch.from_numpy(a).to(self.device)
                                      for a in self.session.run(list(OUTPUT_NAMES), feeds))
        return PMTOutput(coarse, disparity, refined)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pmt-export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint (.pt) written by pmt-train")
    parser.add_argument("--out", required=True, help="output path (.onnx, .ts or .engine)")
    parser.add_argument("--format", choices=("onnx", "torchscript", "tensorrt"), default=None,
                        help="default: from the --out suffix")
    parser.add_argument("--size", type=parse_size, default=(480, 720),
                        help="trace size HxW (ONNX stays dynamic in H, W; TensorRT is fixed)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    args = parser.parse_args(argv)
    out = Path(args.out)
    fmt = args.format or {".onnx": "onnx", ".ts": "torchscript", ".pt": "torchscript",
                          ".engine": "tensorrt"}.get(out.suffix)
    if fmt is None:
        parser.error(f"cannot tell the format from {out.name!r}; pass --format")
    model, payload = load_model(args.checkpoint)
    summary: dict = {"checkpoint": args.checkpoint, "format": fmt, "out": str(out)}
    if fmt == "torchscript":
        export_torchscript(model, out, size=args.size)
    else:
        onnx_path = out if fmt == "onnx" else out.with_suffix(".onnx")
        export_onnx(model, onnx_path, size=args.size, opset=args.opset,
                    metadata={"class_names": payload["class_names"], "palette": payload["palette"]})
        h, w = args.size
        summary["onnx_max_abs_diff"] = onnx_parity(model, onnx_path, [(h, w), (h + 32, w - 32)])
        if fmt == "tensorrt":
            build_tensorrt_engine(onnx_path, out, size=args.size)
    print(json.dumps(summary, indent=2) if args.json else
          "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
