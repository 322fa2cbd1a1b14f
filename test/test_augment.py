"""Joint stereo augmentation: what it does to both views, the labels and the disparity."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from pmt_perception.data import load_data_config
from pmt_perception.data.augment import StereoAugment, adjust_pair, zoom_and_crop
from pmt_perception.data.synthetic import generate_pair, load_generator_settings


@pytest.fixture(scope="module")
def pair():
    return generate_pair(load_generator_settings(), seed=(0, 0, 2), size=(160, 240), noise=False)


def _raw(pair, seg=None) -> dict:
    meta = {"dataset": "synthetic", "sample_id": "x", "fx": pair.rig.fx, "cx": pair.rig.cx, "cy": pair.rig.cy}
    return {"left": pair.left, "right": pair.right, "seg": pair.labels if seg is None else seg,
            "disparity": pair.disparity, "meta": meta}


def _warp_error(left: np.ndarray, right: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    height, width = disparity.shape
    xs = (np.arange(width, dtype=np.float32)[None, :] - disparity).astype(np.float32)
    ys = np.broadcast_to(np.arange(height, dtype=np.float32)[:, None], xs.shape).astype(np.float32)
    warped = cv2.remap(right, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1)
    error = np.abs(warped - left).mean(axis=2) * 255
    error[(xs < 0) | (warped < 0).any(axis=2)] = np.nan
    return error


@pytest.mark.parametrize("zoom", [0.75, 1.4])
def test_zoomed_pair_stays_photometrically_consistent_with_the_scaled_disparity(pair, zoom):
    visible = pair.non_occluded().astype(np.uint8)  # carried through the zoom like labels
    height, width = pair.labels.shape
    size = (round(height * zoom), round(width * zoom))
    out = zoom_and_crop(_raw(pair, seg=visible), zoom=zoom, crop_size=size, offset=(0, 0))
    scale = size[1] / width
    keep = (out["seg"] == 1)
    error = _warp_error(out["left"], out["right"], out["disparity"])
    consistent = np.nanmean(error[keep])
    assert consistent < 3.0, f"mean error {consistent:.2f} grey levels after zoom {zoom}"
    # Forgetting to scale the disparity (or scaling by the wrong factor) breaks the match.
    unscaled = _warp_error(out["left"], out["right"], out["disparity"] / scale)
    assert np.nanmean(unscaled[keep]) > 2 * consistent


def test_disparity_is_multiplied_by_the_exact_horizontal_scale():
    raw = {"left": np.zeros((10, 240, 3), np.uint8), "right": np.zeros((10, 240, 3), np.uint8),
           "seg": np.zeros((10, 240), np.uint8), "disparity": np.full((10, 240), 10.0, np.float32),
           "meta": {}}
    out = zoom_and_crop(raw, zoom=0.7013, crop_size=(7, 168), offset=(0, 0))
    np.testing.assert_allclose(out["disparity"], 10.0 * 168 / 240)  # round(240 * 0.7013) = 168
    assert out["meta"]["zoom"] == pytest.approx(0.7)


@pytest.mark.parametrize("zoom", [0.7, 1.5])
def test_sparse_disparity_stays_sparse_and_is_never_interpolated(zoom):
    rng = np.random.default_rng(0)
    valid = rng.uniform(size=(60, 80)) < 0.05
    disparity = np.where(valid, rng.uniform(5, 50, (60, 80)), 0).astype(np.float32)
    labels = rng.integers(0, 5, (60, 80)).astype(np.uint8)
    raw = {"left": np.zeros((60, 80, 3), np.uint8), "right": np.zeros((60, 80, 3), np.uint8), "seg": labels,
           "disparity": disparity, "meta": {}}
    size = (round(60 * zoom), round(80 * zoom))
    out = zoom_and_crop(raw, zoom=zoom, crop_size=size, offset=(0, 0))
    scale = size[1] / 80
    values = out["disparity"][out["disparity"] > 0] / scale
    # Every output disparity is one input disparity, scaled: no blends of valid values or zeros.
    source_values = disparity[disparity > 0]
    assert np.isin(np.round(values, 4), np.round(source_values, 4)).all()
    assert 0.02 < (out["disparity"] > 0).mean() < 0.08
    assert set(np.unique(out["seg"]).tolist()) <= set(range(5))
    # Nearest mapping is centre-aligned: output (r, c) takes input floor((r + 0.5) / s).
    rows = np.minimum(((np.arange(size[0]) + 0.5) / (size[0] / 60)).astype(int), 59)
    cols = np.minimum(((np.arange(size[1]) + 0.5) / scale).astype(int), 79)
    np.testing.assert_array_equal(out["seg"], labels[rows[:, None], cols[None, :]])


def test_crop_beyond_the_zoomed_image_is_padded_with_ignore_and_no_ground_truth(pair):
    out = zoom_and_crop(_raw(pair), zoom=0.5, crop_size=(100, 140), offset=(-10, -10))
    assert out["left"].shape == (100, 140, 3) and out["seg"].shape == (100, 140)
    assert (out["seg"][:10] == 255).all() and (out["seg"][:, :10] == 255).all()
    assert (out["seg"][90:] == 255).all()           # zoomed height is 80 rows: 10..89
    assert (out["disparity"][:10] == 0).all() and (out["left"][:10] == 0).all()
    assert (out["seg"][10:90, 10:130] != 255).all()


def test_principal_point_and_focal_length_follow_the_zoom_and_crop(pair):
    zoom, offset = 1.25, (7, 11)
    out = zoom_and_crop(_raw(pair), zoom=zoom, crop_size=(64, 64), offset=offset)
    scale = round(240 * zoom) / 240
    assert out["meta"]["fx"] == pytest.approx(pair.rig.fx * scale)
    assert out["meta"]["cx"] == pytest.approx((pair.rig.cx + 0.5) * scale - 0.5 - offset[1])


def test_colour_transforms_are_identical_for_both_views():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8)
    left, right = adjust_pair(image, image.copy(), brightness=1.3, contrast=0.9, saturation=0.6,
                              blur_sigma=0.8)
    np.testing.assert_array_equal(left, right)
    brighter, _ = adjust_pair(image, image, brightness=1.2)
    np.testing.assert_allclose(brighter, np.clip(image / 255.0 * 1.2, 0, 1), atol=1e-6)
    grey, _ = adjust_pair(image, image, saturation=0.0)
    assert np.abs(grey - grey.mean(axis=2, keepdims=True)).max() < 1e-5


def test_augment_pipeline_is_reproducible_and_crops_to_the_configured_size(pair):
    settings = load_data_config("synthetic").augment
    first = StereoAugment(settings, seed=4)(_raw(pair))
    second = StereoAugment(settings, seed=4)(_raw(pair))
    crop = dataclasses.replace(settings, crop_size=(96, 128))
    third = StereoAugment(crop, seed=4)(_raw(pair))
    for key in ("left", "right", "seg", "disparity"):
        np.testing.assert_array_equal(first[key], second[key])
    assert first["left"].shape == (*settings.crop_size, 3) and third["seg"].shape == (96, 128)
    disabled = StereoAugment(dataclasses.replace(settings, enabled=False), seed=4)
    assert disabled(_raw(pair))["left"] is pair.left
