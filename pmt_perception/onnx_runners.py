"""Runners of an exported PMT graph (ONNX file or serialized bytes): ONNX Runtime and
OpenVINO's CPU plugin behind the PMTNet call signature, and the metadata (model config, class
names, palette) pmt-export writes into the file. The Predictor's onnxruntime / openvino
backends run through these; pmt-export (export.py) uses them for its parity checks.
"""
from __future__ import annotations

import io
import json
import os
import queue
import threading
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError
from .config import ModelConfig, from_dict
from .network import PMTOutput
from .openvino_graph import argmax_in_graph, u8_image_inputs

__all__ = ["OUTPUT_NAMES", "read_onnx_metadata", "OnnxRuntimeModel", "OpenVinoModel"]

OUTPUT_NAMES = ("coarse_logits", "disparity", "refined_logits")


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
