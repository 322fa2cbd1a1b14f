"""TrimBot2020 Garden (the 3DRMS 2018 challenge's synthetic garden), in its released layout.

    ROOT/<split>/<weather>_<scene>/vcam_<k>/vcam_<k>_f<frame>_undist.png   RGB image
    ROOT/<split>/<weather>_<scene>/vcam_<k>/vcam_<k>_f<frame>_gtr.png      indexed labels 0..9
    ROOT/<split>/<weather>_<scene>/vcam_<k>/vcam_<k>_f<frame>_dmap.bin     depth, big-endian
                                float32, column-major (Matlab order), image size
    ROOT/<split>/<weather>_<scene>/vcam_<k>/vcam_<k>_f<frame>_cam.txt      fx fy cx cy qw qx qy qz tx ty tz

Stereo pairs are camera pairs of the pentagonal rig (vcam_0/vcam_1, ... as `stereo_pairs`,
left first). A sample is an annotated left frame (one with _gtr.png). Labels: 0 "unknown" ->
255 (ignore); 1..9 (grass, ground, pavement, hedge, topiary, rose, obstacle, tree, background)
-> 0..8, the paper's 9 classes. Depth -> disparity = fx * baseline / Z with fx from the left
cam.txt and the baseline from the two cameras' centres (C = -R(q)^T t, the README's world-to-
camera convention) unless `baseline_m` is set. `depth_kind: range` converts Euclidean ray
lengths to Z first. Depths <= 0, non-finite or beyond `max_depth_m` give no ground truth.
For the test split, copy the released `gt` files next to the test images.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .base import IGNORE_LABEL, RawSample, StereoDataset, Transform, base_meta, require_same_size
from .io import read_indexed_png, read_rgb

CLASS_NAMES = ("grass", "ground", "pavement", "hedge", "topiary", "rose", "obstacle", "tree", "background")

# The challenge's colors.yaml (RGB in [0, 1]) for ids 1..9, as uint8.
PALETTE = np.round(np.array([
    (0.0, 0.8, 0.0), (0.3, 0.5, 0.0), (0.7, 0.8, 0.9), (0.5, 0.5, 0.0), (0.0, 0.7, 0.7),
    (0.9, 0.0, 0.0), (0.2, 0.2, 0.9), (0.3, 0.7, 0.1), (0.1, 0.1, 0.1)]) * 255).astype(np.uint8)

_ID_TO_TRAIN = np.full(256, IGNORE_LABEL, dtype=np.uint8)
_ID_TO_TRAIN[1:10] = np.arange(9)


@dataclasses.dataclass(frozen=True)
class TrimBotLayout:
    stereo_pairs: tuple[tuple[int, int], ...]   # (left vcam, right vcam)
    depth_kind: str                             # "z" (along the optical axis) or "range" (along the ray)
    max_depth_m: float
    baseline_m: float | None                    # null: from the cameras' poses

    def __post_init__(self) -> None:
        if self.depth_kind not in ("z", "range"):
            raise ValueError(f"trimbot loader depth_kind must be 'z' or 'range', got {self.depth_kind!r}")
        pairs = tuple(tuple(int(v) for v in pair) for pair in self.stereo_pairs)
        object.__setattr__(self, "stereo_pairs", pairs)


@dataclasses.dataclass(frozen=True)
class PinholePose:
    fx: float
    fy: float
    cx: float
    cy: float
    rotation: np.ndarray      # world -> camera
    translation: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        return -self.rotation.T @ self.translation


def _quaternion_to_matrix(qw: float, qx: float, qy: float, qz: float) -> np.ndarray:
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def read_camera_file(path: Path) -> PinholePose:
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    values = path.read_text(encoding="utf-8").split()
    if len(values) != 11:
        raise ValueError(f"{path}: expected 11 numbers (fx fy cx cy qw qx qy qz tx ty tz), "
                         f"got {len(values)}")
    fx, fy, cx, cy, qw, qx, qy, qz, tx, ty, tz = (float(v) for v in values)
    return PinholePose(fx, fy, cx, cy, _quaternion_to_matrix(qw, qx, qy, qz), np.array([tx, ty, tz]))


def read_depth_bin(path: Path, *, height: int, width: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    data = np.fromfile(path, dtype=">f4")
    if data.size != height * width:
        raise ValueError(f"{path}: holds {data.size} depths, the image is {height}x{width} "
                         f"({height * width})")
    return data.reshape((height, width), order="F").astype(np.float32)


class TrimBotGarden(StereoDataset):
    name = "trimbot2020"
    layout_type = TrimBotLayout
    class_names = CLASS_NAMES
    palette = PALETTE

    def __init__(self, root: str | Path, *, split: str, layout: TrimBotLayout,
                 transform: Transform | None = None):
        super().__init__(transform=transform)
        self.root, self.split, self.layout = Path(root), split, layout
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"missing TrimBot2020 folder: {split_dir}")
        self.samples: list[tuple[Path, int, int, str]] = []  # sequence dir, left cam, right cam, frame
        for sequence in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for left_cam, right_cam in layout.stereo_pairs:
                for label in sorted((sequence / f"vcam_{left_cam}").glob(f"vcam_{left_cam}_f*_gtr.png")):
                    frame = label.name[len(f"vcam_{left_cam}_"):-len("_gtr.png")]
                    self.samples.append((sequence, left_cam, right_cam, frame))
        if not self.samples:
            raise FileNotFoundError(f"no annotated frames (vcam_*_f*_gtr.png) under {split_dir}")

    def __len__(self) -> int:
        return len(self.samples)

    def sample_id(self, index: int) -> str:
        sequence, left_cam, right_cam, frame = self.samples[index]
        return f"{sequence.name}/vcam_{left_cam}-{right_cam}_{frame}"

    def _path(self, index: int, camera: str, kind: str) -> Path:
        sequence, left_cam, right_cam, frame = self.samples[index]
        cam = left_cam if camera == "left" else right_cam
        return sequence / f"vcam_{cam}" / f"vcam_{cam}_{frame}_{kind}"

    def label_path(self, index: int) -> Path:
        return self._path(index, "left", "gtr.png")

    def load_labels(self, index: int) -> np.ndarray:
        return _ID_TO_TRAIN[read_indexed_png(self.label_path(index))]

    def load(self, index: int) -> RawSample:
        left_path = self._path(index, "left", "undist.png")
        right_path = self._path(index, "right", "undist.png")
        left, right = read_rgb(left_path), read_rgb(right_path)
        labels = self.load_labels(index)
        height, width = left.shape[:2]
        depth = read_depth_bin(self._path(index, "left", "dmap.bin"), height=height, width=width)
        require_same_size({left_path: left, right_path: right, self.label_path(index): labels})
        left_camera = read_camera_file(self._path(index, "left", "cam.txt"))
        baseline = self.layout.baseline_m
        if baseline is None:
            right_camera = read_camera_file(self._path(index, "right", "cam.txt"))
            baseline = float(np.linalg.norm(left_camera.centre - right_camera.centre))
        if self.layout.depth_kind == "range":
            xs = (np.arange(width) - left_camera.cx) / left_camera.fx
            ys = (np.arange(height) - left_camera.cy) / left_camera.fy
            depth = depth / np.sqrt(1.0 + xs[None, :] ** 2 + ys[:, None] ** 2).astype(np.float32)
        valid = np.isfinite(depth) & (depth > 0) & (depth <= self.layout.max_depth_m)
        with np.errstate(divide="ignore", invalid="ignore"):
            disparity = np.where(valid, left_camera.fx * baseline / depth, 0.0).astype(np.float32)
        meta = base_meta(self.name, self.sample_id(index), fx=left_camera.fx, baseline=baseline,
                         split=self.split)
        return {"left": left, "right": right, "seg": labels, "disparity": disparity, "meta": meta}
