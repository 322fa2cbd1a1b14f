"""What a faster `edge` would cost: candidate configs (edge.yaml + overrides, untrained) on the
node's CPU runtime, next to LR-ASPP MobileNetV3-Large + SGBM, in one run.

Issue 11 asks `edge` for <= 0.8x the two networks' s/frame at 480x720. This measures how far
cutting parts of `edge` goes before any of it is trained: speed does not depend on the weights,
accuracy does (models/README.md has the trained ones). Rows are bench/inference.py's (the same
Predictor path, pair and timing), so they compare with its `edge` row.

    .venv/bin/python bench/edge_candidates.py [--backend openvino --precision bf16] [--markdown FILE]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# name -> overrides of config/model/edge.yaml; each row adds one cut to the previous ones.
CANDIDATES = {
    "edge (shipped graph)": {},
    "+ MobileNetV3-Small backbone": {"backbone": "mobilenet_v3_small"},
    "+ disparity range 0..128 px": {"max_disparity": 128},
    "+ no H/4 disparity refinement (convex x8)": {"disparity_refinement_scale": 0},
    "+ branch width 3/8": {"branch_width": 0.375},
}


def load_cpu_bench():
    spec = importlib.util.spec_from_file_location("cpu_inference_bench", ROOT / "bench" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_row(row: dict) -> dict:
    """One bench/inference.py row in a fresh process, as that benchmark runs each of its rows:
    rows measured in one process disturbed each other (a PMT row after the two-network row
    took 1.6x its time alone: the runtimes' worker threads outlive their models)."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "inference.py"), "--one",
                           json.dumps(row)], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--size", default="480x720")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--markdown", help="append the table to this file")
    options = parser.parse_args()
    size = [int(v) for v in options.size.split("x")]
    bench = load_cpu_bench()
    edge = yaml.safe_load((ROOT / "config" / "model" / "edge.yaml").read_text())
    common = {"backend": options.backend, "precision": options.precision, "size": size,
              "repeats": options.repeats}

    rows, overrides, load = [], {}, os.getloadavg()
    two_nets = run_row({"kind": "two_nets", "variant": bench.TWO_NETS, **common})
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, cut) in enumerate(CANDIDATES.items()):
            overrides.update(cut)
            config = Path(folder) / f"candidate{index}.yaml"
            config.write_text(yaml.safe_dump({**edge, **overrides}))
            result = run_row({"kind": "pmt", "variant": str(config), **common})
            rows.append((name, result))
            print(f"{name:44s} {result['seconds'] * 1000:6.1f} ms  "
                  f"x{result['seconds'] / two_nets['seconds']:.2f}  {result['gflop']:5.2f} GFLOP",
                  flush=True)
    print(f"{'LR-ASPP MobileNetV3-Large + SGBM':44s} {two_nets['seconds'] * 1000:6.1f} ms", flush=True)

    info = bench.machine()
    lines = [f"### `edge` candidates, untrained ({datetime.date.today()})", "",
             f"Command: `python bench/edge_candidates.py --backend {options.backend} --precision "
             f"{options.precision}`  ",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['isa']}, {info['bf16']}, "
             f"no GPU; {options.size}, batch 1, median of "
             f"{options.repeats}; load average before / after {load[0]:.1f} / "
             f"{os.getloadavg()[0]:.1f}. Each row adds its cut to the rows above it.", "",
             "| config | s/frame | x two networks | GFLOP |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['seconds']:.3f} | {r['seconds'] / two_nets['seconds']:.2f} | "
              f"{r['gflop']:.1f} |" for name, r in rows]
    lines += [f"| LR-ASPP MobileNetV3-Large + SGBM ({two_nets['runtime']}) | "
              f"{two_nets['seconds']:.3f} | 1.00 | {two_nets['gflop']:.1f} + SGBM |", ""]
    if options.markdown:
        with open(options.markdown, "a") as out:
            out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
