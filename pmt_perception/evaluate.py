"""`pmt-evaluate`: a checkpoint (or an SGBM baseline) on a dataset -> JSON report + figures.

    pmt-evaluate --checkpoint models/pmt_synthetic_fast_r18.pt --data synthetic \
        --data-root runs/data/synth240 --split test --out runs/eval/pmt
    pmt-evaluate --sgbm ros --data synthetic --data-root runs/data/synth240 --split test \
        --out runs/eval/sgbm_ros
    pmt-evaluate --checkpoint models/pmt_synthetic_fast_r18.pt --sgbm 3way --data middlebury \
        --data-root ../shared/data/real_stereo/aloe --scale 0.5 --out runs/eval/aloe
    pmt-evaluate --data bag --data-root runs/bags/synth20 --out runs/eval/bag

Every sample is evaluated at its full input size (the Predictor pads to what the network needs
and crops back; nothing is cropped away). The output folder gets report.json (both
segmentation heads, the disparity head, timing), iou_per_class.png, confusion_matrix.png,
figure8_samples.png and error_maps.png. Metrics are fractions (0.93 = 93 %); undefined values
are null. With --checkpoint and --sgbm together, the network is the report's method and each
SGBM preset a row of report["comparison"] (and its full scores in report["baselines"]), scored
on the same samples. Disparity-only data (Middlebury) reports segmentation as absent (null).
A ROS 2 bag (`--data bag`, docs/bags.md) is a stream: its report adds per-frame timing, output
statistics and temporal stability, and without --checkpoint the shipped model is used.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from pmt_perception.atomic import json_ready, write_json_atomic
from pmt_perception.baselines import SGBM_PRESETS, SGBMBaseline
from pmt_perception.checkpoint import CheckpointError, shipped_checkpoint
from pmt_perception.cli import stops_cleanly
from pmt_perception.data import build_dataset, load_data_config
from pmt_perception.data.bag_io import BagError
from pmt_perception.evaluation.figures import write_all_figures, write_error_maps
from pmt_perception.evaluation.frame_statistics import FrameStatistics
from pmt_perception.evaluation.report import EvaluationAccumulator
from pmt_perception.evaluation.summary import comparison_row, comparison_table, summary_line
from pmt_perception.inference import MAX_INFERENCE_SCALE, Predictor
from pmt_perception.network import count_parameters
from pmt_perception.runtime import BACKENDS

# Loader keys of config/data/bag.yaml that have command-line options (--left-image-topic, ...).
BAG_TOPIC_KEYS = ("left_image", "right_image", "left_info", "right_info", "gt_seg",
                  "gt_disparity")


class _DeprecatedBag(argparse.Action):
    """--bag BAG, the former option: now --data bag --data-root BAG."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"pmt-evaluate: --bag is deprecated; use --data bag --data-root {values}",
              file=sys.stderr)
        namespace.data, namespace.data_root = "bag", str(values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmt-evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # Not required: --bag alone uses the shipped model (checked in main).
    parser.add_argument("--checkpoint", type=Path,
                        help="a pmt_perception checkpoint (.pt) or an exported model (.onnx, "
                             "int8 ones from `pmt-export --int8` included)")
    parser.add_argument("--sgbm", action="append", choices=sorted(SGBM_PRESETS), metavar="PRESET",
                        help="OpenCV StereoSGBM baseline (repeatable; presets: "
                             f"{', '.join(sorted(SGBM_PRESETS))}); with --checkpoint, extra rows "
                             "of the same report")
    parser.add_argument("--data", default="synthetic",
                        help="data config: a name under config/data/ or a YAML path")
    parser.add_argument("--data-root", default=None, help="dataset folder (overrides the config's root)")
    parser.add_argument("--split", default=None, help="split to evaluate (default: the config's val_split)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--scale", type=float, default=None,
                        help="evaluation scale of datasets whose loader has one (middlebury): "
                             "images area-resized, GT nearest-resized and multiplied")
    parser.add_argument("--inference-scale", type=inference_scale, default=1.0,
                        help="run the network on each pair resized by this factor and score its "
                             "outputs resized back, as the node's inference_scale does")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="autocast precision of the network (fp16: GPU only)")
    parser.add_argument("--backend", default=None, choices=("auto", *BACKENDS),
                        help="runtime (default: eager for a .pt, onnxruntime for an .onnx)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers decoding samples")
    parser.add_argument("--figure-samples", type=int, default=4,
                        help="samples shown in figure8_samples.png")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed forward passes before timing starts")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    add_bag_arguments(parser)
    return parser


def add_bag_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of --data bag: topics and pairing (default: the node's, config/stereo_seg.yaml)."""
    group = parser.add_argument_group("ROS 2 bag input (--data bag --data-root BAG)")
    group.add_argument("--bag", type=Path, action=_DeprecatedBag, metavar="BAG",
                       help="deprecated: --data bag --data-root BAG")
    for name in BAG_TOPIC_KEYS:
        group.add_argument(f"--{name.replace('_', '-')}-topic", dest=f"{name}_topic",
                           default=None, help=f"topic of {name.replace('_', ' ')} "
                                              "(default: the node's)")
    group.add_argument("--approximate-sync", action="store_true", default=None,
                       help="pair stamps within --sync-slop instead of identical stamps "
                            "(default: the node's approximate_sync)")
    group.add_argument("--sync-slop", type=float, default=None,
                       help="seconds (default: the node's sync_slop)")
    group.add_argument("--sync-queue-size", type=int, default=None,
                       help="(default: the node's sync_queue_size)")


def bag_loader_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The bag loader keys given on the command line."""
    given = {name: getattr(args, f"{name}_topic", None) for name in BAG_TOPIC_KEYS}
    given.update(approximate_sync=getattr(args, "approximate_sync", None),
                 sync_slop=getattr(args, "sync_slop", None),
                 sync_queue_size=getattr(args, "sync_queue_size", None))
    return {key: value for key, value in given.items() if value is not None}


def load_dataset(data: str, root: Optional[str], split: Optional[str],
                 scale: Optional[float] = None, loader: Optional[dict[str, Any]] = None):
    """(dataset, data config, split); ``loader``: loader keys overriding the config's."""
    overrides = {"root": root} if root is not None else {}
    config = load_data_config(data, **overrides)
    extra = dict(loader or {})
    if scale is not None:
        if "scale" not in config.loader:
            raise SystemExit(f"pmt-evaluate: --scale: the {config.dataset} loader has no "
                             "evaluation scale (middlebury has)")
        extra["scale"] = scale
    unknown = sorted(set(extra) - set(config.loader))
    if unknown:
        raise SystemExit(f"pmt-evaluate: the {config.dataset} loader has no {', '.join(unknown)}"
                         " (the topic and sync options are for --data bag)")
    if extra:
        config = load_data_config(data, **overrides, loader={**config.loader, **extra})
    split = split or config.val_split
    return build_dataset(config, split=split, augment=False), config, split


def is_stream(dataset) -> bool:
    """A dataset read front to back (a bag): no length, no random access, no workers."""
    return isinstance(dataset, torch.utils.data.IterableDataset)


def iterate_samples(dataset, *, limit: Optional[int], workers: int) -> Iterator[dict[str, Any]]:
    if is_stream(dataset):
        yield from itertools.islice(dataset, limit)
        return
    count = len(dataset) if limit is None else min(limit, len(dataset))
    subset = torch.utils.data.Subset(dataset, range(count))
    if workers > 0:
        import cv2

        cv2.setNumThreads(1)  # before forking: OpenCV's thread pool does not survive a fork
    # batch_size=None: samples one by one (sizes may differ), decoded ahead by the workers.
    loader = torch.utils.data.DataLoader(subset, batch_size=None, num_workers=max(0, workers))
    yield from loader


def inference_scale(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= MAX_INFERENCE_SCALE:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_INFERENCE_SCALE:g}], got {text}")
    return value


def build_method(args: argparse.Namespace):
    """(object with predict(left, right), description dict, class names or None, palette): the
    network of --checkpoint, else the first --sgbm preset."""
    if args.checkpoint is None and args.sgbm:
        return build_sgbm(args.sgbm if isinstance(args.sgbm, str) else args.sgbm[0])
    predictor = Predictor(args.checkpoint, device=args.device, precision=args.precision,
                          backend=args.backend, inference_scale=args.inference_scale)
    payload = predictor.payload
    description = {"method": "pmt", "checkpoint": str(args.checkpoint),
                   "model_config": payload.get("model_config"),
                   "training_step": payload.get("step", payload.get("progress", {}).get("step")),
                   "parameters": count_parameters(predictor.model)
                   if isinstance(predictor.model, torch.nn.Module) else None,
                   "quantization": payload.get("quantization"),
                   "device": str(predictor.device), "precision": args.precision,
                   "inference_scale": predictor.inference_scale,
                   "runtime": predictor.describe()}
    return predictor, description, list(predictor.class_names), predictor.palette


def build_sgbm(preset: str):
    baseline = SGBMBaseline(preset)
    return baseline, {**baseline.describe(), "preset": preset}, None, None


def method_name(description: dict[str, Any]) -> str:
    return f"sgbm_{description['preset']}" if "preset" in description else description["method"]


def predict_sample(method: Any, sample: dict[str, Any], *, warmup: int = 0) -> Any:
    """One prediction of `method` on `sample` (after `warmup` untimed passes: the first passes
    allocate and pick kernels). The warm-up makes the very call that is timed: a Predictor
    asked for extras runs another exported graph than a plain one, and OpenVINO compiles that
    graph for a new size on its first call (about 0.6 s, which a one-pair dataset's only timed
    call would otherwise carry)."""
    for _ in range(warmup):
        _predict(method, sample)
    return _predict(method, sample)


def _predict(method: Any, sample: dict[str, Any]) -> Any:
    if isinstance(method, Predictor):
        return method.predict(sample["left"], sample["right"], extras=True)
    return method.predict(sample["left"], sample["right"])


def prediction_pairs(method: Any, samples: Iterator[dict[str, Any]], *,
                     warmup: int) -> Iterator[tuple[dict[str, Any], Any]]:
    for index, sample in enumerate(samples):
        yield sample, predict_sample(method, sample, warmup=warmup if index == 0 else 0)


@stops_cleanly
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is None and args.sgbm is None:
        if load_data_config(args.data).dataset != "bag":
            parser.error("one of the arguments --checkpoint --sgbm is required (or --data bag)")
        args.checkpoint = shipped_checkpoint()  # the node's choice when its checkpoint is ""
        if args.checkpoint is None:
            raise SystemExit("pmt-evaluate: no --checkpoint and no shipped models/*.pt")
    try:
        return evaluate(args)
    except (CheckpointError, BagError) as error:
        # A refused checkpoint or a broken bag is a user error, not a crash: one clear line,
        # exit code 2.
        print(f"pmt-evaluate: {error}", file=sys.stderr)
        return 2


def evaluate(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset, data_config, split = load_dataset(args.data, args.data_root, args.split, args.scale,
                                               loader=bag_loader_overrides(args))
    stream = is_stream(dataset)
    if not stream and len(dataset) == 0:
        raise SystemExit(f"pmt-evaluate: split {split!r} of {args.data} is empty")
    methods = [build_method(args)]
    if args.checkpoint is not None:
        methods += [build_sgbm(preset) for preset in args.sgbm or ()]
    elif args.sgbm:
        methods += [build_sgbm(preset) for preset in args.sgbm[1:]]
    dataset_classes = list(dataset.class_names)
    _method, description, class_names, palette = methods[0]
    if dataset_classes and class_names is not None and class_names != dataset_classes:
        raise SystemExit(f"pmt-evaluate: the checkpoint's classes {class_names} differ from "
                         f"the dataset's {dataset_classes}")
    # Disparity-only data (no classes): a network's own classes keep its labels for the figure.
    classes = dataset_classes or list(class_names or [])
    palette = np.asarray(palette if palette is not None else dataset.palette, dtype=np.uint8)
    start = time.perf_counter()
    accumulators = [EvaluationAccumulator(num_classes=len(classes), class_names=classes,
                                          figure_samples=args.figure_samples) for _ in methods]
    # A stream (bag) also gets per-frame timing and stability of the first method's outputs.
    frame_statistics = FrameStatistics(len(classes)) if stream else None
    samples = iterate_samples(dataset, limit=args.limit, workers=args.workers)
    for index, sample in enumerate(samples):   # every method on the same decoded sample
        for number, ((method, *_rest), accumulator) in enumerate(zip(methods, accumulators)):
            warmup = args.warmup if index == 0 else 0
            prediction = predict_sample(method, sample, warmup=warmup)
            accumulator.add(sample, prediction)
            if frame_statistics is not None and number == 0:
                frame_statistics.add(sample, prediction)
    accumulator = accumulators[0]
    if stream and accumulator.count == 0:
        read = dataset.describe()
        print(f"pmt-evaluate: bag {read['bag']}: no synchronized stereo frames "
              f"({read['left_images']} left images, {len(read['unreadable_sets'])} unreadable "
              "sets; try --approximate-sync or the topic options)", file=sys.stderr)
        return 2
    report = accumulator.report()
    if frame_statistics is not None:
        report.update(frame_statistics.report(classes))
    report["method"] = description
    report["dataset"] = {"data_config": args.data, "dataset": data_config.dataset,
                         "root": args.data_root or data_config.root, "split": split,
                         "limit": args.limit, "scale": args.scale,
                         **(dataset.describe() if stream else {})}
    baselines = [(method_name(desc), other, desc)
                 for (_m, desc, _c, _p), other in zip(methods[1:], accumulators[1:])]
    return write_outputs(report, accumulator, palette, args=args, description=description,
                         start=start, baselines=baselines)


def write_outputs(report: dict[str, Any], accumulator: Any, palette: Any, *,
                  args: argparse.Namespace, description: dict[str, Any], start: float,
                  baselines: Sequence[tuple[str, Any, dict[str, Any]]] = ()) -> int:
    """Timing fields, the comparison rows, report.json and the figures into args.out, and a
    summary; shared by dataset and bag evaluation so both write the same report. `baselines`:
    (name, accumulator, description) of further methods scored on the same samples."""
    report["timing"].update(device=description.get("device", "cpu"),
                            precision=description.get("precision"),
                            torch_threads=torch.get_num_threads(),
                            warmup_passes=args.warmup,
                            wall_seconds=time.perf_counter() - start)
    others = {}
    for name, other, other_description in baselines:
        scores = other.report()
        others[name] = {"method": other_description, "segmentation": scores["segmentation"],
                        "disparity": scores["disparity"], "timing": scores["timing"]}
    if others:
        report["baselines"] = others
    report["comparison"] = [comparison_row(method_name(description), report),
                            *(comparison_row(name, scores) for name, scores in others.items())]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "report.json", report)
    figures = write_all_figures(args.out, accumulator, np.asarray(palette, dtype=np.uint8))
    if accumulator.figure_rows:
        rows = [(method_name(description), accumulator.figure_rows),
                *((name, other.figure_rows) for name, other, _d in baselines)]
        figures.append(write_error_maps(args.out / "error_maps.png", rows))
    if args.json:
        print(json.dumps(json_ready(report), indent=2))
    else:
        print(summary_line(report), file=sys.stderr)
        if others:
            print(comparison_table(report["comparison"]), file=sys.stderr)
        print(f"wrote {args.out / 'report.json'} and {', '.join(p.name for p in figures)}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
