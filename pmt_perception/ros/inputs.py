"""A synchronized (left image, right image, left info, right info) set -> a checked StereoFrame.

Every way an input set can be unusable raises :class:`InputProblem` with a kind (a counter in
diagnostics.PROBLEM_KINDS) and a message that names the problem, so the node can warn, count
and carry on with the next frame.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from pmt_perception.geometry import StereoCamera
from pmt_perception.ros.conversions import camera_from_infos, encoding_layout, to_rgb8
from pmt_perception.ros.sync import stamp_nanoseconds

__all__ = ["RGB_ENCODINGS", "InputProblem", "StereoFrame", "CameraCache", "check_stereo_set",
           "frame_id_problem", "decode_stereo_set"]

# What conversions.to_rgb8 turns into RGB (mono16 keeps its high byte).
RGB_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")


class InputProblem(ValueError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class StereoFrame:
    header: object            # std_msgs/Header of the left image: every output carries it
    left: np.ndarray          # H x W x 3 uint8 RGB
    right: np.ndarray
    camera: StereoCamera
    stamp_ns: int


class CameraCache:
    """camera_from_infos, validated once per distinct calibration rather than every frame."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key = None
        self._camera: StereoCamera | None = None

    def get(self, left_info, right_info) -> StereoCamera:
        key = (tuple(np.asarray(left_info.p, dtype=np.float64).ravel()),
               tuple(np.asarray(right_info.p, dtype=np.float64).ravel()),
               int(left_info.width), int(left_info.height),
               int(right_info.width), int(right_info.height))
        with self._lock:
            if key == self._key:
                return self._camera
        camera = camera_from_infos(left_info, right_info)  # ValueError names the problem
        with self._lock:
            self._key, self._camera = key, camera
        return camera


def _size(msg) -> tuple[int, int]:
    return int(msg.width), int(msg.height)


def _check_layout(side: str, image) -> None:
    """step and data length against width, height and encoding: no pixel is touched."""
    element, channels = encoding_layout(image.encoding)
    width, height, step = int(image.width), int(image.height), int(image.step)
    if step < width * element.itemsize * channels:
        raise InputProblem("malformed_image", (
            f"{side} image unreadable: step {step} is smaller than width {width} x "
            f"{element.itemsize * channels} bytes per pixel ({image.encoding})"))
    if len(image.data) != step * height:
        raise InputProblem("malformed_image", (
            f"{side} image unreadable: data has {len(image.data)} bytes, expected step x "
            f"height = {step} x {height} = {step * height}"))


def check_stereo_set(left_image, right_image, left_info, right_info,
                     cameras: CameraCache) -> StereoCamera:
    """Every check of a set that does not convert pixels (encodings, sizes, step and data
    length, camera infos): cheap enough for the synchronizer callback, so each bad set is
    counted before the newest-wins hand-off could drop it. Raises InputProblem."""
    for side, image in (("left", left_image), ("right", right_image)):
        if image.encoding not in RGB_ENCODINGS:
            raise InputProblem("encoding", (
                f"{side} image encoding {image.encoding!r} is not supported; "
                f"publish one of {', '.join(RGB_ENCODINGS)}"))
    if _size(left_image) != _size(right_image):
        raise InputProblem("size_mismatch", (
            "left and right images differ in size: {}x{} vs {}x{}".format(
                *_size(left_image), *_size(right_image))))
    if min(_size(left_image)) == 0:
        raise InputProblem("malformed_image", "images are empty (width or height is 0)")
    for side, image in (("left", left_image), ("right", right_image)):
        _check_layout(side, image)
    try:
        camera = cameras.get(left_info, right_info)
    except ValueError as error:
        raise InputProblem("camera_info", f"camera_info rejected: {error}") from None
    if _size(left_info) != _size(left_image):
        raise InputProblem("size_mismatch", (
            "camera_info is for {}x{} images but the images are {}x{}".format(
                *_size(left_info), *_size(left_image))))
    return camera


def frame_id_problem(left_image, right_image, left_info, right_info) -> str | None:
    """A message when an image and its camera_info name different frames (or the left image,
    whose header every output carries, names none); None when the frames are consistent.

    Left and right naming different frames is normal (each camera has its optical frame,
    REP-103, as stereo_image_proc publishes them), so that is not checked."""
    left_frame = left_image.header.frame_id
    if not left_frame:
        return "the left image has an empty frame_id; every output carries it"
    for side, image, info in (("left", left_image, left_info),
                              ("right", right_image, right_info)):
        if info.header.frame_id != image.header.frame_id:
            return (f"the {side} image is in frame {image.header.frame_id!r} but its "
                    f"camera_info in {info.header.frame_id!r}; outputs use "
                    f"{left_frame!r}")
    return None


def decode_stereo_set(left_image, right_image, left_info, right_info,
                      cameras: CameraCache) -> StereoFrame:
    """Check and convert one synchronized set; raises InputProblem naming what is wrong."""
    camera = check_stereo_set(left_image, right_image, left_info, right_info, cameras)
    pixels = []
    for side, image in (("left", left_image), ("right", right_image)):
        try:
            pixels.append(to_rgb8(image))
        except ValueError as error:
            raise InputProblem("malformed_image", f"{side} image unreadable: {error}") from None
    return StereoFrame(header=left_image.header, left=pixels[0], right=pixels[1],
                       camera=camera, stamp_ns=stamp_nanoseconds(left_image))
