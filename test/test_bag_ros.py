"""pmt-bag-play, pmt-bag-record and the closed loop, as separate processes over real
shared-memory-only DDS (ros/env.py; domain ids 62 and 63)."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time

import pytest

from pmt_perception.ros.bags import writer
from pmt_perception.ros.env import dds_environment
from pmt_perception.ros.processes import read_log, start_module, stop_process

pytestmark = pytest.mark.ros

PLAY_DOMAIN_ID, LOOP_DOMAIN_ID = 62, 63
RATE_HZ, FRAMES = 10.0, 26            # a 2.5 s bag
START = 1_700_000_000.0


def shm_environment(domain_id: int, log_dir):
    # This file's processes use domains 62-63, apart from the node tests' (40-59).
    return dds_environment(domain_id=domain_id, log_dir=log_dir)


def arrival_rate(arrivals) -> float:
    """Seconds of arrival per second of stamp, the Theil-Sen estimate over (time, msg) pairs."""
    points = [(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, t) for t, m in arrivals]
    slopes = [(t2 - t1) / (s2 - s1) for i, (s1, t1) in enumerate(points)
              for s2, t2 in points[i + 1:] if s2 != s1]
    return statistics.median(slopes)


def write_bag(out, num, *extra):
    assert writer.main(["--out", str(out), "--num", str(num), "--size", "64x96",
                        "--rate", str(RATE_HZ), *extra]) == 0
    return out


def test_replay_keeps_the_bag_timing_and_loses_nothing_at_the_tail(tmp_path,
                                                                   ros_endpoint_factory):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image

    bag = write_bag(tmp_path / "bag", FRAMES, "--no-ground-truth")
    endpoint = ros_endpoint_factory(PLAY_DOMAIN_ID, "bag_play_listener")
    arrivals: dict[str, list] = {}
    lock = threading.Lock()

    def listener(topic):
        def record(msg):
            with lock:
                arrivals.setdefault(topic, []).append((time.monotonic(), msg))
        return record

    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    topics = {"left/image_rect": Image, "right/image_rect": Image,
              "left/camera_info": CameraInfo, "right/camera_info": CameraInfo, "/clock": Clock}
    for topic, msg_type in topics.items():
        endpoint.node.create_subscription(msg_type, topic, listener(topic), qos)
    log = tmp_path / "play.log"
    player = start_module("pmt_perception.ros.bags.play", str(bag), "--json", "--clock", "20",
                          "--wait-for-subscribers", "60",
                          env=shm_environment(PLAY_DOMAIN_ID, tmp_path / "ros"), log_path=log)
    try:
        assert player.wait(timeout=120) == 0, read_log(log)
    finally:
        stop_process(player)
    text = read_log(log, tail=100_000)
    summary = json.loads(text[text.index("{"):])
    bag_seconds = (FRAMES - 1) / RATE_HZ
    assert summary["bag_seconds"] == pytest.approx(bag_seconds)
    assert summary["acknowledged"] is True
    assert summary["wall_seconds"] == pytest.approx(bag_seconds, rel=0.05)
    time.sleep(0.2)  # the listener thread hands the last callbacks over
    with lock:
        left = list(arrivals.get("left/image_rect", []))
        counts = {topic: len(arrivals.get(topic, [])) for topic in topics}
    expected = [writer.frame_stamps(i, start_time=START, rate=RATE_HZ) for i in range(FRAMES)]
    stamps = [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for _, m in left]
    assert stamps == expected                      # every frame, in order, the last one too
    assert all(counts[t] == FRAMES for t in topics if t != "/clock"), counts
    # Timing as the subscriber sees it, on its own clock: the rate of arrivals against the
    # stamps (the median of all pairwise slopes, so one frame that a loaded host delivers late,
    # often the first, cannot pass for a wrong rate; a burst or a stall still fails).
    assert arrival_rate(left) == pytest.approx(1.0, rel=0.05)
    with lock:
        clock_ns = [m.clock.sec * 1_000_000_000 + m.clock.nanosec for _, m in arrivals["/clock"]]
    assert len(clock_ns) >= 20 and clock_ns == sorted(clock_ns)
    assert expected[0] <= clock_ns[0] and clock_ns[-1] <= expected[-1]


def test_dropped_frames_are_reported(tmp_path):
    """A recording that misses frames scores the rest and lists the missing stamps."""
    from pmt_perception.data.bag_io import read_messages, typestore, writing_bag
    from pmt_perception.data.synthetic import CLASS_NAMES
    from pmt_perception.ros.bags.closed_loop import score_recording

    bag = write_bag(tmp_path / "bag", 3)
    recorded = tmp_path / "recorded"
    store = typestore()
    kept = writer.frame_stamps(1, start_time=START, rate=RATE_HZ)
    with writing_bag(recorded) as out:   # "node outputs": the bag's own ground truth, frame 1
        connections = {}
        for topic, msgtype, log_time, data in read_messages(bag, ["ground_truth/seg",
                                                                  "ground_truth/disparity"]):
            if log_time != kept:
                continue
            name = "seg" if topic.endswith("seg") else "disparity"
            if name not in connections:
                connections[name] = out.add_connection(name, msgtype, typestore=store)
            out.write(connections[name], log_time, data)
    _, report, scored = score_recording(bag, recorded, class_names=list(CLASS_NAMES))
    assert scored == [kept] and report["frames_scored"] == 1 and report["frames_in_bag"] == 3
    assert report["dropped_stamps"] == [writer.frame_stamps(i, start_time=START, rate=RATE_HZ)
                                        for i in (0, 2)]
    assert report["segmentation"]["refined"]["miou"] == pytest.approx(1.0)  # GT scored as GT
    assert report["disparity"]["epe"] == pytest.approx(0.0, abs=1e-6)
    assert [row["d1"] for row in report["per_frame"]] == [0.0]            # one row per frame


def test_closed_loop_live_score_equals_offline_score(tmp_path, tiny_checkpoint):
    bag = write_bag(tmp_path / "bag", 8)
    out = tmp_path / "loop"
    command = [sys.executable, "-m", "pmt_perception.ros.bags.closed_loop", "--bag", str(bag),
               "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--domain-id",
               str(LOOP_DOMAIN_ID), "--no-figures", "--settle", "2"]
    done = subprocess.run(command, env=shm_environment(LOOP_DOMAIN_ID, tmp_path / "ros"),
                          capture_output=True, text=True, timeout=300)
    logs = "\n".join(f"== {p.name}\n{read_log(p)}" for p in sorted((out / "logs").glob("*.log")))
    assert done.returncode == 0, done.stderr[-3000:] + logs
    result = json.loads((out / "closed_loop.json").read_text())
    assert result["equal"] is True, result["metrics"]
    assert result["frames_scored"] + len(result["dropped_stamps"]) == result["frames_in_bag"] == 8
    assert result["frames_scored"] >= 4, result   # the tiny model keeps up with 10 Hz
    for row in result["metrics"].values():
        assert row["live"] == row["offline"]      # same checkpoint, same bytes in: same numbers
    live = json.loads((out / "live" / "report.json").read_text())
    assert live["segmentation"]["refined"] is not None and live["disparity"]["epe"] is not None
    assert result["player"]["published"]["left/image_rect"] == 8
    assert len(live["per_frame"]) == result["frames_scored"]
    assert result["d1_over_time"] == {"live": None, "offline": None}   # < 2 x 20 frames


def test_closed_loop_with_online_adaptation_reports_d1_per_frame(tmp_path, tiny_checkpoint):
    """--node-param adapt:=true reaches the node: it adapts (the log says so), live may differ
    from offline without failing the run, and each scored frame has its own D1."""
    bag = write_bag(tmp_path / "bag", 6)
    out = tmp_path / "loop"
    command = [sys.executable, "-m", "pmt_perception.ros.bags.closed_loop", "--bag", str(bag),
               "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--domain-id",
               str(LOOP_DOMAIN_ID), "--settle", "2", "--node-param", "adapt:=true",
               "--node-param", "adapt_every_n:=1"]
    done = subprocess.run(command, env=shm_environment(LOOP_DOMAIN_ID, tmp_path / "ros"),
                          capture_output=True, text=True, timeout=300)
    node_log = read_log(out / "logs" / "node.log")
    assert done.returncode == 0, done.stderr[-3000:] + node_log
    assert "adapt: online adaptation" in node_log
    live = json.loads((out / "live" / "report.json").read_text())
    assert len(live["per_frame"]) >= 1 and all(0 <= r["d1"] <= 1 for r in live["per_frame"])
    assert (out / "d1_over_time.png").is_file()


def test_closed_loop_refuses_a_malformed_node_parameter(tmp_path):
    from pmt_perception.ros.bags.closed_loop import main

    with pytest.raises(SystemExit) as stopped:
        main(["--bag", str(tmp_path), "--checkpoint", "x.pt", "--out", str(tmp_path / "o"),
              "--node-param", "adapt=true"])
    assert stopped.value.code == 2


KILL_DOMAIN_ID = 64


def test_a_recorder_killed_hard_leaves_a_valid_bag_up_to_its_last_flush(tmp_path,
                                                                          ros_endpoint_factory):
    """SIGKILL, no chance to close: the sqlite3 bag on disk still reads, with every message
    up to the last flush (pmt-bag-record flushes every --flush-interval seconds)."""
    import yaml
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from pmt_perception.data.bag_io import read_messages, typestore

    bag = tmp_path / "killed"
    recorder = start_module("pmt_perception.ros.bags.record", "--out", str(bag), "--topics",
                            "seg", "--flush-interval", "0.2",
                            env=shm_environment(KILL_DOMAIN_ID, tmp_path / "logs"),
                            log_path=tmp_path / "record.log")
    endpoint = ros_endpoint_factory(KILL_DOMAIN_ID, "seg_publisher")
    publisher = endpoint.node.create_publisher(
        Image, "seg", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))

    def flushed_count() -> int:
        try:
            meta = yaml.safe_load((bag / "metadata.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return 0
        return int(meta["rosbag2_bagfile_information"]["message_count"])

    try:
        endpoint.wait_for(lambda: "matched" in read_log(tmp_path / "record.log"), 120,
                          "the recorder to match")
        sent = 0
        while flushed_count() < 10:
            msg = Image(height=2, width=2, encoding="mono8", step=2, data=bytes(4))
            msg.header.stamp.sec, msg.header.frame_id = sent, "left_camera_optical_frame"
            publisher.publish(msg)
            sent += 1
            assert sent < 5000, read_log(tmp_path / "record.log")
            time.sleep(0.02)
        recorder.kill()                                   # SIGKILL: no clean close
        assert recorder.wait(timeout=30) == -9
        flushed = flushed_count()
        store = typestore()
        stamps = [store.deserialize_cdr(data, msgtype).header.stamp.sec
                  for _, msgtype, _, data in read_messages(bag, ["seg"])]
        assert len(stamps) >= flushed >= 10
        assert stamps == list(range(len(stamps)))        # in order, none missing
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()


def test_a_process_that_needs_sigkill_is_reported(tmp_path, capfd):
    """stop_process never escalates silently: the caller's stderr names the process."""
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time\n"
         "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         "print('ready', flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert stubborn.stdout.readline().strip() == "ready"
    assert stop_process(stubborn, timeout=1.0) == -9
    err = capfd.readouterr().err
    assert f"process {stubborn.pid}" in err and "sending SIGTERM" in err and "sending SIGKILL" in err
