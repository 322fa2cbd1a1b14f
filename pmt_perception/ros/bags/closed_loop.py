"""Close the loop: replay a bag through the live node, record its outputs, score them against
the bag's ground truth, and compare with the offline score of the same model on the same frames.

    python -m pmt_perception.ros.bags.closed_loop --bag runs/bags/synth20 \
        --checkpoint models/pmt_synthetic_fast_r18.pt --out runs/loop --domain-id 61

Runs, as separate processes on shared-memory-only DDS (ros/env.py): stereo_seg_node (reliable
inputs, deep queue), pmt-bag-record (seg, disparity) and pmt-bag-play (the four camera topics).
The node may drop sets when it falls behind; only frames it published are scored (matched by
stamp), and the dropped stamps are listed in the result, not hidden. With --recorded the
processes are skipped and an existing recording is scored.
Output: live/report.json, offline/report.json (+ figures) and closed_loop.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from pmt_perception.atomic import write_json_atomic
from pmt_perception.data.bag import ReadStatistics, read_stereo_frames
from pmt_perception.data.bag_io import BagError, read_messages, typestore
from pmt_perception.data.ros_messages import (
    image_to_numpy,
    raw_disparity_from_disparity_image,
    stamp_nanoseconds,
)
from pmt_perception.evaluate import build_method, prediction_pairs
from pmt_perception.evaluation.figures import write_all_figures
from pmt_perception.evaluation.frame_statistics import score_pairs
from pmt_perception.evaluation.over_time import (
    d1_over_time_figure,
    first_and_last,
    per_frame_disparity,
    recording_per_frame,
)
from pmt_perception.ros.env import dds_environment
from pmt_perception.ros.params import load_defaults
from pmt_perception.ros.processes import read_log, start_module, stop_process
from pmt_perception.ros.shutdown import StopRequest, interrupt_on_stop_signals
from pmt_perception.topics import DISPARITY, SEG, StereoTopics

__all__ = ["build_parser", "main", "recorded_predictions", "score_recording", "compare_reports",
           "run_live"]

COMPARED = (("segmentation", "refined", "miou"), ("segmentation", "refined", "pixel_accuracy"),
            ("disparity", "d1"), ("disparity", "epe"), ("disparity", "rmse"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmt-bag-loop", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bag", type=Path, required=True, help="bag with ground truth")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="the ONE checkpoint the node and the offline evaluation both run")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--recorded", type=Path, default=None,
                        help="score this recording instead of running the node")
    parser.add_argument("--domain-id", type=int, default=60, help="ROS_DOMAIN_ID of the run")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to keep recording after the last frame was played")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="seconds for the node and recorder to come up")
    parser.add_argument("--device", default="cpu", help="torch device of node and offline run")
    parser.add_argument("--no-figures", action="store_true", help="write the JSON reports only")
    parser.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                        help="an extra node parameter (repeatable), e.g. adapt:=true: the node "
                             "then adapts online, live differs from offline by design, and the "
                             "result reports D1 per frame (first vs last 20) instead of "
                             "demanding equality")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest |live - offline| of a compared metric called equal")
    return parser


def recorded_predictions(recorded: Path) -> dict[int, dict[str, Any]]:
    """{stamp: {"labels": msg, "disparity": msg}} of a recording of the node's outputs."""
    store, found = typestore(), {}
    for topic, msgtype, _, data in read_messages(recorded, [SEG, DISPARITY]):
        msg = store.deserialize_cdr(data, msgtype)
        found.setdefault(stamp_nanoseconds(msg), {})[topic] = msg
    return found


def score_recording(bag: Path, recorded: Path, *, class_names, topics=StereoTopics()):
    """(accumulator, report, scored stamps) of the recorded outputs against the bag's ground
    truth; frames of the bag without recorded outputs are listed in report["dropped_stamps"]."""
    outputs = recorded_predictions(recorded)
    read, bag_stamps, pairs = ReadStatistics(), [], []
    for index, frame in enumerate(read_stereo_frames(bag, topics=topics, statistics=read)):
        bag_stamps.append(frame.stamp_ns)
        published = outputs.get(frame.stamp_ns, {})
        if SEG not in published or DISPARITY not in published:
            continue
        # The node publishes disparity adjusted for cx_l - cx_r (stereo_image_proc's
        # convention); the raw value is what the network predicted and what offline scores.
        prediction = SimpleNamespace(
            labels=np.array(image_to_numpy(published[SEG])),
            disparity=raw_disparity_from_disparity_image(published[DISPARITY],
                                                         frame.camera.principal_point_offset,
                                                         mask_invalid=False),
            timings={})
        pairs.append((frame.sample(index, tensors=False), prediction))
    scored = [sample["meta"]["stamp_ns"] for sample, _ in pairs]
    if not pairs:
        raise BagError(f"recording {recorded} holds no seg + disparity for any frame of {bag}")
    accumulator, report = score_pairs(pairs, class_names=class_names)
    report["per_frame"] = per_frame_disparity(pairs)
    report["frames_in_bag"] = len(bag_stamps)
    report["frames_scored"] = len(scored)
    report["dropped_stamps"] = sorted(set(bag_stamps) - set(scored))
    report["unmatched_recorded_stamps"] = sorted(set(outputs) - set(bag_stamps))
    return accumulator, report, scored


def node_parameters(assignments: list[str]) -> dict[str, str]:
    """["adapt:=true", ...] -> {"adapt": "true"}; ValueError on anything else."""
    parameters = {}
    for text in assignments:
        name, separator, value = text.partition(":=")
        if not separator or not name:
            raise ValueError(f"--node-param: expected NAME:=VALUE, got {text!r}")
        parameters[name.strip()] = value.strip()
    return parameters


def adapting(args: argparse.Namespace) -> bool:
    return node_parameters(args.node_param).get("adapt", "false").lower() in ("true", "1")


def _metric(report: dict, path: tuple[str, ...]):
    value = report
    for key in path:
        value = None if value is None else value.get(key)
    return value


def compare_reports(live: dict, offline: dict, tolerance: float) -> dict[str, Any]:
    rows, equal = {}, True
    for path in COMPARED:
        a, b = _metric(live, path), _metric(offline, path)
        same = (a is None and b is None) or (
            a is not None and b is not None and (abs(a - b) <= tolerance
                                                 or (np.isnan(a) and np.isnan(b))))
        rows[".".join(path)] = {"live": a, "offline": b, "equal": bool(same)}
        equal &= bool(same)
    return {"equal": equal, "tolerance": tolerance, "metrics": rows}


class Stopped(Exception):
    """A SIGINT / SIGTERM arrived while the live run was going."""


def run_live(args: argparse.Namespace, recorded: Path, stop=None) -> dict[str, Any]:
    """Start node + recorder, play the bag, stop; returns the player's summary.

    Raises RuntimeError naming the process (with its log) when the node, the recorder or the
    player fails, including a recorder that did not close its bag cleanly; Stopped on a stop
    request (``stop``, a shutdown.StopRequest).
    """
    stop = stop if stop is not None else StopRequest()
    logs = args.out / "logs"
    env = dds_environment(domain_id=args.domain_id, log_dir=logs / "ros")
    topics = StereoTopics()
    # Reliable inputs with deep queues: the bag's frames wait for the node instead of being
    # lost to best-effort delivery; sets the model cannot keep up with are still dropped by
    # the node's newest-wins hand-off, and show up as dropped stamps.
    # The node runs the runtime of the offline reference (eager fp32, as `score` below does):
    # "live equals offline" compares the ROS path, not two runtimes' rounding. Other runtimes
    # are parity-checked against eager fp32 in test_backends.py.
    parameters = {"checkpoint": str(args.checkpoint), "device": args.device,
                  "backend": "eager", "precision": "fp32",
                  "input_reliability": "reliable", "input_depth": 50, "sync_queue_size": 20,
                  "output_depth": 50, "publish_points": "false", "publish_seg_color": "false",
                  **node_parameters(args.node_param)}
    node = start_module("pmt_perception.ros.node", env=env, log_path=logs / "node.log",
                        ros_arguments=[arg for key, value in parameters.items()
                                       for arg in ("-p", f"{key}:={value}")])
    recorder = start_module("pmt_perception.ros.bags.record", "--out", str(recorded),
                            "--overwrite", env=env, log_path=logs / "record.log")
    player = None
    exits: dict[str, int] = {}
    try:
        deadline = time.monotonic() + args.startup_timeout
        while "matched" not in read_log(logs / "record.log"):
            for name, process in (("node", node), ("record", recorder)):
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited early (status {process.returncode}):\n"
                                       f"{read_log(logs / f'{name}.log')}")
            if time.monotonic() > deadline:
                raise RuntimeError("the recorder never matched the node's outputs:\n"
                                   + read_log(logs / "node.log"))
            if stop.wait(0.2):
                raise Stopped()
        player = start_module("pmt_perception.ros.bags.play", str(args.bag), "--json",
                              "--rate", str(args.rate), "--wait-for-subscribers",
                              str(args.startup_timeout), "--topics", *topics.inputs(),
                              env=env, log_path=logs / "play.log")
        deadline = time.monotonic() + args.startup_timeout + 600
        while player.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pmt-bag-play did not finish:\n{read_log(logs / 'play.log')}")
            if stop.wait(0.2):
                raise Stopped()
        if player.returncode != 0:
            raise RuntimeError(f"pmt-bag-play failed (status {player.returncode}):\n"
                               f"{read_log(logs / 'play.log')}")
        if stop.wait(args.settle):  # the node's last frames are still in flight
            raise Stopped()
    finally:
        for name, process in (("play", player), ("record", recorder), ("node", node)):
            if process is not None:
                exits[name] = stop_process(process)
    # The recording is only complete when the recorder closed its bag itself.
    if exits["record"] != 0:
        raise RuntimeError(f"pmt-bag-record exited with status {exits['record']} (the bag "
                           f"{recorded} may be incomplete):\n{read_log(logs / 'record.log')}")
    text = read_log(logs / "play.log", tail=100_000)
    return json.loads(text[text.index("{"):])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        node_parameters(args.node_param)
    except ValueError as error:
        parser.error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    recorded, played = args.recorded, None
    if recorded is None:
        recorded = args.out / "recorded"
        with StopRequest(ignore_after=False) as stop:
            try:
                played = run_live(args, recorded, stop)
            except Stopped:
                print(f"pmt-bag-loop: stopped ({stop.signal_name}); nothing scored",
                      file=sys.stderr)
                return 0
            except RuntimeError as error:
                print(f"pmt-bag-loop: {error}", file=sys.stderr)
                return 1
    interrupt_on_stop_signals()
    try:
        return _score(args, recorded, played)
    except KeyboardInterrupt as stopped:
        print(f"pmt-bag-loop: stopped ({stopped}) while scoring", file=sys.stderr)
        return 0


def _score(args, recorded: Path, played) -> int:
    """Live (the recording) and offline scores of the same frames, compared."""
    # The node's inference_scale (a --node-param, else its YAML default): the same network input.
    inference_scale = float(node_parameters(args.node_param).get(
        "inference_scale", load_defaults()["inference_scale"]))
    method, description, class_names, palette = build_method(SimpleNamespace(
        sgbm=None, checkpoint=args.checkpoint, device=args.device, precision="fp32", backend=None,
        inference_scale=inference_scale))
    palette = np.asarray(palette, np.uint8)
    try:
        live_accumulator, live, scored = score_recording(args.bag, recorded,
                                                         class_names=class_names)
    except BagError as error:
        print(f"closed loop: {error}", file=sys.stderr)
        return 2
    wanted = set(scored)
    # uint8 images, as the node hands them to its Predictor: the same arithmetic, bit for bit.
    frames = enumerate(read_stereo_frames(args.bag))
    samples = (frame.sample(i, tensors=False) for i, frame in frames if frame.stamp_ns in wanted)
    offline_rows: list = []
    offline_accumulator, offline = score_pairs(
        recording_per_frame(prediction_pairs(method, samples, warmup=0), offline_rows),
        class_names=class_names)
    offline["per_frame"] = offline_rows
    for name, accumulator, report in (("live", live_accumulator, live),
                                      ("offline", offline_accumulator, offline)):
        report["method"] = description
        write_json_atomic(args.out / name / "report.json", report)
        if not args.no_figures:
            write_all_figures(args.out / name, accumulator, palette)
    result = {"bag": str(args.bag), "recorded": str(recorded), "checkpoint": str(args.checkpoint),
              "frames_in_bag": live["frames_in_bag"], "frames_scored": live["frames_scored"],
              "dropped_stamps": live["dropped_stamps"], "player": played,
              **compare_reports(live, offline, args.tolerance)}
    # Frame by frame: the node's live D1 over the stream next to the loaded model's on the same
    # frames; with online adaptation the live curve is what the adaptation did.
    result["d1_over_time"] = {name: first_and_last(report["per_frame"])
                              for name, report in (("live", live), ("offline", offline))}
    if not args.no_figures:
        d1_over_time_figure(args.out / "d1_over_time.png",
                            {"live (node" + (", adapting online)" if adapting(args) else ")"):
                             live["per_frame"], "offline (checkpoint as loaded)": offline["per_frame"]})
    write_json_atomic(args.out / "closed_loop.json", result)
    print(json.dumps({k: result[k] for k in ("frames_in_bag", "frames_scored", "equal",
                                             "d1_over_time")}))
    # An adapting node is meant to differ from the checkpoint it started from.
    return 0 if result["equal"] or adapting(args) else 1


if __name__ == "__main__":
    sys.exit(main())
