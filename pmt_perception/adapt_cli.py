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
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from .adapt import MODULE_GROUPS, Adapter, crop_window, evaluate_disparity
from .adapt_settings import AdaptSettings, load_settings, parse_crop, parse_size, scheduled_lr
from .adapt_sources import list_pairs, load_pair
from .checkpoint import CheckpointError, load_checkpoint, load_model, model_config_of, save_checkpoint
from .cli import stops_cleanly
from .runtime import resolve_device


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


@stops_cleanly
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
