"""Where `pmt-adapt` takes its stereo pairs from: a folder with left/ and right/ images, a
Middlebury-style scene folder, or a ROS 2 bag with the node's input topics (read without ROS,
paired as the node pairs them). Pairs load as HxWx3 uint8 arrays, optionally resized; ground
truth, where there is any, serves `--eval` only.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import torch

from .data.bag import read_stereo_frames
from .data.bag_io import BagError
from .data.io import decode_disparity_png, read_json, read_png_raw, read_rgb
from .data.middlebury import Middlebury, MiddleburyLayout, find_scenes, read_pfm

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")


@dataclasses.dataclass(frozen=True)
class PairSource:
    """One stereo pair on disk; `load()` -> (left, right, gt or None) at the requested size."""

    name: str
    left: Path
    right: Path
    ground_truth: Optional[Path] = None
    gt_kind: str = "none"         # png16 | pfm | middlebury | bag | none
    gt_scale: float = 256.0
    middlebury: Optional[tuple] = None    # (Middlebury dataset, index) for middlebury GT
    frame: Any = None                     # data.bag.StereoFrame: a bag's pair, in memory


def list_pairs(source: Path, *, bag_frames: int = 200, seed: int = 0) -> list[PairSource]:
    """Pairs in a left/ + right/ folder, a Middlebury-style folder or a ROS 2 bag folder;
    ValueError otherwise."""
    source = Path(source)
    if not source.exists():
        raise ValueError(f"adapt --data: {source} does not exist")
    if source.is_file():
        raise ValueError(f"adapt --data: {source} is a file: pass a folder with left/ and right/ "
                         "images, a Middlebury scene folder or a ROS 2 bag folder")
    if (source / "metadata.yaml").is_file():
        return _bag_pairs(source, limit=bag_frames, seed=seed)
    if (source / "left").is_dir() and (source / "right").is_dir():
        return _folder_pairs(source)
    if find_scenes(source):
        dataset = Middlebury(source, split="all", layout=MiddleburyLayout(
            scale=1.0, right_image="im1.png", png_disparity_factor=None, nonoccluded_only=False))
        return [PairSource(dataset.sample_id(i), scene.left, scene.right, scene.disparity,
                           "middlebury", middlebury=(dataset, i))
                for i, scene in enumerate(dataset.scenes)]
    raise ValueError(f"adapt --data: {source} holds neither left/ + right/ image folders nor a "
                     "Middlebury scene (im0.png/im1.png, view1.png/view5.png, <name>L/<name>R) "
                     "nor a ROS 2 bag (metadata.yaml)")


def _bag_pairs(source: Path, *, limit: int, seed: int) -> list[PairSource]:
    """Up to `limit` synchronized frames of the bag, drawn uniformly over the whole bag in one
    pass (reservoir sampling, seeded: the same bag and seed keep the same frames), in stamp
    order. A bag is a stream of any length; memory stays bounded by `limit` pairs."""
    generator = np.random.default_rng(seed)
    kept: list = []
    try:
        for seen, frame in enumerate(read_stereo_frames(source)):
            if len(kept) < limit:
                kept.append(frame)
            else:
                slot = int(generator.integers(0, seen + 1))
                if slot < limit:
                    kept[slot] = frame
    except BagError as error:
        raise ValueError(f"adapt --data: {error}") from None
    if not kept:
        raise ValueError(f"adapt --data: bag {source} holds no synchronized stereo frames on the "
                         "node's input topics")
    kept.sort(key=lambda frame: frame.stamp_ns)
    return [PairSource(f"stamp_{frame.stamp_ns}", source, source,
                       gt_kind="bag" if frame.disparity is not None else "none", frame=frame)
            for frame in kept]


def _folder_pairs(source: Path) -> list[PairSource]:
    lefts = {p.name: p for p in sorted((source / "left").iterdir())
             if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [name for name in lefts if not (source / "right" / name).is_file()]
    if missing:
        raise ValueError(f"adapt --data: {source / 'right'} lacks {len(missing)} image(s) of "
                         f"left/, e.g. {missing[0]}")
    if not lefts:
        raise ValueError(f"adapt --data: no images in {source / 'left'}")
    scale = 256.0
    if (source / "dataset.json").is_file():   # pmt-synth folders say their PNG scale
        scale = float(read_json(source / "dataset.json").get("disparity_scale", 256.0))
    pairs = []
    for name, left in lefts.items():
        stem = Path(name).stem
        png, pfm = source / "disparity" / f"{stem}.png", source / "disparity" / f"{stem}.pfm"
        gt, kind = (png, "png16") if png.is_file() else (pfm, "pfm") if pfm.is_file() else (None, "none")
        pairs.append(PairSource(stem, left, source / "right" / name, gt, kind, scale))
    return pairs


def load_pair(pair: PairSource, size: Optional[tuple[int, int]]):
    """(left, right) HxWx3 uint8 and ground truth HxW float32 (0 = none) or None, resized to
    `size` (images area-resized; GT nearest-resized and multiplied by the width ratio)."""
    if pair.gt_kind == "middlebury":
        dataset, index = pair.middlebury
        raw = dataset.load(index)
        left, right, gt = raw["left"], raw["right"], raw["disparity"]
    elif pair.frame is not None:
        left, right, gt = pair.frame.left, pair.frame.right, pair.frame.disparity
    else:
        left, right = read_rgb(pair.left), read_rgb(pair.right)
        gt = None
        if pair.gt_kind == "png16":
            gt = decode_disparity_png(read_png_raw(pair.ground_truth, dtype=np.uint16), scale=pair.gt_scale)
        elif pair.gt_kind == "pfm":
            gt = read_pfm(pair.ground_truth)
            gt = np.where(np.isfinite(gt) & (gt > 0), gt, 0.0).astype(np.float32)
    if left.shape != right.shape:
        raise ValueError(f"{pair.left} and {pair.right}: sizes differ ({left.shape} vs {right.shape})")
    if size is not None and tuple(left.shape[:2]) != tuple(size):
        height, width = size
        ratio = width / left.shape[1]
        left = cv2.resize(left, (width, height), interpolation=cv2.INTER_AREA)
        right = cv2.resize(right, (width, height), interpolation=cv2.INTER_AREA)
        if gt is not None:
            gt = cv2.resize(gt, (width, height), interpolation=cv2.INTER_NEAREST)
            gt = np.where(gt > 0, gt * np.float32(ratio), 0.0).astype(np.float32)
    return left, right, gt


def to_batch(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)[None].to(device)
