"""What every dataset shares: the sample contract (DESIGN.md §4) and the load -> augment -> tensor path.

A dataset loads a *raw sample*, a dict of numpy arrays in the dataset's native resolution:
  left, right   HxWx3 uint8 RGB (or float32 in [0, 1] after photometric augmentation)
  seg           HxW integer class ids, 255 = ignore
  disparity     HxW float32 pixels, 0 = no ground truth
  meta          dict: dataset, sample_id, and fx / baseline when the dataset knows them
The optional transform (augment.StereoAugment) works on raw samples; `to_sample` then makes the
contract's tensors: left/right 3xHxW float32 in [0, 1], seg HxW int64, disparity HxW float32.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import from_dict
from ..labels import IGNORE_LABEL as IGNORE_LABEL  # the sample contract's "no label", re-exported

RawSample = dict[str, Any]
Transform = Callable[[RawSample], RawSample]


def require_same_size(arrays: dict[str | Path, np.ndarray]) -> tuple[int, int]:
    """All arrays share one HxW, or a ValueError naming every file and its size."""
    sizes = {str(name): tuple(array.shape[:2]) for name, array in arrays.items()}
    distinct = set(sizes.values())
    if len(distinct) != 1:
        listing = ", ".join(f"{name}: {size[0]}x{size[1]}" for name, size in sizes.items())
        raise ValueError(f"size mismatch between files of one sample: {listing}")
    return distinct.pop()


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    if image.dtype == np.uint8:
        array = image.astype(np.float32) * np.float32(1.0 / 255.0)
    else:
        array = np.clip(image.astype(np.float32, copy=False), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def to_sample(raw: RawSample) -> dict[str, Any]:
    """Raw numpy sample -> the DESIGN.md §4 tensors (copies; the raw arrays may be reused)."""
    seg = np.asarray(raw["seg"])
    disparity = np.asarray(raw["disparity"], dtype=np.float32)
    disparity = np.where(np.isfinite(disparity) & (disparity > 0), disparity, 0.0).astype(np.float32)
    return {
        "left": _image_tensor(raw["left"]),
        "right": _image_tensor(raw["right"]),
        "seg": torch.from_numpy(seg.astype(np.int64)),
        "disparity": torch.from_numpy(np.ascontiguousarray(disparity)),
        "meta": dict(raw["meta"]),
    }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader collate_fn: stacks the tensors, keeps `meta` as a list of dicts.

    torch's default collate needs every meta dict to have the same keys and turns numbers into
    tensors; meta legitimately differs between samples (a KITTI frame without calibration has no
    fx), so it stays per sample.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    shapes = {tuple(sample["left"].shape) for sample in samples}
    if len(shapes) != 1:
        raise ValueError(f"samples of different sizes in one batch: {sorted(shapes)}; crop or resize first")
    batch = {key: torch.stack([sample[key] for sample in samples])
             for key in ("left", "right", "seg", "disparity")}
    batch["meta"] = [sample["meta"] for sample in samples]
    return batch


class StereoDataset(torch.utils.data.Dataset):
    """Base class: subclasses set `name`, `class_names`, `palette` and implement `__len__`,
    `load(index)` and `sample_id(index)`; `load_labels` / `presence_key` feed class-uniform
    sampling (override `load_labels` when labels can be read without the images)."""

    name: str = "base"
    class_names: tuple[str, ...] = ()
    palette: np.ndarray = np.zeros((0, 3), dtype=np.uint8)
    # Datasets read from a folder: the dataclass of their on-disk layout (the `loader` section
    # of config/data/<name>.yaml), so one `from_config` builds them all.
    layout_type: type | None = None

    def __init__(self, *, transform: Transform | None = None):
        self.transform = transform

    @classmethod
    def from_config(cls, root: str | Path, *, split: str, loader: dict[str, Any],
                    transform: Transform | None = None) -> "StereoDataset":
        if cls.layout_type is None:
            raise TypeError(f"{cls.__name__} has no on-disk layout to read from a loader config")
        layout = from_dict(cls.layout_type, loader, source=f"{cls.name} loader")
        return cls(root, split=split, layout=layout, transform=transform)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        raise NotImplementedError

    def sample_id(self, index: int) -> str:
        raise NotImplementedError

    def load(self, index: int) -> RawSample:
        raise NotImplementedError

    def load_labels(self, index: int) -> np.ndarray:
        return np.asarray(self.load(index)["seg"])

    def label_path(self, index: int) -> Path | None:
        """The label file of a sample, when labels are files (their size and mtime key the cache)."""
        return None

    def presence_key(self) -> str:
        """A string that changes when the samples or their label files change (keys the presence cache)."""
        parts = [self.name, str(len(self))]
        for index in range(len(self)):
            path = self.label_path(index)
            if path is None:
                parts.append(self.sample_id(index))
            else:
                try:
                    stat = Path(path).stat()
                except FileNotFoundError:
                    raise FileNotFoundError(f"missing file: {path}") from None
                parts.append(f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        return "|".join(parts)

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} samples")
        return index % len(self)

    def __getitem__(self, index: int) -> dict[str, Any]:
        raw = self.load(self._check_index(int(index)))
        if self.transform is not None:
            raw = self.transform(raw)
        return to_sample(raw)


def base_meta(dataset: str, sample_id: str, *, fx: float | None = None,
              baseline: float | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"dataset": dataset, "sample_id": sample_id}
    if fx is not None:
        meta["fx"] = float(fx)
    if baseline is not None:
        meta["baseline"] = float(baseline)
    meta.update(extra)
    return meta
