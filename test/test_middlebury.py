"""Middlebury evaluation data: PFM files, the 2014 / 2006 / OpenCV-samples layouts on files
written here, the evaluation scale, segmentation reported absent on disparity-only data, and
pmt-evaluate end to end with SGBM rows in the same report."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pmt_perception.data import Middlebury, build_dataset, load_data_config
from pmt_perception.data.middlebury import (
    MiddleburyLayout,
    png_disparity_factor,
    read_pfm,
    rescale_sample,
    write_pfm,
)
from pmt_perception.evaluate import main
from pmt_perception.evaluation.report import EvaluationAccumulator
from pmt_perception.evaluation.summary import comparison_table, summary_line

ALOE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_stereo" / "aloe"


def layout(**changes) -> MiddleburyLayout:
    settings = dict(scale=1.0, right_image="im1.png", png_disparity_factor=None,
                    nonoccluded_only=False)
    return MiddleburyLayout(**{**settings, **changes})


def textured_pair(height: int, width: int, shift: int, seed: int = 0):
    """Left / right RGB views of a fronto-parallel texture at disparity `shift`."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(height // 2 + 1, (width + shift) // 2 + 1, 3),
                           dtype=np.uint8)
    texture = np.repeat(np.repeat(texture, 2, 0), 2, 1)[:height, :width + shift]
    return (np.ascontiguousarray(texture[:, :width]),
            np.ascontiguousarray(texture[:, shift:shift + width]))


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def write_2014_scene(folder: Path, *, size=(8, 12), shift=4, ndisp=64, gt_name="disp0GT.pfm"):
    left, right = textured_pair(*size, shift)
    write_rgb(folder / "im0.png", left)
    write_rgb(folder / "im1.png", right)
    disparity = np.full(size, float(shift), np.float32)
    disparity[0, 0] = np.inf            # unknown, as Middlebury writes it
    write_pfm(folder / gt_name, disparity)
    (folder / "calib.txt").write_text(
        "cam0=[1000.5 0 6; 0 1000.5 4; 0 0 1]\ncam1=[1000.5 0 7; 0 1000.5 4; 0 0 1]\n"
        f"doffs=1.5\nbaseline=176.25\nwidth={size[1]}\nheight={size[0]}\nndisp={ndisp}\n"
        "isint=0\nvmin=2\nvmax=60\n")
    return left, right, disparity


def write_2006_scene(folder: Path, *, width: int, disparity_px: float, height: int = 6):
    left, right = textured_pair(height, width, 3)
    write_rgb(folder / "view1.png", left)
    write_rgb(folder / "view5.png", right)
    stored = np.full((height, width), round(disparity_px * png_disparity_factor(width)), np.uint8)
    stored[:, :2] = 0                   # 0 = unknown
    folder.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / "disp1.png"), stored)
    return stored


# ----------------------------------------------------------------------------- PFM
@pytest.mark.parametrize("little_endian", [True, False])
def test_pfm_round_trip_keeps_values_rows_and_unknown_pixels(tmp_path, little_endian):
    image = np.arange(12, dtype=np.float32).reshape(3, 4) * 1.25 - 3
    image[1, 2] = np.inf
    path = tmp_path / "disp.pfm"
    write_pfm(path, image, little_endian=little_endian, scale=2.0)
    header = path.read_bytes().split(b"\n", 3)
    assert header[:3] == [b"Pf", b"4 3", b"-2" if little_endian else b"2"]
    back = read_pfm(path)
    assert back.dtype == np.float32 and back.shape == (3, 4)
    np.testing.assert_array_equal(back, image)   # inf included
    colour = np.random.default_rng(1).random((2, 5, 3)).astype(np.float32)
    write_pfm(tmp_path / "colour.pfm", colour, little_endian=little_endian)
    np.testing.assert_array_equal(read_pfm(tmp_path / "colour.pfm"), colour)


def test_pfm_written_by_hand_bottom_row_first_in_either_byte_order(tmp_path):
    rows_bottom_up = [[1.0, 2.0], [3.0, 4.0]]     # file order: bottom row first
    for order, scale in (("<", b"-1.0"), (">", b"1.0")):
        payload = b"".join(struct.pack(f"{order}f", v) for row in rows_bottom_up for v in row)
        path = tmp_path / f"hand{order == '<'}.pfm"
        path.write_bytes(b"Pf\n2 2\n" + scale + b"\n" + payload)
        np.testing.assert_array_equal(read_pfm(path), [[3.0, 4.0], [1.0, 2.0]])


def test_pfm_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pfm"):
        read_pfm(tmp_path / "missing.pfm")
    bad = tmp_path / "bad.pfm"
    bad.write_bytes(b"P5\n2 2\n255\n" + bytes(4))
    with pytest.raises(ValueError, match="bad.pfm.*not a PFM"):
        read_pfm(bad)
    short = tmp_path / "short.pfm"
    short.write_bytes(b"Pf\n4 4\n-1.0\n" + bytes(8))
    with pytest.raises(ValueError, match="short.pfm.*header says 4x4"):
        read_pfm(short)
    with pytest.raises(ValueError, match="scale must be > 0"):
        write_pfm(tmp_path / "x.pfm", np.zeros((2, 2)), scale=0.0)


# ----------------------------------------------------------------------------- layouts
def test_2014_scene_follows_the_sample_contract(tmp_path):
    left, _right, disparity = write_2014_scene(tmp_path / "Motorcycle-perfect")
    dataset = Middlebury(tmp_path, split="all", layout=layout())
    assert len(dataset) == 1 and dataset.sample_id(0) == "Motorcycle-perfect"
    assert dataset.num_classes == 0
    sample = dataset[0]
    assert sample["left"].shape == (3, 8, 12) and sample["left"].dtype == torch.float32
    assert 0.0 <= float(sample["left"].min()) and float(sample["left"].max()) <= 1.0
    np.testing.assert_allclose(sample["left"].permute(1, 2, 0).numpy(), left / 255.0, atol=1e-6)
    assert sample["seg"].dtype == torch.int64 and bool((sample["seg"] == 255).all())
    gt = sample["disparity"].numpy()
    assert gt.dtype == np.float32 and gt[0, 0] == 0.0          # inf -> 0: no ground truth
    np.testing.assert_array_equal(gt[1:], disparity[1:])
    meta = sample["meta"]
    assert meta["layout"] == "2014" and meta["fx"] == pytest.approx(1000.5)
    assert meta["baseline"] == pytest.approx(0.17625) and meta["doffs"] == pytest.approx(1.5)
    assert meta["ndisp"] == 64 and meta["original_size"] == [8, 12]


def test_2014_reads_disp0_pfm_and_middeval3_nesting_and_splits(tmp_path):
    write_2014_scene(tmp_path / "MiddEval3" / "trainingQ" / "Adirondack")
    write_2014_scene(tmp_path / "MiddEval3" / "trainingQ" / "Jadeplant", shift=6,
                     gt_name="disp0.pfm")
    root = tmp_path / "MiddEval3"
    everything = Middlebury(root, split="all", layout=layout())
    assert [everything.sample_id(i) for i in range(2)] == ["trainingQ/Adirondack",
                                                           "trainingQ/Jadeplant"]
    by_folder = Middlebury(root, split="trainingQ", layout=layout())
    assert [by_folder.sample_id(i) for i in range(2)] == ["Adirondack", "Jadeplant"]
    assert float(by_folder[1]["disparity"].max()) == 6.0
    with pytest.raises(FileNotFoundError, match="trainingF"):
        Middlebury(root, split="trainingF", layout=layout())
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no Middlebury scene under .*empty"):
        Middlebury(tmp_path / "empty", split="all", layout=layout())
    (root / "trainingQ" / "Jadeplant" / "im1.png").unlink()
    with pytest.raises(FileNotFoundError, match="Jadeplant/im1.png"):
        by_folder[1]


@pytest.mark.parametrize("width, factor", [(1300, 1), (650, 2), (450, 3)])
def test_2006_png_disparity_factor_follows_the_image_width(tmp_path, width, factor):
    assert png_disparity_factor(width) == factor
    stored = write_2006_scene(tmp_path / "Aloe", width=width, disparity_px=20.0)
    sample = Middlebury(tmp_path, split="all", layout=layout())[0]
    gt = sample["disparity"].numpy()
    assert sample["meta"]["layout"] == "2006" and sample["meta"]["png_disparity_factor"] == factor
    assert np.all(gt[:, :2] == 0)                               # 0 stays unknown
    np.testing.assert_allclose(gt[:, 2:], stored[:, 2:] / factor)
    assert gt[0, 5] == pytest.approx(20.0, abs=0.5)
    # The width rule can be overridden from the loader config.
    again = Middlebury(tmp_path, split="all", layout=layout(png_disparity_factor=4.0))[0]
    np.testing.assert_allclose(again["disparity"].numpy()[:, 2:], stored[:, 2:] / 4.0)


def test_opencv_samples_flat_layout(tmp_path):
    """aloeL.jpg, aloeR.jpg, aloeGT.png in one folder, as OpenCV (and shared/data) ship them."""
    left, right = textured_pair(10, 16, 2)
    write_rgb(tmp_path / "aloeL.jpg", left)
    write_rgb(tmp_path / "aloeR.jpg", right)
    gt = np.full((10, 16), 2, np.uint8)
    gt[3, 3] = 0
    assert cv2.imwrite(str(tmp_path / "aloeGT.png"), gt)
    write_rgb(tmp_path / "tsukubaL.png", left)      # a second pair in the same folder
    write_rgb(tmp_path / "tsukubaR.png", right)
    assert cv2.imwrite(str(tmp_path / "tsukubaGT.png"), gt)
    write_rgb(tmp_path / "loneL.png", left)         # no right view: not a pair
    dataset = Middlebury(tmp_path, split="all", layout=layout())
    assert [dataset.sample_id(i) for i in range(len(dataset))] == ["aloe", "tsukuba"]
    sample = dataset[0]
    assert sample["meta"]["layout"] == "opencv_samples"
    # GT encoded like disp1.png: 16 px wide is third-size by the width rule, so 2 -> 2/3 px.
    assert sample["meta"]["png_disparity_factor"] == 3
    assert sample["disparity"][3, 3] == 0
    assert float(sample["disparity"][0, 0]) == pytest.approx(2 / 3)


def test_scikit_image_layout_reads_the_motorcycle_files_and_unknowns(tmp_path):
    """motorcycle_left.png, _right.png, _disp.npz as skimage/data ships them (other files of
    that folder are no pairs); non-finite disparity is unknown (0)."""
    left, right = textured_pair(10, 16, 3)
    write_rgb(tmp_path / "motorcycle_left.png", left)
    write_rgb(tmp_path / "motorcycle_right.png", right)
    disparity = np.full((10, 16), 3.25, np.float32)
    disparity[2, 5], disparity[7, 1] = np.inf, np.nan
    np.savez_compressed(tmp_path / "motorcycle_disp.npz", disparity)
    write_rgb(tmp_path / "astronaut.png", left)          # a photo, not a pair
    write_rgb(tmp_path / "lonely_left.png", left)        # no right view, no GT: not a pair
    dataset = Middlebury(tmp_path, split="all", layout=layout(scale=0.5))
    assert [dataset.sample_id(i) for i in range(len(dataset))] == ["motorcycle"]
    sample = dataset[0]
    assert sample["meta"]["layout"] == "scikit_image"
    assert sample["disparity"].shape == (5, 8)
    assert float(sample["disparity"][0, 0]) == pytest.approx(3.25 * 0.5)
    full = Middlebury(tmp_path, split="all", layout=layout())[0]["disparity"]
    assert full[2, 5] == 0 and full[7, 1] == 0 and (full > 0).sum() == 10 * 16 - 2
    np.savez(tmp_path / "motorcycle_disp.npz", disparity, disparity)
    with pytest.raises(ValueError, match="one disparity array"):
        Middlebury(tmp_path, split="all", layout=layout())[0]


# ----------------------------------------------------------------------------- scale
def test_scale_area_resizes_images_and_nearest_resizes_gt_times_the_scale(tmp_path):
    left, right, disparity = write_2014_scene(tmp_path / "Scene", size=(8, 12), shift=4, ndisp=63)
    full = Middlebury(tmp_path, split="all", layout=layout()).load(0)
    half = Middlebury(tmp_path, split="all", layout=layout(scale=0.5))[0]
    assert half["left"].shape == (3, 4, 6) and half["disparity"].shape == (4, 6)
    expected = cv2.resize(left, (6, 4), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(half["left"].permute(1, 2, 0).numpy(), expected / 255.0, atol=1e-6)
    gt = half["disparity"].numpy()
    assert gt[0, 0] == 0.0                                       # unknown stays unknown
    np.testing.assert_array_equal(gt.ravel()[1:], np.full(23, 2.0, np.float32))  # 4 px * 0.5
    assert bool((half["seg"] == 255).all())
    assert half["meta"]["scale"] == 0.5 and half["meta"]["fx"] == pytest.approx(500.25)
    assert half["meta"]["ndisp"] == 32                           # ceil(63 * 0.5)
    # rescale_sample on its own: scale 1 is the identity, and a sample keeps its keys.
    assert rescale_sample(full, 1.0) is full
    assert set(rescale_sample(full, 0.25)) == set(full)
    with pytest.raises(ValueError, match="scale must be in"):
        layout(scale=0.0)


def test_config_loads_evaluation_only(tmp_path):
    write_2014_scene(tmp_path / "Scene")
    config = load_data_config("middlebury", root=str(tmp_path))
    assert len(build_dataset(config, split=config.val_split)) == 1
    with pytest.raises(ValueError, match="never train"):
        build_dataset(config, split=config.train_split)


@pytest.mark.skipif(not (ALOE / "aloeGT.png").is_file(), reason="no shared Aloe pair here")
def test_the_shared_aloe_pair_reads_at_half_size():
    config = load_data_config("middlebury", root=str(ALOE))
    config = load_data_config("middlebury", root=str(ALOE), loader={**config.loader, "scale": 0.5})
    sample = build_dataset(config, split="all")[0]
    assert tuple(sample["disparity"].shape) == (555, 641)
    valid = sample["disparity"] > 0
    assert 0.95 < float(valid.float().mean()) < 0.98           # README: 3.5 % unknown
    assert 100 < float(sample["disparity"].max()) <= 106       # README: max ~106 px


# ----------------------------------------------------------------------------- evaluation
def test_segmentation_is_absent_never_zero_without_label_ground_truth():
    class Frame:
        def __init__(self, labels, disparity):
            self.labels, self.disparity = labels, disparity

    seg = np.full((2, 3), 255)
    gt = np.array([[4.0, 0.0, 2.0], [1.0, 1.0, 1.0]], np.float32)
    accumulator = EvaluationAccumulator(num_classes=2, class_names=["a", "b"], figure_samples=0)
    accumulator.add({"seg": seg, "disparity": gt}, Frame(np.zeros((2, 3), np.uint8), gt + 1.5))
    report = accumulator.report()
    assert report["segmentation"] == {"refined": None, "coarse": None}
    assert report["segmentation_ground_truth"] is False
    assert report["disparity"]["bad_1"] == 1.0 and report["disparity"]["bad_2"] == 0.0
    report["timing"]["model_ms"]["mean"] = None
    line = summary_line(report)
    assert "mIoU -" in line and "mIoU 0" not in line
    # A method without segmentation on disparity-only data: no classes at all.
    none = EvaluationAccumulator(num_classes=0, class_names=[], figure_samples=0)
    none.add({"seg": seg, "disparity": gt}, Frame(None, gt))
    assert none.report()["segmentation"]["refined"] is None
    table = comparison_table([{"method": "sgbm_ros", "d1": 0.1, "epe": 1.0, "bad_1": 0.3,
                               "bad_2": 0.2, "refined_miou": None, "model_ms": None}])
    assert table.splitlines()[1].split()[-2:] == ["-", "-"]


@pytest.fixture(scope="module")
def middlebury_folder(tmp_path_factory):
    """Two tiny scenes: a 2014 one (disparity 8 px) and a 2006 third-size one."""
    root = tmp_path_factory.mktemp("middlebury")
    write_2014_scene(root / "Plane-perfect", size=(96, 320), shift=8, ndisp=32)
    write_2006_scene(root / "Flat", width=320, disparity_px=3.0, height=96)
    return root


def test_pmt_evaluate_reports_network_and_sgbm_rows_on_middlebury(middlebury_folder, tmp_path,
                                                                  tiny_checkpoint, capsys):
    out = tmp_path / "eval"
    code = main(["--checkpoint", str(tiny_checkpoint), "--sgbm", "ros", "--sgbm", "3way",
                 "--data", "middlebury", "--data-root", str(middlebury_folder), "--scale", "0.5",
                 "--out", str(out), "--workers", "0", "--threads", "1", "--figure-samples", "2"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["num_samples"] == 2 and report["image_sizes"] == [[48, 160]]
    assert report["dataset"]["scale"] == 0.5 and report["dataset"]["dataset"] == "middlebury"
    assert report["segmentation"] == {"refined": None, "coarse": None}
    assert report["method"]["method"] == "pmt"
    rows = report["comparison"]
    assert [row["method"] for row in rows] == ["pmt", "sgbm_ros", "sgbm_3way"]
    valid_pixels = 48 * 160 - 1 + 48 * (160 - 1)   # unknown: one 2014 pixel, 2006's first columns
    for row in rows:
        assert row["refined_miou"] is None
        assert row["num_pixels"] == valid_pixels          # the same pixels for every method
        for key in ("d1", "bad_1", "bad_2"):
            assert 0.0 <= row[key] <= 1.0
        assert row["bad_1"] >= row["bad_2"] >= row["d1"] and row["epe"] >= 0.0
    assert set(report["baselines"]) == {"sgbm_ros", "sgbm_3way"}
    assert report["baselines"]["sgbm_ros"]["method"]["num_disparities"] == 64
    assert report["baselines"]["sgbm_ros"]["disparity"]["d1"] == rows[1]["d1"]
    assert not (out / "iou_per_class.png").exists()        # nothing to score segmentation on
    for name in ("error_maps.png", "figure8_samples.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 50 and image.shape[1] > 300, name
    err = capsys.readouterr().err
    assert "mIoU -" in err and "sgbm_3way" in err and "bad-1" in err


def test_pmt_evaluate_sgbm_alone_and_scale_only_where_a_loader_has_one(middlebury_folder,
                                                                       tmp_path):
    out = tmp_path / "sgbm"
    assert main(["--sgbm", "ros", "--data", "middlebury", "--data-root", str(middlebury_folder),
                 "--out", str(out), "--workers", "0", "--json"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["method"]["preset"] == "ros" and "baselines" not in report
    assert report["image_sizes"] == [[96, 320]]
    # Full size, disparity 8 px and 3 px (9 stored at factor 3): SGBM gets most pixels right.
    assert report["comparison"][0]["d1"] < 0.2
    with pytest.raises(SystemExit, match="synthetic loader has no evaluation scale"):
        main(["--sgbm", "ros", "--data", "synthetic", "--scale", "0.5", "--out",
              str(tmp_path / "never")])
