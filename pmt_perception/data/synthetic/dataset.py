"""Synthetic pairs as datasets: generated on the fly, or read back from a `pmt-synth` folder.

On-disk layout written by `write_folder` (and `pmt-synth`):

    DIR/dataset.json          format, class names, palette, size, count, seed, split,
                              disparity_scale, the generator settings used, and the names
                              of the cached photos the textures came from (photo_textures)
    DIR/left/000000.png       RGB, 8 bit
    DIR/right/000000.png      RGB, 8 bit
    DIR/disparity/000000.png  uint16 = round(disparity * disparity_scale), 0 = no ground truth
                              (KITTI's encoding; disparity_scale is 256 unless the image is so
                              wide that the largest disparity would overflow 16 bits)
    DIR/labels/000000.png     uint8 class id (every pixel labelled; no 255 in synthetic data)
    DIR/camera/000000.json    fx, fy, cx, cy (pixels), baseline (m), width, height, seed
    DIR/contact_sheet.png     left | right | disparity | labels for the first samples

Sample i of split s with base seed S is the scene of seed (S, split code, i) in both modes, so
a folder written with `--seed S --split s` holds the pairs the on-the-fly dataset generates.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from ...atomic import write_json_atomic
from ...config import to_plain
from ..base import RawSample, StereoDataset, Transform, base_meta, require_same_size
from ..io import (
    decode_disparity_png,
    encode_disparity_png,
    read_json,
    read_png_raw,
    read_rgb,
    write_png_atomic,
)
from .classes import CLASS_NAMES, PALETTE
from .generator import SyntheticPair, generate_pair, sample_seed
from .photo_cache import open_library
from .settings import GeneratorSettings, check_size

FORMAT = "pmt_synthetic"
FORMAT_VERSION = 1


def _raw_from_pair(pair: SyntheticPair, sample_id: str, split: str) -> RawSample:
    meta = base_meta("synthetic", sample_id, fx=pair.rig.fx, baseline=pair.rig.baseline, split=split,
                     cx=pair.rig.cx, cy=pair.rig.cy)
    return {"left": pair.left, "right": pair.right, "seg": pair.labels, "disparity": pair.disparity,
            "meta": meta}


class SyntheticStereo(StereoDataset):
    """Pairs rendered when asked for: sample i of `split` is always the same pair."""

    name = "synthetic"
    class_names = CLASS_NAMES
    palette = PALETTE

    def __init__(self, settings: GeneratorSettings, *, split: str, length: int | None = None,
                 size: tuple[int, int] | None = None, transform: Transform | None = None):
        super().__init__(transform=transform)
        if length is None:
            if split not in settings.samples_per_split:
                raise ValueError(f"synthetic settings have no length for split {split!r}; "
                                 f"known: {sorted(settings.samples_per_split)}")
            length = settings.samples_per_split[split]
        sample_seed(settings.seed, split, 0)  # validates the split name
        self.settings, self.split, self.length = settings, split, int(length)
        self.size = check_size(size or settings.size)
        # Open the photo cache here, so a missing one is reported once, not by every worker.
        open_library(settings.textures.photo_dir)

    def __len__(self) -> int:
        return self.length

    def sample_id(self, index: int) -> str:
        return f"{self.split}_{index:06d}"

    def pair(self, index: int) -> SyntheticPair:
        return generate_pair(self.settings, seed=sample_seed(self.settings.seed, self.split, index),
                             size=self.size)

    def load(self, index: int) -> RawSample:
        return _raw_from_pair(self.pair(index), self.sample_id(index), self.split)

    def presence_key(self) -> str:
        return f"synthetic|{to_plain(self.settings)}|{self.split}|{self.length}|{self.size}"


def disparity_scale_for(settings: GeneratorSettings, width: int) -> int:
    """256 (KITTI) unless the largest possible disparity at `width` would overflow uint16."""
    largest = settings.scene.max_disparity_px * width / settings.scene.reference_width
    scale = 256
    while scale > 1 and largest * scale > np.iinfo(np.uint16).max:
        scale //= 2
    return scale


def write_sample(directory: Path, stem: str, pair: SyntheticPair, *, disparity_scale: int) -> None:
    write_png_atomic(directory / "left" / f"{stem}.png", pair.left[..., ::-1])
    write_png_atomic(directory / "right" / f"{stem}.png", pair.right[..., ::-1])
    write_png_atomic(directory / "disparity" / f"{stem}.png",
                     encode_disparity_png(pair.disparity, scale=disparity_scale))
    write_png_atomic(directory / "labels" / f"{stem}.png", pair.labels)
    seed = list(pair.seed) if isinstance(pair.seed, tuple) else pair.seed
    write_json_atomic(directory / "camera" / f"{stem}.json", {**pair.camera_info(), "seed": seed})


def write_folder(directory: str | Path, settings: GeneratorSettings, *, count: int, seed: int,
                 split: str = "train", size: tuple[int, int] | None = None,
                 on_sample: Callable[[int, SyntheticPair], None] | None = None) -> dict:
    """Render `count` pairs into `directory` (layout above); returns the dataset.json contents.

    dataset.json is written last, so a folder without it is an interrupted run.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    directory = Path(directory)
    size = check_size(size or settings.size)
    settings = dataclasses.replace(settings, seed=seed, size=size)
    scale = disparity_scale_for(settings, size[1])
    for index in range(count):
        pair = generate_pair(settings, seed=sample_seed(seed, split, index), size=size)
        write_sample(directory, f"{index:06d}", pair, disparity_scale=scale)
        if on_sample is not None:
            on_sample(index, pair)
    library = open_library(settings.textures.photo_dir)
    description = {"format": FORMAT, "version": FORMAT_VERSION, "class_names": list(CLASS_NAMES),
                   "palette": PALETTE.tolist(), "size": list(size), "count": count, "seed": seed,
                   "split": split, "disparity_scale": scale, "generator": to_plain(settings),
                   "photo_textures": sorted(p.name for p in library.paths) if library else []}
    write_json_atomic(directory / "dataset.json", description)
    return description


class SyntheticFolder(StereoDataset):
    """A folder written by `pmt-synth` / `write_folder`."""

    name = "synthetic"
    class_names = CLASS_NAMES
    palette = PALETTE

    def __init__(self, root: str | Path, *, transform: Transform | None = None):
        super().__init__(transform=transform)
        self.root = Path(root)
        description = read_json(self.root / "dataset.json")
        if description.get("format") != FORMAT:
            raise ValueError(f"{self.root / 'dataset.json'}: not a {FORMAT} folder "
                             f"(format {description.get('format')!r})")
        if tuple(description["class_names"]) != CLASS_NAMES:
            raise ValueError(f"{self.root / 'dataset.json'}: class names {description['class_names']} "
                             f"differ from this version's {list(CLASS_NAMES)}")
        self.description = description
        self.disparity_scale = float(description["disparity_scale"])
        self.stems = [f"{i:06d}" for i in range(int(description["count"]))]
        self.split = str(description.get("split", "train"))

    def __len__(self) -> int:
        return len(self.stems)

    def sample_id(self, index: int) -> str:
        return self.stems[index]

    def _path(self, kind: str, index: int, suffix: str = ".png") -> Path:
        return self.root / kind / f"{self.stems[index]}{suffix}"

    def label_path(self, index: int) -> Path:
        return self._path("labels", index)

    def load_labels(self, index: int) -> np.ndarray:
        return read_png_raw(self._path("labels", index), dtype=np.uint8)

    def load(self, index: int) -> RawSample:
        paths = {kind: self._path(kind, index) for kind in ("left", "right", "disparity", "labels")}
        left, right = read_rgb(paths["left"]), read_rgb(paths["right"])
        disparity = decode_disparity_png(read_png_raw(paths["disparity"], dtype=np.uint16),
                                         scale=self.disparity_scale)
        labels = read_png_raw(paths["labels"], dtype=np.uint8)
        require_same_size({paths["left"]: left, paths["right"]: right, paths["disparity"]: disparity,
                           paths["labels"]: labels})
        camera = read_json(self._path("camera", index, ".json"))
        meta = base_meta("synthetic", self.stems[index], fx=camera["fx"], baseline=camera["baseline"],
                         cx=camera["cx"], cy=camera["cy"], split=self.split)
        return {"left": left, "right": right, "seg": labels, "disparity": disparity, "meta": meta}
