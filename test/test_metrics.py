"""Metrics of pmt_perception.metrics against hand-worked values and scikit-learn."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, jaccard_score, precision_recall_fscore_support, recall_score

from pmt_perception.metrics import (
    CITYSCAPES_CATEGORY_NAMES,
    CITYSCAPES_CATEGORY_OF_TRAIN_ID,
    DisparityMetrics,
    SegmentationMetrics,
    group_confusion,
)

IGNORE = 255


# --------------------------------------------------------------------------- segmentation
def test_segmentation_scores_match_hand_computed_values():
    # 3 classes; class 2 is in neither GT nor prediction (IoU NaN, excluded from the means).
    target = np.array([[0, 0, 1, 1], [1, IGNORE, 0, 1]])
    prediction = np.array([[0, 1, 1, 1], [0, 2, 0, 1]])  # the 2 sits on the ignored pixel
    # Valid pairs (gt, pred): (0,0) (0,1) (1,1) (1,1) (1,0) (0,0) (1,1)
    #   class 0: TP 2, FN 1 (gt 0 -> 1), FP 1 (gt 1 -> 0): IoU 2/4, recall 2/3
    #   class 1: TP 3, FN 1, FP 1: IoU 3/5, recall 3/4
    metrics = SegmentationMetrics(3, ignore_index=IGNORE)
    metrics.update(prediction, target)
    scores = metrics.compute()
    assert metrics.confusion.tolist() == [[2, 1, 0], [1, 3, 0], [0, 0, 0]]
    assert scores["iou_per_class"][:2] == pytest.approx([0.5, 0.6])
    assert math.isnan(scores["iou_per_class"][2])
    assert scores["miou"] == pytest.approx(0.55)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 7)
    assert scores["mean_class_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert scores["num_pixels"] == 7
    assert "precision" not in scores


def test_class_only_predicted_counts_as_zero_iou():
    metrics = SegmentationMetrics(3)
    metrics.update(torch.tensor([0, 2]), torch.tensor([0, 0]))
    scores = metrics.compute()
    # class 0: IoU 1/2; class 1 absent everywhere (NaN); class 2 a false alarm: IoU 0.
    assert scores["iou_per_class"][0] == pytest.approx(0.5)
    assert math.isnan(scores["iou_per_class"][1])
    assert scores["iou_per_class"][2] == 0.0
    assert scores["miou"] == pytest.approx(0.25)
    # Mean class accuracy only averages classes that have ground truth (class 0: 1/2).
    assert scores["mean_class_accuracy"] == pytest.approx(0.5)


def test_binary_precision_recall_f1_by_hand():
    target = torch.tensor([1, 1, 1, 0, 0, IGNORE])
    prediction = torch.tensor([1, 1, 0, 1, 0, 1])
    # class 1: TP 2, FN 1, FP 1 -> P = 2/3, R = 2/3, F1 = 2/3; ignored pixel not counted.
    metrics = SegmentationMetrics(2)
    metrics.update(prediction, target)
    scores = metrics.compute()
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((2 / 3,) * 3)
    # No positive prediction: precision undefined (NaN), recall 0, F1 0.
    metrics.reset()
    metrics.update(torch.tensor([0, 0]), torch.tensor([1, 0]))
    scores = metrics.compute()
    assert math.isnan(scores["precision"]) and scores["recall"] == 0.0 and scores["f1"] == 0.0


@pytest.mark.parametrize("num_classes", [2, 5])
def test_segmentation_matches_sklearn_on_random_batches(num_classes):
    rng = np.random.default_rng(num_classes)
    metrics = SegmentationMetrics(num_classes, ignore_index=IGNORE)
    all_targets, all_predictions = [], []
    for _ in range(3):  # accumulation over batches of different shapes
        shape = tuple(rng.integers(2, 9, size=3))
        target = rng.integers(0, num_classes, size=shape)
        target[rng.random(shape) < 0.2] = IGNORE
        prediction = rng.integers(0, num_classes, size=shape).astype(np.uint8)
        metrics.update(torch.from_numpy(prediction), target)
        valid = target != IGNORE
        all_targets.append(target[valid])
        all_predictions.append(prediction[valid].astype(np.int64))
    y_true, y_pred = np.concatenate(all_targets), np.concatenate(all_predictions)
    labels = list(range(num_classes))
    scores = metrics.compute()

    np.testing.assert_array_equal(metrics.confusion.numpy(),
                                  confusion_matrix(y_true, y_pred, labels=labels))
    np.testing.assert_allclose(scores["iou_per_class"],
                               jaccard_score(y_true, y_pred, labels=labels, average=None))
    assert scores["miou"] == pytest.approx(jaccard_score(y_true, y_pred, average="macro"))
    assert scores["pixel_accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    assert scores["mean_class_accuracy"] == pytest.approx(
        recall_score(y_true, y_pred, average="macro"))
    if num_classes == 2:
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, average="binary", pos_label=1)
        assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx(
            (precision, recall, f1))


def test_merge_equals_updating_one_accumulator():
    rng = np.random.default_rng(1)
    batches = [(rng.integers(0, 4, 50), rng.integers(0, 4, 50)) for _ in range(4)]
    whole, first, second = (SegmentationMetrics(4) for _ in range(3))
    for index, (prediction, target) in enumerate(batches):
        whole.update(prediction, target)
        (first if index % 2 else second).update(prediction, target)
    first.merge(second)
    assert torch.equal(first.confusion, whole.confusion)
    with pytest.raises(ValueError, match="differ"):
        first.merge(SegmentationMetrics(5))


def test_segmentation_rejects_bad_input():
    metrics = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="shape"):
        metrics.update(np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="prediction holds ids"):
        metrics.update(np.array([3]), np.array([0]))
    with pytest.raises(ValueError, match="target holds ids"):
        metrics.update(np.array([0]), np.array([4]))
    with pytest.raises(ValueError, match="argmax"):
        metrics.update(torch.zeros(2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="is a class id"):
        SegmentationMetrics(3, ignore_index=1)


def test_cityscapes_categories_group_train_ids():
    assert len(CITYSCAPES_CATEGORY_OF_TRAIN_ID) == 19
    assert len(CITYSCAPES_CATEGORY_NAMES) == 7
    # road(0) predicted as sidewalk(1): wrong class, right category (flat).
    # car(13) predicted as person(11): wrong class AND category (vehicle vs human).
    # sky(10) correct.
    metrics = SegmentationMetrics(19)
    metrics.update(torch.tensor([1, 11, 10]), torch.tensor([0, 13, 10]))
    scores = metrics.compute()
    # 5 classes have a defined IoU: road 0, sidewalk 0, car 0, person 0, sky 1 -> 1/5.
    assert scores["miou"] == pytest.approx(1 / 5)
    category = scores["category_iou"]
    assert category["flat"] == 1.0 and category["sky"] == 1.0
    assert category["vehicle"] == 0.0 and category["human"] == 0.0
    assert math.isnan(category["nature"])
    assert scores["category_miou"] == pytest.approx(2 / 4)


def test_group_confusion_equals_mapping_labels_before_counting():
    rng = np.random.default_rng(7)
    target, prediction = rng.integers(0, 19, 500), rng.integers(0, 19, 500)
    metrics = SegmentationMetrics(19)
    metrics.update(prediction, target)
    category = np.asarray(CITYSCAPES_CATEGORY_OF_TRAIN_ID)
    expected = confusion_matrix(category[target], category[prediction], labels=range(7))
    grouped = group_confusion(metrics.confusion, CITYSCAPES_CATEGORY_OF_TRAIN_ID)
    np.testing.assert_array_equal(grouped.numpy(), expected)
    assert metrics.compute()["category_miou"] == pytest.approx(
        jaccard_score(category[target], category[prediction], average="macro"))


# --------------------------------------------------------------------------- disparity
def test_disparity_metrics_by_hand():
    target = np.array([[10.0, 20.0, 4.0], [0.0, np.inf, 50.0]], dtype=np.float32)
    prediction = np.array([[12.0, 24.0, 8.0], [99.0, 1.0, 50.0]], dtype=np.float32)
    # Valid: gt 10, 20, 4, 50 (0 and inf have no ground truth); errors 2, 4, 4, 0.
    metrics = DisparityMetrics()
    metrics.update(torch.from_numpy(prediction).unsqueeze(0).unsqueeze(0), target[None])
    scores = metrics.compute()
    assert scores["num_pixels"] == 4
    assert scores["epe"] == pytest.approx(10 / 4)
    assert scores["rmse"] == pytest.approx(math.sqrt((4 + 16 + 16 + 0) / 4))
    # |err| > 3: errors 4 (gt 20) and 4 (gt 4) -> 2/4. KITTI also needs err > 5% of gt:
    # 4 > 1.0 and 4 > 0.2 -> both still bad -> 2/4.
    assert scores["d1"] == pytest.approx(0.5)
    assert scores["kitti_d1"] == pytest.approx(0.5)
    assert scores["abs_rel"] == pytest.approx((2 / 10 + 4 / 20 + 4 / 4 + 0) / 4)
    assert scores["sq_rel"] == pytest.approx((4 / 10 + 16 / 20 + 16 / 4 + 0) / 4)
    # Middlebury's bad-1 / bad-2: errors > 1 px (2, 4, 4) and > 2 px (4, 4; 2 is not > 2).
    assert scores["bad_1"] == pytest.approx(3 / 4)
    assert scores["bad_2"] == pytest.approx(2 / 4)


def test_kitti_d1_needs_the_relative_error_too_and_thresholds_are_configurable():
    target = torch.tensor([100.0, 10.0])
    prediction = torch.tensor([104.0, 14.0])  # both 4 px off: 4% of 100, 40% of 10
    metrics = DisparityMetrics()
    metrics.update(prediction, target)
    assert metrics.compute()["d1"] == pytest.approx(1.0)
    assert metrics.compute()["kitti_d1"] == pytest.approx(0.5)
    strict = DisparityMetrics(bad_pixel_threshold=5.0, relative_threshold=0.01)
    strict.update(prediction, target)
    assert strict.compute()["d1"] == 0.0 and strict.compute()["kitti_d1"] == 0.0


def test_disparity_non_finite_prediction_is_an_infinite_error():
    metrics = DisparityMetrics()
    metrics.update(torch.tensor([float("nan"), 5.0]), torch.tensor([5.0, 5.0]))
    scores = metrics.compute()
    assert scores["d1"] == pytest.approx(0.5)
    assert scores["epe"] == math.inf


def test_disparity_empty_is_nan_and_merge_equals_one_accumulator():
    empty = DisparityMetrics()
    empty.update(torch.ones(3), torch.zeros(3))
    assert empty.compute()["num_pixels"] == 0 and math.isnan(empty.compute()["epe"])

    rng = np.random.default_rng(3)
    pairs = [(rng.uniform(0, 60, 40), rng.uniform(-5, 60, 40)) for _ in range(4)]
    whole, first, second = DisparityMetrics(), DisparityMetrics(), DisparityMetrics()
    for index, (prediction, target) in enumerate(pairs):
        whole.update(prediction, target)
        (first if index % 2 else second).update(prediction, target)
    first.merge(second)
    assert first.compute() == pytest.approx(whole.compute())
    # And the whole against numpy on the pooled valid pixels.
    prediction, target = (np.concatenate(x) for x in zip(*pairs))
    valid = target > 0
    error = np.abs(prediction[valid] - target[valid])
    assert whole.compute()["epe"] == pytest.approx(error.mean())
    assert whole.compute()["rmse"] == pytest.approx(np.sqrt(np.mean(error ** 2)))
    assert whole.compute()["d1"] == pytest.approx(np.mean(error > 3))
    assert whole.compute()["bad_1"] == pytest.approx(np.mean(error > 1))
    assert whole.compute()["bad_2"] == pytest.approx(np.mean(error > 2))
    with pytest.raises(ValueError, match="thresholds differ"):
        first.merge(DisparityMetrics(bad_pixel_threshold=1.0))
    with pytest.raises(ValueError, match="shape"):
        whole.update(np.zeros((2, 2)), np.zeros((2, 3)))
