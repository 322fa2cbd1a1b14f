"""Figures a person looks at after an evaluation: per-class IoU bars, the confusion matrix, and
the paper's Figure 8 panel (inputs, GT / predicted disparity, error map, GT / predicted
segmentation) for the first few samples. Matplotlib with the Agg backend (no display needed);
every file is written to a temp name and renamed, so a viewer never opens half a PNG.
"""
from __future__ import annotations


from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from pmt_perception.atomic import atomic_path
from pmt_perception.visualize import (colorize_disparity, colorize_labels, contact_sheet,
                                      disparity_error_map, write_png_rgb)

FIGURE8_TITLES = ["left", "right", "GT disparity", "pred disparity",
                  "error: <3 / <6 / >=6 px", "GT seg", "pred seg"]

def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt

def _save_figure(figure: Any, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:  # keeps the suffix: matplotlib picks the format by it
            figure.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        _pyplot().close(figure)
    return path

def iou_bar_chart(path: Path, class_names: Sequence[str], refined_iou: Sequence[Optional[float]],
                  coarse_iou: Optional[Sequence[Optional[float]]] = None, *,
                  title: str = "per-class IoU") -> Path:
    """Grouped bars of refined (and coarse) IoU per class; classes absent from GT and prediction
    (IoU undefined) are shown as 'n/a' instead of a misleading 0."""
    plt = _pyplot()
    count = len(class_names)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.55 * count + 2), 4.0))
    positions = np.arange(count)
    series = [("refined", refined_iou, "#1f77b4")]
    if coarse_iou is not None:
        series.append(("coarse", coarse_iou, "#aec7e8"))
    width = 0.8 / len(series)
    for offset, (label, values, color) in enumerate(series):
        heights = np.array([np.nan if v is None else float(v) for v in values])
        x = positions + (offset - (len(series) - 1) / 2) * width
        axes.bar(x, np.nan_to_num(heights) * 100, width, label=label, color=color)
        for xi, h in zip(x, heights):
            axes.text(xi, (0 if np.isnan(h) else h * 100) + 1, "n/a" if np.isnan(h) else f"{h * 100:.0f}",
                      ha="center", va="bottom", fontsize=7)
    axes.set_xticks(positions, class_names, rotation=45, ha="right")
    axes.set_ylabel("IoU (%)")
    axes.set_ylim(0, 110)
    axes.set_title(title)
    axes.legend(loc="lower right")
    axes.grid(axis="y", alpha=0.3)
    return _save_figure(figure, path)

def confusion_matrix_figure(path: Path, confusion: Any, class_names: Sequence[str], *,
                            title: str = "confusion (rows: ground truth, normalised)") -> Path:
    """Row-normalised confusion matrix: row c shows where the pixels of true class c went."""
    plt = _pyplot()
    matrix = np.asarray(confusion, dtype=np.float64)
    row_sums = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, row_sums, out=np.zeros_like(matrix), where=row_sums > 0)
    count = len(class_names)
    size = max(4.0, 0.5 * count + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(count), class_names, rotation=45, ha="right")
    axes.set_yticks(range(count), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("ground truth")
    if count <= 20:
        for row in range(count):
            for column in range(count):
                value = normalised[row, column]
                if value >= 0.005:
                    axes.text(column, row, f"{value * 100:.0f}", ha="center", va="center",
                              fontsize=7, color="white" if value > 0.5 else "black")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    return _save_figure(figure, path)

def figure8_rows(rows: Sequence[dict[str, Any]], palette: np.ndarray) -> list[list[np.ndarray]]:
    """Tiles of the paper's Figure 8 for each kept sample (see FIGURE8_TITLES)."""
    tiles = []
    for row in rows:
        gt, pred = row["disparity"], row["pred_disparity"]
        valid = np.isfinite(gt) & (gt > 0)
        max_disp = float(gt[valid].max()) if valid.any() else max(float(np.nanmax(pred)), 1.0)
        height, width = gt.shape
        blank = np.full((height, width, 3), 255, np.uint8)
        labels = row.get("pred_labels")
        tiles.append([
            row["left"] if row.get("left") is not None else blank,
            row["right"] if row.get("right") is not None else blank,
            colorize_disparity(gt, max_disp),
            colorize_disparity(np.nan_to_num(pred, nan=0.0), max_disp),
            disparity_error_map(pred, gt),
            colorize_labels(row["seg"], palette),
            colorize_labels(labels, palette) if labels is not None else blank,
        ])
    return tiles

def write_figure8(path: Path, rows: Sequence[dict[str, Any]], palette: np.ndarray) -> Path:
    sheet = contact_sheet(figure8_rows(rows, palette), FIGURE8_TITLES,
                          tile_width=min(360, rows[0]["disparity"].shape[1]))
    write_png_rgb(path, sheet)
    return Path(path)

def write_all_figures(out_dir: Path, accumulator: Any, palette: np.ndarray) -> list[Path]:
    """Every figure an evaluation makes; segmentation figures only when the method segments."""
    out_dir = Path(out_dir)
    written = []
    if accumulator.has_labels:
        refined = accumulator.refined.compute()["iou_per_class"]
        coarse = accumulator.coarse.compute()["iou_per_class"] if accumulator.has_coarse else None
        written.append(iou_bar_chart(out_dir / "iou_per_class.png", accumulator.class_names,
                                     refined, coarse))
        written.append(confusion_matrix_figure(out_dir / "confusion_matrix.png",
                                               accumulator.refined.confusion.numpy(),
                                               accumulator.class_names))
    if accumulator.figure_rows:
        written.append(write_figure8(out_dir / "figure8_samples.png", accumulator.figure_rows,
                                     palette))
    return written
