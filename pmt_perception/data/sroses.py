"""S-ROSeS (synthetic rose bushes, 720x480, 2 classes, dense disparity).

No public description of the release's folder layout could be found, so the layout is set in
config/data/sroses.yaml, every name configurable; the defaults are:

    ROOT/<split>/left/<name>.png         RGB 8 bit
    ROOT/<split>/right/<name>.png        RGB 8 bit
    ROOT/<split>/labels/<name>.png       8 bit: 0 = background, anything else = rose
    ROOT/<split>/disparity/<name>.<ext>  `disparity_format`: png_x256 (uint16 / 256, 0 = none,
                                         as KITTI), pfm (float32, SceneFlow's format) or npy

Files pair up by name (without extension). The camera (paper §4.1: 32 mm focal length on a
32 mm sensor, 720 px wide -> fx = 720 px; baseline 0.03 m) is in the config for the meta data.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .base import RawSample, StereoDataset, Transform, base_meta, require_same_size
from .io import decode_disparity_png, read_pfm, read_png_raw, read_rgb

CLASS_NAMES = ("background", "rose")
PALETTE = np.array([(0, 0, 0), (220, 40, 90)], dtype=np.uint8)
DISPARITY_FORMATS = {"png_x256": ".png", "pfm": ".pfm", "npy": ".npy"}


@dataclasses.dataclass(frozen=True)
class SRosesLayout:
    left_dir: str
    right_dir: str
    label_dir: str
    disparity_dir: str
    disparity_format: str
    fx: float
    baseline_m: float

    def __post_init__(self) -> None:
        if self.disparity_format not in DISPARITY_FORMATS:
            raise ValueError(f"sroses loader disparity_format must be one of {sorted(DISPARITY_FORMATS)}, "
                             f"got {self.disparity_format!r}")


def read_disparity_file(path: Path, disparity_format: str) -> np.ndarray:
    if disparity_format == "png_x256":
        return decode_disparity_png(read_png_raw(path, dtype=np.uint16), scale=256.0)
    if disparity_format == "pfm":
        disparity = read_pfm(path)
    else:
        if not path.is_file():
            raise FileNotFoundError(f"missing file: {path}")
        disparity = np.load(path, allow_pickle=False)
        if disparity.ndim != 2:
            raise ValueError(f"{path}: expected an HxW disparity array, got shape {disparity.shape}")
    disparity = disparity.astype(np.float32)
    return np.where(np.isfinite(disparity) & (disparity > 0), disparity, 0.0).astype(np.float32)


class SRoses(StereoDataset):
    name = "sroses"
    layout_type = SRosesLayout
    class_names = CLASS_NAMES
    palette = PALETTE

    def __init__(self, root: str | Path, *, split: str, layout: SRosesLayout,
                 transform: Transform | None = None):
        super().__init__(transform=transform)
        self.root, self.split, self.layout = Path(root), split, layout
        self.split_dir = self.root / split
        left_dir = self.split_dir / layout.left_dir
        if not left_dir.is_dir():
            raise FileNotFoundError(f"missing S-ROSeS folder: {left_dir}")
        self.names = sorted(p.stem for p in left_dir.glob("*.png"))
        if not self.names:
            raise FileNotFoundError(f"no *.png images under {left_dir}")

    def __len__(self) -> int:
        return len(self.names)

    def sample_id(self, index: int) -> str:
        return self.names[index]

    def _path(self, folder: str, index: int, suffix: str = ".png") -> Path:
        return self.split_dir / folder / f"{self.names[index]}{suffix}"

    def label_path(self, index: int) -> Path:
        return self._path(self.layout.label_dir, index)

    def load_labels(self, index: int) -> np.ndarray:
        mask = read_png_raw(self.label_path(index))
        return (mask > 0).astype(np.uint8)

    def load(self, index: int) -> RawSample:
        layout = self.layout
        left_path, right_path = self._path(layout.left_dir, index), self._path(layout.right_dir, index)
        disparity_path = self._path(layout.disparity_dir, index, DISPARITY_FORMATS[layout.disparity_format])
        left, right = read_rgb(left_path), read_rgb(right_path)
        labels = self.load_labels(index)
        disparity = read_disparity_file(disparity_path, self.layout.disparity_format)
        require_same_size({left_path: left, right_path: right, self.label_path(index): labels,
                           disparity_path: disparity})
        meta = base_meta(self.name, self.sample_id(index), fx=layout.fx, baseline=layout.baseline_m,
                         split=self.split)
        return {"left": left, "right": right, "seg": labels, "disparity": disparity, "meta": meta}
