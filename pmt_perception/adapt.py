"""Self-supervised adaptation of a checkpoint to a camera's own rectified pairs: the
`Adapter` (one optimiser step per call, shared by `pmt-adapt` in adapt_cli.py and the node's
online adaptation in ros/adaptation.py) and its helpers.

Each step takes a random crop of one pair and minimises the photometric error of the left image
against the right one warped by the predicted disparity (masked outside the image and where the
network's own left-right check fails), an edge-aware smoothness term and sparse L1 to OpenCV
SGBM's confident pixels; so that segmentation is kept, it adds the training task's loss on
labelled synthetic pairs (replay, adapt_replay.py) and optionally the KL divergence of the
segmentation heads to the starting model's. Defaults: config/adapt.yaml.
"""
from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import photometric as P
from .adapt_replay import optional_pool, replay_loss
from .adapt_settings import AdaptSettings
from .adapt_sources import PairSource, load_pair, to_batch
from .inference import Predictor
from .labels import IGNORE_LABEL
from .metrics import DisparityMetrics
from .runtime import cpu_has_native_bf16

MODULE_GROUPS = ("backbone", "spp_f1", "spp_f2", "coarse_segmentation", "disparity",
                 "disparity_refinement", "refined_segmentation")
DISPARITY_ONLY = ("spp_f2", "disparity", "disparity_refinement")
# Submodules of a disparity branch that run after Fdisp (regression: the head; cost volume:
# the L conv guiding the learned upsampling and the upsampler); the H/4 refinement stage,
# where built, runs after Fdisp too.
DISPARITY_HEAD = ("head", "l_conv", "upsample")


# ----------------------------------------------------------------------------- data
# PairSource, list_pairs, load_pair, to_batch: adapt_sources.py

# ----------------------------------------------------------------------------- model helpers
def select_parameters(model: torch.nn.Module, which: Any) -> list[torch.nn.Parameter]:
    """Sets requires_grad on the chosen top-level modules only; returns their parameters."""
    if which == "all":
        names = [n for n in MODULE_GROUPS if getattr(model, n, None) is not None]
    elif which == "disparity_head":
        # What acts only after Fdisp: the refined segmentation reads Fdisp, so adapting only
        # these leaves both segmentation outputs exactly as trained.
        head = [getattr(model.disparity, n) for n in DISPARITY_HEAD
                if getattr(model.disparity, n, None) is not None]
        if model.disparity_refinement is not None:
            head.append(model.disparity_refinement)
        return _enable(model, [p for module in head for p in module.parameters()])
    elif which == "disparity":
        # The disparity branch and what feeds only it: the F2 pyramid its matching reads (absent
        # where the cost volume matches on F1'). Backbone and F1 pyramid serve segmentation too.
        names = [n for n in DISPARITY_ONLY if getattr(model, n, None) is not None]
    else:
        names = [which] if isinstance(which, str) else list(which)
    for name in names:
        if name not in MODULE_GROUPS or getattr(model, name, None) is None:
            raise ValueError(f"adapt: parameters: unknown module {name!r}; choose from "
                             f"{[n for n in MODULE_GROUPS if getattr(model, n, None) is not None]} or 'all'")
    return _enable(model, [p for name in names for p in getattr(model, name).parameters()])


def _enable(model: torch.nn.Module, chosen: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """requires_grad on `chosen` only."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in chosen:
        parameter.requires_grad_(True)
    if not chosen:
        raise ValueError("adapt: the chosen parameter group is empty for this model")
    return chosen


def forward_padded(model: torch.nn.Module, left: torch.Tensor, right: torch.Tensor, *,
                   with_probability: bool = False):
    """model(left, right) on inputs replicate-padded to what it accepts (multiples of 32, at
    least min_input_size), outputs cropped back: (disparity, coarse_logits, refined_logits),
    and with `with_probability` the cost volume's candidate probabilities on the padded grid
    (None for the regression head)."""
    height, width = left.shape[-2:]
    need = model.config.min_input_size
    target_h, target_w = max(need, -(-height // 32) * 32), max(need, -(-width // 32) * 32)
    if (target_h, target_w) != (height, width):
        pad = (0, target_w - width, 0, target_h - height)
        left, right = F.pad(left, pad, mode="replicate"), F.pad(right, pad, mode="replicate")
    out = model(left, right)
    crop = (..., slice(0, height), slice(0, width))
    cropped = (out.disparity[crop], out.coarse_logits[crop], out.refined_logits[crop])
    return (*cropped, out.disparity_probability) if with_probability else cropped


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """bf16 autocast where it is native (CUDA, CPUs with avx512_bf16 / AMX); fp32 elsewhere."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    native = device.type == "cuda" or cpu_has_native_bf16()
    return torch.bfloat16 if native else None


# ----------------------------------------------------------------------------- the adapter
@dataclasses.dataclass
class PreparedPair:
    left: torch.Tensor             # 1 x 3 x H x W
    right: torch.Tensor
    teacher_coarse: torch.Tensor   # 1 x C x H x W probabilities (fp16 to halve the memory)
    teacher_refined: torch.Tensor
    proxy: torch.Tensor            # 1 x 1 x H x W, NaN where SGBM kept nothing
    holes: Optional[torch.Tensor] = None  # 1 x 1 x H x W: proxy_holes (weight proxy_holes > 0)
    occlusion_mask: Optional[torch.Tensor] = None
    mask_step: int = -(10 ** 9)


class Adapter:
    """One model being adapted, its frozen teacher, optimizer and per-pair caches. `step(...)`
    is one self-supervised update on one pair; the node's online mode can drive it pair by pair.
    A step whose loss is not finite is discarded (no update) and counted."""

    def __init__(self, model: torch.nn.Module, settings: AdaptSettings, *,
                 device: torch.device, class_names: Optional[list[str]] = None) -> None:
        self.settings = settings
        self.device = device
        self.model = model.to(device).eval()       # BatchNorm statistics stay frozen
        self.teacher = copy.deepcopy(self.model).eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.parameters = select_parameters(self.model, settings.parameters)
        self.optimizer = torch.optim.Adam(self.parameters, lr=settings.lr)
        self.autocast_dtype = resolve_precision(settings.precision, device)
        self.sgbm = P.sgbm_settings(settings.sgbm["preset"],
                                    num_disparities=settings.sgbm.get("num_disparities"),
                                    uniqueness_ratio=settings.sgbm.get("uniqueness_ratio"),
                                    disp12_max_diff=settings.sgbm.get("disp12_max_diff"))
        self.cache: OrderedDict[Any, PreparedPair] = OrderedDict()
        if settings.replay.enabled and class_names is None:
            raise ValueError("adapt: replay needs the checkpoint's class names")
        self.replay = optional_pool(settings.replay, class_names=class_names or [], device=device,
                                    seed=settings.seed)
        self.steps_done = 0
        self.discarded = 0

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype,
                              enabled=self.autocast_dtype is not None)

    @torch.no_grad()
    def prepare(self, key: Any, left: np.ndarray, right: np.ndarray) -> PreparedPair:
        """Teacher segmentation and SGBM proxy of one pair (cached, LRU, `cache_pairs` long)."""
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        left_t, right_t = to_batch(left, self.device), to_batch(right, self.device)
        with self._autocast():
            _, coarse, refined = forward_padded(self.teacher, left_t, right_t)
        weights = self.settings.weights
        needs_proxy = any(weights.get(k, 0) > 0 for k in ("proxy", "proxy_distribution", "proxy_holes"))
        proxy = P.sgbm_proxy(left, right, self.sgbm) if needs_proxy \
            else np.full(left.shape[:2], np.nan, np.float32)
        holes = torch.from_numpy(P.proxy_holes(proxy))[None, None].to(self.device) \
            if weights.get("proxy_holes", 0) > 0 else None
        prepared = PreparedPair(left_t, right_t, coarse.float().softmax(1).half(),
                                refined.float().softmax(1).half(),
                                torch.from_numpy(proxy)[None, None].to(self.device), holes)
        self.cache[key] = prepared
        while len(self.cache) > max(1, self.settings.cache_pairs):
            self.cache.popitem(last=False)
        return prepared

    @torch.no_grad()
    def occlusion_mask(self, pair: PreparedPair) -> Optional[torch.Tensor]:
        """The current model's left-right check on the whole pair, refreshed every
        occlusion.refresh_every steps (two full-image passes)."""
        occlusion = self.settings.occlusion
        if not occlusion.get("enabled", False):
            return None
        # Refreshed at the first visit after each multiple of refresh_every: a run resumed at
        # such a multiple recomputes exactly the masks the uninterrupted run would have.
        every = max(1, int(occlusion.get("refresh_every", 50)))
        if pair.occlusion_mask is None or pair.mask_step < (self.steps_done // every) * every:
            def disparity_of(left, right):
                with self._autocast():
                    return forward_padded(self.model, left, right)[0].float()
            left_disp = disparity_of(pair.left, pair.right)
            right_disp = P.right_disparity(disparity_of, pair.left, pair.right)
            pair.occlusion_mask = P.left_right_consistency(
                left_disp, right_disp, threshold=float(occlusion.get("threshold_px", 3.0)))
            pair.mask_step = self.steps_done
        return pair.occlusion_mask

    def losses(self, pair: PreparedPair, window: tuple[slice, slice]) -> dict[str, torch.Tensor]:
        crop = (..., *window)
        left, right = pair.left[crop], pair.right[crop]
        mask = self.occlusion_mask(pair)
        with self._autocast():
            disparity, coarse, refined, probability = forward_padded(self.model, left, right,
                                                                     with_probability=True)
        disparity = disparity.float()
        weights = self.settings.weights
        terms = {"photometric": P.photometric_loss(left, right, disparity,
                                                   mask=None if mask is None else mask[crop])}
        if weights.get("smoothness", 0) > 0:
            terms["smoothness"] = P.edge_aware_smoothness(disparity, left)
        if weights.get("distillation", 0) > 0:
            terms["distillation"] = (P.distillation_loss(coarse, pair.teacher_coarse[crop])
                                     + P.distillation_loss(refined, pair.teacher_refined[crop]))
        if weights.get("proxy", 0) > 0:
            terms["proxy"] = P.proxy_l1_loss(disparity, pair.proxy[crop])
        if weights.get("proxy_holes", 0) > 0:
            terms["proxy_holes"] = P.proxy_l1_loss(disparity, pair.holes[crop])
        if weights.get("proxy_distribution", 0) > 0 and probability is not None:
            terms["proxy_distribution"] = P.proxy_distribution_loss(
                probability, pair.proxy[crop], self.model.config.cost_volume_scale)
        total = sum(weights.get(name, 0.0) * value for name, value in terms.items())
        if self.replay is not None:
            terms["replay"] = self.replay_term()
            total = total + self.settings.replay.weight * terms["replay"]
        terms["total"] = total
        return terms

    def replay_term(self) -> torch.Tensor:
        """The training task on labelled synthetic pairs (adapt_replay.py), drawn with a
        generator seeded by the step, so a resumed run draws what the uninterrupted one would."""
        generator = torch.Generator().manual_seed(self.settings.seed * 7_919 + self.steps_done)
        left, right, labels, disparity = self.replay.draw(generator)
        with self._autocast():
            outputs = forward_padded(self.model, left, right)
        return replay_loss(outputs, labels, disparity, ignore_index=IGNORE_LABEL,
                           disparity_weight=self.settings.replay.disparity_weight)

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps (offline: the cosine schedule; online: the warm-up)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, pair: PreparedPair, window: tuple[slice, slice], *,
             max_loss: Optional[float] = None) -> dict[str, float]:
        """One update; returns the loss terms (floats) and whether the step was applied. A loss
        or gradient norm that is not finite, or a loss above `max_loss` (an exploding step,
        online), discards the step: no update, counted in `discarded`."""
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.losses(pair, window)
        total = terms["total"]
        applied = bool(torch.isfinite(total)) and (max_loss is None or float(total.detach()) <= max_loss)
        if applied:
            total.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.settings.grad_clip)
            applied = bool(torch.isfinite(norm))
        if applied:
            self.optimizer.step()
        else:
            self.discarded += 1
            self.optimizer.zero_grad(set_to_none=True)
        self.steps_done += 1
        return {**{k: float(v.detach()) for k, v in terms.items()}, "applied": applied}


def crop_window(shape: tuple[int, int], crop: tuple[int, int],
                generator: torch.Generator) -> tuple[slice, slice]:
    """A random crop (the whole extent where the image is smaller or the crop is 0)."""
    windows = []
    for extent, size in zip(shape, crop):
        if size <= 0 or size >= extent:
            windows.append(slice(0, extent))
        else:
            start = int(torch.randint(0, extent - size + 1, (1,), generator=generator))
            windows.append(slice(start, start + size))
    return tuple(windows)


# ----------------------------------------------------------------------------- evaluation
def evaluate_disparity(model: torch.nn.Module, pairs: list[PairSource],
                       size: Optional[tuple[int, int]], device: torch.device) -> Optional[dict]:
    """D1 / EPE of `model` (fp32, as pmt-evaluate runs it) over the pairs that have GT."""
    metrics = DisparityMetrics()
    predictor = Predictor(copy.deepcopy(model).eval(), device=str(device), precision="fp32",
                          backend="eager")
    for pair in pairs:
        left, right, gt = load_pair(pair, size)
        if gt is None:
            continue
        metrics.update(predictor.predict(left, right).disparity, gt)
    scores = metrics.compute()
    if scores["num_pixels"] == 0:
        return None
    return {k: scores[k] for k in ("d1", "epe", "bad_1", "bad_2", "num_pixels")}
