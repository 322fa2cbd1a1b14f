"""Which sample each rank trains on at each step, reproducibly and resumably.

Two things make a resumed run see exactly the batches an uninterrupted run would have:

1. `ResumableSampler` derives epoch e's order from (seed, e) alone - a seeded permutation, or
   the data package's class-uniform sampler set to epoch e - deals it round-robin to the ranks
   (DistributedSampler's split), and can start part-way into an epoch, so a run resumed at
   step s skips the batches already seen without loading them.
2. Each position carries its own seed, and `SeededSamples` runs the dataset's augmentation
   under it. DataLoader seeds worker RNGs from the main process's RNG when an iterator is
   created, so after a resume (a new iterator, maybe another worker count) the workers' streams
   differ; a per-sample seed makes the crop and colour jitter of sample k independent of which
   worker happens to load it.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

ORDER_SLOT = 2 ** 31  # the "position" whose seed orders an epoch (no sample slot is this far)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 62-bit seed for one slot of one epoch (SeedSequence mixes the three well)."""
    return int(np.random.SeedSequence((seed, epoch, position)).generate_state(1, np.uint64)[0] >> 2)


class ResumableSampler(torch.utils.data.Sampler):
    """Yields (dataset index, sample seed) for this rank; `num_samples` per epoch over all ranks.

    `base_sampler` (optional) is an epoch-aware index sampler with `set_epoch`, such as
    `pmt_perception.data.ClassUniformSampler`; without one, epoch e is a permutation seeded by
    (seed, e). The epoch's list is cut to a multiple of world_size so every rank does the same
    number of steps (DDP would deadlock otherwise).
    """

    def __init__(self, dataset_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 base_sampler: Any = None) -> None:
        if dataset_size < 1:
            raise ValueError("ResumableSampler: the training dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"ResumableSampler: rank {rank} outside world of {world_size}")
        self.dataset_size = dataset_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.base_sampler = base_sampler
        self.epoch = 0
        self.start = 0  # positions of this rank already consumed in the current epoch

    @property
    def samples_per_epoch(self) -> int:
        total = len(self.base_sampler) if self.base_sampler is not None else self.dataset_size
        per_rank = total // self.world_size
        if per_rank < 1:
            raise ValueError(f"ResumableSampler: {total} samples per epoch cannot feed "
                             f"{self.world_size} ranks")
        return per_rank

    def __len__(self) -> int:
        return self.samples_per_epoch - self.start

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch to draw next, and how many of this rank's positions of it to skip."""
        if not 0 <= start <= self.samples_per_epoch:
            raise ValueError(f"ResumableSampler: start {start} outside epoch of "
                             f"{self.samples_per_epoch} samples")
        self.epoch, self.start = epoch, start

    def epoch_order(self, epoch: int) -> list[int]:
        if self.base_sampler is not None:
            self.base_sampler.set_epoch(epoch)
            order = [int(i) for i in self.base_sampler]
        else:
            generator = torch.Generator().manual_seed(int(sample_seed(self.seed, epoch, ORDER_SLOT)))
            order = torch.randperm(self.dataset_size, generator=generator).tolist()
        return order[: self.samples_per_epoch * self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.epoch_order(self.epoch)
        for local in range(self.start, self.samples_per_epoch):
            position = local * self.world_size + self.rank
            yield order[position], sample_seed(self.seed, self.epoch, position)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed,
                "world_size": self.world_size}


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a dataset so that `dataset[(index, seed)]` loads sample `index` with its
    augmentation drawn under `seed` (StereoAugment draws from torch's RNG). The caller's RNG
    state is restored afterwards: with workers=0 this runs in the training process."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the contract's tensors; keep `meta` as a list (its dicts differ between datasets)."""
    batch = {key: torch.stack([s[key] for s in samples]) for key in ("left", "right", "seg",
                                                                       "disparity")}
    batch["meta"] = [s.get("meta", {}) for s in samples]
    return batch
