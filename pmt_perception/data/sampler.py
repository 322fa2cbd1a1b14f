"""Class-uniform sampling of rare classes (Zhu et al. 2019, as the paper cites via Choi et al.).

An image-level class-presence table (images x classes, bool) is computed once from the label
maps and cached on disk, keyed by the dataset's identity, so later runs start instantly. Each
draw then, with probability `class_fraction`, picks a class uniformly among the classes present
somewhere and an image containing it uniformly; otherwise an image uniformly. A class seen in 1%
of the images is then drawn about class_fraction / num_classes of the time instead of 1%.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .base import StereoDataset
from .io import write_bytes_atomic


def default_cache_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "pmt_perception" / "class_presence"


def presence_from_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Which of the classes 0..num_classes-1 occur in one label map (ignore 255 and others skipped)."""
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64).clip(0, num_classes),
                         minlength=num_classes + 1)
    return counts[:num_classes] > 0


def class_presence(dataset: StereoDataset, *, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """(len(dataset), num_classes) bool, read from the cache or computed (and cached) now."""
    key = hashlib.sha256(dataset.presence_key().encode("utf-8")).hexdigest()[:24]
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"{dataset.name}_{key}.npy"
    if path.is_file():
        table = np.load(path, allow_pickle=False)
        if table.shape == (len(dataset), dataset.num_classes):
            return table.astype(bool)
    table = np.zeros((len(dataset), dataset.num_classes), dtype=bool)
    for index in range(len(dataset)):
        table[index] = presence_from_labels(dataset.load_labels(index), dataset.num_classes)
    buffer = io.BytesIO()
    np.save(buffer, table)
    write_bytes_atomic(path, buffer.getvalue())
    return table


class ClassUniformSampler(torch.utils.data.Sampler[int]):
    """Index sampler over a presence table; `num_samples` draws per epoch (default: dataset size).

    Reproducible: epoch e uses seed (seed, e); call `set_epoch` like DistributedSampler, or let
    each `__iter__` advance the epoch.
    """

    def __init__(self, presence: np.ndarray, *, class_fraction: float, num_samples: int | None = None,
                 seed: int = 0):
        presence = np.asarray(presence, dtype=bool)
        if presence.ndim != 2 or presence.shape[0] == 0:
            raise ValueError(f"presence must be a non-empty (images, classes) table, "
                             f"got shape {presence.shape}")
        if not 0.0 <= class_fraction <= 1.0:
            raise ValueError(f"class_fraction must be in [0, 1], got {class_fraction}")
        self.presence = presence
        self.class_fraction = class_fraction
        self.num_samples = int(num_samples if num_samples is not None else presence.shape[0])
        self.seed = seed
        self.epoch = 0
        self.images_of_class = [np.flatnonzero(presence[:, c]) for c in range(presence.shape[1])]
        self.present_classes = np.array([c for c, images in enumerate(self.images_of_class) if images.size])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        count = self.presence.shape[0]
        indices = rng.integers(0, count, size=self.num_samples)
        by_class = rng.uniform(size=self.num_samples) < self.class_fraction
        if self.present_classes.size:
            picks = rng.integers(0, self.present_classes.size, size=self.num_samples)
            classes = self.present_classes[picks]
            for position in np.flatnonzero(by_class):
                images = self.images_of_class[classes[position]]
                indices[position] = images[rng.integers(0, images.size)]
        return iter(indices.tolist())
