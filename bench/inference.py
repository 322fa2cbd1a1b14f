"""Inference speed benchmark: variant x precision x backend x resolution, plus classical and
two-network baselines, measured in one run.

    .venv/bin/python bench/inference.py                 # default table (~10 min on 2 cores)
    .venv/bin/python bench/inference.py --quick         # 256x512 and 480x720 only
    .venv/bin/python bench/inference.py --markdown bench/RESULTS.md   # also append the table

Each row runs in a fresh subprocess so its peak RSS is its own. Times are the median of N
predictions after warm-up, through the Predictor (pre/post-processing included) and the
model alone; GFLOP is counted on the meta device (pmt-info).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (kind, variant, precision, backend, size, repeats)
DEFAULT_ROWS = [
    ("pmt", "paper", "fp32", "eager-unfolded", (480, 720), 2),
    ("pmt", "paper", "fp32", "eager", (480, 720), 2),
    ("pmt", "paper", "bf16", "eager", (480, 720), 3),
    ("pmt", "fast", "fp32", "eager", (480, 720), 3),
    ("pmt", "fast", "bf16", "eager", (256, 512), 5),
    ("pmt", "fast", "bf16", "eager", (480, 720), 5),
    ("pmt", "fast", "bf16", "eager", (1024, 2048), 2),
    ("pmt", "fast", "fp32", "onnxruntime", (480, 720), 3),
    ("pmt", "fast_mobile", "bf16", "eager", (480, 720), 5),
    ("sgbm", "stereo_image_proc", "-", "opencv", (480, 720), 5),
    ("sgbm", "tuned", "-", "opencv", (480, 720), 5),
    ("two_nets", "lraspp_mobilenet_v3_large+sgbm", "bf16", "eager", (480, 720), 5),
    ("two_nets", "deeplabv3_resnet50+sgbm", "bf16", "eager", (480, 720), 3),
]
QUICK_SIZES = {(256, 512), (480, 720)}


def stereo_pair(size):
    import numpy as np
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    return left, np.roll(left, -16, axis=1)


def time_calls(call, repeats, warmup=1):
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_pmt(variant, precision, backend, size, repeats):
    import torch
    from pmt_perception.config import load_model_config
    from pmt_perception.export import export_onnx
    from pmt_perception.inference import Predictor
    from pmt_perception.info import count_gflops
    from pmt_perception.network import build_model

    torch.manual_seed(0)
    config = load_model_config(variant)
    model = build_model(config).eval()
    source = model
    if backend == "onnxruntime":
        source = export_onnx(model, Path(tempfile.mkdtemp()) / "m.onnx", size=size)
    # "eager-unfolded": the plain published graph, BatchNorm not folded into the convolutions.
    predictor = Predictor(source, device="cpu", precision=precision, compile=backend == "compile",
                          fold_bn=backend != "eager-unfolded")
    left, right = stereo_pair(size)
    warmup = predictor.warmup(size, iterations=1)
    timings = []
    total = time_calls(lambda: timings.append(predictor.predict(left, right).timings), repeats, 0)
    model_s = statistics.median(t["model"] for t in timings)
    overhead = statistics.median(t["pre"] + t["post"] for t in timings)
    gflop = count_gflops(config, size)["total"]
    return {"seconds": total, "model_seconds": model_s, "overhead_seconds": overhead,
            "gflop": gflop, "gflops_per_s": gflop / model_s, "warmup_seconds": warmup}


def sgbm_matcher(setting):
    import cv2
    if setting == "stereo_image_proc":
        # stereo_image_proc's SGBM defaults: window 15, 64 disparities, uniqueness 15,
        # speckle 100/4, P1=200, P2=400, disp12MaxDiff 0, prefilter cap 31.
        return cv2.StereoSGBM_create(minDisparity=0, numDisparities=64, blockSize=15, P1=200,
                                     P2=400, disp12MaxDiff=0, preFilterCap=31, uniquenessRatio=15,
                                     speckleWindowSize=100, speckleRange=4)
    # Tuned for 480x720 scenes with up to ~128 px disparity.
    return cv2.StereoSGBM_create(minDisparity=0, numDisparities=128, blockSize=5, P1=8 * 3 * 25,
                                 P2=32 * 3 * 25, disp12MaxDiff=1, preFilterCap=63,
                                 uniquenessRatio=10, speckleWindowSize=100, speckleRange=2,
                                 mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)


def run_sgbm(setting, size, repeats):
    import cv2
    left, right = stereo_pair(size)
    grey = [cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in (left, right)]
    matcher = sgbm_matcher(setting)
    seconds = time_calls(lambda: matcher.compute(*grey), repeats)
    return {"seconds": seconds, "model_seconds": seconds}


def run_two_nets(name, precision, size, repeats):
    import torch
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    seg_name = name.split("+")[0]
    net = torchvision.models.get_model(seg_name, weights=None, weights_backbone=None,
                                       num_classes=19).eval()
    left, right = stereo_pair(size)
    image = torch.from_numpy(left).permute(2, 0, 1).float().div(255).unsqueeze(0)
    matcher = sgbm_matcher("tuned")
    import cv2
    grey = [cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in (left, right)]

    def segment():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=precision == "bf16"):
            return net(image)["out"].argmax(1)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net(image)
    seg_s = time_calls(segment, repeats)
    sgbm_s = time_calls(lambda: matcher.compute(*grey), repeats)
    gflop = counter.get_total_flops() / 1e9
    return {"seconds": seg_s + sgbm_s, "model_seconds": seg_s, "gflop": gflop,
            "gflops_per_s": gflop / seg_s, "sgbm_seconds": sgbm_s}


def run_row(kind, variant, precision, backend, size, repeats):
    import torch
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if kind == "pmt":
        result = run_pmt(variant, precision, backend, size, repeats)
    elif kind == "sgbm":
        result = run_sgbm(variant, size, repeats)
    else:
        result = run_two_nets(variant, precision, size, repeats)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def fmt(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def markdown_table(rows, command):
    lines = [f"### Inference speed ({datetime.date.today()}, `{command}`)", "",
             f"Machine: {platform.processor() or platform.machine()}, "
             f"{__import__('os').cpu_count()} cores, no GPU; torch "
             f"{__import__('torch').__version__}. Batch 1, one stereo pair; median of N.", "",
             "| model | variant | precision | backend | size | s/frame | model s | overhead | GFLOP | GFLOP/s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row["result"]
        overhead = r.get("overhead_seconds")
        overhead_pct = f"{100 * overhead / r['model_seconds']:.1f} %" if overhead is not None else "-"
        lines.append(f"| {row['kind']} | {row['variant']} | {row['precision']} | {row['backend']} | "
                     f"{row['size'][0]}x{row['size'][1]} | {fmt(r.get('seconds'), '.3f')} | "
                     f"{fmt(r.get('model_seconds'), '.3f')} | {overhead_pct} | "
                     f"{fmt(r.get('gflop'), '.1f')} | {fmt(r.get('gflops_per_s'), '.0f')} | "
                     f"{fmt(r.get('peak_rss_mb'), '.0f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only 256x512 and 480x720")
    parser.add_argument("--only", default=None, help="substring filter on 'kind/variant/precision/backend'")
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    parser.add_argument("--json", default=None, help="write all rows as JSON here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one row
    args = parser.parse_args(argv)
    if args.one:
        kind, variant, precision, backend, h, w, repeats = json.loads(args.one)
        print(json.dumps(run_row(kind, variant, precision, backend, (h, w), repeats)))
        return 0
    rows = []
    for kind, variant, precision, backend, size, repeats in DEFAULT_ROWS:
        if args.quick and size not in QUICK_SIZES:
            continue
        if args.only and args.only not in f"{kind}/{variant}/{precision}/{backend}":
            continue
        spec = json.dumps([kind, variant, precision, backend, *size, repeats])
        done = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True,
                              text=True, cwd=ROOT)
        if done.returncode != 0:
            print(f"FAILED {spec}:\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({"kind": kind, "variant": variant, "precision": precision,
                     "backend": backend, "size": list(size), "result": result})
        print(f"{kind:9s} {variant:28s} {precision:5s} {backend:12s} {size[0]}x{size[1]:<5d} "
              f"{result['seconds']:.3f} s/frame  (model {result['model_seconds']:.3f} s, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB)", flush=True)
    table = markdown_table(rows, "python bench/inference.py " + " ".join(argv or sys.argv[1:]))
    print(table)
    paper = next((r for r in rows if r["variant"] == "paper" and r["precision"] == "fp32"), None)
    fast = [r for r in rows if r["variant"].startswith("fast") and tuple(r["size"]) == (480, 720)]
    if paper and fast:
        best = min(fast, key=lambda r: r["result"]["seconds"])
        ratio = paper["result"]["seconds"] / best["result"]["seconds"]
        print(f"best fast at 480x720: {best['variant']} {best['precision']} {best['backend']} "
              f"{best['result']['seconds']:.3f} s/frame = {ratio:.1f}x faster than paper fp32 eager")
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as handle:
            handle.write("\n" + table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
