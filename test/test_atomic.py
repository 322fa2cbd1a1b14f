"""Atomic writes: readable permissions, no half files, no leftovers after a failure."""
import json
import os
import stat

import numpy as np
import pytest
import torch

from pmt_perception.atomic import atomic_path, write_bytes_atomic, write_json_atomic


def test_written_file_has_ordinary_permissions(tmp_path):
    path = write_bytes_atomic(tmp_path / "a" / "x.bin", b"data")
    assert path.read_bytes() == b"data"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_failure_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_temp_path_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "m.onnx") as tmp:
        assert tmp.suffix == ".onnx" and tmp.parent == tmp_path
        tmp.write_bytes(b"")


def test_json_writer_writes_strict_json_from_numpy_and_torch(tmp_path):
    data = {"miou": float("nan"), "epe": np.float32(0.5), "count": np.int64(3),
            "loss": torch.tensor(1.25), "size": (480, 720), 7: [float("inf"), np.bool_(True)],
            "iou": torch.tensor([0.5, float("nan")]), "counts": np.array([[1, 2]], np.int32)}
    path = write_json_atomic(tmp_path / "r" / "report.json", data)
    text = path.read_text()
    assert text.endswith("}\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"miou": None, "epe": 0.5, "count": 3, "loss": 1.25,
                                "size": [480, 720], "7": [None, True], "iou": [0.5, None],
                                "counts": [[1, 2]]}
