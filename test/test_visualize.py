"""Palettes, colourisation, error maps and contact sheets."""
from __future__ import annotations

import numpy as np
import pytest

from pmt_perception import visualize as vis


def test_cityscapes_palette_is_the_official_19_colours():
    palette = vis.cityscapes_palette()
    assert palette.shape == (19, 3) and palette.dtype == np.uint8
    assert palette[0].tolist() == [128, 64, 128]    # road
    assert palette[10].tolist() == [70, 130, 180]   # sky
    assert palette[13].tolist() == [0, 0, 142]      # car
    assert palette[18].tolist() == [119, 11, 32]    # bicycle


@pytest.mark.parametrize("count", [2, 9, 40])
def test_distinct_palette_colours_are_different_and_stable(count):
    palette = vis.distinct_palette(count)
    assert palette.shape == (count, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette.tolist()}) == count
    distances = np.abs(palette[:, None].astype(int) - palette[None].astype(int)).sum(-1)
    np.fill_diagonal(distances, 999)
    assert distances.min() >= (60 if count <= 9 else 10)
    np.testing.assert_array_equal(palette, vis.distinct_palette(count))
    with pytest.raises(ValueError):
        vis.distinct_palette(0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.int32])
def test_colorize_labels_looks_up_the_palette_and_blacks_out_ignore_and_unknown(dtype):
    palette = np.array([[10, 20, 30], [40, 50, 60]], np.uint8)
    labels = np.array([[0, 1], [255, 7]], dtype=dtype)
    colours = vis.colorize_labels(labels, palette)
    assert colours.shape == (2, 2, 3) and colours.dtype == np.uint8
    assert colours[0, 0].tolist() == [10, 20, 30] and colours[0, 1].tolist() == [40, 50, 60]
    assert colours[1].tolist() == [[0, 0, 0], [0, 0, 0]]
    if dtype != np.uint8:
        assert vis.colorize_labels(np.array([[-1, 300]], dtype=dtype), palette).max() == 0


def test_colorize_disparity_blacks_out_invalid_and_orders_the_colormap():
    disparity = np.array([[0.0, np.nan, -3.0, np.inf], [1.0, 32.0, 64.0, 128.0]], np.float32)
    colours = vis.colorize_disparity(disparity, max_disp=128)
    assert colours.shape == (2, 4, 3) and colours.dtype == np.uint8
    assert (colours[0] == 0).all()
    assert (colours[1].sum(-1) > 0).all()
    # TURBO runs from dark blue (far, small disparity) to dark red (near): red grows, blue falls.
    assert colours[1, 3, 0] > colours[1, 0, 0] and colours[1, 0, 2] > colours[1, 3, 2]
    np.testing.assert_array_equal(vis.colorize_disparity(disparity), colours)  # auto max = 128 here


def test_disparity_error_map_uses_the_paper_colours_and_thresholds():
    gt = np.array([[10.0, 10.0, 10.0, 10.0, 0.0]], np.float32)
    pred = np.array([[10.0, 12.99, 13.0, 16.0, 50.0]], np.float32)
    colours = vis.disparity_error_map(pred, gt)
    assert colours[0].tolist() == [[0, 0, 255], [0, 0, 255], [0, 255, 0], [255, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError):
        vis.disparity_error_map(pred, gt[:, :3])


def test_overlay_blends_by_alpha():
    image = np.full((2, 2, 3), 200, np.uint8)
    colours = np.zeros((2, 2, 3), np.uint8)
    assert (vis.overlay(image, colours, 0.0) == 200).all()
    assert (vis.overlay(image, colours, 1.0) == 0).all()
    assert (vis.overlay(image, colours, 0.25) == 150).all()
    with pytest.raises(ValueError):
        vis.overlay(image, colours, 1.5)


def test_contact_sheet_places_tiles_in_a_titled_grid():
    red = np.zeros((10, 20, 3), np.uint8)
    red[..., 0] = 255
    grey = np.full((5, 10), 128, np.uint8)  # a greyscale tile of another size is resized
    sheet = vis.contact_sheet([[red, grey], [grey, red]], ["a", "b"], gap=2, title_height=12)
    assert sheet.shape == (12 + 2 * 10 + 3 * 2, 2 * 20 + 3 * 2, 3)
    assert sheet[12 + 2 + 5, 2 + 10].tolist() == [255, 0, 0]       # first tile
    assert sheet[12 + 2 + 5, 2 + 20 + 2 + 10].tolist() == [128, 128, 128]
    assert (sheet[:12] < 255).any()                                # titles were drawn
    with pytest.raises(ValueError):
        vis.contact_sheet([[red]], ["a", "b"])
