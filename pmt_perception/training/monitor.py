"""What a person watching a run sees: a tqdm bar, TensorBoard scalars and image panels, and
machine-readable JSON-lines logs (train_log.jsonl, val_log.jsonl) in the run directory.

Only rank 0 creates a monitor; the other ranks get `NullMonitor`, which does nothing, so the
training loop never asks "am I rank 0?" before logging.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from pmt_perception.atomic import json_ready, write_text_atomic
from pmt_perception.visualize import colorize_disparity, colorize_labels, contact_sheet, disparity_error_map

PANEL_TITLES = ["left", "GT disparity", "pred disparity", "error (<3 / <6 / >=6 px)", "GT seg",
                "pred seg"]


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    # One line per write + flush: a killed run leaves at most a partial last line, which
    # readers skip (see read_jsonl).
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(json_ready(record)) + "\n")
        handle.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the torn last line of a killed run
    return records


def truncate_jsonl_after(path: Path, step: int) -> None:
    """Keep only the records of ``path`` with record["step"] <= step (atomically rewritten)."""
    path = Path(path)
    if not path.is_file():
        return
    records = read_jsonl(path)
    kept = [r for r in records if not isinstance(r.get("step"), int) or r["step"] <= step]
    whole_lines = path.read_bytes().endswith(b"\n") or path.stat().st_size == 0
    if len(kept) == len(records) and whole_lines:
        return  # nothing to drop, no torn last line to end
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def prediction_panel(sample: dict[str, torch.Tensor], palette: np.ndarray) -> np.ndarray:
    """One row: left, GT / predicted disparity (one colour scale), error map, GT / pred seg."""
    left = (sample["left"].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
    gt = sample["disparity"].numpy().astype(np.float32)
    pred = sample["pred_disparity"].float().numpy()
    valid = gt > 0
    max_disp = float(gt[valid].max()) if valid.any() else max(float(pred.max()), 1.0)
    tiles = [left, colorize_disparity(gt, max_disp),
             colorize_disparity(np.clip(pred, 0, None) + 1e-6, max_disp),
             disparity_error_map(pred, gt),
             colorize_labels(sample["seg"].numpy().astype(np.int64), palette),
             colorize_labels(sample["pred_seg"].numpy().astype(np.int64), palette)]
    return contact_sheet([tiles], PANEL_TITLES)


class NullMonitor:
    def start(self, step: int, total: int) -> None: ...
    def train_step(self, step: int, record: dict[str, Any]) -> None: ...
    def train_images(self, step: int, sample: dict[str, torch.Tensor]) -> None: ...
    def validation(self, step: int, metrics: dict[str, Any],
                   sample: Optional[dict[str, torch.Tensor]]) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class TrainingMonitor(NullMonitor):
    def __init__(self, run_dir: Path, palette: np.ndarray, *, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.palette = np.asarray(palette, dtype=np.uint8)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.bar = None

    def start(self, step: int, total: int) -> None:
        from tqdm import tqdm

        # A resume redoes the steps after its checkpoint: their rows (written before the
        # interruption) go, so the logs hold each step once.
        for name in ("train_log.jsonl", "val_log.jsonl"):
            truncate_jsonl_after(self.run_dir / name, step)

        # Under nohup the bar goes to a log file: refresh rarely so the log stays readable.
        interactive = sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True,
                        mininterval=0.5 if interactive else 30.0)

    def train_step(self, step: int, record: dict[str, Any]) -> None:
        append_jsonl(self.run_dir / "train_log.jsonl", record)
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(loss=f"{record['loss']:.3f}",
                                 img_s=f"{record['images_per_s']:.1f}", refresh=False)
            self.bar.update(0)
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, step)

    def train_images(self, step: int, sample: dict[str, torch.Tensor]) -> None:
        if self.writer is not None:
            self.writer.add_image("train/panel", prediction_panel(sample, self.palette), step,
                                  dataformats="HWC")

    def validation(self, step: int, metrics: dict[str, Any],
                   sample: Optional[dict[str, torch.Tensor]]) -> None:
        append_jsonl(self.run_dir / "val_log.jsonl", {"step": step, **metrics})
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"val/{key}", value, step)
            if sample is not None:
                self.writer.add_image("val/panel", prediction_panel(sample, self.palette), step,
                                      dataformats="HWC")
            self.writer.flush()
        summary = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("loss", "refined_miou", "d1", "epe")
                            if isinstance(metrics.get(k), float))
        self.message(f"step {step} validation: {summary}")

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
