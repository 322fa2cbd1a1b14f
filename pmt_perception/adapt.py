"""`pmt-adapt`: self-supervised adaptation of a checkpoint to a camera's own rectified pairs.

    pmt-adapt --checkpoint models/pmt_synthetic_edge.pt --data PAIRS --out adapted.pt
    pmt-adapt --checkpoint models/pmt_synthetic_edge.pt \
        --data ../shared/data/real_stereo/aloe --size 555x641 --out runs/adapt/aloe.pt --eval

PAIRS is a folder with left/ and right/ images of the same names (anything else, ground truth
included, is ignored by the adaptation; `--eval` scores disparity/<name>.png|.pfm when present),
a Middlebury-style folder (im0/im1, view1/view5, <name>L/<name>R: pmt_perception/data/
middlebury.py), or a ROS 2 bag folder with the node's input topics (paired as the node pairs
them; at most `bag_frames` frames, drawn evenly over the bag, are kept in memory; ground truth
topics in the bag serve `--eval` only). No labels of the camera are used: each step takes a
random crop of one pair and minimises the photometric error of the left image against the
right one warped by the predicted disparity (masked outside the image and where the network's
own left-right check fails), an edge-aware smoothness term and sparse L1 to OpenCV SGBM's
confident pixels; so that segmentation is kept, it adds the training task's loss on labelled
synthetic pairs (replay, adapt_replay.py) and optionally the KL divergence of the segmentation
heads to the starting model's. Defaults: config/adapt.yaml. The output is an ordinary
checkpoint (same model config, class names, palette) with an `adapted` dict; OUT.partial.pt
holds a resumable snapshot while it runs.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import photometric as P
from .adapt_replay import optional_pool, replay_loss
from .adapt_settings import AdaptSettings, load_settings, parse_crop, parse_size, scheduled_lr
from .adapt_sources import PairSource, list_pairs, load_pair, to_batch
from .checkpoint import CheckpointError, load_checkpoint, load_model, model_config_of, save_checkpoint
from .inference import Predictor, resolve_device
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
        if getattr(model, "disparity_refinement", None) is not None:
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


# ----------------------------------------------------------------------------- command
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmt-adapt", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint to adapt (.pt)")
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with left/ + right/ images, a Middlebury-style folder, or "
                             "a ROS 2 bag folder with the node's input topics")
    parser.add_argument("--out", type=Path, required=True, help="adapted checkpoint to write (.pt)")
    parser.add_argument("--config", type=Path, default=None, help="settings YAML (default config/adapt.yaml)")
    parser.add_argument("--steps", type=int, default=None, help="adaptation steps")
    parser.add_argument("--size", type=parse_size, default=None, help="resize pairs to HxW first")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--parameters", default=None,
                        help="disparity_head | disparity | all | comma-separated modules ("
                             + ", ".join(MODULE_GROUPS) + ")")
    parser.add_argument("--crop", type=parse_crop, default=None,
                        help="random crop HxW per step; 0x0: whole images")
    parser.add_argument("--replay-weight", type=float, default=None,
                        help="weight of the labelled synthetic pairs mixed into each step; 0: none")
    parser.add_argument("--replay-data", default=None,
                        help="replay pairs: a synthetic generator config (name or YAML) or a "
                             "pmt-synth folder")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda")
    parser.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--eval", action="store_true",
                        help="report D1 / EPE before and after on pairs with ground truth")
    parser.add_argument("--eval-every", type=int, default=0, metavar="N",
                        help="with --eval: also score every N steps (a D1 curve in the summary)")
    parser.add_argument("--restart", action="store_true",
                        help="ignore OUT.partial.pt (default: resume from it when it matches)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def partial_path(out: Path) -> Path:
    return out.with_name(out.stem + ".partial" + (out.suffix or ".pt"))


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except (ValueError, CheckpointError, FileNotFoundError) as error:
        print(f"pmt-adapt: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(summary_text(summary))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    parameters = args.parameters
    if parameters is not None and parameters != "all" and "," in parameters:
        parameters = [p.strip() for p in parameters.split(",") if p.strip()]
    settings = load_settings(args.config, steps=args.steps, seed=args.seed, lr=args.lr,
                             parameters=parameters, crop=args.crop, size=args.size,
                             device=args.device, precision=args.precision,
                             replay_weight=args.replay_weight, replay_data=args.replay_data)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(settings.device)
    pairs = list_pairs(args.data, bag_frames=settings.bag_frames, seed=settings.seed)
    model, payload = load_model(args.checkpoint)
    torch.manual_seed(settings.seed)
    adapter = Adapter(model, settings, device=device, class_names=payload["class_names"])
    adapted_info = {"from_checkpoint": str(args.checkpoint), "data": str(args.data),
                    "pairs": [p.name for p in pairs], "settings": to_plain_settings(settings)}

    partial = partial_path(args.out)
    start_step = 0
    if partial.is_file() and not args.restart:
        start_step = resume(adapter, partial, adapted_info)
    summary: dict[str, Any] = {"checkpoint": str(args.checkpoint), "data": str(args.data),
                               "out": str(args.out), "pairs": len(pairs), "steps": settings.steps,
                               "resumed_from_step": start_step, "device": str(device),
                               "precision": "bf16" if adapter.autocast_dtype else "fp32",
                               "parameters": settings.parameters,
                               "adapted_parameters": sum(p.numel() for p in adapter.parameters)}
    if args.eval:
        summary["before"] = evaluate_disparity(adapter.teacher, pairs, settings.size, device)

    started = time.perf_counter()
    eval_seconds = 0.0    # --eval-every scoring, not counted as adaptation time
    last: dict[str, float] = {}
    progress = tqdm(range(start_step, settings.steps), initial=start_step, total=settings.steps,
                    desc="pmt-adapt", unit="step", dynamic_ncols=True, file=sys.stderr)
    for step in progress:
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        index = int(torch.randint(0, len(pairs), (1,), generator=generator))
        if index in adapter.cache:
            pair = adapter.prepare(index, None, None)
        else:
            left, right, _ground_truth_unused = load_pair(pairs[index], settings.size)
            pair = adapter.prepare(index, left, right)
        window = crop_window(tuple(pair.left.shape[-2:]), settings.crop, generator)
        adapter.steps_done = step
        adapter.set_lr(scheduled_lr(settings, step))
        last = adapter.step(pair, window)
        progress.set_postfix(loss=f"{last['total']:.4f}", photo=f"{last['photometric']:.4f}",
                             discarded=adapter.discarded)
        done = step + 1
        if args.eval and args.eval_every > 0 and done % args.eval_every == 0 and done < settings.steps:
            eval_started = time.perf_counter()
            scores = evaluate_disparity(adapter.model, pairs, settings.size, device)
            eval_seconds += time.perf_counter() - eval_started
            if scores is not None:
                elapsed = time.perf_counter() - started - eval_seconds
                summary.setdefault("curve", []).append({"step": done, "seconds": round(elapsed, 1),
                                                        **scores})
                progress.write(f"step {done}: D1 {100 * scores['d1']:.2f} %  EPE "
                               f"{scores['epe']:.2f} px  ({elapsed:.0f} s)", file=sys.stderr)
        if settings.save_every > 0 and done % settings.save_every == 0 and done < settings.steps:
            save_adapted(partial, adapter, payload, adapted_info, done, resumable=True)
    progress.close()
    seconds = time.perf_counter() - started - eval_seconds
    save_adapted(args.out, adapter, payload, adapted_info, settings.steps, resumable=False,
                 seconds=seconds)
    partial.unlink(missing_ok=True)
    summary.update({"seconds": round(seconds, 1), "discarded_steps": adapter.discarded,
                    "last_losses": {k: v for k, v in last.items() if k != "applied"}})
    if args.eval:
        adapted_model, _ = load_model(args.out)   # score what was written
        summary["after"] = evaluate_disparity(adapted_model, pairs, settings.size, device)
    return summary


def to_plain_settings(settings: AdaptSettings) -> dict[str, Any]:
    plain = dataclasses.asdict(settings)
    plain["crop"] = list(settings.crop)
    plain["size"] = None if settings.size is None else list(settings.size)
    plain["replay"]["size"] = list(settings.replay.size)
    return plain


def save_adapted(path: Path, adapter: Adapter, payload: dict, info: dict, steps: int, *,
                 resumable: bool, seconds: Optional[float] = None) -> None:
    extra: dict[str, Any] = {"kind": "adapted",
                             "adapted": {**info, "steps": steps, "discarded_steps": adapter.discarded,
                                         **({"seconds": round(seconds, 1)} if seconds is not None else {})}}
    if resumable:
        extra["adapt_state"] = {"optimizer": adapter.optimizer.state_dict(), "step": steps,
                                "discarded": adapter.discarded}
    save_checkpoint(path, model=adapter.model, config=model_config_of(payload),
                    class_names=payload["class_names"], palette=payload["palette"], **extra)


def resume(adapter: Adapter, partial: Path, info: dict) -> int:
    """Load a matching OUT.partial.pt into the adapter; returns its step (0 if it does not match)."""
    snapshot = load_checkpoint(partial)
    saved = snapshot.get("adapted", {})
    same = all(saved.get(k) == info[k] for k in ("from_checkpoint", "data", "pairs")) and \
        {k: v for k, v in saved.get("settings", {}).items() if k != "steps"} == \
        {k: v for k, v in info["settings"].items() if k != "steps"}
    if not same or "adapt_state" not in snapshot:
        print(f"pmt-adapt: {partial} is from another run (checkpoint, data or settings differ); "
              "starting over", file=sys.stderr)
        return 0
    state = {k: v.float() if v.is_floating_point() else v for k, v in snapshot["model_state"].items()}
    adapter.model.load_state_dict(state)
    adapter.optimizer.load_state_dict(snapshot["adapt_state"]["optimizer"])
    adapter.discarded = int(snapshot["adapt_state"]["discarded"])
    step = int(snapshot["adapt_state"]["step"])
    print(f"pmt-adapt: resuming from {partial} at step {step}", file=sys.stderr)
    return step


def summary_text(summary: dict[str, Any]) -> str:
    lines = [f"adapted {summary['checkpoint']} on {summary['pairs']} pair(s) of {summary['data']}: "
             f"{summary['steps']} steps ({summary['parameters']}, {summary['adapted_parameters']:,} "
             f"parameters, {summary['precision']}) in {summary['seconds']} s -> {summary['out']}"]
    if summary["discarded_steps"]:
        lines.append(f"discarded steps (non-finite loss or gradient): {summary['discarded_steps']}")
    for when in ("before", "after"):
        scores = summary.get(when)
        if scores:
            lines.append(f"{when:6s}: D1 {100 * scores['d1']:.2f} %  EPE {scores['epe']:.2f} px  "
                         f"bad-1 {100 * scores['bad_1']:.2f} %  ({scores['num_pixels']} px with GT)")
        elif when in summary:
            lines.append(f"{when:6s}: no ground truth in the data")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
