"""Disparity quality frame by frame, in stream order: what online adaptation changes over a bag.

`pmt-bag-loop --node-param adapt:=true` scores every published frame on its own, so the D1 of
the first frames (the model as loaded) and of the last ones (after the node adapted on the
stream) can be compared, and plots the curve next to the unadapted model's on the same frames.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from pmt_perception.metrics import DisparityMetrics

from .figures import _pyplot, _save_figure


def per_frame_disparity(pairs: Iterable[tuple[dict[str, Any], Any]]) -> list[dict[str, Any]]:
    """[{index, stamp_ns, d1, epe, num_pixels}] for each (sample, prediction) pair with
    disparity ground truth, in the order given (a bag's stamp order)."""
    rows = []
    for sample, prediction in pairs:
        metrics = DisparityMetrics()
        metrics.update(np.asarray(prediction.disparity), np.asarray(sample["disparity"]))
        scores = metrics.compute()
        if scores["num_pixels"] == 0:
            continue
        meta = sample.get("meta", {})
        rows.append({"index": meta.get("index"), "stamp_ns": meta.get("stamp_ns"),
                     "d1": float(scores["d1"]), "epe": float(scores["epe"]),
                     "num_pixels": int(scores["num_pixels"])})
    return rows


def recording_per_frame(pairs: Iterable[tuple[dict[str, Any], Any]], rows: list
                        ) -> Iterator[tuple[dict[str, Any], Any]]:
    """Passes `pairs` through unchanged, appending each one's per-frame row to `rows` on the
    way, so a stream is scored frame by frame without holding its frames in memory."""
    for pair in pairs:
        rows.extend(per_frame_disparity([pair]))
        yield pair


def first_and_last(rows: Sequence[dict[str, Any]], count: int = 20) -> Optional[dict[str, Any]]:
    """Mean D1 of the first and the last `count` frames, and last / first; None when the
    stream has fewer than 2 x count scored frames (the two windows would overlap)."""
    if len(rows) < 2 * count:
        return None
    first = float(np.mean([r["d1"] for r in rows[:count]]))
    last = float(np.mean([r["d1"] for r in rows[-count:]]))
    return {"frames": count, "first_d1": first, "last_d1": last,
            "last_over_first": last / first if first > 0 else None}


def d1_over_time_figure(path: Path, curves: dict[str, Sequence[dict[str, Any]]], *,
                        reference: Optional[float] = None, reference_label: str = "") -> Path:
    """D1 (%) per frame for each named curve (e.g. live adapting vs offline unadapted), with an
    optional horizontal reference (e.g. SGBM on the same pair)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4))
    for name, rows in curves.items():
        axis.plot(range(len(rows)), [100 * r["d1"] for r in rows], label=name, linewidth=1.5)
    if reference is not None:
        axis.axhline(100 * reference, color="grey", linestyle="--", label=reference_label)
    axis.set_xlabel("scored frame (stream order)")
    axis.set_ylabel("D1 (> 3 px) %")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend()
    return _save_figure(figure, path)
