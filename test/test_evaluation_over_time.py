"""Frame-by-frame disparity scores of a stream (online adaptation's D1 curve)."""
from types import SimpleNamespace

import numpy as np
import pytest

from pmt_perception.evaluation.over_time import d1_over_time_figure, first_and_last, per_frame_disparity


def pair(index, wrong_fraction):
    gt = np.full((10, 10), 8.0, np.float32)
    gt[0] = 0                                     # a row without ground truth: not scored
    prediction = gt.copy()
    wrong = int(round(wrong_fraction * 90))
    prediction.reshape(-1)[10:10 + wrong] += 5.0  # 5 px off: over the 3 px threshold
    return ({"disparity": gt, "meta": {"index": index, "stamp_ns": 1000 + index}},
            SimpleNamespace(disparity=prediction))


def test_per_frame_d1_is_each_frames_own_share_of_bad_pixels():
    rows = per_frame_disparity([pair(0, 0.5), pair(1, 0.0), pair(2, 1 / 9)])
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["d1"] for r in rows] == pytest.approx([45 / 90, 0.0, 10 / 90])
    assert rows[0]["epe"] == pytest.approx(5 * 45 / 90) and rows[0]["num_pixels"] == 90
    empty = ({"disparity": np.zeros((4, 4), np.float32), "meta": {}},
             SimpleNamespace(disparity=np.ones((4, 4), np.float32)))
    assert per_frame_disparity([empty]) == []


def test_first_and_last_windows_and_too_short_streams():
    rows = [{"d1": 0.4}] * 20 + [{"d1": 0.3}] * 5 + [{"d1": 0.1}] * 20
    summary = first_and_last(rows, count=20)
    assert summary["first_d1"] == pytest.approx(0.4) and summary["last_d1"] == pytest.approx(0.1)
    assert summary["last_over_first"] == pytest.approx(0.25)
    assert first_and_last(rows[:39], count=20) is None


def test_d1_over_time_figure_is_written(tmp_path):
    rows = [{"d1": d} for d in np.linspace(0.5, 0.1, 30)]
    path = d1_over_time_figure(tmp_path / "d1.png", {"live": rows, "offline": [{"d1": 0.5}] * 30},
                               reference=0.117, reference_label="SGBM")
    assert path.is_file() and path.stat().st_size > 1000


def test_recording_per_frame_passes_the_stream_through_and_scores_each_frame():
    from pmt_perception.evaluation.over_time import recording_per_frame

    rows = []
    pairs = [pair(0, 0.5), pair(1, 0.0)]
    assert list(recording_per_frame(iter(pairs), rows)) == pairs
    assert rows == per_frame_disparity(pairs)
