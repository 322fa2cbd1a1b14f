"""`python -m pmt_perception.demo`: the offline path, and the real three-process graph."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pmt_perception.ros.env import dds_environment


def run_demo(tmp_path, *arguments, domain_id, timeout=240):
    env = dds_environment(domain_id=domain_id, log_dir=tmp_path / "ros_logs")
    result = subprocess.run([sys.executable, "-m", "pmt_perception.demo", *arguments],
                            env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def read_ply(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    lines = header.decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    count = int(lines[2].split()[-1])
    kinds = {"float": "<f4", "uchar": "u1", "uint": "<u4"}
    fields = [(line.split()[2], kinds[line.split()[1]]) for line in lines[3:]]
    vertices = np.frombuffer(body, dtype=fields)
    assert len(vertices) == count
    return vertices


def test_offline_demo_writes_images_and_a_cloud(tmp_path, tiny_checkpoint):
    out = tmp_path / "offline"
    stdout = run_demo(tmp_path, "--offline", "--checkpoint", str(tiny_checkpoint),
                      "--size", "64x96", "--out", str(out), domain_id=46)
    assert "predict:" in stdout
    for name in ("left", "seg_overlay", "disparity"):
        image = cv2.imread(str(out / f"offline_{name}.png"))
        assert image is not None and image.shape == (64, 96, 3)
    vertices = read_ply(out / "offline_points.ply")
    assert np.isfinite(vertices["z"]).all()


@pytest.mark.ros
def test_graph_demo_reports_rates_latency_and_writes_frames(tmp_path, tiny_checkpoint):
    out = tmp_path / "graph"
    stdout = run_demo(tmp_path, "--checkpoint", str(tiny_checkpoint), "--size", "64x96",
                      "--duration", "4", "--rate", "20", "--out", str(out), domain_id=46)
    for topic in ("seg", "disparity", "points2"):
        line = next(text for text in stdout.splitlines() if text.strip().startswith(topic))
        assert "Hz" in line and "latency" in line, stdout
    assert "older pairs dropped" in stdout
    overlays = sorted(out.glob("frame_*_seg_overlay.png"))
    assert 1 <= len(overlays) <= 3   # "a few": 3 asked for, fewer only on a starved CPU
    assert cv2.imread(str(overlays[0])).shape == (64, 96, 3)
    assert cv2.imread(str(out / "frame_00_disparity.png")).shape == (64, 96, 3)
    vertices = read_ply(out / "frame_00_points.ply")
    assert {"x", "y", "z", "red", "green", "blue", "label"} <= set(vertices.dtype.names)


@pytest.mark.ros
@pytest.mark.slow
def test_default_demo_runs_as_on_a_fresh_clone(tmp_path):
    """No arguments: the shipped model (or the untrained `fast` network) at the default size."""
    stdout = run_demo(tmp_path, domain_id=46, timeout=300)
    assert "model:" in stdout and "frames written to" in stdout
    assert 1 <= len(list((tmp_path / "out" / "demo").glob("frame_*_points.ply"))) <= 3
