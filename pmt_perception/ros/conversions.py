"""numpy -> sensor_msgs / stereo_msgs without cv_bridge or sensor_msgs_py (not installable here).

This is the encoding half, which needs the message classes: Image, DisparityImage,
PointCloud2 and CameraInfo builders. Builders write the pixels once, with numpy, straight
into the array.array the message keeps as ``data`` (`message_buffer`): assigning an ndarray
is ~100x slower (DESIGN §5), and ``tobytes()`` then the message's own conversion of those
bytes to an array.array copied each output twice more. They never loop over pixels in Python.
Decoding (Image pixels, CameraInfo -> StereoCamera) needs no ROS and lives in
pmt_perception/data/ros_messages.py, so bags are read without rclpy; it is re-exported here
for the node's modules.
"""
from __future__ import annotations

import array as pyarray
import math

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from pmt_perception.data.ros_messages import (
    HOST_IS_BIGENDIAN,
    SUPPORTED_ENCODINGS,
    byte_view,
    camera_from_infos,
    encoding_layout,
    image_to_numpy,
    to_rgb8,
    with_byte_order,
)
from pmt_perception.geometry import StereoCamera, subsample

__all__ = [
    "SUPPORTED_ENCODINGS", "encoding_layout", "image_to_numpy", "to_rgb8", "numpy_to_image",
    "make_disparity_image", "DEFAULT_DELTA_D",
    "pack_rgb", "unpack_rgb", "make_pointcloud2", "pointcloud2_of_disparity", "pointcloud2_to_array",
    "camera_from_infos", "camera_infos",
]


def message_buffer(shape: tuple[int, ...], dtype) -> tuple[pyarray.array, np.ndarray]:
    """(zeroed array.array('B') of the right size, a writable numpy view of it of `shape` and
    `dtype`). A message's uint8[] field takes the array.array as it is (no copy, no check);
    on a 2-core CPU the copies saved are ~3 ms of a 480x720 frame's outputs (point cloud,
    colour image) while the model runs on both cores."""
    dtype = np.dtype(dtype)
    data = pyarray.array("B", b"\0") * (int(np.prod(shape)) * dtype.itemsize)
    return data, np.frombuffer(data, dtype=dtype).reshape(shape)


# --- Image -----------------------------------------------------------------------------------
def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """An Image holding ``array`` (H x W or H x W x C, dtype matching ``encoding``), unpadded."""
    element, channels = encoding_layout(encoding)
    array = np.asarray(array)
    expected_ndim = 2 if channels == 1 else 3
    if array.ndim == 3 and channels == 1 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise ValueError(
            f"array of shape {array.shape} does not fit {encoding!r} ({channels} channel(s))")
    if array.dtype.newbyteorder("=") != element.newbyteorder("="):
        raise ValueError(f"array dtype {array.dtype} does not fit {encoding!r} (needs {element})")
    msg = Image()
    msg.header = header if header is not None else Header()
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = HOST_IS_BIGENDIAN
    msg.step = msg.width * element.itemsize * channels
    # One copy, in C order even from a strided view; the assignment converts a foreign byte
    # order to the message's (native) one.
    data, pixels = message_buffer(array.shape, element.newbyteorder("="))
    pixels[...] = array
    msg.data = data
    return msg


# --- DisparityImage --------------------------------------------------------------------------
# delta_d for a float network. SGBM's fixed point gives exactly 1/16 px, and stereo_image_proc
# publishes that. The network's float32 output has no quantization step worth advertising
# (~1e-5 px at d = 100, which would claim an absurd depth resolution); its real sub-pixel
# accuracy is a few tenths of a pixel at best. 1/16 is an honest order of magnitude and keeps
# tools tuned for stereo_image_proc working unchanged.
DEFAULT_DELTA_D = 1.0 / 16.0


def make_disparity_image(disparity: np.ndarray, header: Header, camera: StereoCamera, *,
                         min_disparity: float, max_disparity: float,
                         delta_d: float = DEFAULT_DELTA_D) -> DisparityImage:
    """A stereo_msgs/DisparityImage (32FC1) from the network's raw left disparity (H x W).

    The image holds d - (cx_l - cx_r): DisparityImage.msg says its disparities are pre-adjusted
    for the principal point offset, so that Z = f * t / d, as stereo_image_proc publishes them.
    ``min_disparity`` / ``max_disparity`` are in those message units and go into the message
    unchanged. Non-finite pixels become ``min_disparity - 1``: the message defines anything
    below ``min_disparity`` as invalid, and NaN would break colourizers. f = fx, t = baseline,
    valid_window = the whole image (the network predicts every pixel).
    """
    disparity = np.asarray(disparity)
    if disparity.ndim != 2:
        raise ValueError(f"disparity must be H x W, got shape {disparity.shape}")
    if not (math.isfinite(min_disparity) and math.isfinite(max_disparity)
            and min_disparity < max_disparity):
        raise ValueError(
            f"need finite min_disparity < max_disparity, got {min_disparity}, {max_disparity}")
    if not delta_d > 0:
        raise ValueError(f"delta_d must be positive, got {delta_d}")
    adjusted = np.subtract(disparity, np.float32(camera.principal_point_offset), dtype=np.float32)
    finite = np.isfinite(adjusted)
    if not finite.all():
        adjusted[~finite] = np.float32(min_disparity - 1.0)

    msg = DisparityImage()
    msg.header = header
    msg.image = numpy_to_image(adjusted, "32FC1", header)
    msg.f = float(camera.fx)
    msg.t = float(camera.baseline)
    msg.valid_window = RegionOfInterest(
        x_offset=0, y_offset=0, height=msg.image.height, width=msg.image.width, do_rectify=False)
    msg.min_disparity = float(min_disparity)
    msg.max_disparity = float(max_disparity)
    msg.delta_d = float(delta_d)
    return msg


# --- PointCloud2 -----------------------------------------------------------------------------
_FIELD_TYPES = {
    PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2",
    PointField.UINT16: "u2", PointField.INT32: "i4", PointField.UINT32: "u4",
    PointField.FLOAT32: "f4", PointField.FLOAT64: "f8",
}


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """... x 3 uint8 RGB -> ... uint32 0x00RRGGBB, the bits PCL / stereo_image_proc put in 'rgb'.

    Stored little-endian the bytes are B, G, R, 0, which is where stereo_image_proc's
    PointCloud2Iterator writes 'b', 'g', 'r' (offsets 0, 1, 2 inside the float32 'rgb' field).
    """
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,) or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be ... x 3 uint8, got shape {rgb.shape} dtype {rgb.dtype}")
    packed = rgb[..., 0].astype(np.uint32) << 16
    packed |= rgb[..., 1].astype(np.uint32) << 8
    packed |= rgb[..., 2]
    return packed


def unpack_rgb(rgb_field: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`; accepts the float32 'rgb' field as read from a cloud."""
    bits = np.ascontiguousarray(rgb_field)
    bits = bits.view(np.uint32) if bits.dtype.itemsize == 4 else bits.astype(np.uint32)
    channels = [(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF]
    return np.stack(channels, axis=-1).astype(np.uint8)


def _cloud_layout(with_labels: bool) -> tuple[list[PointField], np.dtype]:
    """Compact layout x, y, z, rgb (FLOAT32) [+ label UINT32]: 16 or 20 bytes a point.

    stereo_image_proc pads its points to 32 bytes (x y z _ rgb _ _ _); consumers read fields
    by offset, so the compact layout is equally valid and halves what goes over the wire.
    The label is UINT32 (not UINT8) so PCL's pcl::PointXYZRGBL, whose label is uint32_t, maps
    it (PCL requires matching field types); it costs 3 bytes a point.
    """
    names = ["x", "y", "z", "rgb"] + (["label"] if with_labels else [])
    types = [PointField.FLOAT32] * 4 + ([PointField.UINT32] if with_labels else [])
    offsets = [4 * i for i in range(len(names))]
    fields = [PointField(name=n, offset=o, datatype=t, count=1)
              for n, o, t in zip(names, offsets, types)]
    # 'rgb' is declared FLOAT32 but filled as uint32 bits (same 4 bytes).
    formats = ["<f4", "<f4", "<f4", "<u4"] + (["<u4"] if with_labels else [])
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                      "itemsize": 4 * len(names)})
    return fields, dtype


def make_pointcloud2(points: np.ndarray, rgb: np.ndarray, labels: np.ndarray | None,
                     header: Header) -> PointCloud2:
    """An organized PointCloud2 (height x width = the point grid) with x y z rgb [label].

    ``points`` H x W x 3 float32 (NaN marks invalid points, so is_dense is False), ``rgb``
    H x W x 3 uint8 and ``labels`` H x W integer class ids (or None), all on the same grid,
    e.g. from geometry.subsample with the stride used for the points.
    """
    points = np.asarray(points)
    if points.ndim != 3 or points.shape[2] != 3:
        raise ValueError(f"points must be H x W x 3, got shape {points.shape}")

    def write_points(out: np.ndarray) -> None:
        for axis in range(3):   # a coordinate at a time: numpy's copy with an inner length of 3 is slow
            out[..., axis] = points[..., axis]
    return _pointcloud2(points.shape[:2], write_points, rgb, labels, header)


def pointcloud2_of_disparity(camera: StereoCamera, disparity: np.ndarray, rgb: np.ndarray,
                             labels: np.ndarray | None, header: Header, *, stride: int = 1,
                             min_depth: float = 0.0, max_depth: float = math.inf) -> PointCloud2:
    """make_pointcloud2 of camera.points_from_disparity(disparity, ...), the points computed
    straight into the message's buffer (``rgb`` and ``labels`` on the strided grid, e.g. from
    geometry.subsample): one pass less over a 5 MB cloud than building the points first."""
    grid = subsample(np.asarray(disparity), stride=stride).shape

    def write_points(out: np.ndarray) -> None:
        camera.points_from_disparity(disparity, stride=stride, min_depth=min_depth,
                                     max_depth=max_depth, out=out)
    return _pointcloud2(grid, write_points, rgb, labels, header)


def _pointcloud2(grid: tuple[int, int], write_points, rgb: np.ndarray,
                 labels: np.ndarray | None, header: Header) -> PointCloud2:
    """The message, its x y z written by ``write_points(out)`` (``out``: H x W x 3 float32)."""
    height, width = grid
    rgb = np.asarray(rgb)
    if rgb.shape != (height, width, 3):
        raise ValueError(f"rgb shape {rgb.shape} does not match the point grid {(height, width)}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (height, width):
            raise ValueError(
                f"labels shape {labels.shape} does not match the point grid {(height, width)}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")

    fields, dtype = _cloud_layout(labels is not None)
    # Every field is 4 bytes: the buffer as rows of 4-byte words, written a field at a time.
    data, words = message_buffer((height, width, len(fields)), "<f4")
    write_points(words[..., :3])
    bits = words.view("<u4")
    bits[..., 3] = pack_rgb(rgb)
    if labels is not None:
        bits[..., 4] = labels

    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = height, width
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = dtype.itemsize
    msg.row_step = dtype.itemsize * width
    msg.is_dense = False
    msg.data = data
    return msg


def pointcloud2_to_array(msg) -> np.ndarray:
    """A PointCloud2 as a height x width structured array, one named field per PointField.

    Vectorised counterpart of sensor_msgs_py.point_cloud2.read_points: a view onto msg.data
    when the byte order is native (row_step padding is skipped through the row stride).
    Fields with count > 1 become sub-arrays.
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    names, formats, offsets = [], [], []
    for field in msg.fields:
        if field.datatype not in _FIELD_TYPES:
            raise ValueError(f"field {field.name!r} has unknown datatype {field.datatype}")
        count = max(int(field.count), 1)
        base = with_byte_order(np.dtype(_FIELD_TYPES[field.datatype]),
                                big_endian=bool(msg.is_bigendian))
        formats.append(base if count == 1 else (base, (count,)))
        names.append(field.name)
        offsets.append(int(field.offset))
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                      "itemsize": point_step})  # numpy rejects fields past point_step
    if row_step < width * point_step:
        raise ValueError(f"row_step {row_step} < width {width} x point_step {point_step}")
    raw = byte_view(msg.data)
    if raw.size != row_step * height:
        raise ValueError(
            f"data has {raw.size} bytes, expected row_step x height = {row_step * height}")
    if raw.size == 0:
        return np.zeros((height, width), dtype=dtype)
    cloud = np.ndarray((height, width), dtype=dtype, buffer=raw, strides=(row_step, point_step))
    if msg.is_bigendian != HOST_IS_BIGENDIAN:
        cloud = cloud.astype(dtype.newbyteorder("="))
    return cloud


# --- CameraInfo ------------------------------------------------------------------------------
def camera_infos(camera: StereoCamera, *, left_frame_id: str,
                 right_frame_id: str) -> tuple[CameraInfo, CameraInfo]:
    """(left, right) CameraInfo of a rectified pair, as a stereo calibration writes them.

    The inverse of :func:`camera_from_infos`; ``camera`` must know its image size.
    """
    if camera.width is None:
        raise ValueError("the camera has no image size (width, height): CameraInfo needs it")
    infos = []
    for frame_id, p in zip((left_frame_id, right_frame_id), camera.projection_matrices):
        info = CameraInfo()
        info.header.frame_id = frame_id
        info.width, info.height = camera.width, camera.height
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        info.k = [camera.fx, 0.0, float(p[0, 2]), 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [float(v) for v in p.reshape(-1)]
        infos.append(info)
    return tuple(infos)
