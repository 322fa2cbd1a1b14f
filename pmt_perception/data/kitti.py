"""KITTI 2015 stereo (data_scene_flow) with the KITTI semantic labels (data_semantics) where present.

    ROOT/training/image_2/000000_10.png          left, RGB 8 bit (sizes vary around 1242x375)
    ROOT/training/image_3/000000_10.png          right
    ROOT/training/disp_occ_0/000000_10.png       uint16, d = p / 256, p = 0: no ground truth
    ROOT/training/calib_cam_to_cam/000000.txt    optional (data_scene_flow_calib): P_rect_02/03
    SEMANTIC_ROOT/training/semantic/000000_10.png  optional: Cityscapes labelIds (-> 19 trainIds)
    ROOT/testing/image_2, image_3                no ground truth: disparity 0, seg 255

Splits: "training" and "testing" are the folders; "train" and "val" divide "training"
deterministically, every `val_every`-th frame going to "val" (KITTI has no official val split).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..labels import cityscapes_palette
from .base import IGNORE_LABEL, RawSample, StereoDataset, Transform, base_meta, require_same_size
from .cityscapes import TRAIN_CLASS_NAMES, label_ids_to_train_ids
from .io import decode_disparity_png, read_png_raw, read_rgb


@dataclasses.dataclass(frozen=True)
class KittiLayout:
    disparity_folder: str        # disp_occ_0 (all pixels) or disp_noc_0 (non-occluded only)
    semantic_root: str | None    # where data_semantics was extracted; null: the stereo root
    val_every: int               # "val" = every n-th frame of training, "train" = the others

    def __post_init__(self) -> None:
        if self.val_every < 2:
            raise ValueError(f"kitti loader val_every must be >= 2, got {self.val_every}")


def read_kitti_calibration(path: Path) -> tuple[float, float]:
    """fx and baseline (m) from a calib_cam_to_cam file: P_rect_0X = K [I | t], P[0, 3] = fx * t_x."""
    rows: dict[str, np.ndarray] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, values = line.partition(":")
        if key in ("P_rect_02", "P_rect_03"):
            rows[key] = np.array(values.split(), dtype=np.float64).reshape(3, 4)
    if len(rows) != 2:
        raise ValueError(f"{path}: expected P_rect_02 and P_rect_03")
    fx = rows["P_rect_02"][0, 0]
    baseline = (rows["P_rect_02"][0, 3] - rows["P_rect_03"][0, 3]) / fx
    return float(fx), float(baseline)


class Kitti2015(StereoDataset):
    name = "kitti2015"
    layout_type = KittiLayout
    class_names = TRAIN_CLASS_NAMES
    palette = cityscapes_palette()

    def __init__(self, root: str | Path, *, split: str, layout: KittiLayout,
                 transform: Transform | None = None):
        super().__init__(transform=transform)
        self.root, self.split, self.layout = Path(root), split, layout
        self.folder = "testing" if split == "testing" else "training"
        if split not in ("training", "testing", "train", "val"):
            raise ValueError(f"KITTI split must be training, testing, train or val; got {split!r}")
        image_dir = self.root / self.folder / "image_2"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"missing KITTI folder: {image_dir}")
        frames = sorted(p.name[:-len("_10.png")] for p in image_dir.glob("*_10.png"))
        if split == "train":
            frames = [f for i, f in enumerate(frames) if i % layout.val_every != layout.val_every - 1]
        elif split == "val":
            frames = [f for i, f in enumerate(frames) if i % layout.val_every == layout.val_every - 1]
        if not frames:
            raise FileNotFoundError(f"no *_10.png frames for split {split!r} under {image_dir}")
        self.frames = frames
        self.semantic_root = Path(layout.semantic_root) if layout.semantic_root else self.root

    def __len__(self) -> int:
        return len(self.frames)

    def sample_id(self, index: int) -> str:
        return f"{self.frames[index]}_10"

    def _path(self, folder: str, index: int) -> Path:
        return self.root / self.folder / folder / f"{self.frames[index]}_10.png"

    def label_path(self, index: int) -> Path | None:
        path = self.semantic_root / self.folder / "semantic" / f"{self.frames[index]}_10.png"
        return path if path.is_file() else None

    def load_labels(self, index: int) -> np.ndarray:
        path = self.label_path(index)
        if path is None:
            image = read_rgb(self._path("image_2", index))
            return np.full(image.shape[:2], IGNORE_LABEL, dtype=np.uint8)
        return label_ids_to_train_ids(read_png_raw(path, dtype=np.uint8))

    def load(self, index: int) -> RawSample:
        left_path, right_path = self._path("image_2", index), self._path("image_3", index)
        left, right = read_rgb(left_path), read_rgb(right_path)
        arrays = {left_path: left, right_path: right}
        if self.folder == "training":
            disparity_path = self._path(self.layout.disparity_folder, index)
            disparity = decode_disparity_png(read_png_raw(disparity_path, dtype=np.uint16), scale=256.0)
            arrays[disparity_path] = disparity
        else:
            disparity = np.zeros(left.shape[:2], dtype=np.float32)
        label_path = self.label_path(index)
        if label_path is not None:
            labels = label_ids_to_train_ids(read_png_raw(label_path, dtype=np.uint8))
            arrays[label_path] = labels
        else:
            labels = np.full(left.shape[:2], IGNORE_LABEL, dtype=np.uint8)
        require_same_size(arrays)
        fx = baseline = None
        calibration = self.root / self.folder / "calib_cam_to_cam" / f"{self.frames[index]}.txt"
        if calibration.is_file():
            fx, baseline = read_kitti_calibration(calibration)
        meta = base_meta(self.name, self.sample_id(index), fx=fx, baseline=baseline, split=self.split,
                         has_semantics=label_path is not None)
        return {"left": left, "right": right, "seg": labels, "disparity": disparity, "meta": meta}
