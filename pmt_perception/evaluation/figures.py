"""Figures a person looks at after an evaluation: per-class IoU bars, the confusion matrix, and
the paper's Figure 8 panel (inputs, GT / predicted disparity, error map, GT / predicted
segmentation) for the first few samples, and the error maps of several methods side by side.
Matplotlib with the Agg backend (no display needed); every file is written to a temp name and
renamed, so a viewer never opens half a PNG.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from pmt_perception.atomic import atomic_path
from pmt_perception.visualize import (
    colorize_disparity,
    colorize_labels,
    contact_sheet,
    disparity_error_map,
    write_png_rgb,
)

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

def figure8_rows(rows: Sequence[dict[str, Any]], palette: np.ndarray, *,
                 gt_seg: bool = True, pred_seg: bool = True) -> list[list[np.ndarray]]:
    """Tiles of the paper's Figure 8 for each kept sample (see FIGURE8_TITLES); the GT / predicted
    segmentation tiles are left out when there is no label ground truth / no predicted labels."""
    tiles = []
    for row in rows:
        gt, pred = row["disparity"], row["pred_disparity"]
        max_disp = _max_disparity(gt, pred)
        height, width = gt.shape
        blank = np.full((height, width, 3), 255, np.uint8)
        labels = row.get("pred_labels")
        tiles.append([
            row["left"] if row.get("left") is not None else blank,
            row["right"] if row.get("right") is not None else blank,
            colorize_disparity(gt, max_disp),
            colorize_disparity(np.nan_to_num(pred, nan=0.0), max_disp),
            disparity_error_map(pred, gt),
            *([colorize_labels(row["seg"], palette)] if gt_seg else []),
            *([colorize_labels(labels, palette) if labels is not None else blank]
              if pred_seg else []),
        ])
    return tiles

def _max_disparity(gt: np.ndarray, pred: np.ndarray) -> float:
    """One colour scale for GT and prediction: the GT's maximum (the prediction's without GT)."""
    valid = np.isfinite(gt) & (gt > 0)
    return float(gt[valid].max()) if valid.any() else max(float(np.nanmax(pred)), 1.0)

def write_figure8(path: Path, rows: Sequence[dict[str, Any]], palette: np.ndarray, *,
                  gt_seg: bool = True, pred_seg: bool = True) -> Path:
    titles = FIGURE8_TITLES[:5] + (["GT seg"] if gt_seg else []) + (["pred seg"] if pred_seg else [])
    sheet = contact_sheet(figure8_rows(rows, palette, gt_seg=gt_seg, pred_seg=pred_seg), titles,
                          tile_width=min(360, rows[0]["disparity"].shape[1]))
    write_png_rgb(path, sheet)
    return Path(path)

def write_error_maps(path: Path, methods: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> Path:
    """Every method side by side on the same samples: left, GT disparity, then each method's
    disparity and its error map (blue < 3 px, green < 6 px, red >= 6 px, black: no GT).
    `methods`: (name, figure rows) pairs whose rows are the same samples in the same order."""
    if not methods or not methods[0][1]:
        raise ValueError("write_error_maps needs at least one method with figure rows")
    count = min(len(rows) for _name, rows in methods)
    titles = ["left", "GT disparity"]
    for name, _rows in methods:
        titles += [f"{name} disparity", f"{name} error <3/<6/>=6 px"]
    tiles = []
    for index in range(count):
        first = methods[0][1][index]
        gt = first["disparity"]
        max_disp = _max_disparity(gt, first["pred_disparity"])
        left = first.get("left")
        row = [left if left is not None else np.full((*gt.shape, 3), 255, np.uint8),
               colorize_disparity(gt, max_disp)]
        for _name, rows in methods:
            pred = rows[index]["pred_disparity"]
            row += [colorize_disparity(np.nan_to_num(pred, nan=0.0), max_disp),
                    disparity_error_map(pred, gt)]
        tiles.append(row)
    write_png_rgb(path, contact_sheet(tiles, titles, tile_width=min(480, gt.shape[1])))
    return Path(path)

def write_all_figures(out_dir: Path, accumulator: Any, palette: np.ndarray) -> list[Path]:
    """Every figure an evaluation makes; segmentation figures only when segmentation is scored
    (the method segments and the data has labels)."""
    out_dir = Path(out_dir)
    written = []
    if accumulator.scores_segmentation:
        refined = accumulator.refined.compute()["iou_per_class"]
        coarse = accumulator.coarse.compute()["iou_per_class"] if accumulator.has_coarse else None
        written.append(iou_bar_chart(out_dir / "iou_per_class.png", accumulator.class_names,
                                     refined, coarse))
        written.append(confusion_matrix_figure(out_dir / "confusion_matrix.png",
                                               accumulator.refined.confusion.numpy(),
                                               accumulator.class_names))
    if accumulator.figure_rows:
        gt_seg = accumulator.has_label_ground_truth
        written.append(write_figure8(out_dir / "figure8_samples.png", accumulator.figure_rows,
                                     palette, gt_seg=gt_seg,
                                     pred_seg=gt_seg or accumulator.has_labels))
    return written
