"""Where a model's disparity errors lie: D1 (|error| > 3 px) by distance to a ground-truth depth
edge and by ground-truth disparity, summed over a dataset's valid pixels.

A matching head at H/8 knows that a cell holds a depth edge, not where inside it the edge
runs: its errors gather within a few pixels of depth edges (the foreground grows into the
background). This script measures how much of D1 that is, for one or more checkpoints.

    .venv/bin/python scripts/depth_edge_errors.py --checkpoint models/pmt_synthetic_edge.pt \\
        --data middlebury --data-root ../shared/data/real_stereo/aloe --scale 0.5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pmt_perception.evaluate import load_dataset  # noqa: E402  (after the path insert)
from pmt_perception.inference import Predictor  # noqa: E402

EDGE_STEP_PX = 2.0   # a ground-truth disparity step above this between neighbours is a depth edge
DISTANCE_BINS = [(0, 2), (2, 4), (4, 8), (8, 16), (16, np.inf)]
DISPARITY_BINS = [(0, 30), (30, 45), (45, 60), (60, 75), (75, 90), (90, np.inf)]


def distance_to_depth_edges(disparity: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels to the nearest pixel whose ground-truth disparity steps by > EDGE_STEP_PX."""
    gt = np.where(valid, disparity, 0).astype(np.float32)
    step = np.zeros_like(gt, dtype=bool)
    step[:, 1:] |= np.abs(np.diff(gt, axis=1)) > EDGE_STEP_PX
    step[1:, :] |= np.abs(np.diff(gt, axis=0)) > EDGE_STEP_PX
    step &= valid
    return cv2.distanceTransform((~step).astype(np.uint8), cv2.DIST_L2, 3)


def table(title: str, bins, key: np.ndarray, errors: np.ndarray) -> list[str]:
    total_errors = max(1, int(errors.sum()))
    lines = [f"| {title} | share of pixels | D1 | share of all errors |", "|---|---|---|---|"]
    for low, high in bins:
        inside = (key >= low) & (key < high)
        name = f"{low:g}+" if np.isinf(high) else f"{low:g}-{high:g}"
        d1 = 100 * errors[inside].mean() if inside.any() else float("nan")
        lines.append(f"| {name} | {100 * inside.mean():.1f} % | {d1:.1f} % | "
                     f"{100 * errors[inside].sum() / total_errors:.1f} % |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="repeatable")
    parser.add_argument("--data", default="middlebury")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default=None)
    parser.add_argument("--scale", type=float, default=None, help="the loader's evaluation scale")
    parser.add_argument("--inference-scale", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=None, help="at most this many pairs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset, _, split = load_dataset(args.data, args.data_root, args.split, args.scale)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    for checkpoint in args.checkpoint:
        predictor = Predictor(checkpoint, inference_scale=args.inference_scale)
        distances, disparities, errors = [], [], []
        for index in range(count):
            sample = dataset[index]
            gt = np.asarray(sample["disparity"], np.float32)   # H x W; invalid: 0, < 0 or NaN
            valid = np.isfinite(gt) & (gt > 0)
            predicted = predictor.predict(sample["left"], sample["right"]).disparity
            distances.append(distance_to_depth_edges(gt, valid)[valid])
            disparities.append(gt[valid])
            errors.append(np.abs(predicted - gt)[valid] > 3.0)
        distance, disparity, error = map(np.concatenate, (distances, disparities, errors))
        print(f"\n{checkpoint} on {args.data} {split} ({count} pairs, scale {args.scale}, "
              f"inference_scale {args.inference_scale}): D1 {100 * error.mean():.2f} %\n")
        print("\n".join(table("px to a depth edge", DISTANCE_BINS, distance, error)))
        print()
        print("\n".join(table("GT disparity (px)", DISPARITY_BINS, disparity, error)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
