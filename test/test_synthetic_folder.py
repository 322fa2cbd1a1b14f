"""pmt-synth's on-disk layout, read back by SyntheticFolder and build_dataset."""
from __future__ import annotations

import dataclasses
import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from pmt_perception.data import build_dataset, load_data_config
from pmt_perception.data.synth_cli import main
from pmt_perception.data.synthetic import SyntheticFolder, SyntheticStereo, load_generator_settings
from pmt_perception.data.synthetic.dataset import disparity_scale_for

SIZE = (96, 144)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "train"
    assert main(["--out", str(out), "--num", "3", "--size", "96x144", "--seed", "5", "--json"]) == 0
    return out


def test_cli_writes_the_documented_layout_and_a_contact_sheet(written, capsys):
    description = json.loads((written / "dataset.json").read_text())
    assert description["format"] == "pmt_synthetic" and description["count"] == 3
    assert description["size"] == list(SIZE) and description["disparity_scale"] == 256
    for kind, suffix in (("left", "png"), ("right", "png"), ("disparity", "png"), ("labels", "png"),
                         ("camera", "json")):
        names = sorted(p.name for p in (written / kind).iterdir())
        assert names == [f"00000{i}.{suffix}" for i in range(3)]
    disparity = cv2.imread(str(written / "disparity" / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert disparity.dtype == np.uint16 and disparity.shape == SIZE
    sheet = cv2.imread(str(written / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 3 * SIZE[0] and sheet.shape[1] > 4 * SIZE[1]


def test_folder_reads_back_what_the_generator_makes(written):
    folder = SyntheticFolder(written)
    settings = dataclasses.replace(load_generator_settings(), seed=5)
    live = SyntheticStereo(settings, split="train", length=3, size=SIZE)
    assert len(folder) == 3
    for index in range(3):
        stored, fresh = folder.load(index), live.load(index)
        np.testing.assert_array_equal(stored["left"], fresh["left"])
        np.testing.assert_array_equal(stored["right"], fresh["right"])
        np.testing.assert_array_equal(stored["seg"], fresh["seg"])
        # 16-bit PNG at 1/256 px steps: within half a step of the float ground truth.
        np.testing.assert_allclose(stored["disparity"], fresh["disparity"], atol=0.5 / 256 + 1e-6)
        assert stored["meta"]["fx"] == pytest.approx(fresh["meta"]["fx"])
        assert stored["meta"]["baseline"] == pytest.approx(fresh["meta"]["baseline"])
        low, high = settings.camera.baseline_m  # drawn per scene
        assert low <= stored["meta"]["baseline"] <= high


def test_build_dataset_reads_a_split_folder_and_returns_the_sample_contract(written):
    config = load_data_config("synthetic")
    dataset = build_dataset(config, split="train", root=written.parent, augment=False)
    sample = dataset[1]
    assert sample["left"].shape == (3, *SIZE) and sample["left"].dtype == torch.float32
    assert 0.0 <= float(sample["left"].min()) and float(sample["left"].max()) <= 1.0
    assert sample["seg"].dtype == torch.int64 and sample["seg"].shape == SIZE
    assert sample["disparity"].dtype == torch.float32 and bool((sample["disparity"] > 0).all())
    assert sample["meta"]["dataset"] == "synthetic" and sample["meta"]["sample_id"] == "000001"
    assert dataset.class_names[0] == "sky" and dataset.palette.shape == (8, 3)


def test_missing_and_mismatched_files_are_named(written, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(written, copy)
    (copy / "right" / "000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="000001.png"):
        SyntheticFolder(copy).load(1)
    cv2.imwrite(str(copy / "labels" / "000002.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="labels/000002.png"):
        SyntheticFolder(copy).load(2)
    (copy / "dataset.json").unlink()
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        SyntheticFolder(copy)


def test_disparity_scale_shrinks_only_when_uint16_would_overflow():
    settings = load_generator_settings()
    assert disparity_scale_for(settings, 720) == 256     # max 128 px
    assert disparity_scale_for(settings, 2048) == 128    # max 364 px * 256 > 65535


def test_a_dataloader_batches_augmented_samples_with_per_sample_meta(written):
    from pmt_perception.data import collate

    config = load_data_config("synthetic")
    config = dataclasses.replace(config, augment=dataclasses.replace(config.augment, crop_size=(64, 96)))
    dataset = build_dataset(config, split="train", root=written.parent)  # training split: augmented
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["left"].shape == (3, 3, 64, 96) and batch["seg"].shape == (3, 64, 96)
    assert [meta["sample_id"] for meta in batch["meta"]] == ["000000", "000001", "000002"]
    assert all("zoom" in meta for meta in batch["meta"])
