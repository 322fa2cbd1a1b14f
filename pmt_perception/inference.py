"""Predictor: one stereo pair in (uint8 images), labels + disparity (+ confidences) out.

Everything per frame happens here, on the model's device: uint8 -> float, padding to what the
network accepts (or resizing, with `inference_scale`), the forward pass under the chosen
precision, argmax / softmax / confidence, cropping (or resizing) back. The ROS node, the
evaluator and the demo are thin callers of `predict`.

The runtime (`backend` x `precision`, both may be "auto") is chosen in runtime.py.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import warnings
import weakref
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_model, unwrap
from .export import export_onnx_bytes
from .frames import ImageLike, crop_lean_outputs, photometric_confidence, resize_image, resize_map
from .network import PMTNet, to_channels_last
from .network.batchnorm_folding import fold_batchnorm
from .onnx_runners import OnnxRuntimeModel, OpenVinoModel
from .runtime import PRECISIONS, compile_options, resolve_device, resolve_runtime

LOG = logging.getLogger(__name__)
MAX_INFERENCE_SCALE = 4.0


@dataclasses.dataclass
class Prediction:
    labels: np.ndarray                       # H x W uint8 class ids (refined head)
    disparity: np.ndarray                    # H x W float32, pixels
    seg_confidence: Optional[np.ndarray] = None        # H x W float32, max softmax
    disparity_confidence: Optional[np.ndarray] = None  # H x W float32 in [0, 1]
    coarse_labels: Optional[np.ndarray] = None         # H x W uint8 (coarse head)
    seg_attention: Optional[np.ndarray] = None         # h x w float32 (the network's H/4), extras
    disp_attention: Optional[np.ndarray] = None
    timings: dict = dataclasses.field(default_factory=dict)  # seconds: pre, model, post


# model -> (fingerprint, ONNX bytes): a node re-activated with the same weights skips the
# export (seconds on a small CPU). Weak keys: the entry goes with the model.
_ONNX_EXPORTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def onnx_export_of(model: torch.nn.Module, *, fold_bn: bool) -> bytes:
    """`model` (BatchNorm folded if asked) exported to ONNX in memory, cached while its
    tensors are unchanged (every in-place write, load_state_dict included, bumps a version)."""
    fingerprint = (fold_bn, tuple((t.data_ptr(), t._version) for t in
                                  (*model.parameters(), *model.buffers())))
    cached = _ONNX_EXPORTS.get(model)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    exported = fold_batchnorm(model)[0] if fold_bn else model
    data = export_onnx_bytes(exported)
    _ONNX_EXPORTS[model] = (fingerprint, data)
    return data


def runtime_model(backend: str, source, *, precision: str, device: torch.device, streams: int = 1):
    """The ONNX backends' runner for an .onnx file or serialized ONNX bytes."""
    if backend == "onnxruntime":
        return OnnxRuntimeModel(source, device=device)
    return OpenVinoModel(source, precision=precision, streams=streams)


class Predictor:
    """Runs one PMT model; `predict` is thread-safe: `streams` calls run at once (OpenVINO),
    one at a time on the other backends.

    `source` is a checkpoint (.pt), an exported ONNX file (.onnx, run by ONNX Runtime or
    OpenVINO), or a PMTNet instance.
    """

    def __init__(self, source: Union[str, os.PathLike, PMTNet], *, device: str = "auto",
                 precision: str = "fp32", backend: Optional[str] = None,
                 channels_last: bool = True, compile: bool = False, fold_bn: bool = True,
                 inference_scale: float = 1.0, streams: int = 1,
                 class_names: Optional[list[str]] = None, palette=None) -> None:
        """`backend`: auto | eager | compile | onnxruntime | openvino; None = eager for a
        checkpoint or model, onnxruntime for an .onnx file. `precision`: auto | fp32 | bf16 |
        fp16. `compile=True` is the older spelling of backend="compile". `inference_scale`:
        the network runs on the pair resized by this factor (see `network_size`); outputs come
        back at the input's size. `streams`: frames OpenVINO may run at once, from as many
        calling threads, each on its share of the threads (OpenVinoModel); other backends
        run one frame at a time and ignore it."""
        if not 0.0 < inference_scale <= MAX_INFERENCE_SCALE:
            raise ValueError(f"inference_scale must be in (0, {MAX_INFERENCE_SCALE}], "
                             f"got {inference_scale}")
        self.inference_scale = float(inference_scale)
        self.device = resolve_device(device)
        onnx_file = isinstance(source, (str, os.PathLike)) and str(source).endswith(".onnx")
        if compile:
            if backend not in (None, "auto", "eager", "compile"):
                raise ValueError(f"compile=True contradicts backend={backend!r}")
            backend = "compile"
        if backend is None:
            backend = "onnxruntime" if onnx_file else "eager"
        self.requested = (backend, precision)
        self.backend, self.precision = resolve_runtime(backend, precision, self.device,
                                                       onnx_file=onnx_file)
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        # more streams than threads would leave a stream without a thread
        self.streams = min(streams, torch.get_num_threads()) if self.backend == "openvino" else 1
        self.payload = {}
        if onnx_file:
            model = runtime_model(self.backend, source, precision=self.precision, device=self.device,
                                  streams=self.streams)
            self.payload = model.metadata
        elif isinstance(source, (str, os.PathLike)):
            model, self.payload = load_model(source)
        elif isinstance(source, torch.nn.Module):
            model = unwrap(source)
        else:
            raise ValueError(f"source must be a checkpoint path or a PMTNet, got {type(source).__name__}")
        self.config = model.config
        self.class_names = class_names or self.payload.get("class_names") or [
            f"class_{i}" for i in range(self.config.num_classes)]
        self.palette = np.asarray(palette if palette is not None else self.payload.get(
            "palette", _default_palette(self.config.num_classes)), dtype=np.uint8)
        # uint8 label -> colour for all 256 ids, built once (the node colours every frame).
        self._color_table = np.zeros((256, 3), np.uint8)
        self._color_table[: len(self.palette)] = self.palette[:256]
        torch_backend = self.backend in ("eager", "compile")
        self.channels_last = channels_last and torch_backend
        if not onnx_file:
            model = model.eval()
            if not torch_backend:  # exported in memory; no PyTorch copy is kept
                model = runtime_model(self.backend, onnx_export_of(model, fold_bn=fold_bn),
                                      precision=self.precision, device=self.device,
                                      streams=self.streams)
            else:
                if fold_bn:  # exact in eval mode; works on a copy, the caller's model is untouched
                    model, _ = fold_batchnorm(model)
                model = model.to(self.device)
                if self.channels_last:
                    model = to_channels_last(model)
        self.model = model
        self.compiled = self.backend == "compile"
        self._forward = torch.compile(model, **compile_options(self.device)) if self.compiled else model
        # As many predict() calls at once as the runtime has streams (1: a plain lock).
        self._slots = threading.BoundedSemaphore(self.streams)
        self._sizes_run: set[tuple[int, ...]] = set()
        self.warmup_seconds: Optional[float] = None
        LOG.info("Predictor: %s", self.describe())

    def describe(self) -> str:
        """e.g. "onnxruntime fp32 on cpu (asked auto/auto)", for logs and benchmark rows."""
        # An int8 (QDQ) export runs with float inputs and outputs: its precision is the file's.
        precision = "int8" if self.payload.get("quantization") else self.precision
        text = f"{self.backend} {precision} on {self.device}"
        if self.streams > 1:
            text += f", {self.streams} streams"
        if self.requested != (self.backend, self.precision):
            text += f" (asked {self.requested[0]}/{self.requested[1]})"
        return text

    # ------------------------------------------------------------------ public API
    def warmup(self, size: tuple[int, int], iterations: int = 2, *, confidence: bool = False) -> float:
        """Run `iterations` dummy pairs of `size` (compiles when compile=True, builds the
        ONNX runtimes' graph for that size; `confidence` as the real frames will ask, since
        that picks the graph); returns seconds."""
        start = time.perf_counter()
        dummy = np.zeros((*size, 3), np.uint8)
        for _ in range(iterations):
            self.predict(dummy, dummy, confidence=confidence)
        self.warmup_seconds = time.perf_counter() - start
        if self.compiled:  # the first compiled calls take minutes on a small CPU: say so
            LOG.info("torch.compile warm-up at %dx%d took %.1f s", *size, self.warmup_seconds)
        return self.warmup_seconds

    def predict(self, left: ImageLike, right: ImageLike, *, confidence: bool = False,
                extras: bool = False) -> Prediction:
        """`left`, `right`: H x W x 3 uint8 RGB (numpy or torch, any device), or float
        3 x H x W tensors in [0, 1]. Returns numpy arrays of the input's H x W (the attention
        maps of `extras` stay at the network's H/4)."""
        with self._slots, torch.inference_mode():
            if not (confidence or extras) and self._fits_u8_graph(left, right):
                return self._predict_in_u8_graph(left, right)
            t0 = time.perf_counter()
            left_t, right_t = self._to_batch(left, "left"), self._to_batch(right, "right")
            if left_t.shape != right_t.shape:
                raise ValueError(f"left and right sizes differ: {tuple(left_t.shape[-2:])} vs "
                                 f"{tuple(right_t.shape[-2:])}")
            height, width = left_t.shape[-2:]
            net_height, net_width = self.network_size(height, width)
            resized = (net_height, net_width) != (height, width)
            if resized:
                left_t_net = resize_image(left, left_t, (net_height, net_width))
                right_t_net = resize_image(right, right_t, (net_height, net_width))
            else:
                left_t_net, right_t_net = left_t, right_t
            left_p, right_p = self._pad(left_t_net), self._pad(right_t_net)
            self._sync()
            t1 = time.perf_counter()
            crop = (..., slice(0, net_height), slice(0, net_width))
            # Labels and disparity only: a runtime that can (openvino) skips what they do not need.
            lean = not (confidence or extras) and hasattr(self._forward, "labels_and_disparity")
            if lean:
                labels, disparity = self._forward.labels_and_disparity(left_p, right_p)
                labels, disparity = map(torch.from_numpy, crop_lean_outputs(
                    labels.numpy(), disparity.numpy(), net_height, net_width))
            else:
                dtype = PRECISIONS.get(self.precision) if self.backend in ("eager", "compile") else None
                with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                    out = self._forward(left_p, right_p)
            self._sync()
            t2 = time.perf_counter()
            if left_p.shape not in self._sizes_run:
                self._first_call(tuple(left_p.shape), t2 - t1)
            if not lean:
                refined = out.refined_logits[crop][0]
                disparity = out.disparity[crop].float()[0, 0]
                # max(0) over NCHW logits is ~3x faster on the CPU than argmax(0), same indices.
                labels = refined.max(0).indices.to(torch.uint8)
            seg_confidence = refined.float().softmax(0).amax(0) if confidence else None
            coarse_labels = out.coarse_logits[crop][0].max(0).indices.to(torch.uint8) if extras else None
            if resized:  # back to the input's size; disparity in the input's pixels (width ratio)
                size = (height, width)
                labels = resize_map(labels, size, nearest=True)
                disparity = resize_map(disparity, size) * (width / net_width)
                if confidence:
                    seg_confidence = resize_map(seg_confidence, size)
                if extras:
                    coarse_labels = resize_map(coarse_labels, size, nearest=True)
            result = {"labels": labels, "disparity": disparity}
            if confidence:
                result["seg_confidence"] = seg_confidence
                result["disparity_confidence"] = photometric_confidence(
                    left_t[0], right_t[0], disparity)
            if extras:
                result["coarse_labels"] = coarse_labels
                if out.seg_attention is not None:
                    result["seg_attention"] = out.seg_attention[0, 0].float()
                    result["disp_attention"] = out.disp_attention[0, 0].float()
            arrays = {k: v.cpu().numpy() for k, v in result.items()}
            t3 = time.perf_counter()
        return Prediction(**arrays, timings={"pre": t1 - t0, "model": t2 - t1, "post": t3 - t2})

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Palette lookup; ids outside the palette become black. (np.take, not table[labels]:
        4x faster for a 480x720 image, 1.7 against 6.2 ms on a 2-core EPYC.)"""
        return np.take(self._color_table, labels, axis=0)

    # ------------------------------------------------------------------ internals
    def _first_call(self, shape: tuple[int, ...], seconds: float) -> None:
        """compile and openvino build their graph for each new input size: log what it cost."""
        self._sizes_run.add(shape)
        if self.backend in ("compile", "openvino"):
            LOG.info("%s: first frame at %dx%d (padded) took %.1f s (graph build included)",
                     self.backend, shape[-2], shape[-1], seconds)
            if self.warmup_seconds is None:
                self.warmup_seconds = seconds

    def _to_batch(self, image: ImageLike, name: str) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"{name} must be an H x W x 3 uint8 array, got "
                                 f"{image.dtype} {image.shape}")
            tensor = torch.from_numpy(np.ascontiguousarray(image))
            if self.device.type == "cuda":
                tensor = tensor.pin_memory()
            image = tensor.to(self.device, non_blocking=True)
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(image).__name__}")
        image = image.to(self.device, non_blocking=True)
        if image.dtype == torch.uint8 and image.dim() == 3 and image.shape[2] == 3:
            image = image.permute(2, 0, 1).float().div_(255.0)
        elif not (image.is_floating_point() and image.dim() == 3 and image.shape[0] == 3):
            raise ValueError(f"{name} must be H x W x 3 uint8 or 3 x H x W float, got "
                             f"{image.dtype} {tuple(image.shape)}")
        batch = image.unsqueeze(0)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The H x W the network runs on for an input of `height` x `width`: the input itself
        (padded later) at scale 1, else the scaled size rounded to multiples of 32, so no
        padding is spent, and at least the SPP minimum (rounded up to 32). The aspect ratio
        may change; on rectified rows only the width ratio matters (disparity is rescaled by
        it)."""
        if self.inference_scale == 1.0:
            return height, width
        need = max(32, -(-self.config.min_input_size // 32) * 32)
        return tuple(max(need, int(round(side * self.inference_scale / 32)) * 32)
                     for side in (height, width))

    def _padded_size(self, height: int, width: int) -> tuple[int, int]:
        """A multiple of 32 on each side, and at least the SPP minimum."""
        need = self.config.min_input_size
        return max(need, -(-height // 32) * 32), max(need, -(-width // 32) * 32)

    def _pad(self, batch: torch.Tensor) -> torch.Tensor:
        """Replicate-pad bottom/right to `_padded_size`."""
        height, width = batch.shape[-2:]
        target_h, target_w = self._padded_size(height, width)
        if (target_h, target_w) == (height, width):
            return batch
        return F.pad(batch, (0, target_w - width, 0, target_h - height), mode="replicate")

    def _fits_u8_graph(self, left: ImageLike, right: ImageLike) -> bool:
        """Whether a frame can take OpenVINO's uint8-input lean graph: two H x W x 3 uint8
        numpy images of one size (what the node and the benchmarks pass), run at scale 1."""
        return (hasattr(self._forward, "labels_and_disparity_u8") and self.inference_scale == 1.0
                and all(isinstance(i, np.ndarray) and i.dtype == np.uint8 and i.ndim == 3
                        and i.shape[2] == 3 for i in (left, right)) and left.shape == right.shape)

    def _predict_in_u8_graph(self, left: np.ndarray, right: np.ndarray) -> Prediction:
        """predict() for `_fits_u8_graph` frames, in numpy around one OpenVINO call: the
        uint8 -> float conversion runs in the graph and no torch op runs between frames."""
        t0 = time.perf_counter()
        height, width = left.shape[:2]
        target_h, target_w = self._padded_size(height, width)
        pad = ((0, target_h - height), (0, target_w - width), (0, 0))
        batch = [np.pad(i, pad, mode="edge")[None] if pad != ((0, 0),) * 3
                 else np.ascontiguousarray(i)[None] for i in (left, right)]
        t1 = time.perf_counter()
        labels, disparity = self._forward.labels_and_disparity_u8(*batch)
        t2 = time.perf_counter()
        if (target_h, target_w) not in self._sizes_run:
            self._first_call((target_h, target_w), t2 - t1)
        labels, disparity = crop_lean_outputs(labels, disparity, height, width)
        t3 = time.perf_counter()
        return Prediction(labels=labels, disparity=disparity,
                          timings={"pre": t1 - t0, "model": t2 - t1, "post": t3 - t2})

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _default_palette(num_classes: int) -> np.ndarray:
    try:
        from .visualize import cityscapes_palette, distinct_palette
        return cityscapes_palette() if num_classes == 19 else distinct_palette(num_classes)
    except ImportError:  # visualize is optional for a bare predictor
        warnings.warn("pmt_perception.visualize unavailable; using a grey palette", RuntimeWarning,
                      stacklevel=2)
        return np.stack([np.linspace(0, 255, num_classes)] * 3, 1).astype(np.uint8)
