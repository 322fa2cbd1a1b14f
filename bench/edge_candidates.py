"""What each cut of `edge` buys: configs from run 7's graph to today's (edge.yaml + overrides,
untrained) on the node's CPU runtime, next to LR-ASPP MobileNetV3-Large + SGBM, in one run.

Issue 11 asks `edge` for <= 0.8x the two networks' s/frame at 480x720. This measures how far
cutting parts of `edge` goes before any of it is trained: speed does not depend on the weights,
accuracy does (models/README.md has the trained ones). Rows are bench/inference.py's (the same
Predictor path, pair and timing), so they compare with its `edge` row.

    .venv/bin/python bench/edge_candidates.py [--backend openvino --precision bf16] [--last K]
        [--markdown FILE]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# The graph of `edge` run 7 (models/README.md), whatever config/model/edge.yaml says now.
RUN7_GRAPH = {"backbone": "mobilenet_v3_large", "guide_on_pooled_image": False, "coarse_views": 2,
              "disparity_refinement_scale": 4, "convex_upsample_scale": None, "max_disparity": 192,
              "disparity_patch_guide_channels": 0, "disparity_refinement_channels": 24,
              "disparity_refinement_dilations": [1, 2, 4, 8, 1],
              "disparity_refinement_convex_scale": None}
# name -> overrides; each row adds its cut to the rows above it, from run 7's graph.
CANDIDATES = {
    "edge run 7's graph": RUN7_GRAPH,
    "+ MobileNetV3-Small backbone": {"backbone": "mobilenet_v3_small"},
    "+ L convs on the pooled image": {"guide_on_pooled_image": True},
    "+ right view stops at F2 (coarse branch reads F4_L)": {"coarse_views": 1},
    "+ no H/4 disparity refinement (convex x8)": {"disparity_refinement_scale": 0},
    "+ convex x4, bilinear x2": {"convex_upsample_scale": 4},
    "+ disparity range 0..128 px": {"max_disparity": 128},
    "+ patch guide on the disparity's convex weights (16 ch)": {"disparity_patch_guide_channels": 16},
    # Run 14: an H/4 refinement back, a third of run 7's (16 ch, three layers, convex x2 at
    # H/4: as many convex weights as x4 at H/8).
    "+ light H/4 refinement (16 ch, dilations 1, 2, 4, convex x2)": {
        "disparity_refinement_scale": 4, "disparity_refinement_channels": 16,
        "disparity_refinement_dilations": [1, 2, 4], "disparity_refinement_convex_scale": 2},
}


def load_cpu_bench():
    spec = importlib.util.spec_from_file_location("cpu_inference_bench", ROOT / "bench" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TWO_NETS_NAME = "LR-ASPP MobileNetV3-Large + SGBM"


def median_row(rows: list[dict]) -> dict:
    """The row of median s/frame among `rows` (the same config measured in several rounds)."""
    return sorted(rows, key=lambda r: r["seconds"])[len(rows) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--size", default="480x720")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3,
                        help="run every row this many times, interleaved, and keep each row's "
                             "median (a shared host's speed drifts within minutes)")
    parser.add_argument("--last", type=int, default=0,
                        help="measure only the last K candidates (each still with every cut "
                             "above it), next to the two networks")
    parser.add_argument("--markdown", help="append the table to this file")
    options = parser.parse_args()
    size = [int(v) for v in options.size.split("x")]
    bench = load_cpu_bench()
    edge = yaml.safe_load((ROOT / "config" / "model" / "edge.yaml").read_text())
    common = {"backend": options.backend, "precision": options.precision, "size": size,
              "repeats": options.repeats}

    overrides, load = {}, os.getloadavg()
    configs = []
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, cut) in enumerate(CANDIDATES.items()):
            overrides.update(cut)
            config = Path(folder) / f"candidate{index}.yaml"
            config.write_text(yaml.safe_dump({**edge, **overrides}))
            configs.append((name, {"kind": "pmt", "variant": str(config), **common}))
        configs = configs[-options.last:] if options.last > 0 else configs
        configs.append((TWO_NETS_NAME, {"kind": "two_nets", "variant": bench.TWO_NETS, **common}))
        samples: dict[str, list[dict]] = {name: [] for name, _ in configs}
        for round_index in range(options.rounds):
            # Each round starts one row later: a slow spell of the host lands on other rows.
            shift = round_index % len(configs)
            for name, row in configs[shift:] + configs[:shift]:
                samples[name].append(bench.run_row_in_fresh_process(row))
            print(f"round {round_index + 1}/{options.rounds}: " + ", ".join(
                f"{samples[name][-1]['seconds'] * 1000:.0f}" for name, _ in configs) + " ms", flush=True)
    results = {name: median_row(rows) for name, rows in samples.items()}
    two_nets = results.pop(TWO_NETS_NAME)
    rows = list(results.items())
    for name, result in rows:
        print(f"{name:52s} {result['seconds'] * 1000:6.1f} ms  "
              f"x{result['seconds'] / two_nets['seconds']:.2f}  {result['gflop']:5.2f} GFLOP", flush=True)
    print(f"{TWO_NETS_NAME:52s} {two_nets['seconds'] * 1000:6.1f} ms", flush=True)

    info = bench.machine()
    lines = [f"### `edge` candidates, untrained ({datetime.date.today()})", "",
             f"Command: `python bench/edge_candidates.py --backend {options.backend} --precision "
             f"{options.precision} --rounds {options.rounds}"
             f"{f' --last {options.last}' if options.last > 0 else ''}`  ",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['isa']}, {info['bf16']}, "
             f"no GPU; {options.size}, batch 1, median of {options.repeats} frames, "
             f"median of {options.rounds} interleaved rounds; load average before / after {load[0]:.1f} / "
             f"{os.getloadavg()[0]:.1f}. Each row adds its cut to the rows above it.", "",
             "| config | s/frame (median of rounds) | each round | x two networks | GFLOP |",
             "|---|---|---|---|---|"]

    def each_round(name: str) -> str:
        return " / ".join(f"{sample['seconds']:.3f}" for sample in samples[name])
    lines += [f"| {name} | {r['seconds']:.3f} | {each_round(name)} | "
              f"{r['seconds'] / two_nets['seconds']:.2f} | {r['gflop']:.1f} |" for name, r in rows]
    lines += [f"| {TWO_NETS_NAME} ({two_nets['runtime']}) | {two_nets['seconds']:.3f} | "
              f"{each_round(TWO_NETS_NAME)} | 1.00 | {two_nets['gflop']:.1f} + SGBM |", ""]
    if options.markdown:
        with open(options.markdown, "a") as out:
            out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
