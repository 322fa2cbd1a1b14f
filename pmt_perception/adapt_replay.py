"""Replay of the training task while adapting (experience replay, as in continual learning).

Adapting every parameter to a camera's unlabelled pairs lowers its disparity error the most, but
the refined segmentation reads Fdisp, and self-distillation on one real scene does not protect
the other scenes: on the synthetic test split the refined mIoU fell from 42 % to 12 % in 150
steps (docs/adapt.md). Mixing labelled synthetic pairs into each step, with the training task's
own losses (cross-entropy on both segmentation outputs, L1 on disparity), keeps what the model
knew while the camera's pairs teach it the new domain.

The labelled pairs come from the package's synthetic scene generator (a generator config name
or YAML, rendered on the fly into a small pool that is reused) or from a folder written by
`pmt-synth`. Their classes must be the checkpoint's.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .losses import cross_entropy, masked_l1


@dataclasses.dataclass(frozen=True)
class ReplaySettings:
    weight: float                 # 0: no replay
    data: str                     # generator config name / YAML path, or a pmt-synth folder
    size: tuple[int, int]         # H x W of the replayed pairs (multiples of 32)
    batch: int                    # labelled pairs per adaptation step
    pool: int                     # distinct pairs rendered (then reused, drawn at random)
    disparity_weight: float       # L1 (px) next to the two cross-entropies

    @classmethod
    def from_dict(cls, data: dict) -> "ReplaySettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = set(data) - known, known - set(data)
        if unknown or missing:
            raise ValueError(f"replay: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        settings = cls(weight=float(data["weight"]), data=str(data["data"]),
                       size=tuple(int(c) for c in data["size"]), batch=int(data["batch"]),
                       pool=int(data["pool"]), disparity_weight=float(data["disparity_weight"]))
        if settings.weight < 0 or settings.disparity_weight < 0:
            raise ValueError("replay: weights must be >= 0")
        if len(settings.size) != 2 or any(c < 32 or c % 32 for c in settings.size):
            raise ValueError(f"replay: size must be H, W multiples of 32, got {list(settings.size)}")
        if settings.batch < 1 or settings.pool < 1:
            raise ValueError("replay: batch and pool must be >= 1")
        return settings

    @property
    def enabled(self) -> bool:
        return self.weight > 0


class ReplayPool:
    """Labelled pairs for replay, produced lazily (a pair is rendered or read the first time it
    is drawn) and kept as tensors; draws are seeded by the caller's generator."""

    def __init__(self, settings: ReplaySettings, *, class_names: Sequence[str],
                 device: torch.device, seed: int) -> None:
        self.settings = settings
        self.device = device
        self.seed = int(seed)
        self._pairs: dict[int, tuple[torch.Tensor, ...]] = {}
        self._source = _open_source(settings, class_names)

    def draw(self, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """(left, right, labels, disparity): B x 3 x H x W in [0, 1], B x H x W long, B x H x W."""
        size = min(self.settings.pool, len(self._source)) if hasattr(self._source, "__len__") \
            else self.settings.pool
        indices = torch.randint(0, size, (self.settings.batch,), generator=generator).tolist()
        left, right, labels, disparity = (torch.cat(parts) for parts in
                                          zip(*(self._pair(i) for i in indices)))
        return (_unit_float(left).to(self.device), _unit_float(right).to(self.device),
                labels.long().to(self.device), disparity.to(self.device))

    def _pair(self, index: int) -> tuple[torch.Tensor, ...]:
        if index not in self._pairs:
            sample = self._source.sample(index, self.seed, self.settings.size)
            self._pairs[index] = _to_tensors(*sample)
        return self._pairs[index]


def replay_loss(outputs, labels: torch.Tensor, disparity: torch.Tensor, *,
                ignore_index: int, disparity_weight: float) -> torch.Tensor:
    """The training task on a labelled batch: CE(coarse) + CE(refined) + w * L1(disparity)."""
    predicted_disparity, coarse, refined = outputs
    loss = cross_entropy(coarse, labels, ignore_index=ignore_index) + \
        cross_entropy(refined, labels, ignore_index=ignore_index)
    if disparity_weight > 0:
        loss = loss + disparity_weight * masked_l1(predicted_disparity.float(), disparity)
    return loss


# ----------------------------------------------------------------------------- sources
class _GeneratedScenes:
    """Scenes of the synthetic generator, seeded per pool index (the `adapt` split of seeds is
    the train split's: replay is of the training task)."""

    def __init__(self, name_or_path: str) -> None:
        from .data.synthetic import load_generator_settings
        from .data.synthetic.classes import CLASS_NAMES
        self.settings = load_generator_settings(name_or_path)
        self.class_names = tuple(CLASS_NAMES)

    def sample(self, index: int, seed: int, size: tuple[int, int]):
        from .data.synthetic.generator import generate_pair, sample_seed
        pair = generate_pair(self.settings, seed=sample_seed(seed, "train", index), size=size)
        return pair.left, pair.right, pair.labels, pair.disparity


class _SynthFolder:
    """A folder written by pmt-synth; pairs centre-cropped (or padded by resizing) to `size`."""

    def __init__(self, root: Path) -> None:
        from .data.synthetic.classes import CLASS_NAMES
        from .data.synthetic.dataset import SyntheticFolder
        self.dataset = SyntheticFolder(root)
        self.class_names = tuple(CLASS_NAMES)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int, seed: int, size: tuple[int, int]):
        raw = self.dataset.load(index)
        arrays = [raw["left"], raw["right"], raw["seg"], raw["disparity"]]
        height, width = arrays[0].shape[:2]
        if height < size[0] or width < size[1]:
            raise ValueError(f"replay: {self.dataset.root} holds {height}x{width} pairs, smaller "
                             f"than replay.size {size[0]}x{size[1]}")
        top, left = (height - size[0]) // 2, (width - size[1]) // 2
        return tuple(a[top:top + size[0], left:left + size[1]] for a in arrays)


def _open_source(settings: ReplaySettings, class_names: Sequence[str]):
    path = Path(settings.data).expanduser()
    source = _SynthFolder(path) if (path / "dataset.json").is_file() else _GeneratedScenes(settings.data)
    if tuple(class_names) != source.class_names:
        raise ValueError(
            f"replay: the checkpoint's classes {list(class_names)} are not those of the replay data "
            f"{settings.data!r} {list(source.class_names)}; give replay pairs with the checkpoint's "
            "classes, or adapt without replay (--replay-weight 0) and only `--parameters "
            "disparity_head` (the one choice that leaves segmentation exactly as trained)")
    return source


def _to_tensors(left: np.ndarray, right: np.ndarray, labels: np.ndarray,
                disparity: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Kept as uint8 (images, labels) and float32 (disparity): a pool of 64 pairs at 256 x 384
    holds ~50 MB this way instead of ~230 MB as float images and int64 labels; `draw` converts."""
    def image(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    return (image(left), image(right), torch.from_numpy(np.ascontiguousarray(labels, dtype=np.uint8))[None],
            torch.from_numpy(np.ascontiguousarray(disparity, dtype=np.float32))[None])


def _unit_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0


def optional_pool(settings: Optional[ReplaySettings], *, class_names: Sequence[str],
                  device: torch.device, seed: int) -> Optional[ReplayPool]:
    """A pool when replay is on, None when off."""
    if settings is None or not settings.enabled:
        return None
    return ReplayPool(settings, class_names=class_names, device=device, seed=seed)
