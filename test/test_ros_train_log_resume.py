"""Issue 13, defect h: after a resume, train_log.jsonl / val_log.jsonl hold each step once (the
rows of the steps redone after the checkpoint are dropped when the resumed run starts).

(A test_ros_* file only because of how test files are split between the engineers of issue 13;
it starts no ROS.)"""
import json

import numpy as np

from pmt_perception.training.monitor import TrainingMonitor, append_jsonl, read_jsonl


def steps(path):
    return [record["step"] for record in read_jsonl(path)]


def test_resumed_run_logs_each_step_once(tmp_path):
    palette = np.zeros((8, 3), np.uint8)
    first = TrainingMonitor(tmp_path, palette, tensorboard=False)
    first.start(0, 20)
    for step in range(1, 11):                 # checkpoint at step 6, killed after step 10
        first.train_step(step, {"step": step, "loss": 1.0 / step, "images_per_s": 1.0})
        if step % 5 == 0:
            append_jsonl(tmp_path / "val_log.jsonl", {"step": step, "miou": 0.5})
    with open(tmp_path / "train_log.jsonl", "a") as handle:
        handle.write('{"step": 11, "lo')           # the torn line of the kill
    resumed = TrainingMonitor(tmp_path, palette, tensorboard=False)
    resumed.start(6, 20)
    for step in range(7, 13):
        resumed.train_step(step, {"step": step, "loss": 1.0 / step, "images_per_s": 1.0})
    assert steps(tmp_path / "train_log.jsonl") == list(range(1, 13))
    assert steps(tmp_path / "val_log.jsonl") == [5]
    for line in (tmp_path / "train_log.jsonl").read_text().splitlines():
        json.loads(line)                          # no torn line left inside the log
