"""pmt-evaluate's text output: a method's headline numbers as a comparison row, the rows as a
fixed-width table, and the one-line summary of a report. Fractions print as percentages;
absent or undefined values as "-"."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


def comparison_row(name: str, scores: dict[str, Any]) -> dict[str, Any]:
    """One method's headline numbers; refined_miou None when segmentation is not scored."""
    disparity, refined = scores["disparity"], scores["segmentation"]["refined"]
    return {"method": name,
            **{key: disparity[key] for key in ("d1", "epe", "bad_1", "bad_2", "kitti_d1",
                                               "num_pixels")},
            "refined_miou": refined["miou"] if refined is not None else None,
            "model_ms": scores["timing"]["model_ms"]["mean"]}


def _percent(value: Optional[float]) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.2f} %"


def comparison_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison rows as a fixed-width text table (absent values: "-")."""
    header = ("method", "D1 >3px", "EPE px", "bad-1", "bad-2", "refined mIoU", "model ms")
    lines = [header]
    for row in rows:
        epe, model_ms = row["epe"], row["model_ms"]
        lines.append((row["method"], _percent(row["d1"]),
                      "-" if epe is None or not np.isfinite(epe) else f"{epe:.3f}",
                      _percent(row["bad_1"]), _percent(row["bad_2"]),
                      _percent(row["refined_miou"]),
                      "-" if model_ms is None else f"{model_ms:.1f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


def summary_line(report: dict[str, Any]) -> str:
    parts = [f"{report['num_samples']} samples"]
    for head in ("refined", "coarse"):
        scores = report["segmentation"][head]
        if scores is not None:
            parts.append(f"{head} mIoU {_percent(scores['miou'])}")
    if not report.get("segmentation_ground_truth", True):
        parts.append("mIoU - (no label ground truth)")
    disparity = report["disparity"]
    parts.append(f"D1 {_percent(disparity['d1'])}")
    parts.append(f"EPE {disparity['epe']:.3f} px")
    for key, name in (("bad_1", "bad-1"), ("bad_2", "bad-2")):
        if key in disparity:
            parts.append(f"{name} {_percent(disparity[key])}")
    model_ms = report["timing"]["model_ms"]["mean"]
    if model_ms is not None:
        parts.append(f"model {model_ms:.1f} ms/pair")
    return ", ".join(parts)
