"""Reading and writing the files datasets are made of, with errors that name the file.

Writers go through a temp file in the target folder + `os.replace`, so a reader (another
DataLoader worker, a person with an image viewer) never sees half a file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..atomic import write_bytes_atomic


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An 8-bit colour image as HxWx3 uint8 RGB (greyscale images are repeated to 3 channels)."""
    path = Path(path)
    _require_file(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode image: {path}")
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit image, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image[..., ::-1])


def read_png_raw(path: str | os.PathLike, *, dtype: type | None = None) -> np.ndarray:
    """A single-channel PNG exactly as stored (8 or 16 bit), optionally checking its dtype."""
    path = Path(path)
    _require_file(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode image: {path}")
    if image.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel image, got shape {image.shape}")
    if dtype is not None and image.dtype != dtype:
        raise ValueError(f"{path}: expected {np.dtype(dtype).name} pixels, got {image.dtype.name}")
    return image


def read_indexed_png(path: str | os.PathLike) -> np.ndarray:
    """Palette indices of an indexed ("P" mode) PNG, or the values of a greyscale one, HxW uint8.

    OpenCV expands palettes to colours, so indexed label images are read with Pillow (which
    torchvision depends on).
    """
    from PIL import Image

    path = Path(path)
    _require_file(path)
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path}: expected an indexed or greyscale label image, got mode {image.mode}")
        return np.array(image, dtype=np.uint8)


def write_png_atomic(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write `image` (OpenCV channel order: BGR, or single channel; uint8 or uint16) as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise ValueError(f"cannot encode PNG for {path} (dtype {image.dtype}, shape {image.shape})")
    write_bytes_atomic(path, encoded.tobytes())


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    _require_file(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def decode_disparity_png(raw: np.ndarray, *, scale: float, offset: float = 0.0) -> np.ndarray:
    """uint16 disparity PNG -> float32 pixels: (p - offset) / scale where p > 0, 0 (no GT) where p == 0.

    KITTI: scale 256, offset 0. Cityscapes: scale 256, offset 1 (its README: d = (p - 1) / 256).
    Values that decode to <= 0 carry no usable disparity and become 0 (invalid) as well.
    """
    raw = raw.astype(np.float32)
    disparity = np.where(raw > 0, (raw - offset) / scale, 0.0).astype(np.float32)
    disparity[disparity < 0] = 0.0
    return disparity


def encode_disparity_png(disparity: np.ndarray, *, scale: float) -> np.ndarray:
    """float32 pixels -> uint16 round(d * scale), 0 where d <= 0 or not finite (KITTI encoding)."""
    disparity = np.asarray(disparity, dtype=np.float64)
    valid = np.isfinite(disparity) & (disparity > 0)
    encoded = np.where(valid, np.round(disparity * scale), 0)
    if encoded.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(f"disparity {disparity[valid].max():.1f} px does not fit a uint16 PNG at "
                         f"scale {scale}; use a smaller scale")
    # A tiny positive disparity must not round to 0, which would turn it into "no ground truth".
    encoded = np.where(valid & (encoded == 0), 1, encoded)
    return encoded.astype(np.uint16)


def read_pfm(path: str | os.PathLike) -> np.ndarray:
    """A single-channel PFM (the SceneFlow / Middlebury float format) as HxW float32, top row first."""
    path = Path(path)
    _require_file(path)
    with open(path, "rb") as handle:
        header = handle.readline().strip()
        if header != b"Pf":
            raise ValueError(f"{path}: expected a single-channel PFM ('Pf' header), got {header!r}")
        dims = handle.readline().split()
        if len(dims) != 2:
            raise ValueError(f"{path}: malformed PFM size line")
        width, height = int(dims[0]), int(dims[1])
        scale = float(handle.readline().strip())
        dtype = "<f4" if scale < 0 else ">f4"
        data = np.fromfile(handle, dtype=dtype)
    if data.size != width * height:
        raise ValueError(f"{path}: PFM holds {data.size} values, header says {width}x{height}")
    # PFM stores the bottom row first.
    return np.ascontiguousarray(data.reshape(height, width)[::-1]).astype(np.float32)


def write_pfm(path: str | os.PathLike, image: np.ndarray) -> None:
    image = np.asarray(image, dtype="<f4")
    if image.ndim != 2:
        raise ValueError(f"write_pfm takes HxW, got shape {image.shape}")
    header = f"Pf\n{image.shape[1]} {image.shape[0]}\n-1.0\n".encode("ascii")
    write_bytes_atomic(path, header + np.ascontiguousarray(image[::-1]).tobytes())
