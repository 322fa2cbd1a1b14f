"""Each dataset loader on a tiny tree written in that dataset's real layout and encoding."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pmt_perception.data import build_dataset, load_data_config
from pmt_perception.data.io import write_pfm

H, W = 8, 12


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _check_contract(sample: dict, *, dataset: str) -> None:
    assert sample["left"].shape == (3, H, W) and sample["left"].dtype == torch.float32
    assert sample["right"].shape == (3, H, W)
    assert float(sample["left"].min()) >= 0.0 and float(sample["left"].max()) <= 1.0
    assert sample["seg"].shape == (H, W) and sample["seg"].dtype == torch.int64
    assert sample["disparity"].shape == (H, W) and sample["disparity"].dtype == torch.float32
    assert sample["meta"]["dataset"] == dataset and sample["meta"]["sample_id"]


# --------------------------------------------------------------------------- Cityscapes
def _cityscapes_tree(root: Path) -> dict:
    stem = "aachen/aachen_000000_000019"
    left = _rgb(1)
    _png(root / "leftImg8bit/train" / f"{stem}_leftImg8bit.png", left[..., ::-1])
    _png(root / "rightImg8bit/train" / f"{stem}_rightImg8bit.png", _rgb(2)[..., ::-1])
    raw = np.zeros((H, W), np.uint16)
    raw[0, :5] = [0, 1, 257, 513, 65535]
    _png(root / "disparity/train" / f"{stem}_disparity.png", raw)
    label_ids = np.zeros((H, W), np.uint8)
    label_ids[1, :8] = [7, 8, 26, 33, 0, 6, 9, 23]
    _png(root / "gtFine/train" / f"{stem}_gtFine_labelIds.png", label_ids)
    camera = {"extrinsic": {"baseline": 0.209313},
              "intrinsic": {"fx": 2262.52, "fy": 2265.30, "u0": 1096.98, "v0": 513.137}}
    (root / "camera/train/aachen").mkdir(parents=True)
    (root / "camera/train" / f"{stem}_camera.json").write_text(json.dumps(camera))
    return {"stem": stem, "left": left}


def test_cityscapes_decodes_disparity_per_spec_and_maps_label_ids(tmp_path):
    tree = _cityscapes_tree(tmp_path)
    dataset = build_dataset(load_data_config("cityscapes"), split="train", root=tmp_path, augment=False)
    assert len(dataset) == 1 and dataset.num_classes == 19 and dataset.palette.shape == (19, 3)
    sample = dataset[0]
    _check_contract(sample, dataset="cityscapes")
    np.testing.assert_allclose(sample["left"].permute(1, 2, 0).numpy(), tree["left"] / 255.0, atol=1e-6)
    # (p - 1) / 256 for p > 0; p = 0 invalid; p = 1 is d = 0, which the contract also calls invalid.
    np.testing.assert_allclose(sample["disparity"][0, :5].numpy(), [0, 0, 1.0, 2.0, 65534 / 256])
    assert sample["seg"][1, :8].tolist() == [0, 1, 13, 18, 255, 255, 255, 10]
    assert sample["meta"]["fx"] == pytest.approx(2262.52)
    assert sample["meta"]["baseline"] == pytest.approx(0.209313)
    assert sample["meta"]["sample_id"] == "aachen_000000_000019"


def test_cityscapes_names_a_missing_or_mismatched_file(tmp_path):
    tree = _cityscapes_tree(tmp_path)
    dataset = build_dataset(load_data_config("cityscapes"), split="train", root=tmp_path, augment=False)
    disparity = tmp_path / "disparity/train" / f"{tree['stem']}_disparity.png"
    _png(disparity, np.zeros((H, W - 1), np.uint16))
    with pytest.raises(ValueError, match="size mismatch.*_disparity.png"):
        dataset[0]
    disparity.unlink()
    with pytest.raises(FileNotFoundError, match="_disparity.png"):
        dataset[0]
    with pytest.raises(FileNotFoundError, match="leftImg8bit/val"):
        build_dataset(load_data_config("cityscapes"), split="val", root=tmp_path)


# --------------------------------------------------------------------------- KITTI 2015
def _kitti_tree(root: Path, frames: int = 5) -> None:
    for index in range(frames):
        name = f"{index:06d}_10.png"
        _png(root / "training/image_2" / name, _rgb(index)[..., ::-1])
        _png(root / "training/image_3" / name, _rgb(index + 50)[..., ::-1])
        raw = np.zeros((H, W), np.uint16)
        raw[2, 3] = 256 * 40 + 128
        _png(root / "training/disp_occ_0" / name, raw)
    labels = np.full((H, W), 26, np.uint8)  # car
    labels[0] = 23                         # sky
    _png(root / "training/semantic/000000_10.png", labels)
    (root / "training/calib_cam_to_cam").mkdir(parents=True)
    (root / "training/calib_cam_to_cam/000000.txt").write_text(
        "P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.0 7.215377e+02 1.728540e+02 "
        "2.163791e-01 0.0 0.0 1.0 2.745884e-03\n"
        "P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.0 7.215377e+02 1.728540e+02 "
        "2.199936e+00 0.0 0.0 1.0 2.729905e-03\n")


def test_kitti_reads_disp_occ_semantics_where_present_and_calibration(tmp_path):
    _kitti_tree(tmp_path)
    config = load_data_config("kitti2015")
    train = build_dataset(config, split="train", root=tmp_path, augment=False)
    val = build_dataset(config, split="val", root=tmp_path, augment=False)
    assert [train.sample_id(i) for i in range(len(train))] == [f"{i:06d}_10" for i in range(4)]
    assert [val.sample_id(i) for i in range(len(val))] == ["000004_10"]
    first = train[0]
    _check_contract(first, dataset="kitti2015")
    assert float(first["disparity"][2, 3]) == pytest.approx(40.5)
    assert int((first["disparity"] > 0).sum()) == 1  # sparse stays sparse
    assert first["seg"][0, 0] == 10 and first["seg"][3, 3] == 13
    assert first["meta"]["fx"] == pytest.approx(721.5377)
    assert first["meta"]["baseline"] == pytest.approx(0.5327, abs=1e-3)
    second = train[1]  # no semantic file: everything ignored, no calibration: no fx
    assert bool((second["seg"] == 255).all()) and not second["meta"]["has_semantics"]
    assert "fx" not in second["meta"]


def test_kitti_names_missing_right_image(tmp_path):
    _kitti_tree(tmp_path)
    (tmp_path / "training/image_3/000002_10.png").unlink()
    dataset = build_dataset(load_data_config("kitti2015"), split="training", root=tmp_path, augment=False)
    with pytest.raises(FileNotFoundError, match="image_3/000002_10.png"):
        dataset[2]


# --------------------------------------------------------------------------- TrimBot2020
def _trimbot_tree(root: Path, depth: np.ndarray, *, right_x: float = 0.03) -> None:
    sequence = root / "training/clear_0001"
    labels = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 10
    for cam, centre_x in ((0, 0.0), (1, right_x)):
        folder = sequence / f"vcam_{cam}"
        _png(folder / f"vcam_{cam}_f00001_undist.png", _rgb(cam)[..., ::-1])
        # Identity rotation: t = -C for world-to-camera [R | t].
        (folder / f"vcam_{cam}_f00001_cam.txt").write_text(f"200 200 5.5 3.5 1 0 0 0 {-centre_x} 0 0\n")
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0] * 256)
    image.save(sequence / "vcam_0/vcam_0_f00001_gtr.png")
    depth.astype(">f4").flatten(order="F").tofile(sequence / "vcam_0/vcam_0_f00001_dmap.bin")


def test_trimbot_converts_column_major_depth_to_disparity_with_the_rig_baseline(tmp_path):
    depth = np.tile(np.linspace(2.0, 10.0, W, dtype=np.float32), (H, 1))  # varies along columns only
    depth[0, 0], depth[0, 1], depth[0, 2] = 0.0, np.inf, 500.0            # no ground truth
    _trimbot_tree(tmp_path, depth)
    dataset = build_dataset(load_data_config("trimbot2020"), split="training", root=tmp_path, augment=False)
    assert len(dataset) == 1 and dataset.class_names[0] == "grass" and dataset.num_classes == 9
    sample = dataset[0]
    _check_contract(sample, dataset="trimbot2020")
    with np.errstate(divide="ignore"):
        expected = 200 * 0.03 / depth
    expected[0, :3] = 0.0
    np.testing.assert_allclose(sample["disparity"].numpy(), expected, rtol=1e-5)
    assert sample["meta"]["baseline"] == pytest.approx(0.03) and sample["meta"]["fx"] == 200
    ids = np.arange(H * W).reshape(H, W) % 10
    np.testing.assert_array_equal(sample["seg"].numpy(), np.where(ids == 0, 255, ids - 1))


def test_trimbot_names_a_depth_file_of_the_wrong_size(tmp_path):
    _trimbot_tree(tmp_path, np.ones((H, W), np.float32))
    path = tmp_path / "training/clear_0001/vcam_0/vcam_0_f00001_dmap.bin"
    np.ones(H * W - 3, ">f4").tofile(path)
    dataset = build_dataset(load_data_config("trimbot2020"), split="training", root=tmp_path, augment=False)
    with pytest.raises(ValueError, match="vcam_0_f00001_dmap.bin"):
        dataset[0]


# --------------------------------------------------------------------------- S-ROSeS
def _sroses_tree(root: Path, disparity: np.ndarray, *, pfm: bool) -> None:
    split = root / "train"
    _png(split / "left/rose_0001.png", _rgb(1)[..., ::-1])
    _png(split / "right/rose_0001.png", _rgb(2)[..., ::-1])
    mask = np.zeros((H, W), np.uint8)
    mask[2:5, 3:7] = 255
    _png(split / "labels/rose_0001.png", mask)
    if pfm:
        write_pfm(split / "disparity/rose_0001.pfm", disparity)
    else:
        _png(split / "disparity/rose_0001.png", np.round(disparity * 256).astype(np.uint16))


@pytest.mark.parametrize("disparity_format", ["png_x256", "pfm"])
def test_sroses_binarises_masks_and_reads_dense_disparity(tmp_path, disparity_format):
    disparity = (np.arange(H * W, dtype=np.float32).reshape(H, W) / 4 + 1).astype(np.float32)
    _sroses_tree(tmp_path, disparity, pfm=disparity_format == "pfm")
    config = load_data_config("sroses", loader={**load_data_config("sroses").loader,
                                                "disparity_format": disparity_format})
    dataset = build_dataset(config, split="train", root=tmp_path, augment=False)
    sample = dataset[0]
    _check_contract(sample, dataset="sroses")
    assert dataset.class_names == ("background", "rose")
    np.testing.assert_allclose(sample["disparity"].numpy(), disparity, atol=1 / 512)  # top row first
    assert int(sample["seg"].sum()) == 12 and int(sample["seg"][3, 4]) == 1
    assert sample["meta"]["fx"] == 720.0 and sample["meta"]["baseline"] == 0.03


def test_sroses_names_missing_disparity(tmp_path):
    _sroses_tree(tmp_path, np.ones((H, W), np.float32), pfm=False)
    (tmp_path / "train/disparity/rose_0001.png").unlink()
    dataset = build_dataset(load_data_config("sroses"), split="train", root=tmp_path, augment=False)
    with pytest.raises(FileNotFoundError, match="disparity/rose_0001.png"):
        dataset[0]


def test_unknown_dataset_and_missing_root_are_reported():
    config = load_data_config("cityscapes")
    with pytest.raises(ValueError, match="needs a root"):
        build_dataset(config, split="train")
    with pytest.raises(ValueError, match="unknown key"):
        load_data_config("cityscapes", bogus=1)
