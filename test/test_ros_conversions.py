"""Image / DisparityImage / PointCloud2 / CameraInfo conversions on real sensor_msgs messages.

No rclpy.init: messages are plain Python objects until they are published.
"""
import struct
import sys

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from pmt_perception.geometry import StereoCamera
from pmt_perception.ros.conversions import (
    DEFAULT_DELTA_D,
    SUPPORTED_ENCODINGS,
    camera_from_infos,
    image_to_numpy,
    make_disparity_image,
    make_pointcloud2,
    numpy_to_image,
    pack_rgb,
    pointcloud2_of_disparity,
    pointcloud2_to_array,
    to_rgb8,
    unpack_rgb,
)

HEADER = Header(stamp=Time(sec=12, nanosec=345), frame_id="left_camera_optical_frame")
CAMERA = StereoCamera(fx=500.0, fy=500.0, cx_left=320.0, cx_right=314.0, cy=240.0, baseline=0.1)
ENCODING_TYPES = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "mono16": (np.uint16, 1), "8UC1": (np.uint8, 1),
    "8UC3": (np.uint8, 3), "8UC4": (np.uint8, 4), "16UC1": (np.uint16, 1),
    "16SC1": (np.int16, 1), "32SC1": (np.int32, 1), "32FC1": (np.float32, 1),
    "64FC1": (np.float64, 1),
}


def random_pixels(encoding, *, height=5, width=7, seed=0):
    element, channels = ENCODING_TYPES[encoding]
    rng = np.random.default_rng(seed)
    shape = (height, width, channels) if channels > 1 else (height, width)
    if np.issubdtype(element, np.floating):
        return rng.normal(0.0, 100.0, shape).astype(element)
    info = np.iinfo(element)
    return rng.integers(info.min, info.max, shape, endpoint=True, dtype=element)


def test_every_supported_encoding_is_covered_here():
    assert set(SUPPORTED_ENCODINGS) == set(ENCODING_TYPES)


@pytest.mark.parametrize("encoding", sorted(ENCODING_TYPES))
def test_round_trip_is_pixel_exact(encoding):
    pixels = random_pixels(encoding)
    msg = numpy_to_image(pixels, encoding, HEADER)
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.step == 7 * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
    assert msg.is_bigendian == (sys.byteorder == "big")
    assert msg.header.frame_id == HEADER.frame_id
    back = image_to_numpy(msg)
    assert back.dtype == pixels.dtype and back.shape == pixels.shape
    np.testing.assert_array_equal(back, pixels)


def test_padded_rows_are_skipped_and_the_result_is_a_view():
    pixels = random_pixels("rgb8", height=4, width=5)
    padding = 7
    rows = [row.tobytes() + b"\xab" * padding for row in pixels]
    msg = Image(height=4, width=5, encoding="rgb8", step=5 * 3 + padding, data=b"".join(rows))
    back = image_to_numpy(msg)
    np.testing.assert_array_equal(back, pixels)
    assert np.shares_memory(back, np.frombuffer(msg.data, dtype=np.uint8))


@pytest.mark.parametrize("encoding, big_endian_type", [("mono16", ">u2"), ("32FC1", ">f4")])
def test_big_endian_data_is_read_in_native_order(encoding, big_endian_type):
    pixels = random_pixels(encoding, height=3, width=4)
    msg = Image(height=3, width=4, encoding=encoding, is_bigendian=1, step=4 * pixels.itemsize,
                data=pixels.astype(big_endian_type).tobytes())
    back = image_to_numpy(msg)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, pixels)
    # the same bytes declared little-endian must read differently: the flag is honoured
    msg.is_bigendian = 0
    assert not np.array_equal(image_to_numpy(msg), pixels)


def test_reads_messages_whose_data_is_a_numpy_array_or_list():
    pixels = random_pixels("mono8", height=2, width=3)

    class BagImage:  # rosbags' deserialized messages carry numpy arrays
        height, width, encoding, is_bigendian, step = 2, 3, "mono8", 0, 3
        data = pixels.reshape(-1).copy()

    np.testing.assert_array_equal(image_to_numpy(BagImage()), pixels)
    BagImage.data = list(pixels.reshape(-1))
    np.testing.assert_array_equal(image_to_numpy(BagImage()), pixels)


@pytest.mark.parametrize("fields, message", [
    ({"encoding": "yuv422"}, "unsupported image encoding"),
    ({"step": 5}, "step 5 is smaller"),
    ({"data": bytes(5 * 6 - 1)}, "data has 29 bytes"),
    ({"data": bytes(5 * 6 + 6)}, "data has 36 bytes"),
])
def test_bad_images_raise(fields, message):
    msg = Image(height=5, width=3, encoding="mono16", step=6, data=bytes(5 * 6))
    for name, value in fields.items():
        setattr(msg, name, value)
    with pytest.raises(ValueError, match=message):
        image_to_numpy(msg)


@pytest.mark.parametrize("array, encoding, message", [
    (np.zeros((2, 2, 3), np.uint16), "rgb8", "dtype"),
    (np.zeros((2, 2), np.uint8), "rgb8", "shape"),
    (np.zeros((2, 2, 4), np.uint8), "bgr8", "shape"),
    (np.zeros((2, 2), np.float64), "32FC1", "dtype"),
    (np.zeros((2, 2), np.uint8), "jpeg", "unsupported"),
])
def test_numpy_to_image_rejects_mismatched_arrays(array, encoding, message):
    with pytest.raises(ValueError, match=message):
        numpy_to_image(array, encoding, HEADER)


def test_to_rgb8_from_each_colour_encoding():
    rgb = random_pixels("rgb8")
    alpha = np.full(rgb.shape[:2] + (1,), 77, np.uint8)
    cases = {
        "rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
    }
    for encoding, pixels in cases.items():
        converted = to_rgb8(numpy_to_image(pixels, encoding, HEADER))
        assert converted.dtype == np.uint8 and converted.flags.c_contiguous, encoding
        np.testing.assert_array_equal(converted, rgb, err_msg=encoding)

    mono = random_pixels("mono8")
    np.testing.assert_array_equal(to_rgb8(numpy_to_image(mono, "mono8", HEADER)),
                                  np.repeat(mono[..., None], 3, axis=2))
    mono16 = np.array([[0, 255, 256, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(to_rgb8(numpy_to_image(mono16, "mono16", HEADER))[..., 0],
                                  [[0, 0, 1, 255]])
    with pytest.raises(ValueError, match="no colour meaning"):
        to_rgb8(numpy_to_image(np.zeros((2, 2), np.float32), "32FC1", HEADER))


def test_disparity_image_fields_follow_stereo_image_proc():
    raw = np.full((6, 8), 30.0, dtype=np.float32)
    raw[0, 0] = np.nan
    msg = make_disparity_image(raw, HEADER, CAMERA, min_disparity=0.0, max_disparity=128.0)
    assert msg.header.frame_id == msg.image.header.frame_id == HEADER.frame_id
    assert msg.header.stamp.sec == 12
    assert msg.f == pytest.approx(500.0) and msg.t == pytest.approx(0.1)
    assert (msg.min_disparity, msg.max_disparity) == (0.0, 128.0)
    assert msg.delta_d == pytest.approx(DEFAULT_DELTA_D) == pytest.approx(1.0 / 16.0)
    window = msg.valid_window
    assert (window.x_offset, window.y_offset, window.width, window.height) == (0, 0, 8, 6)
    assert msg.image.encoding == "32FC1" and msg.image.step == 8 * 4
    published = image_to_numpy(msg.image)
    # pre-adjusted for the principal point offset, so that Z = f t / d as the message says
    assert published[1, 1] == pytest.approx(30.0 - 6.0)
    assert msg.f * msg.t / published[1, 1] == pytest.approx(CAMERA.depth_from_disparity(30.0))
    assert published[0, 0] < msg.min_disparity  # the NaN is marked invalid, not left as NaN
    assert np.isfinite(published).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"min_disparity": 10.0, "max_disparity": 5.0}, "min_disparity"),
    ({"min_disparity": 0.0, "max_disparity": 5.0, "delta_d": 0.0}, "delta_d"),
])
def test_disparity_image_rejects_bad_ranges(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_disparity_image(np.zeros((2, 2), np.float32), HEADER, CAMERA, **kwargs)
    with pytest.raises(ValueError, match="H x W"):
        make_disparity_image(np.zeros((2, 2, 1)), HEADER, CAMERA, min_disparity=0, max_disparity=1)


def make_cloud_inputs(*, height=3, width=4):
    rng = np.random.default_rng(2)
    points = rng.normal(0.0, 5.0, (height, width, 3)).astype(np.float32)
    points[0, 1] = np.nan
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = rng.integers(0, 19, (height, width), dtype=np.uint8)
    return points, rgb, labels


def test_pointcloud2_layout_and_round_trip():
    points, rgb, labels = make_cloud_inputs()
    msg = make_pointcloud2(points, rgb, labels, HEADER)
    assert isinstance(msg, PointCloud2)
    assert (msg.height, msg.width) == (3, 4)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1), ("rgb", 12, PointField.FLOAT32, 1),
        ("label", 16, PointField.UINT32, 1)]
    assert (msg.point_step, msg.row_step) == (20, 80)
    assert len(msg.data) == msg.row_step * msg.height
    assert msg.is_dense is False and msg.is_bigendian is False
    assert msg.header.frame_id == HEADER.frame_id

    cloud = pointcloud2_to_array(msg)
    assert cloud.shape == (3, 4)
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
    np.testing.assert_array_equal(xyz, points)  # NaN compares equal here
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), rgb)
    np.testing.assert_array_equal(cloud["label"], labels)

    no_labels = make_pointcloud2(points, rgb, None, HEADER)
    assert [f.name for f in no_labels.fields] == ["x", "y", "z", "rgb"]
    assert no_labels.point_step == 16


def test_pointcloud2_reads_back_with_the_real_sensor_msgs_py():
    """The upstream reader (sensor_msgs_py.point_cloud2) sees the same x y z rgb label; and a
    cloud it builds reads here (both directions of the wire format)."""
    point_cloud2 = pytest.importorskip("sensor_msgs_py.point_cloud2",
                                       reason="sensor_msgs_py is not installed "
                                              "(../shared/ros2_python/install.sh)")
    points, rgb, labels = make_cloud_inputs()
    msg = make_pointcloud2(points, rgb, labels, HEADER)
    read = point_cloud2.read_points(msg, skip_nans=False)
    xyz = np.stack([read["x"], read["y"], read["z"]], axis=-1).reshape(points.shape)
    np.testing.assert_array_equal(xyz, points)
    packed = np.asarray(read["rgb"], np.float32).view(np.uint32).reshape(rgb.shape[:2])
    np.testing.assert_array_equal(unpack_rgb(packed), rgb)
    np.testing.assert_array_equal(np.asarray(read["label"]).reshape(labels.shape), labels)
    dense = point_cloud2.read_points(msg, field_names=("x", "y", "z"), skip_nans=True)
    assert len(dense) == int(np.isfinite(points).all(axis=-1).sum())

    theirs = point_cloud2.create_cloud(HEADER, msg.fields, [
        tuple(row) for row in pointcloud2_to_array(msg).reshape(-1).tolist()])
    ours = pointcloud2_to_array(theirs).reshape(-1)
    np.testing.assert_array_equal(np.stack([ours["x"], ours["y"], ours["z"]], -1),
                                  points.reshape(-1, 3))
    np.testing.assert_array_equal(ours["label"], labels.reshape(-1))


def test_rgb_is_packed_as_stereo_image_proc_packs_it():
    points = np.zeros((1, 1, 3), np.float32)
    rgb = np.array([[[0x12, 0x34, 0x56]]], dtype=np.uint8)
    msg = make_pointcloud2(points, rgb, None, HEADER)
    raw = bytes(msg.data)
    # stereo_image_proc writes b, g, r at byte offsets 0, 1, 2 of the rgb field (little-endian
    # uint32 0x00RRGGBB reinterpreted as float32)
    assert raw[12:16] == bytes([0x56, 0x34, 0x12, 0x00])
    as_float = struct.unpack("<f", raw[12:16])[0]
    assert struct.unpack("<I", struct.pack("<f", as_float))[0] == 0x00123456
    assert pack_rgb(rgb)[0, 0] == 0x00123456
    np.testing.assert_array_equal(unpack_rgb(np.array([0x00123456], np.uint32)),
                                  [[0x12, 0x34, 0x56]])


def test_pointcloud2_to_array_reads_foreign_layouts():
    # stereo_image_proc's padded 32-byte points (x y z _ rgb ...), rows padded by 8 bytes,
    # big-endian, with a count-2 field: all honoured.
    fields = [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
              PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
              PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
              PointField(name="rgb", offset=16, datatype=PointField.FLOAT32, count=1),
              PointField(name="pair", offset=20, datatype=PointField.INT16, count=2)]
    width, height, point_step, row_step = 2, 2, 32, 2 * 32 + 8
    data = bytearray(row_step * height)
    for v in range(height):
        for u in range(width):
            base = v * row_step + u * point_step
            struct.pack_into(">fff", data, base, u, v, 1.5)
            struct.pack_into(">I", data, base + 16, 0x00A0B0C0)
            struct.pack_into(">hh", data, base + 20, -u, v + 7)
    msg = PointCloud2(height=height, width=width, fields=fields, is_bigendian=True,
                      point_step=point_step, row_step=row_step, data=bytes(data))
    cloud = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(cloud["x"], [[0, 1], [0, 1]])
    np.testing.assert_array_equal(cloud["y"], [[0, 0], [1, 1]])
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]),
                                  np.broadcast_to([0xA0, 0xB0, 0xC0], (2, 2, 3)))
    np.testing.assert_array_equal(cloud["pair"][1, 1], [-1, 8])

    msg.fields[0].datatype = 42
    with pytest.raises(ValueError, match="unknown datatype"):
        pointcloud2_to_array(msg)
    msg.fields[0].datatype = PointField.FLOAT32
    msg.data = bytes(10)
    with pytest.raises(ValueError, match="data has 10 bytes"):
        pointcloud2_to_array(msg)


@pytest.mark.parametrize("change, message", [
    (lambda p, r, labels: (p[..., :2], r, labels), "H x W x 3"),
    (lambda p, r, labels: (p, r[:2], labels), "rgb shape"),
    (lambda p, r, labels: (p, r.astype(np.uint16), labels), "uint8"),
    (lambda p, r, labels: (p, r, labels[:, :2]), "labels shape"),
    (lambda p, r, labels: (p, r, labels.astype(np.float32)), "integer"),
])
def test_make_pointcloud2_rejects_mismatched_inputs(change, message):
    points, rgb, labels = change(*make_cloud_inputs())
    with pytest.raises(ValueError, match=message):
        make_pointcloud2(points, rgb, labels, HEADER)


def camera_info(*, fx=500.0, fy=500.0, cx=320.0, cy=240.0, tx=0.0, width=640, height=480):
    return CameraInfo(width=width, height=height,
                      p=[fx, 0.0, cx, tx, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def test_camera_from_infos():
    camera = camera_from_infos(camera_info(), camera_info(cx=314.0, tx=-50.0))
    assert camera == StereoCamera(fx=500.0, fy=500.0, cx_left=320.0, cx_right=314.0, cy=240.0,
                                  baseline=0.1, width=640, height=480)


@pytest.mark.parametrize("left, right, message", [
    (camera_info(fx=0.0), camera_info(fx=0.0, tx=-50.0), "zero focal length"),
    (camera_info(), camera_info(tx=-50.0, width=320), "sizes differ"),
    (CameraInfo(width=640, height=480), camera_info(tx=-50.0), "all zeros"),
    (camera_info(), camera_info(), "no stereo baseline"),
    (camera_info(), camera_info(fy=510.0, tx=-50.0), "fy differ"),
    (camera_info(width=0), camera_info(tx=-50.0, width=0), "no image size"),
])
def test_camera_from_infos_rejects_bad_pairs(left, right, message):
    with pytest.raises(ValueError, match=message):
        camera_from_infos(left, right)


def test_to_rgb8_accepts_16uc1_as_grey():
    from pmt_perception.ros.conversions import numpy_to_image, to_rgb8
    grey = np.array([[0, 256 * 7, 65535]], np.uint16)
    rgb = to_rgb8(numpy_to_image(grey, "16UC1"))
    assert rgb.shape == (1, 3, 3) and rgb[0, :, 0].tolist() == [0, 7, 255]


def test_camera_infos_round_trip_through_the_camera_model():
    from pmt_perception.ros.conversions import camera_infos

    camera = StereoCamera(fx=500.0, fy=502.0, cx_left=320.0, cx_right=314.0, cy=240.0,
                          baseline=0.12, width=640, height=480)
    left, right = camera_infos(camera, left_frame_id="l", right_frame_id="r")
    assert (left.header.frame_id, right.header.frame_id, left.width, left.height) == (
        "l", "r", 640, 480)
    assert right.p[3] == pytest.approx(-500.0 * 0.12)
    assert camera_from_infos(left, right) == camera


def test_decoding_needs_no_ros_and_reads_rosbags_messages():
    # The decoding half lives outside ros/ (bags are read without rclpy); ros/ re-exports it.
    from pmt_perception.data import ros_messages
    from pmt_perception.ros import conversions

    assert conversions.image_to_numpy is ros_messages.image_to_numpy
    assert conversions.camera_from_infos is ros_messages.camera_from_infos


@pytest.mark.parametrize("stride, with_labels", [(1, True), (2, False), (3, True)])
def test_pointcloud2_of_disparity_is_the_cloud_of_the_points(stride, with_labels):
    """The node's path (points computed straight into the message's buffer) gives the bytes
    of make_pointcloud2 over points_from_disparity, invalid points (NaN) included."""
    rng = np.random.default_rng(3)
    disparity = rng.uniform(-2.0, 60.0, (11, 14)).astype(np.float32)
    disparity[2, 3] = np.nan
    rgb = rng.integers(0, 256, (11, 14, 3), dtype=np.uint8)
    labels = rng.integers(0, 19, (11, 14), dtype=np.uint8)
    grid_rgb, grid_labels = rgb[::stride, ::stride], labels[::stride, ::stride]
    grid_labels = grid_labels if with_labels else None
    direct = pointcloud2_of_disparity(CAMERA, disparity, grid_rgb, grid_labels, HEADER,
                                      stride=stride, min_depth=0.5, max_depth=40.0)
    points = CAMERA.points_from_disparity(disparity, stride=stride, min_depth=0.5, max_depth=40.0)
    built = make_pointcloud2(points, grid_rgb, grid_labels, HEADER)
    assert (direct.height, direct.width) == points.shape[:2]
    assert direct.fields == built.fields and direct.point_step == built.point_step
    assert bytes(direct.data) == bytes(built.data)
    with pytest.raises(ValueError, match="rgb shape"):
        pointcloud2_of_disparity(CAMERA, disparity, rgb[:3], None, HEADER, stride=stride)


def test_points_from_disparity_writes_into_a_strided_view():
    disparity = np.full((4, 5), 10.0, np.float32)
    words = np.zeros((4, 5, 5), np.float32)
    out = CAMERA.points_from_disparity(disparity, out=words[..., :3])
    assert np.shares_memory(out, words)
    np.testing.assert_array_equal(words[..., :3], CAMERA.points_from_disparity(disparity))
    assert not words[..., 3:].any()
    with pytest.raises(ValueError, match="out must be"):
        CAMERA.points_from_disparity(disparity, out=np.zeros((4, 4, 3), np.float32))


def test_message_data_is_the_array_the_builder_filled():
    """Builders hand the message an array.array('B') of the right length (no second copy);
    a foreign byte order is converted on the way in."""
    import array
    big_endian = np.arange(12, dtype=">f4").reshape(3, 4)
    msg = numpy_to_image(big_endian, "32FC1", HEADER)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    assert len(msg.data) == msg.step * msg.height == 48
    np.testing.assert_array_equal(image_to_numpy(msg), big_endian.astype(np.float32))
