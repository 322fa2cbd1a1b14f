"""pmt-evaluate: JSON report + figures from a checkpoint or SGBM, metrics identical to a direct
computation, full-size evaluation, and refusal of bad checkpoints."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from pmt_perception.checkpoint import save_checkpoint
from pmt_perception.config import load_model_config
from pmt_perception.data.synthetic import CLASS_NAMES, PALETTE, load_generator_settings, write_folder
from pmt_perception.evaluate import main
from pmt_perception.evaluation.report import EvaluationAccumulator
from pmt_perception.inference import Predictor
from pmt_perception.metrics import DisparityMetrics, SegmentationMetrics
from pmt_perception.network import build_model

# Not a multiple of 32: the predictor must pad and crop back, never evaluate a crop.
SIZE = (70, 100)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_folder(root / "test", load_generator_settings(), count=3, seed=3, split="test", size=SIZE)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = load_model_config("fast", num_classes=len(CLASS_NAMES), backbone="resnet18",
                               spp_f1_windows=(8, 4), spp_f2_windows=(4, 2))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, model=build_model(config).eval(), config=config,
                    class_names=list(CLASS_NAMES), palette=PALETTE)
    return path


def _run(args, tmp_path, name):
    out = tmp_path / name
    assert main([*args, "--split", "test", "--out", str(out), "--workers", "0",
                 "--threads", "1"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_checkpoint_report_holds_every_metric_and_matches_a_direct_computation(
        scenes, checkpoint, tmp_path):
    out, report = _run(["--checkpoint", str(checkpoint), "--data-root", str(scenes)], tmp_path, "pmt")
    assert report["num_samples"] == 3 and report["image_sizes"] == [list(SIZE)]
    for head in ("refined", "coarse"):
        scores = report["segmentation"][head]
        assert set(scores["iou_per_class"]) == set(CLASS_NAMES)
        for key in ("miou", "pixel_accuracy", "mean_class_accuracy"):
            assert 0.0 <= scores[key] <= 1.0
    for key in ("epe", "d1", "kitti_d1", "bad_1", "bad_2", "rmse", "abs_rel", "sq_rel"):
        assert report["disparity"][key] >= 0.0
    assert report["timing"]["samples"] == 3 and report["timing"]["model_ms"]["mean"] > 0
    assert report["method"]["parameters"]["unique"] > 0

    # The same numbers, computed here without the evaluator.
    from pmt_perception.data import SyntheticFolder

    predictor = Predictor(checkpoint, device="cpu")
    refined, disparity = SegmentationMetrics(len(CLASS_NAMES)), DisparityMetrics()
    for sample in SyntheticFolder(scenes / "test"):
        prediction = predictor.predict(sample["left"], sample["right"])
        assert prediction.disparity.shape == SIZE
        refined.update(prediction.labels.astype(np.int64), sample["seg"])
        disparity.update(prediction.disparity, sample["disparity"])
    assert report["segmentation"]["refined"]["miou"] == pytest.approx(refined.compute()["miou"])
    assert report["disparity"]["d1"] == pytest.approx(disparity.compute()["d1"])
    assert report["disparity"]["epe"] == pytest.approx(disparity.compute()["epe"], rel=1e-6)

    assert report["segmentation_ground_truth"] is True
    assert report["comparison"][0]["refined_miou"] == report["segmentation"]["refined"]["miou"]
    for name in ("iou_per_class.png", "confusion_matrix.png", "figure8_samples.png",
                 "error_maps.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100, name
    panel = cv2.imread(str(out / "figure8_samples.png"))[..., ::-1]
    # The paper's error colours are in the panel: pure blue, green or red pixels.
    colours = {tuple(c) for c in panel.reshape(-1, 3)[::7]}
    assert colours & {(0, 0, 255), (0, 255, 0), (255, 0, 0)}


def test_sgbm_report_has_the_same_format_and_scores_the_holes(scenes, tmp_path):
    _out, report = _run(["--sgbm", "ros", "--data-root", str(scenes)], tmp_path, "sgbm")
    assert report["segmentation"] == {"refined": None, "coarse": None}
    assert report["method"]["num_disparities"] == 64 and report["method"]["block_size"] == 15
    estimated = report["disparity"]["estimated_pixels_only"]
    assert 0.0 < estimated["density"] <= 1.0
    # Hole-filled scoring covers every pixel with ground truth; the raw map only its estimates.
    assert report["disparity"]["num_pixels"] == 3 * SIZE[0] * SIZE[1]
    assert estimated["num_pixels"] < report["disparity"]["num_pixels"]
    # One comparison row (the method itself); SGBM does not segment: its mIoU is absent.
    [row] = report["comparison"]
    assert row["method"] == "sgbm_ros" and row["refined_miou"] is None
    assert row["d1"] == report["disparity"]["d1"] and 0.0 <= row["bad_2"] <= row["bad_1"] <= 1.0


def test_accumulator_takes_any_iterable_of_sample_prediction_pairs():
    class Frame:  # what a bag replay would hand over: no coarse head, no timings
        def __init__(self, labels, disparity):
            self.labels, self.disparity = labels, disparity

    seg = np.array([[0, 1], [1, 255]])
    gt = np.array([[4.0, 8.0], [0.0, 2.0]], np.float32)
    accumulator = EvaluationAccumulator(num_classes=2, class_names=["a", "b"], figure_samples=0)
    accumulator.add({"seg": seg, "disparity": gt}, Frame(np.array([[0, 1], [0, 0]]),
                                                         np.array([[4.5, 12.0], [9.0, 2.0]], np.float32)))
    report = accumulator.report()
    assert report["segmentation"]["coarse"] is None
    # GT valid at 3 pixels, errors 0.5, 4, 0 -> one bad pixel (> 3 px).
    assert report["disparity"]["d1"] == pytest.approx(1 / 3)
    assert report["disparity"]["epe"] == pytest.approx(4.5 / 3)
    # Pixels: (0,0) hit a; (0,1) hit b; (1,0) b predicted a; (1,1) ignored.
    assert report["segmentation"]["refined"]["iou_per_class"] == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="full input size"):
        accumulator.add({"seg": seg, "disparity": gt}, Frame(seg[:1], gt[:1]))


def test_refuses_corrupted_and_non_weights_only_checkpoints(scenes, checkpoint, tmp_path, capsys):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "pmt_perception/1", "model": torch.nn.Linear(2, 2)}, pickled)
    for bad, message in ((truncated, "corrupted or truncated"),
                         (pickled, "not a weights-only checkpoint")):
        code = main(["--checkpoint", str(bad), "--data-root", str(scenes), "--split", "test",
                     "--out", str(tmp_path / "never")])
        assert code == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "never" / "report.json").exists()


def test_the_warm_up_passes_make_the_same_call_as_the_timed_one(checkpoint, monkeypatch):
    # A Predictor asked for extras runs another exported graph than a plain call; a warm-up
    # with the plain call left OpenVINO's compile of the extras graph in the one timed call of a
    # one-pair dataset (0.6 s reported for a 37 ms model).
    from pmt_perception.evaluate import predict_sample
    predictor = Predictor(checkpoint)
    calls = []
    real_predict = Predictor.predict

    def recording_predict(self, left, right, **options):
        calls.append(options)
        return real_predict(self, left, right, **options)

    monkeypatch.setattr(Predictor, "predict", recording_predict)
    rng = np.random.default_rng(0)
    sample = {"left": rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8),
              "right": rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8)}
    prediction = predict_sample(predictor, sample, warmup=2)
    assert calls == [{"extras": True}] * 3
    assert prediction.disparity.shape[-2:] == SIZE
