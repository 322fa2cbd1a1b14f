"""Datasets (Cityscapes, KITTI 2015, TrimBot2020 Garden, S-ROSeS, synthetic; Middlebury for
disparity-only evaluation; ROS 2 bags read with rosbags, an iterable stream) and joint stereo
augmentation, all returning the DESIGN.md §4 sample contract.

Typical use (train.py / evaluate.py):

    config = load_data_config("cityscapes", root="/data/cityscapes")
    train = build_dataset(config, split=config.train_split)        # augmented (config.augment)
    val = build_dataset(config, split=config.val_split)            # not augmented
    sampler = build_train_sampler(train, config)                   # class-uniform, or None
    loader = DataLoader(train, batch_size=16, sampler=sampler, shuffle=sampler is None,
                        collate_fn=collate, num_workers=4)
"""
from __future__ import annotations

from pathlib import Path

from ..config import from_dict
from .augment import StereoAugment
from .bag import BagStereo
from .base import IGNORE_LABEL, StereoDataset, collate, to_sample
from .cityscapes import CityscapesStereo
from .kitti import Kitti2015
from .middlebury import Middlebury
from .sampler import ClassUniformSampler, class_presence
from .settings import AugmentSettings, ClassUniformSettings, DataConfig, load_data_config
from .sroses import SRoses
from .synthetic import GeneratorSettings, SyntheticFolder, SyntheticStereo
from .trimbot import TrimBotGarden

FILE_DATASETS = {
    "cityscapes": CityscapesStereo,
    "kitti2015": Kitti2015,
    "trimbot2020": TrimBotGarden,
    "sroses": SRoses,
    "middlebury": Middlebury,
    "bag": BagStereo,
}
DATASET_NAMES = (*FILE_DATASETS, "synthetic")


def build_dataset(config: DataConfig, *, split: str, root: str | Path | None = None,
                  augment: bool | None = None) -> StereoDataset | BagStereo:
    """The dataset of `config` for `split`. `root` overrides config.root; `augment` defaults to
    augmenting the training split only (and only when config.augment.enabled)."""
    if config.dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {config.dataset!r}; known: {list(DATASET_NAMES)}")
    if augment is None:
        augment = split == config.train_split and config.augment.enabled
    transform = StereoAugment(config.augment) if augment else None
    root = root if root is not None else config.root
    if config.dataset == "synthetic":
        if root is None:
            settings = from_dict(GeneratorSettings, config.loader, source="synthetic loader")
            return SyntheticStereo(settings, split=split, transform=transform)
        root = Path(root).expanduser()
        # pmt-synth writes one folder per split: ROOT/<split> when it exists, else ROOT itself.
        folder = root / split if (root / split / "dataset.json").is_file() else root
        return SyntheticFolder(folder, transform=transform)
    if root is None:
        raise ValueError(f"dataset {config.dataset!r} needs a root folder (config 'root' or --data-root)")
    return FILE_DATASETS[config.dataset].from_config(Path(root).expanduser(), split=split,
                                                     loader=config.loader, transform=transform)


def build_train_sampler(dataset: StereoDataset, config: DataConfig, *, seed: int = 0,
                        num_samples: int | None = None) -> ClassUniformSampler | None:
    """Class-uniform sampler per config.class_uniform, or None (plain shuffling) when disabled."""
    if not config.class_uniform.enabled:
        return None
    presence = class_presence(dataset, cache_dir=config.class_uniform.cache_dir)
    return ClassUniformSampler(presence, class_fraction=config.class_uniform.class_fraction,
                               num_samples=num_samples, seed=seed)


__all__ = ["AugmentSettings", "BagStereo", "CityscapesStereo", "ClassUniformSampler",
           "ClassUniformSettings", "DataConfig", "DATASET_NAMES", "IGNORE_LABEL", "Kitti2015",
           "Middlebury", "SRoses", "StereoAugment", "StereoDataset", "SyntheticFolder",
           "SyntheticStereo", "TrimBotGarden", "build_dataset", "build_train_sampler",
           "class_presence", "collate", "load_data_config", "to_sample"]
