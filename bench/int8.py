"""INT8 against fp32, side by side: the Predictor on an fp32 and an int8 (`pmt-export --int8`)
ONNX file of the same checkpoint, calls interleaved, batch 1, synthetic input.

    .venv/bin/pmt-export models/pmt_synthetic_edge.pt --out runs/int8/edge_fp32.onnx
    .venv/bin/pmt-export models/pmt_synthetic_edge.pt --out runs/int8/edge_int8.onnx --int8
    .venv/bin/python bench/int8.py runs/int8/edge_fp32.onnx runs/int8/edge_int8.onnx \
        [--markdown bench/RESULTS.md]

Accuracy is not measured here: `pmt-evaluate --checkpoint FILE.onnx --backend openvino` does.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pmt_perception.inference import Predictor  # noqa: E402  (after the path insert)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help=".onnx files (fp32 and int8 exports)")
    parser.add_argument("--backend", default="openvino", choices=("openvino", "onnxruntime"))
    parser.add_argument("--size", default="480x720")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--markdown", type=Path, help="append the table to this file")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    right = np.roll(left, -16, axis=1)
    predictors = {path: Predictor(path, backend=args.backend) for path in args.models}
    for predictor in predictors.values():
        predictor.predict(left, right)  # the graph build for this size
    seconds = {path: [] for path in predictors}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):  # interleaved: a load change hits every row alike
        for path, predictor in predictors.items():
            start = time.perf_counter()
            predictor.predict(left, right)
            seconds[path].append(time.perf_counter() - start)
    rows = ["| model | runtime | s/frame (median) | Hz |", "|---|---|---|---|"]
    for path, predictor in predictors.items():
        median = statistics.median(seconds[path])
        rows.append(f"| {path} | {predictor.describe()} | {median:.3f} | {1 / median:.1f} |")
    header = (f"Command: `python bench/int8.py {' '.join(sys.argv[1:])}`  \n"
              f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
              f"threads; {datetime.date.today()}; {args.size}, batch 1, {args.repeats} calls each; "
              f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after.")
    text = header + "\n\n" + "\n".join(rows) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as handle:
            handle.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
