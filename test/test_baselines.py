"""OpenCV SGBM baselines: ROS defaults as documented, correct disparities on a known shift,
KITTI-style hole filling."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pmt_perception.baselines import SGBM_PRESETS, SGBMBaseline, SGBMSettings, fill_holes_like_kitti


def test_ros_preset_is_stereo_image_procs_sgbm_defaults():
    ros = SGBM_PRESETS["ros"]
    assert (ros.num_disparities, ros.block_size, ros.p1, ros.p2, ros.prefilter_cap,
            ros.uniqueness_ratio, ros.speckle_window_size, ros.speckle_range,
            ros.disp12_max_diff, ros.min_disparity, ros.grey) == (64, 15, 200, 400, 31, 15, 100, 4,
                                                                  0, 0, True)
    three_way = SGBM_PRESETS["3way"]   # the Aloe row of shared/data/real_stereo/README.md
    assert (three_way.num_disparities, three_way.block_size, three_way.p1, three_way.p2,
            three_way.uniqueness_ratio, three_way.speckle_window_size, three_way.speckle_range,
            three_way.disp12_max_diff, three_way.grey) == (128, 5, 600, 2400, 10, 100, 2, 1, False)
    assert three_way.mode == cv2.STEREO_SGBM_MODE_SGBM_3WAY
    with pytest.raises(ValueError, match="multiple of 16"):
        SGBMSettings(**{**ros.__dict__, "num_disparities": 60})
    with pytest.raises(ValueError, match="unknown SGBM preset"):
        SGBMBaseline("fastest")


@pytest.mark.parametrize("preset", sorted(SGBM_PRESETS))
def test_sgbm_recovers_a_known_constant_shift(preset):
    rng = np.random.default_rng(0)
    shift = 9
    # SGBM has no estimate in the first num_disparities columns: the image is wider than that.
    margin = SGBM_PRESETS[preset].num_disparities
    width = margin + 80
    texture = rng.integers(0, 256, size=(80, width + shift, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(texture[::2, ::2], 2, 0), 2, 1)[:80, :width + shift]
    # right(x) = texture(x + shift) = left(x + shift): the right view sees every point `shift`
    # px further left, i.e. disparity = +shift.
    left = np.ascontiguousarray(texture[:, :width])
    right = np.ascontiguousarray(texture[:, shift:shift + width])
    prediction = SGBMBaseline(preset).predict(left, right)
    assert prediction.disparity.shape == (80, width) and prediction.labels is None
    inner = prediction.raw_disparity[10:-10, margin:-10]
    assert np.isfinite(inner).mean() > 0.9
    assert np.nanmedian(np.abs(inner - shift)) < 0.5
    # The dataset contract's float tensors give the same answer as uint8 arrays.
    def as_tensor(image):
        return torch.from_numpy(image).permute(2, 0, 1).float() / 255

    again = SGBMBaseline(preset).predict(as_tensor(left), as_tensor(right))
    np.testing.assert_array_equal(again.disparity, prediction.disparity)


def test_holes_take_the_farther_row_neighbour_like_the_kitti_devkit():
    nan = np.nan
    raw = np.array([[nan, 5.0, nan, nan, 2.0, nan],
                    [nan, nan, nan, nan, nan, nan],
                    [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], np.float32)
    filled = fill_holes_like_kitti(raw)
    np.testing.assert_array_equal(filled[0], [5.0, 5.0, 2.0, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(filled[1], np.zeros(6))   # nothing to fill from
    np.testing.assert_array_equal(filled[2], raw[2])
