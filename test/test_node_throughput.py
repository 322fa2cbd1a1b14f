"""Camera faster than the model: old pairs are dropped (and counted), memory stays flat.

stereo_source publishes 2,000 small pairs as fast as it can (best effort, the node's default
QoS) to a node running the tiny network; this process listens to seg and /diagnostics and
samples the node's resident memory.
"""
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros

DOMAIN_ID = 44
FRAMES = 2000
STARTUP_TIMEOUT = 90.0
RUN_TIMEOUT = 120.0
# Fixed budget for allocator noise; a leak of one input set (~37 KB) per frame would be 74 MB.
RSS_GROWTH_LIMIT_MB = 25.0


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def test_fast_camera_drops_old_pairs_and_memory_stays_flat(
        ros_graph_factory, ros_endpoint_factory, tiny_checkpoint):
    graph = ros_graph_factory(DOMAIN_ID)
    node = graph.start("node", "pmt_perception.ros.node",
                       # Warm-up at the source's size: a runtime that builds its graph per
                       # input size (OpenVINO under `backend: auto`) allocates on configure,
                       # not during the memory samples.
                       params={"checkpoint": str(tiny_checkpoint), "diagnostics_period": 0.5,
                               "warmup_size": [64, 96]})
    endpoint = ros_endpoint_factory(DOMAIN_ID)
    endpoint.listen("seg", Image, qos_profile_sensor_data)
    endpoint.listen("/diagnostics", DiagnosticArray)
    endpoint.wait_for_diagnostic("state", lambda v: v == "active", STARTUP_TIMEOUT)

    source = graph.start("source", "pmt_perception.ros.stereo_source", params={
        "image_size": [64, 96], "rate": 100.0, "pool_size": 4, "max_frames": FRAMES})
    samples = []   # (seg messages so far, RSS MB)
    deadline = time.monotonic() + RUN_TIMEOUT
    while source.poll() is None:
        assert time.monotonic() < deadline, "the source did not finish:\n" + graph.log("source")
        samples.append((len(endpoint.messages("seg")), resident_mb(node.pid)))
        time.sleep(0.25)
    assert source.returncode == 0, graph.log("source")
    at_source_end = len(endpoint.messages("seg"))
    time.sleep(2.0)
    after = len(endpoint.messages("seg"))
    values = endpoint.wait_for_diagnostic(
        "frames_published", lambda v: int(v) >= after, 10.0)

    received, dropped = int(values["sets_received"]), int(values["sets_dropped"])
    processed, published = int(values["frames_processed"]), int(values["frames_published"])
    assert received > FRAMES // 2, f"only {received} of {FRAMES} sets reached the node"
    assert dropped > 0 and processed < received, "input faster than the model must drop"
    # Every set is either processed or dropped; at most one waits in the slot at any time.
    assert received - 1 <= processed + dropped <= received
    assert published == processed
    # Nothing queued: once the camera stops, at most the set in the slot, the frame in the
    # model and the one being published are still to come.
    assert after - at_source_end <= 3

    # Memory: compare the second quarter of the run (after warm-up) with the last quarter.
    assert len(samples) >= 8, "run too short to judge memory"
    rss = np.array([mb for _, mb in samples])
    quarter = len(rss) // 4
    early, late = np.median(rss[quarter:2 * quarter]), np.median(rss[-quarter:])
    assert late - early < RSS_GROWTH_LIMIT_MB, f"RSS grew from {early:.0f} to {late:.0f} MB"
    print(f"sets {received}, processed {processed}, dropped {dropped}, RSS {early:.0f} -> {late:.0f} MB")
    assert node.poll() is None
