"""`pmt-evaluate`: a checkpoint (or an SGBM baseline) on a dataset -> JSON report + figures.

    pmt-evaluate --checkpoint models/pmt_synthetic_fast_r18.pt --data synthetic \
        --data-root runs/data/synth240 --split test --out runs/eval/pmt
    pmt-evaluate --sgbm ros --data synthetic --data-root runs/data/synth240 --split test \
        --out runs/eval/sgbm_ros

Every sample is evaluated at its full input size (the Predictor pads to what the network needs
and crops back; nothing is cropped away). The output folder gets report.json (both
segmentation heads, the disparity head, timing), iou_per_class.png, confusion_matrix.png and
figure8_samples.png. Metrics are fractions (0.93 = 93 %); undefined values are null.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from pmt_perception.evaluation.figures import write_all_figures
from pmt_perception.evaluation.report import evaluate_pairs, json_safe, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmt-evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # Not required: --bag alone uses the shipped model (checked in main).
    method = parser.add_mutually_exclusive_group()
    method.add_argument("--checkpoint", type=Path, help="a pmt_perception checkpoint (.pt)")
    method.add_argument("--sgbm", choices=("ros", "tuned"),
                        help="OpenCV StereoSGBM baseline instead of a network")
    parser.add_argument("--data", default="synthetic",
                        help="data config: a name under config/data/ or a YAML path")
    parser.add_argument("--data-root", default=None, help="dataset folder (overrides the config's root)")
    parser.add_argument("--split", default=None, help="split to evaluate (default: the config's val_split)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="autocast precision of the network (fp16: GPU only)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers decoding samples")
    parser.add_argument("--figure-samples", type=int, default=4,
                        help="samples shown in figure8_samples.png")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed forward passes before timing starts")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    from pmt_perception.ros.bags.evaluation import add_bag_arguments  # no ROS import at load

    add_bag_arguments(parser)
    return parser


def load_dataset(data: str, root: Optional[str], split: Optional[str]):
    from pmt_perception.data import build_dataset, load_data_config

    overrides = {"root": root} if root is not None else {}
    config = load_data_config(data, **overrides)
    split = split or config.val_split
    return build_dataset(config, split=split, augment=False), config, split


def iterate_samples(dataset, *, limit: Optional[int], workers: int) -> Iterator[dict[str, Any]]:
    count = len(dataset) if limit is None else min(limit, len(dataset))
    subset = torch.utils.data.Subset(dataset, range(count))
    if workers > 0:
        import cv2

        cv2.setNumThreads(1)  # before forking: OpenCV's thread pool does not survive a fork
    # batch_size=None: samples one by one (sizes may differ), decoded ahead by the workers.
    loader = torch.utils.data.DataLoader(subset, batch_size=None, num_workers=max(0, workers))
    yield from loader


def build_method(args: argparse.Namespace):
    """(object with predict(left, right), description dict, class names or None, palette)."""
    if args.sgbm:
        from pmt_perception.baselines import SGBMBaseline

        baseline = SGBMBaseline(args.sgbm)
        return baseline, {**baseline.describe(), "preset": args.sgbm}, None, None
    from pmt_perception.inference import Predictor
    from pmt_perception.network import count_parameters

    predictor = Predictor(args.checkpoint, device=args.device, precision=args.precision)
    payload = predictor.payload
    description = {"method": "pmt", "checkpoint": str(args.checkpoint),
                   "model_config": payload.get("model_config"),
                   "training_step": payload.get("step", payload.get("progress", {}).get("step")),
                   "parameters": count_parameters(predictor.model),
                   "device": str(predictor.device), "precision": args.precision}
    return predictor, description, list(predictor.class_names), predictor.palette


def prediction_pairs(method: Any, samples: Iterator[dict[str, Any]], *,
                     warmup: int) -> Iterator[tuple[dict[str, Any], Any]]:
    from pmt_perception.inference import Predictor

    for index, sample in enumerate(samples):
        if index == 0 and warmup > 0:
            for _ in range(warmup):  # first passes allocate and pick kernels: not timed
                method.predict(sample["left"], sample["right"])
        if isinstance(method, Predictor):
            prediction = method.predict(sample["left"], sample["right"], extras=True)
        else:
            prediction = method.predict(sample["left"], sample["right"])
        yield sample, prediction


def main(argv: list[str] | None = None) -> int:
    from pmt_perception.checkpoint import CheckpointError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bag is None and args.checkpoint is None and args.sgbm is None:
        parser.error("one of the arguments --checkpoint --sgbm is required (or --bag)")
    try:
        if args.bag is not None:
            from pmt_perception.ros.bags.evaluation import evaluate_bag

            return evaluate_bag(args)
        return evaluate(args)
    except CheckpointError as error:
        # A refused checkpoint is a user error, not a crash: one clear line, exit code 2.
        print(f"pmt-evaluate: {error}", file=sys.stderr)
        return 2


def evaluate(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset, data_config, split = load_dataset(args.data, args.data_root, args.split)
    if len(dataset) == 0:
        raise SystemExit(f"pmt-evaluate: split {split!r} of {args.data} is empty")
    method, description, class_names, palette = build_method(args)
    dataset_classes = list(dataset.class_names)
    if class_names is not None and class_names != dataset_classes:
        raise SystemExit(f"pmt-evaluate: the checkpoint's classes {class_names} differ from "
                         f"the dataset's {dataset_classes}")
    palette = np.asarray(palette if palette is not None else dataset.palette, dtype=np.uint8)
    start = time.perf_counter()
    pairs = prediction_pairs(method, iterate_samples(dataset, limit=args.limit,
                                                     workers=args.workers), warmup=args.warmup)
    accumulator = evaluate_pairs(pairs, num_classes=len(dataset_classes),
                                 class_names=dataset_classes, figure_samples=args.figure_samples)
    report = accumulator.report()
    report["method"] = description
    report["dataset"] = {"data_config": args.data, "dataset": data_config.dataset,
                         "root": args.data_root or data_config.root, "split": split,
                         "limit": args.limit}
    return write_outputs(report, accumulator, palette, args=args, description=description,
                         start=start)


def write_outputs(report: dict[str, Any], accumulator: Any, palette: Any, *,
                  args: argparse.Namespace, description: dict[str, Any], start: float) -> int:
    """Timing fields, report.json and the figures into args.out, and a summary line; shared
    by dataset and bag evaluation so both write the same report."""
    report["timing"].update(device=description.get("device", "cpu"),
                            precision=description.get("precision"),
                            torch_threads=torch.get_num_threads(),
                            warmup_passes=args.warmup,
                            wall_seconds=time.perf_counter() - start)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(report, args.out / "report.json")
    figures = write_all_figures(args.out, accumulator, np.asarray(palette, dtype=np.uint8))
    if args.json:
        print(json.dumps(json_safe(report), indent=2))
    else:
        print(summary_line(report), file=sys.stderr)
        print(f"wrote {args.out / 'report.json'} and {', '.join(p.name for p in figures)}",
              file=sys.stderr)
    return 0


def summary_line(report: dict[str, Any]) -> str:
    parts = [f"{report['num_samples']} samples"]
    for head in ("refined", "coarse"):
        scores = report["segmentation"][head]
        if scores is not None:
            parts.append(f"{head} mIoU {100 * scores['miou']:.2f} %")
    disparity = report["disparity"]
    parts.append(f"D1 {100 * disparity['d1']:.2f} %")
    parts.append(f"EPE {disparity['epe']:.3f} px")
    model_ms = report["timing"]["model_ms"]["mean"]
    if model_ms is not None:
        parts.append(f"model {model_ms:.1f} ms/pair")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
