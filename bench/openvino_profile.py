"""Where a frame's time goes in OpenVINO, and what one graph costs next to another: exported
models (`pmt-export`) on the node's lean uint8 graph, their frames alternated in one process (a
shared host's slow spells then land on every file alike), each with its wall time, its per-node
times summed by a part of their names, and its slowest nodes.

    .venv/bin/pmt-export models/pmt_synthetic_edge.pt --out runs/profile/edge.onnx
    .venv/bin/pmt-export models/pmt_synthetic_edge_no_refinement.pt --out runs/profile/h8.onnx
    .venv/bin/python bench/openvino_profile.py runs/profile/h8.onnx runs/profile/edge.onnx \
        [--group /model/disparity_refinement] [--top 10] [--size 480x736] [--precision bf16]

A `--group` (a part of node names, repeatable) prints its nodes' total and share of the frame;
`--top` the slowest nodes of the first group (of the whole graph without one).
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pmt_perception.onnx_runners import OpenVinoModel  # noqa: E402  (after the path insert)


def frame_profile(model: OpenVinoModel) -> dict[str, tuple[str, float]]:
    """node name -> (type, ms) of the frame the model just ran."""
    # The compiled lean graph keeps its one infer request in a queue: borrow it to read it.
    requests = next(iter(model._compiled.values()))[1]
    request = requests.get()
    requests.put(request)
    return {node.node_name: (node.node_type, node.real_time.total_seconds() * 1e3)
            for node in request.profiling_info}


def profile(models: list[OpenVinoModel], left: np.ndarray, right: np.ndarray, frames: int):
    """For each model, (wall seconds of each frame, node name -> (type, mean ms a frame)),
    the models' frames alternated."""
    for model in models:
        model.properties["PERF_COUNT"] = "YES"
        for _ in range(3):                     # compile and warm up
            model.labels_and_disparity_u8(left, right)
    walls = [[] for _ in models]
    totals = [collections.Counter() for _ in models]
    types: dict[str, str] = {}
    for _ in range(frames):
        for index, model in enumerate(models):
            start = time.perf_counter()
            model.labels_and_disparity_u8(left, right)
            walls[index].append(time.perf_counter() - start)
            for name, (kind, ms) in frame_profile(model).items():
                totals[index][name] += ms / frames
                types[name] = kind
    return [(wall, {name: (types[name], ms) for name, ms in total.items()})
            for wall, total in zip(walls, totals)]


def report(path: Path, walls: list[float], nodes: dict, reference: float, options) -> None:
    wall = statistics.median(walls)
    frame_ms = sum(ms for _, ms in nodes.values())
    print(f"{path.name}: wall {wall * 1e3:.1f} ms a frame (median of {options.frames}, "
          f"x{wall / reference:.3f} the first file); nodes {frame_ms:.1f} ms in {len(nodes)}")
    for part in options.group:
        members = [ms for name, (_, ms) in nodes.items() if part in name]
        print(f"  {part}: {sum(members):.2f} ms in {len(members)} nodes, "
              f"{100 * sum(members) / frame_ms:.1f} % of the frame")
    first = options.group[0] if options.group else ""
    shown = sorted(((ms, kind, name) for name, (kind, ms) in nodes.items() if first in name),
                   reverse=True)[:options.top]
    for ms, kind, name in shown:
        print(f"    {ms:6.2f} ms  {kind:18s} {name[:100]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx", type=Path, nargs="+")
    parser.add_argument("--group", action="append", default=[],
                        help="total the nodes whose names contain this, e.g. /model/disparity_refinement")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--size", default="480x736", help="H x W of the pair (multiples of 32)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)    # OpenVINO takes torch's thread count
    height, width = (int(v) for v in options.size.split("x"))
    left = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    right = np.roll(left, -16, axis=2)        # a 16-px shift: the matching has work to do
    models = [OpenVinoModel(str(path), precision=options.precision) for path in options.onnx]
    results = profile(models, left, right, options.frames)
    reference = statistics.median(results[0][0])
    print(f"{options.size}, OpenVINO {options.precision}, {options.threads} threads, "
          f"{options.frames} frames of each file, alternated")
    for path, (walls, nodes) in zip(options.onnx, results):
        report(path, walls, nodes, reference, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
