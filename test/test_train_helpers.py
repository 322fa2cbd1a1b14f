"""Shared pieces of the training / evaluation tests: a tiny model on tiny on-the-fly synthetic
scenes, so a training step takes a fraction of a second on two CPU cores. (No tests here.)"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TINY_MODEL = "{backbone: resnet18, spp_f1_windows: [8, 4], spp_f2_windows: [4, 2]}"


def tiny_data(train: int = 8, *, augment: bool = True, size=(64, 96)) -> str:
    return ("{root: null, loader: {size: [%d, %d], samples_per_split: {train: %d, val: 2, "
            "test: 2}}, augment: {enabled: %s, crop_size: [64, 96], zoom: [0.9, 1.1]}, "
            "class_uniform: {enabled: false}}" % (size[0], size[1], train,
                                                  "true" if augment else "false"))


def tiny_argv(run_dir: Path, *, iterations: int, train: int = 8, augment: bool = True,
              **flags) -> list[str]:
    """pmt-train arguments for a tiny run; `flags` override (snake_case -> --kebab-case)."""
    settings = {"config": "synthetic", "model": "fast", "model_overrides": TINY_MODEL,
                "data_overrides": tiny_data(train, augment=augment), "batch_size": 2,
                "iterations": iterations, "workers": 0, "threads": 1, "val_samples": 2,
                "log_interval": 1, "image_interval": 0, "eval_interval": 1000,
                "checkpoint_interval": 1000, "run_dir": str(run_dir)}
    settings.update(flags)
    argv = []
    for key, value in settings.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def start_training(argv: list[str], *, module: str = "pmt_perception.train",
                   launcher: list[str] | None = None, log: Path | None = None,
                   new_session: bool = False) -> subprocess.Popen:
    # launcher: e.g. ["-m", "torch.distributed.run", "--nproc-per-node", "2"] (torchrun).
    # new_session: its own process group, which a test may signal as a terminal's Ctrl-C does.
    command = [sys.executable, *(launcher or []), "-m", module, *argv]
    stream = open(log, "w") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(command, cwd=REPO, env=child_env(), stdout=stream,
                            stderr=subprocess.STDOUT, start_new_session=new_session)


def losses_by_step(run_dir: Path) -> dict[int, float]:
    """Training loss of each step; a later record of a step (after a resume) wins."""
    from pmt_perception.training.monitor import read_jsonl

    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "train_log.jsonl")}
