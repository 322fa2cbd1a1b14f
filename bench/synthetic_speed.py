"""Synthetic stereo generator throughput on ONE core: pairs/s at the sizes training uses.

    .venv/bin/python bench/synthetic_speed.py --sizes 256x512 480x720 --pairs 30

OpenCV is pinned to one thread (numpy's element-wise work is single-threaded anyway), so the
number is what one DataLoader worker delivers; N workers on N free cores deliver about N times it.
Each pair is a new random scene (seeds 0..pairs-1 of the train split), rendered from both eyes,
with the camera response applied; writing PNGs (pmt-synth) is not included.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pmt_perception.data.synthetic import generate_pair, load_generator_settings, sample_seed  # noqa: E402


def measure(size: tuple[int, int], pairs: int, warmup: int) -> dict:
    settings = load_generator_settings()
    for index in range(warmup):
        generate_pair(settings, seed=sample_seed(settings.seed, "val", index), size=size)
    wall, cpu = [], []
    for index in range(pairs):
        start, start_cpu = time.perf_counter(), time.process_time()
        generate_pair(settings, seed=sample_seed(settings.seed, "train", index), size=size)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    wall, cpu = np.array(wall), np.array(cpu)
    # CPU time is the number to quote on a shared machine: wall time also counts the time other
    # processes held the core.
    return {"size": f"{size[0]}x{size[1]}", "pairs": pairs,
            "pairs_per_cpu_second": round(1.0 / cpu.mean(), 2),
            "pairs_per_wall_second": round(1.0 / wall.mean(), 2),
            "cpu_ms_per_pair_mean": round(1000 * cpu.mean(), 1),
            "cpu_ms_per_pair_median": round(1000 * np.median(cpu), 1),
            "cpu_ms_per_pair_p90": round(1000 * np.percentile(cpu, 90), 1),
            "wall_ms_per_pair_mean": round(1000 * wall.mean(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["256x512", "480x720"])
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    sizes = [tuple(int(v) for v in text.split("x")) for text in args.sizes]
    results = [measure(size, args.pairs, args.warmup) for size in sizes]
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "load_average_1min": round(os.getloadavg()[0], 2), "results": results}, indent=2))


if __name__ == "__main__":
    main()
