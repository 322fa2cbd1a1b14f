"""The fresh-machine demo: the real ROS graph, three processes, shared-memory DDS, bounded time.

    stereo_source ──left/right image_rect + camera_info──> stereo_seg_node ──seg, disparity,
        (synthetic scenes)                                  (PMT network)      points2──> monitor

The monitor listens like a planner would, then the demo prints rates and end-to-end latency
and leaves a few frames in --out (segmentation overlay, colorized disparity, PLY cloud).
`--offline` skips ROS: one synthetic pair through the Predictor, images written.

    python -m pmt_perception.demo                 # ~30 s, writes out/demo/
    python -m pmt_perception.demo --offline
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pmt_perception.checkpoint import load_network, shipped_checkpoint
from pmt_perception.cli import parse_size
from pmt_perception.data.synthetic import generate_pair, load_generator_settings
from pmt_perception.geometry import write_ply
from pmt_perception.inference import Predictor
from pmt_perception.visualize import colorize_disparity, overlay, write_png_rgb

# The ROS graph's modules (pmt_perception.ros) are imported in run_graph / report only, so
# --offline runs where rclpy is not installed: the one seam for ROS outside pmt_perception/ros.

__all__ = ["main"]

DEFAULT_DOMAIN_ID = 47
# 256x320: the `fast` DenseNet variant's SPP windows need 256 px, so smaller frames are padded
# to 256 anyway and cost the same; 256x320 is the cheapest size with a real image behind it.
DEFAULT_SIZE = (256, 320)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="pmt-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=12.0,
                        help="seconds of monitoring after the first output (default 12)")
    parser.add_argument("--startup-timeout", type=float, default=90.0,
                        help="most seconds to wait for the first output (model loading)")
    parser.add_argument("--size", type=lambda text: parse_size(text, minimum=32), default=DEFAULT_SIZE,
                        help="HxW of the frames")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate, Hz (default 10)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    parser.add_argument("--checkpoint", default="", help="model checkpoint (default: models/*.pt, "
                        "else an untrained network)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--domain-id", type=int, default=DEFAULT_DOMAIN_ID,
                        help="ROS_DOMAIN_ID, 1-101 (default %(default)s)")
    parser.add_argument("--offline", action="store_true",
                        help="no ROS: run the Predictor on one synthetic pair and write images")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser.parse_args(argv)


def describe_model(checkpoint: str) -> str:
    if checkpoint:
        return f"checkpoint {checkpoint}"
    shipped = shipped_checkpoint()
    if shipped is not None:
        return f"shipped model {shipped}"
    return ("an UNTRAINED 'fast' network (random weights, seed 0): models/ holds no checkpoint, "
            "so the outputs show the pipeline working, not what a trained model sees")


# ----------------------------------------------------------------------------- offline
def run_offline(options) -> int:
    print(f"offline demo: {options.size[0]}x{options.size[1]}, model: "
          f"{describe_model(options.checkpoint)}", flush=True)
    pair = generate_pair(load_generator_settings("synthetic"), seed=0, size=options.size)
    loaded = load_network(options.checkpoint, untrained_variant="fast", untrained_seed=0)
    predictor = Predictor(loaded.model, device=options.device, precision=options.precision,
                          class_names=loaded.class_names, palette=loaded.palette)
    predictor.warmup(options.size, iterations=1)
    prediction = predictor.predict(pair.left, pair.right)
    points = pair.rig.stereo_camera().points_from_disparity(prediction.disparity, max_depth=100.0)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    write_png_rgb(out / "offline_left.png", pair.left)
    write_png_rgb(out / "offline_seg_overlay.png",
                  overlay(pair.left, predictor.colorize(prediction.labels), 0.5))
    write_png_rgb(out / "offline_disparity.png", colorize_disparity(prediction.disparity))
    count = write_ply(out / "offline_points.ply", points, pair.left, prediction.labels)
    timings = {k: round(v * 1e3, 1) for k, v in prediction.timings.items()}
    print(f"predict: {timings} ms; {count} valid points; wrote {out}/offline_*", flush=True)
    return 0 if np.isfinite(prediction.disparity).all() else 1


# ----------------------------------------------------------------------------- online
def run_graph(options) -> int:
    from pmt_perception.ros.env import dds_environment
    from pmt_perception.ros.processes import read_log, start_module, stop_process
    from pmt_perception.ros.shutdown import StopRequest

    height, width = options.size
    print(f"demo: stereo_source {height}x{width} at {options.rate:g} Hz -> stereo_seg_node -> "
          f"monitor for {options.duration:g} s after the first output; shared-memory DDS, "
          f"domain {options.domain_id}")
    print(f"model: {describe_model(options.checkpoint)}")
    if options.size == DEFAULT_SIZE:
        print("size: 256x320, a small pair every variant takes unpadded (`fast`'s SPP windows "
              "need 256 px; the shipped `edge` takes 128); when the camera outruns the model, old "
              "pairs are dropped (counted below)")
    sys.stdout.flush()
    workdir = Path(tempfile.mkdtemp(prefix="pmt_demo_"))
    env = dds_environment(domain_id=options.domain_id, log_dir=workdir / "ros_logs")
    # No warm-up pass: the first camera frame serves as one, and startup stays shorter.
    node_params = [f"device:={options.device}",
                   f"precision:={options.precision}"]
    if options.checkpoint:
        node_params.append(f"checkpoint:={Path(options.checkpoint).resolve()}")
    source_params = [f"image_size:=[{height},{width}]", f"rate:={float(options.rate)}"]
    summary_path = workdir / "monitor.json"
    processes = {}
    # Ctrl-C / SIGTERM stop the graph (children in their own sessions, stopped one by one) and
    # the demo reports what arrived: exit 0, no traceback (ros/shutdown.py).
    stop = StopRequest().install()
    started = time.monotonic()
    try:
        processes["node"] = start_module(
            "pmt_perception.ros.node", env=env, log_path=workdir / "node.log",
            ros_arguments=[a for p in node_params for a in ("-p", p)])
        processes["source"] = start_module(
            "pmt_perception.ros.stereo_source", env=env, log_path=workdir / "source.log",
            ros_arguments=[a for p in source_params for a in ("-p", p)])
        processes["monitor"] = start_module(
            "pmt_perception.ros.monitor", "--duration", str(options.duration),
            "--startup-timeout", str(options.startup_timeout), "--out",
            str(options.out.resolve()), "--save-frames", "3", "--json", str(summary_path),
            env=env, log_path=workdir / "monitor.log")
        deadline = time.monotonic() + options.startup_timeout + options.duration + 30
        while processes["monitor"].poll() is None and time.monotonic() < deadline:
            if stop.wait(0.2):
                print(f"interrupted ({stop.signal_name}): stopping the graph", flush=True)
                break
    finally:
        codes = {name: stop_process(process) for name, process in reversed(processes.items())}
    elapsed = time.monotonic() - started
    if stop.requested:
        print(f"stopped; logs in {workdir}")
        return 0
    if not summary_path.is_file():
        print(f"the monitor wrote no summary (exit codes {codes}); logs in {workdir}")
        print(read_log(workdir / "node.log"))
        return 1
    summary = json.loads(summary_path.read_text())
    summary["wall_seconds"] = elapsed
    summary["logs"] = str(workdir)
    return report(summary, options, workdir)


def report(summary: dict, options, workdir: Path) -> int:
    from pmt_perception.ros.processes import read_log

    if options.json:
        print(json.dumps(summary, indent=2))
    topics = summary["topics"]
    print(f"\nafter {summary['wall_seconds']:.1f} s (startup and model loading included):")
    for topic, stats in topics.items():
        if stats["count"]:
            print(f"  {topic:10s} {stats['count']:4d} msgs  {stats['rate_hz']:5.2f} Hz  "
                  f"latency stamp->received: mean {stats['latency_ms_mean']:7.1f} ms, "
                  f"p95 {stats['latency_ms_p95']:7.1f} ms")
        else:
            print(f"  {topic:10s} nothing received")
    node = summary.get("node_diagnostics") or {}
    if node:
        print(f"  node: {node.get('frames_published')} frames published, "
              f"{node.get('sets_dropped')} older pairs dropped (camera faster than the model), "
              f"model {float(node.get('predict_model_ms_mean', 'nan')):.0f} ms/frame, "
              f"transport {float(node.get('transport_ms_mean', 'nan')):.1f} ms, "
              f"device {node.get('device')}")
    print(f"  frames written to {options.out}/: " + ", ".join(summary["saved_frames"]))
    print(f"  logs: {workdir}")
    ok = all(stats["count"] > 0 for stats in topics.values()) and summary["saved_frames"]
    if not ok:
        print("FAILED: not every output arrived; the node's log ends with:\n"
              + read_log(workdir / "node.log"))
        return 1
    return 0


def main(args=None) -> int:
    options = parse_args(sys.argv[1:] if args is None else args)
    if options.offline:
        return run_offline(options)
    return run_graph(options)


if __name__ == "__main__":
    sys.exit(main())
