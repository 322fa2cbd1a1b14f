"""Class-uniform sampling: the cached presence table and the draws it drives."""
from __future__ import annotations

import numpy as np
import pytest

from pmt_perception.data.base import StereoDataset
from pmt_perception.data.sampler import ClassUniformSampler, class_presence, presence_from_labels


class CountingLabels(StereoDataset):
    """Image i contains class 0 everywhere and class 2 only in image 7; counts label reads."""

    name = "counting"
    class_names = ("a", "b", "c")

    def __init__(self, count: int = 20):
        super().__init__()
        self.count, self.reads = count, 0

    def __len__(self) -> int:
        return self.count

    def sample_id(self, index: int) -> str:
        return f"{index:03d}"

    def load_labels(self, index: int) -> np.ndarray:
        self.reads += 1
        labels = np.zeros((4, 4), np.uint8)
        labels[0, 0] = 255
        if index == 7:
            labels[1, 1] = 2
        return labels


def test_presence_ignores_255_and_ids_beyond_the_classes():
    labels = np.array([[0, 255], [2, 9]], np.uint8)
    assert presence_from_labels(labels, 3).tolist() == [True, False, True]


def test_presence_is_computed_once_and_then_read_from_the_cache(tmp_path):
    dataset = CountingLabels()
    table = class_presence(dataset, cache_dir=tmp_path)
    assert table.shape == (20, 3) and table[:, 0].all() and not table[:, 1].any()
    assert np.flatnonzero(table[:, 2]).tolist() == [7]
    assert dataset.reads == 20 and len(list(tmp_path.glob("counting_*.npy"))) == 1
    again = CountingLabels()
    np.testing.assert_array_equal(class_presence(again, cache_dir=tmp_path), table)
    assert again.reads == 0
    bigger = CountingLabels(count=21)  # a different dataset: a different cache entry
    class_presence(bigger, cache_dir=tmp_path)
    assert bigger.reads == 21


def test_rare_class_images_are_drawn_far_more_often_than_uniformly(tmp_path):
    presence = class_presence(CountingLabels(), cache_dir=tmp_path)
    sampler = ClassUniformSampler(presence, class_fraction=1.0, num_samples=3000, seed=1)
    draws = np.array(list(sampler))
    # Classes 0 and 2 are present: half the draws pick class 2, whose only image is 7.
    assert 0.4 < np.mean(draws == 7) < 0.6
    uniform = np.array(list(ClassUniformSampler(presence, class_fraction=0.0, num_samples=3000, seed=1)))
    assert np.mean(uniform == 7) < 0.1
    assert len(sampler) == 3000 and draws.min() >= 0 and draws.max() < 20


def test_sampler_is_reproducible_per_epoch_and_changes_between_epochs():
    presence = np.eye(4, dtype=bool)
    first = ClassUniformSampler(presence, class_fraction=0.5, num_samples=50, seed=3)
    second = ClassUniformSampler(presence, class_fraction=0.5, num_samples=50, seed=3)
    epoch0 = list(first)
    assert epoch0 == list(second)
    assert list(first) != epoch0  # next epoch
    first.set_epoch(0)
    assert list(first) == epoch0


def test_sampler_rejects_bad_tables():
    with pytest.raises(ValueError, match="presence"):
        ClassUniformSampler(np.zeros((0, 3), bool), class_fraction=0.5)
    with pytest.raises(ValueError, match="class_fraction"):
        ClassUniformSampler(np.ones((2, 2), bool), class_fraction=1.5)
