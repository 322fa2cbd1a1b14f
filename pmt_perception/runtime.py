"""Which runtime runs the network: the CPU's capabilities, the optional runtime packages, and
`resolve_runtime`, which turns `backend` x `precision` (both may be "auto") into one that runs.
Training (autocast precision) and inference (Predictor) both decide here.

The runtime is one choice, `backend` x `precision` (both may be "auto"; `resolve_runtime`):

    eager        PyTorch, channels-last, BatchNorm folded; fp32 | bf16 (CPU) | fp16 (CUDA) autocast
    compile      the same under torch.compile (first frame per input size compiles: minutes on a
                 small CPU; the time is logged and kept in `warmup_seconds`)
    onnxruntime  the model exported to ONNX in memory (or an exported .onnx file), fp32 (an
                 int8 file from `pmt-export --int8` runs here too)
    openvino     the same ONNX graph through OpenVINO's CPU plugin, fp32 | bf16, one compiled
                 graph per input size

"auto" precision: fp16 on CUDA; bf16 on a CPU with native bf16 (avx512_bf16 or AMX), where
autocast is ~2x faster than fp32; fp32 elsewhere (bf16 on plain AVX2 / AVX-512 is emulated and
slower than fp32). "auto" backend: eager on CUDA; on the CPU the first installed of
`CPU_BACKENDS` (measured order, docs/performance.md) that runs the precision.
"""
from __future__ import annotations

import importlib.util
from typing import Optional

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
BACKENDS = ("eager", "compile", "onnxruntime", "openvino")
# CPU runtimes, fastest first, for "auto" (bench/inference.py; docs/performance.md). OpenVINO
# ran fast_mobile fp32 ~3x faster than eager fp32 and ~2.5x faster than ONNX Runtime on a
# 2-core AVX2 EPYC; it takes bf16 too. Without it: eager where bf16 is native, else ORT fp32.
CPU_BACKENDS = ("openvino", "onnxruntime", "eager")
# /proc/cpuinfo flags that make bf16 convolutions native (oneDNN's avx512_core_bf16 / AMX).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16(flags: Optional[frozenset[str]] = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    if flags:
        return bool(flags & NATIVE_BF16_FLAGS)
    # No /proc/cpuinfo (not Linux): AMX is the one capability torch names that implies bf16.
    return torch.backends.cpu.get_cpu_capability() == "AVX512_AMX"


def backend_available(backend: str) -> bool:
    """Whether the optional package a backend needs imports (eager/compile: always)."""
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(backend)
    if module is None:
        return True
    return importlib.util.find_spec(module) is not None


def resolve_runtime(backend: str, precision: str, device: torch.device, *,
                    onnx_file: bool = False, native_bf16: Optional[bool] = None) -> tuple[str, str]:
    """(backend, precision) with "auto" resolved; ValueError for combinations that do not run.

    `onnx_file`: the source is an exported .onnx (only the ONNX backends can run it)."""
    if backend not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {backend!r}")
    if precision not in ("auto", *PRECISIONS):
        raise ValueError(f"precision must be one of {sorted(('auto', *PRECISIONS))}, got {precision!r}")
    cuda = device.type == "cuda"
    if native_bf16 is None:
        native_bf16 = not cuda and cpu_has_native_bf16()
    onnx_backends = ("onnxruntime", "openvino")
    if onnx_file and backend not in ("auto", *onnx_backends):
        raise ValueError(f"an .onnx file runs on the onnxruntime or openvino backend, not {backend!r}")
    if precision == "auto":
        if backend == "onnxruntime" or (onnx_file and backend == "auto"):
            precision = "fp32"
        elif cuda:
            precision = "fp16"
        else:
            precision = "bf16" if native_bf16 else "fp32"
    if backend == "auto":
        if onnx_file:
            backend = "onnxruntime"
        elif cuda:
            backend = "eager"   # fp16 autocast; compile / TensorRT: bench/gpu.py
        else:
            # ORT runs fp32 only; OpenVINO's bf16 needs native bf16 (bf16 asked for on another
            # CPU stays eager autocast, what precision="bf16" meant before backends existed).
            runs = {"onnxruntime": precision == "fp32",
                    "openvino": precision == "fp32" or native_bf16, "eager": True}
            backend = next(b for b in CPU_BACKENDS if runs[b] and backend_available(b))
    if precision == "fp16" and not cuda:
        raise ValueError("fp16 autocast is a GPU path; on the CPU use precision='bf16'")
    if backend == "onnxruntime" and precision != "fp32":
        raise ValueError("the ONNX Runtime backend runs the exported fp32 graph: use "
                         "precision='fp32'")
    if backend == "openvino" and (cuda or precision == "fp16"):
        raise ValueError("the openvino backend runs on the CPU in fp32 or bf16")
    if not backend_available(backend):
        raise ValueError(f"backend {backend!r} needs the {backend} package: pip install {backend}")
    return backend, precision


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved


def compile_options(device: torch.device) -> dict:
    """torch.compile settings: on the CPU, inductor with weight freezing (constant-folded,
    oneDNN-prepacked convolutions: the part that pays for inference); on CUDA, CUDA graphs
    (batch-1 frames are launch-bound). One graph per input size (the node's is fixed)."""
    if device.type == "cuda":
        return {"mode": "reduce-overhead", "dynamic": False}
    return {"dynamic": False, "options": {"freezing": True}}
