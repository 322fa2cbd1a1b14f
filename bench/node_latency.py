"""Node latency benchmark: where the time goes between a camera stamp and /seg in a planner.

    .venv/bin/python bench/node_latency.py                       # 480x720, the default model
    .venv/bin/python bench/node_latency.py --size 256x320 --frames 20 --checkpoint m.pt
    .venv/bin/python bench/node_latency.py --markdown             # print a RESULTS.md section

Four measurements, one model (a checkpoint, the shipped one, or the untrained `edge` net), with
the node's own defaults (config/stereo_seg.yaml: backend and precision `auto`) unless
--backend / --precision say otherwise:
  0. the two-network alternative a user would pick (LR-ASPP MobileNetV3-Large + OpenCV SGBM,
     bench/inference.py's row) on the same frame, for "node Hz x two-network s/frame";
  1. the Predictor alone in this process: model time and throughput (the reference);
  2. latency, one frame at a time: this process publishes a stereo set stamped now to
     stereo_seg_node (its own process), waits for /seg, and records stamp -> receipt. The
     node's /diagnostics give the stages in between (transport, queue, conversion, pre, model,
     post, handoff, publishing); the rest is the delivery of /seg to this process;
  3. throughput: sets published faster than the model can go; the node's /seg rate is
     compared with the Predictor's. Twice: first with a planner's subscriptions (/seg and
     /disparity, what the two-network alternative computes too), then with all four outputs
     subscribed (+ /seg_color and the point cloud, which the node builds only when someone
     listens).
All DDS traffic is shared memory only (pmt_perception.ros.env), domain 48.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pmt_perception.ros.env import apply_dds_environment  # noqa: E402  (before rclpy)
from pmt_perception.runtime import cpu_has_native_bf16  # noqa: E402

DOMAIN_ID = 48
STAGES = ("transport", "queue", "convert", "predict_pre", "predict_model", "predict_post",
          "handoff", "publish_seg")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="480x720", help="HxW (default 480x720)")
    parser.add_argument("--frames", type=int, default=8, help="latency frames (first is dropped)")
    parser.add_argument("--throughput-seconds", type=float, default=30.0)
    parser.add_argument("--checkpoint", default="", help="default: models/*.pt, else untrained")
    parser.add_argument("--precision", default="",
                        help="node parameter override (default: the node's YAML, auto)")
    parser.add_argument("--backend", default="",
                        help="node parameter override (default: the node's YAML, auto)")
    parser.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter (repeatable), e.g. adapt:=true to measure the "
                             "node's rate while it adapts online")
    parser.add_argument("--markdown", action="store_true", help="print a RESULTS.md section")
    options = parser.parse_args(argv)
    options.size = tuple(int(v) for v in options.size.lower().split("x"))
    return options


def two_network_reference(size) -> dict:
    """bench/inference.py's LR-ASPP + SGBM row on its fastest CPU runtime here, each in its
    own process: OpenVINO when installed, the faster of its float row (bf16 on a CPU with native
    bf16, as the node's `auto` picks for itself; fp32 elsewhere) and its int8 row (NNCF
    installed), as bench/inference.py's summary takes the best; else ONNX Runtime fp32."""
    spec = importlib.util.spec_from_file_location("cpu_inference_bench", ROOT / "bench" / "inference.py")
    cpu_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu_bench)
    backend = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"
    precisions = ["bf16" if backend == "openvino" and cpu_has_native_bf16() else "fp32"]
    if backend == "openvino" and importlib.util.find_spec("nncf"):
        precisions.append("int8")
    rows = [cpu_bench.run_row_in_fresh_process(
        {"kind": "two_nets", "variant": cpu_bench.TWO_NETS, "backend": backend,
         "precision": precision, "size": list(size), "repeats": 15}) for precision in precisions]
    return min(rows, key=lambda row: row["seconds"])


def node_setting(options, name: str):
    """The node's value of parameter `name` in this run: a --node-param override, else the
    default of config/stereo_seg.yaml."""
    import yaml

    from pmt_perception.ros.params import load_defaults

    for override in options.node_param:
        key, _, value = override.partition(":=")
        if key == name:
            return yaml.safe_load(value)
    return load_defaults()[name]


def predictor_reference(options) -> dict:
    """Predictor alone: per-frame model and total time, and frames per second with as many
    frames at once as the node runs (`parallel_frames`), as the node would run it."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from pmt_perception.checkpoint import load_network
    from pmt_perception.inference import Predictor

    loaded = load_network(options.checkpoint, untrained_variant="edge", untrained_seed=0)
    predictor = Predictor(loaded.model, device="cpu", precision=options.precision or "auto",
                          backend=options.backend or "auto",
                          inference_scale=float(node_setting(options, "inference_scale")),
                          streams=int(node_setting(options, "parallel_frames")))
    image = np.random.default_rng(0).integers(0, 255, (*options.size, 3), dtype=np.uint8)
    predictor.warmup(options.size, iterations=2)
    totals, models = [], []

    def frame(_):
        start = time.perf_counter()
        prediction = predictor.predict(image, image)
        totals.append(time.perf_counter() - start)
        models.append(prediction.timings["model"])
    frames = max(5, options.frames) * predictor.streams
    start = time.perf_counter()
    with ThreadPoolExecutor(predictor.streams) as pool:
        list(pool.map(frame, range(frames)))
    return {"model": loaded.description, "runtime": predictor.describe(),
            "streams": predictor.streams,
            "inference_scale": predictor.inference_scale,
            "network_size": predictor.network_size(*options.size),
            "predict_ms": 1e3 * statistics.median(totals),
            "model_ms": 1e3 * statistics.median(models),
            "throughput_hz": frames / (time.perf_counter() - start)}


PLANNER_OUTPUTS = ("seg", "disparity")  # in the order the node publishes them
DISPLAY_OUTPUTS = ("seg_color", "points2")
# output -> the node parameter that switches it on
OUTPUT_SWITCHES = {"seg": "publish_seg", "disparity": "publish_disparity",
                   "seg_color": "publish_seg_color", "points2": "publish_points"}


class Bench:
    """This process as camera and planner: four input publishers, output subscriptions (a
    planner's at first; `subscribe_display_outputs` adds the rest)."""

    def __init__(self, size, switched_on):
        """`switched_on`: the outputs the node publishes (its publish_* parameters); the bench
        subscribes to and waits for those only."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from stereo_msgs.msg import DisparityImage

        from pmt_perception.data.synthetic import generate_pair, load_generator_settings
        from pmt_perception.ros.conversions import numpy_to_image
        from pmt_perception.ros.stereo_source import CameraModel, camera_infos

        rclpy.init()
        self.node = rclpy.create_node("node_latency_bench")
        pair = generate_pair(load_generator_settings("synthetic"), seed=0, size=size)
        info = pair.camera_info()
        camera = CameraModel(width=size[1], height=size[0], fx=info["fx"], fy=info["fy"],
                             cx=info["cx"], cy=info["cy"], baseline=info["baseline"])
        self.messages = (numpy_to_image(pair.left, "rgb8"), numpy_to_image(pair.right, "rgb8"),
                         *camera_infos(camera, left_frame_id="left", right_frame_id="right"))
        self.publishers = [self.node.create_publisher(t, name, qos_profile_sensor_data)
                           for name, t in (("left/image_rect", Image), ("right/image_rect", Image),
                                           ("left/camera_info", CameraInfo),
                                           ("right/camera_info", CameraInfo))]
        self.lock = threading.Condition()
        self.received: dict[str, dict[int, int]] = {t: {} for t in (*PLANNER_OUTPUTS,
                                                                    *DISPLAY_OUTPUTS)}
        self.diagnostics: list[dict] = []
        self._output_types = {"seg": Image, "disparity": DisparityImage, "seg_color": Image,
                              "points2": PointCloud2}
        self._qos = qos_profile_sensor_data
        self.subscribed: list[str] = []
        self._switched_on = switched_on
        self._subscribe(PLANNER_OUTPUTS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def _subscribe(self, names) -> None:
        names = [topic for topic in names if topic in self._switched_on]
        for topic in names:
            self.node.create_subscription(self._output_types[topic], topic,
                                          lambda m, t=topic: self._on(t, m), self._qos)
        self.subscribed += names

    def subscribe_display_outputs(self) -> None:
        """Also subscribe to /seg_color and the point cloud, and publish sets until both
        arrive (the node has matched the new subscriptions)."""
        self._subscribe(DISPLAY_OUTPUTS)
        expected = [topic for topic in DISPLAY_OUTPUTS if topic in self._switched_on]
        for _ in range(100):
            stamp = self.publish()
            if self.wait(lambda stamp=stamp: all(stamp in self.received[t] for t in expected), 1.0):
                return
        raise RuntimeError("the node never published /seg_color and /points2 to this bench")

    def close(self):
        """Shut DDS down cleanly: an exiting participant that skips this leaves its
        shared-memory segment behind in /dev/shm."""
        import rclpy

        self.executor.shutdown()
        self._spinner.join(timeout=5)
        self.node.destroy_node()
        rclpy.try_shutdown()

    def _on(self, topic, msg):
        now = self.node.get_clock().now().nanoseconds
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.received[topic][stamp] = now
            self.lock.notify_all()

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.endswith("stereo segmentation"):
                with self.lock:
                    self.diagnostics.append({kv.key: kv.value for kv in status.values})
                    self.lock.notify_all()

    def publish(self) -> int:
        stamp = self.node.get_clock().now().nanoseconds
        for index in (2, 3, 0, 1):
            msg = self.messages[index]
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            self.publishers[index].publish(msg)
        return stamp

    def wait(self, predicate, timeout):
        with self.lock:
            return self.lock.wait_for(predicate, timeout)


def measure_latency(bench, frames) -> list[dict]:
    """One frame at a time; returns per-frame e2e and the node's stages (ms)."""
    results = []
    for index in range(frames):
        seen = len(bench.diagnostics)
        stamp = bench.publish()
        # The last output the node publishes for the frame: its publishing is over.
        if not bench.wait(lambda stamp=stamp: stamp in bench.received[bench.subscribed[-1]],
                          180.0):
            print(f"frame {index}: no output (lost?), skipped", flush=True)
            continue
        bench.wait(lambda seen=seen: any("stamp_to_seg_ms_mean" in d
                                         for d in bench.diagnostics[seen:]), 10)
        stages = next((d for d in bench.diagnostics[seen:] if "stamp_to_seg_ms_mean" in d), {})
        record = {"e2e_seg": (bench.received["seg"][stamp] - stamp) * 1e-6,
                  **{k[:-len("_ms_mean")]: float(v) for k, v in stages.items()
                     if k.endswith("_ms_mean")}}
        if "predict_model" in record:  # per frame, so the medians below stay consistent
            predictor = record["predict_pre"] + record["predict_model"] + record["predict_post"]
            record["e2e_minus_model"] = record["e2e_seg"] - record["predict_model"]
            record["e2e_minus_predictor"] = record["e2e_seg"] - predictor
            record["seg_delivery_total"] = (record["e2e_seg"] - record["stamp_to_seg"]
                                            + record["publish_seg"])
        results.append(record)
        print(f"frame {index}: stamp->seg {record['e2e_seg']:.1f} ms, model "
              f"{record.get('predict_model', float('nan')):.1f} ms", flush=True)
    return results[1:]  # the first frame pays one-off allocations


def measure_throughput(bench, seconds, rate, streams) -> dict:
    """Publish faster than the model; the node's /seg rate vs its own Predictor time, with
    `streams` frames in the model at once (the node's parallel_frames)."""
    count_before, seen = len(bench.received["seg"]), len(bench.diagnostics)
    start = time.monotonic()
    for index in itertools.count():   # on a fixed clock: publishing's own time is not added
        due = start + index / rate
        if due - start >= seconds:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        bench.publish()
    with bench.lock:
        arrivals = sorted(bench.received["seg"].values())[count_before:]
        periods = [d for d in bench.diagnostics[seen:] if "predict_model_ms_mean" in d]
    # The Predictor's time per frame inside the node during the same window (same CPU load).
    predictor_ms = statistics.median(
        sum(float(d[f"predict_{k}_ms_mean"]) for k in ("pre", "model", "post")) for d in periods
    ) if periods else float("nan")
    arrivals = arrivals[1:]  # from the first output on: the pipeline is full
    node_hz = ((len(arrivals) - 1) / ((arrivals[-1] - arrivals[0]) * 1e-9)
               if len(arrivals) >= 3 else float("nan"))
    return {"node_hz": node_hz, "predictor_hz_in_node": streams * 1e3 / predictor_ms,
            "input_hz": rate, "outputs": len(arrivals) + 1, "subscribed": list(bench.subscribed)}


def summarize(records) -> dict:
    keys = sorted({k for r in records for k in r})
    return {k: statistics.median([r[k] for r in records if k in r]) for k in keys}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def throughput_line(throughput, streams) -> str:
    return (f"Throughput with {', '.join('/' + t for t in throughput['subscribed'])} subscribed, "
            f"input at {throughput['input_hz']:.2f} Hz (faster than the model): node "
            f"{throughput['node_hz']:.3f} Hz of /seg vs {throughput['predictor_hz_in_node']:.3f} Hz "
            f"= {streams} frame(s) at once / (Predictor time per frame measured inside the node "
            "in the same window).")


def markdown(options, reference, median, throughputs, command) -> str:
    model = median.get("predict_model", float("nan"))
    rows = [("transport: stamp -> set complete in the node (2 images + 2 infos over SHM, "
             "deserialization, sync)", median.get("transport")),
            ("queue: set -> model worker", median.get("queue")),
            ("conversion: Image -> RGB arrays", median.get("convert")),
            ("Predictor pre (to tensor, resize or pad)", median.get("predict_pre")),
            ("**model forward**", model),
            ("Predictor post (argmax, crop, resize back, to numpy)", median.get("predict_post")),
            ("handoff to the publishing worker", median.get("handoff")),
            # publish() returns about when the reader has the sample (synchronous SHM write),
            # so building, publishing and delivery are one row.
            ("seg: build, publish, deliver to the planner process",
             median.get("seg_delivery_total"))]
    lines = ["## Node latency", "",
             f"Command: `{command}`  ", f"Date: {datetime.date.today().isoformat()}  ",
             f"Machine: {os.cpu_count()} CPUs, no GPU, /proc/cpuinfo: {cpu_model()}.  ",
             f"Model: {reference['model']}, {reference['runtime']}, "
             f"{options.size[0]}x{options.size[1]} in and out, the network at "
             f"{reference['network_size'][0]}x{reference['network_size'][1]} (inference_scale "
             f"{reference['inference_scale']:g}); latency with a planner's subscriptions (/seg, /disparity)"
             + (f"; node parameters {', '.join(options.node_param)}" if options.node_param else "")
             + ".", "",
             "| stage (median over frames) | ms |", "|---|---:|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in rows if value is not None]
    lines += [f"| **end to end: left stamp -> /seg received (other process)** | "
              f"**{median['e2e_seg']:.1f}** |",
              f"| end to end minus model forward (target <= 15) | "
              f"{median['e2e_minus_model']:.1f} |",
              f"| end to end minus Predictor time (pre + model + post) | "
              f"{median['e2e_minus_predictor']:.1f} |",
              "", *(throughput_line(t, reference["streams"]) + "  " for t in throughputs),
              f"Predictor alone in the bench process before the node started, "
              f"{reference['streams']} frame(s) at once: {reference['throughput_hz']:.3f} Hz "
              f"({reference['predict_ms']:.0f} ms a frame, model forward "
              f"{reference['model_ms']:.0f} ms).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    options = parse_args(argv)
    command = "python bench/node_latency.py " + " ".join(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="pmt_node_bench_"))
    apply_dds_environment(domain_id=DOMAIN_ID, log_dir=workdir / "ros_logs")
    from pmt_perception.ros.env import dds_environment
    from pmt_perception.ros.processes import read_log, start_module, stop_process

    print(f"Two-network alternative at {options.size}...", flush=True)
    two_nets = two_network_reference(options.size)
    print(json.dumps(two_nets), flush=True)
    print(f"Predictor reference at {options.size}...", flush=True)
    reference = predictor_reference(options)
    print(json.dumps(reference), flush=True)
    network_size = tuple(reference["network_size"])
    two_nets_at_network_size = None
    if network_size != tuple(options.size):  # the fair pairing: both methods on as many pixels
        print(f"Two-network alternative at the network's {network_size}...", flush=True)
        two_nets_at_network_size = two_network_reference(network_size)
        print(json.dumps(two_nets_at_network_size), flush=True)
    switched_on = {topic for topic, switch in OUTPUT_SWITCHES.items()
                   if node_setting(options, switch)}
    if "seg" not in switched_on:
        print("publish_seg is off: there is no /seg to time")
        return 1
    params = [f"warmup_size:=[{options.size[0]},{options.size[1]}]", "diagnostics_period:=0.2"]
    params += [f"{name}:={value}" for name, value in (("precision", options.precision),
                                                      ("backend", options.backend)) if value]
    if options.checkpoint:
        params.append(f"checkpoint:={Path(options.checkpoint).resolve()}")
    params += options.node_param
    node = start_module("pmt_perception.ros.node", env=dds_environment(
        domain_id=DOMAIN_ID, log_dir=workdir / "ros_logs"), log_path=workdir / "node.log",
        ros_arguments=[a for p in params for a in ("-p", p)])
    bench = None
    try:
        bench = Bench(options.size, switched_on)
        if not bench.wait(lambda: any(d.get("state") == "active" for d in bench.diagnostics), 300):
            print("node did not become active:\n" + read_log(workdir / "node.log"))
            return 1
        bench.wait(lambda: all(p.get_subscription_count() for p in bench.publishers), 30)
        time.sleep(1.0)
        median = summarize(measure_latency(bench, options.frames))
        # Twice what the node's Predictor managed during the latency phase: input outpaces it.
        predictor_ms = median["e2e_seg"] - median["e2e_minus_predictor"]
        rate = min(30.0, 2.0 * 1e3 * reference["streams"] / predictor_ms)
        streams = reference["streams"]
        throughputs = [measure_throughput(bench, options.throughput_seconds, rate, streams)]
        bench.subscribe_display_outputs()
        throughputs.append(measure_throughput(bench, options.throughput_seconds, rate, streams))
    finally:
        stop_process(node)
        if bench is not None:
            bench.close()
    for throughput in throughputs:
        throughput["node_hz_x_two_network_s_per_frame"] = throughput["node_hz"] * two_nets["seconds"]
    throughput = throughputs[0]
    result = {"reference": reference, "median_ms": median, "throughput": throughput,
              "throughput_all_outputs": throughputs[1],
              "two_networks": two_nets, "two_networks_at_network_size": two_nets_at_network_size,
              "node_hz_x_two_network_s_per_frame": throughput["node_hz"] * two_nets["seconds"],
              "size": options.size, "date": datetime.date.today().isoformat()}
    print(json.dumps(result, indent=2))
    if options.markdown:
        print(markdown(options, reference, median, throughputs, command))
        print(f"Two-network alternative on this machine in the same run (LR-ASPP MobileNetV3-Large "
              f"+ OpenCV SGBM, {two_nets['runtime']}): {two_nets['seconds']:.3f} s/frame; node Hz x "
              f"that = {throughputs[0]['node_hz_x_two_network_s_per_frame']:.2f} with a planner's "
              f"subscriptions (>= 1: the node is as fast as the two networks, which compute the "
              f"same two outputs), {throughputs[1]['node_hz_x_two_network_s_per_frame']:.2f} with "
              "all four outputs subscribed.")
        if two_nets_at_network_size is not None:
            print(f"The two networks on the node's network size {network_size[0]}x{network_size[1]} "
                  f"instead: {two_nets_at_network_size['seconds']:.3f} s/frame; node Hz x that = "
                  f"{throughput['node_hz'] * two_nets_at_network_size['seconds']:.2f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
