"""ROS message fields -> numpy, without ROS: Image pixels, CameraInfo -> StereoCamera, disparity.

Readers duck-type on the message fields (height, width, encoding, step, data, p, ...), so they
accept rclpy's message classes and rosbags' deserialized dataclasses alike: a bag is decoded
here without rclpy or any *_msgs package. The encoding half (numpy -> messages, which needs
the message classes) is pmt_perception/ros/conversions.py.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from pmt_perception.geometry import StereoCamera

__all__ = ["IMAGE", "CAMERA_INFO", "DISPARITY_IMAGE", "SUPPORTED_ENCODINGS", "encoding_layout",
           "byte_view", "with_byte_order", "HOST_IS_BIGENDIAN", "image_to_numpy", "to_rgb8",
           "camera_from_infos", "stamp_nanoseconds", "raw_disparity_from_disparity_image",
           "disparity_from_message"]

# Message type names as bags store them.
IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DISPARITY_IMAGE = "stereo_msgs/msg/DisparityImage"

# encoding -> (element type, channels); names from sensor_msgs/image_encodings.hpp.
_ENCODINGS: dict[str, tuple[type, int]] = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "mono16": (np.uint16, 1),
    "8UC1": (np.uint8, 1), "8UC3": (np.uint8, 3), "8UC4": (np.uint8, 4),
    "16UC1": (np.uint16, 1), "16SC1": (np.int16, 1),
    "32SC1": (np.int32, 1), "32FC1": (np.float32, 1), "64FC1": (np.float64, 1),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)
HOST_IS_BIGENDIAN = sys.byteorder == "big"


def encoding_layout(encoding: str) -> tuple[np.dtype, int]:
    """(element dtype, channels) of an image encoding; ValueError for unknown ones."""
    if encoding not in _ENCODINGS:
        raise ValueError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    element, channels = _ENCODINGS[encoding]
    return np.dtype(element), channels


def byte_view(data) -> np.ndarray:
    """msg.data as a flat uint8 array, sharing memory with bytes / array.array / ndarray."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a plain list (or a non-contiguous array): copy once
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)


def with_byte_order(dtype: np.dtype, *, big_endian: bool) -> np.dtype:
    return dtype.newbyteorder(">" if big_endian else "<")


# --- Image -----------------------------------------------------------------------------------
def image_to_numpy(msg) -> np.ndarray:
    """An Image's pixels as H x W (one channel) or H x W x C, in native byte order.

    A view onto ``msg.data`` (no copy) unless the data's byte order differs from the host's;
    row padding (``step`` > width * bytes per pixel) is skipped through the row stride.
    """
    element, channels = encoding_layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    pixel_bytes = element.itemsize * channels
    if step < width * pixel_bytes:
        raise ValueError(
            f"step {step} is smaller than width {width} x {pixel_bytes} bytes per pixel "
            f"({msg.encoding})")
    raw = byte_view(msg.data)
    if raw.size != step * height:
        raise ValueError(
            f"data has {raw.size} bytes, expected step x height = {step} x {height} = "
            f"{step * height}")
    dtype = with_byte_order(element, big_endian=bool(msg.is_bigendian))
    shape = (height, width, channels) if channels > 1 else (height, width)
    strides = (step, pixel_bytes, element.itemsize)[:len(shape)]
    if raw.size == 0:
        return np.zeros(shape, dtype=element)
    pixels = np.ndarray(shape=shape, dtype=dtype, buffer=raw, strides=strides)
    if not dtype.isnative:
        pixels = pixels.astype(element)  # byte-swapping copy; torch and OpenCV want native
    return pixels


def to_rgb8(msg) -> np.ndarray:
    """H x W x 3 uint8 RGB (contiguous) from rgb8, bgr8, rgba8, bgra8, mono8 or mono16.

    mono16 (and 16UC1 / 8UC1, which mono cameras also use) keeps its high byte (value >> 8): a
    fixed scale, so brightness does not change from frame to frame as it would with per-frame
    min/max normalization. Generic types (8UC3, 32FC1, ...) raise ValueError: they carry no
    channel order or colour meaning.
    """
    encoding = msg.encoding
    if encoding not in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC1", "16UC1"):
        raise ValueError(f"encoding {encoding!r} has no colour meaning; cannot convert to rgb8")
    pixels = image_to_numpy(msg)
    if encoding == "rgb8":
        return np.ascontiguousarray(pixels)
    if encoding == "rgba8":
        return np.ascontiguousarray(pixels[..., :3])
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[..., 2::-1])
    if encoding in ("mono16", "16UC1"):
        pixels = (pixels >> 8).astype(np.uint8)
    return np.repeat(pixels[..., None], 3, axis=2)


def stamp_nanoseconds(msg) -> int | None:
    """The header stamp of ``msg`` in integer nanoseconds, or None for a headerless message.

    Accepts builtin_interfaces/Time (sec, nanosec) and rclpy.time.Time (nanoseconds).
    """
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    if stamp is None:
        return None
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# --- CameraInfo ------------------------------------------------------------------------------
def _same(a: float, b: float) -> bool:
    # Rectification writes identical fx, fy, cy into both infos; allow float round-off only.
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def camera_from_infos(left, right) -> StereoCamera:
    """The StereoCamera of a rectified pair's CameraInfos (their P matrices), validated."""
    for side, info in (("left", left), ("right", right)):
        if int(info.width) == 0 or int(info.height) == 0:
            raise ValueError(f"{side} CameraInfo has no image size ({info.width}x{info.height})")
        p = np.asarray(info.p, dtype=np.float64).reshape(-1)
        if p.size != 12:
            raise ValueError(f"{side} CameraInfo.p must have 12 elements, got {p.size}")
        if not p.any():
            raise ValueError(f"{side} CameraInfo.p is all zeros: the camera is not rectified")
        if p[0] == 0 or p[5] == 0:
            raise ValueError(f"{side} CameraInfo.p has a zero focal length (fx={p[0]}, fy={p[5]})")
    if (left.width, left.height) != (right.width, right.height):
        raise ValueError(
            f"left and right image sizes differ: {left.width}x{left.height} vs "
            f"{right.width}x{right.height}")
    p_left = np.asarray(left.p, dtype=np.float64).reshape(3, 4)
    p_right = np.asarray(right.p, dtype=np.float64).reshape(3, 4)
    if p_right[0, 3] == 0:
        raise ValueError("right CameraInfo.p[3] (Tx = -fx * baseline) is 0: no stereo baseline")
    for name, (row, col) in (("fx", (0, 0)), ("fy", (1, 1)), ("cy", (1, 2))):
        if not _same(p_left[row, col], p_right[row, col]):
            raise ValueError(
                f"left and right {name} differ ({p_left[row, col]} vs {p_right[row, col]}): "
                "not a rectified stereo pair")
    return StereoCamera.from_projection_matrices(p_left=p_left, p_right=p_right,
                                                 width=int(left.width), height=int(left.height))


# --- DisparityImage --------------------------------------------------------------------------
def raw_disparity_from_disparity_image(msg, principal_point_offset: float, *,
                                       mask_invalid: bool = True) -> np.ndarray:
    """Raw left disparity from a DisparityImage (values pre-adjusted for cx_l - cx_r, as
    stereo_image_proc and the node publish). ``mask_invalid``: pixels below min_disparity (the
    message's "invalid") become 0 = no ground truth. The node's own output is read with
    ``mask_invalid=False``: it predicts every pixel, and an out-of-range prediction must be
    scored as the network made it, as offline evaluation does."""
    values = image_to_numpy(msg.image).astype(np.float32)
    valid = np.isfinite(values)
    if mask_invalid:
        valid &= values >= np.float32(msg.min_disparity)
    return np.where(valid, values + np.float32(principal_point_offset), 0).astype(np.float32)


def disparity_from_message(msgtype: str, msg, principal_point_offset: float) -> np.ndarray:
    """Raw left disparity (0 = none) of a DisparityImage or of a 32FC1 Image of raw disparity."""
    if msgtype == DISPARITY_IMAGE:
        return raw_disparity_from_disparity_image(msg, principal_point_offset)
    values = image_to_numpy(msg).astype(np.float32)
    return np.where(np.isfinite(values) & (values > 0), values, 0).astype(np.float32)
