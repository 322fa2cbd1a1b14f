"""Cityscapes stereo + semantics in its released layout (cityscapesScripts conventions).

    ROOT/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/rightImg8bit/<split>/<city>/<city>_<seq>_<frame>_rightImg8bit.png
    ROOT/disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png
    ROOT/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    ROOT/camera/<split>/<city>/<city>_<seq>_<frame>_camera.json     (optional: fx, baseline)

Labels: the 34 labelIds map to the 19 trainIds; every other id (void classes, license plate)
becomes 255 (ignore). Disparity: per the Cityscapes README, a stored value p > 0 means
d = (p - 1) / 256 pixels and p = 0 means "no measurement" (the maps are SGM output, sparse).
The PMT authors' code divides by 256 without subtracting 1, which adds a constant +1/256 px
(0.004 px) to every valid disparity and keeps p = 1 as 1/256 px where the spec says d = 0; here
p = 1 decodes to 0 and so, by the sample contract, to "no ground truth". The difference is far
below any metric threshold, but evaluation against published numbers should know it exists.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..labels import IGNORE_LABEL, cityscapes_palette
from .base import RawSample, StereoDataset, Transform, base_meta, require_same_size
from .io import decode_disparity_png, read_json, read_png_raw, read_rgb

TRAIN_CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                     "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                     "bus", "train", "motorcycle", "bicycle")

# labelId -> trainId for the labelIds that are evaluated (cityscapesScripts labels.py).
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                  25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def _lookup_table(mapping: dict[int, int]) -> np.ndarray:
    table = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for source, target in mapping.items():
        table[source] = target
    return table


LABEL_TO_TRAIN_TABLE = _lookup_table(LABEL_TO_TRAIN)


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes labelIds (uint8) -> trainIds 0..18, IGNORE_LABEL for everything not evaluated."""
    return LABEL_TO_TRAIN_TABLE[np.asarray(label_ids, dtype=np.uint8)]


@dataclasses.dataclass(frozen=True)
class CityscapesLayout:
    annotation: str        # gtFine (or gtCoarse: same layout)
    read_camera: bool      # read fx / baseline from camera/*.json when the file is there


class CityscapesStereo(StereoDataset):
    name = "cityscapes"
    layout_type = CityscapesLayout
    class_names = TRAIN_CLASS_NAMES
    palette = cityscapes_palette()

    def __init__(self, root: str | Path, *, split: str, layout: CityscapesLayout,
                 transform: Transform | None = None):
        super().__init__(transform=transform)
        self.root, self.split, self.layout = Path(root), split, layout
        left_dir = self.root / "leftImg8bit" / split
        if not left_dir.is_dir():
            raise FileNotFoundError(f"missing Cityscapes folder: {left_dir}")
        suffix = "_leftImg8bit.png"
        self.stems = sorted(str(p.relative_to(left_dir))[:-len(suffix)]
                            for p in left_dir.glob(f"*/*{suffix}"))
        if not self.stems:
            raise FileNotFoundError(f"no *{suffix} images under {left_dir}")

    def __len__(self) -> int:
        return len(self.stems)

    def sample_id(self, index: int) -> str:
        return Path(self.stems[index]).name

    def _path(self, folder: str, suffix: str, index: int) -> Path:
        return self.root / folder / self.split / f"{self.stems[index]}_{suffix}"

    def label_path(self, index: int) -> Path:
        return self._path(self.layout.annotation, f"{self.layout.annotation}_labelIds.png", index)

    def load_labels(self, index: int) -> np.ndarray:
        return label_ids_to_train_ids(read_png_raw(self.label_path(index), dtype=np.uint8))

    def load(self, index: int) -> RawSample:
        paths = {"left": self._path("leftImg8bit", "leftImg8bit.png", index),
                 "right": self._path("rightImg8bit", "rightImg8bit.png", index),
                 "disparity": self._path("disparity", "disparity.png", index),
                 "labels": self.label_path(index)}
        left, right = read_rgb(paths["left"]), read_rgb(paths["right"])
        disparity = decode_disparity_png(read_png_raw(paths["disparity"], dtype=np.uint16),
                                         scale=256.0, offset=1.0)
        labels = self.load_labels(index)
        require_same_size({paths["left"]: left, paths["right"]: right, paths["disparity"]: disparity,
                           paths["labels"]: labels})
        fx = baseline = None
        camera_path = self._path("camera", "camera.json", index)
        if self.layout.read_camera and camera_path.is_file():
            camera = read_json(camera_path)
            try:
                fx, baseline = camera["intrinsic"]["fx"], camera["extrinsic"]["baseline"]
            except (KeyError, TypeError):
                raise ValueError(f"{camera_path}: expected intrinsic.fx and extrinsic.baseline") from None
        meta = base_meta(self.name, self.sample_id(index), fx=fx, baseline=baseline, split=self.split)
        return {"left": left, "right": right, "seg": labels, "disparity": disparity, "meta": meta}
