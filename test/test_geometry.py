"""StereoCamera: image_geometry's stereo model on synthetic scenes with known geometry."""
import math

import cv2
import numpy as np
import pytest

from pmt_perception.geometry import StereoCamera, subsample

FX, FY, CX_L, CX_R, CY, BASELINE = 720.0, 700.0, 330.5, 322.0, 241.0, 0.12
H, W = 48, 64


def projection(*, fx, fy, cx, cy, tx=0.0):
    return [fx, 0.0, cx, tx, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]


@pytest.fixture
def camera():
    """A verged rectification: cx_left - cx_right = 8.5 px."""
    return StereoCamera.from_projection_matrices(
        p_left=projection(fx=FX, fy=FY, cx=CX_L, cy=CY),
        p_right=projection(fx=FX, fy=FY, cx=CX_R, cy=CY, tx=-FX * BASELINE))


def test_from_projection_matrices_reads_image_geometry_fields(camera):
    assert (camera.fx, camera.fy, camera.cx_left, camera.cx_right, camera.cy) == (
        FX, FY, CX_L, CX_R, CY)
    assert camera.baseline == pytest.approx(BASELINE)
    assert camera.principal_point_offset == pytest.approx(CX_L - CX_R)
    as_matrix = StereoCamera.from_projection_matrices(
        p_left=np.reshape(projection(fx=FX, fy=FY, cx=CX_L, cy=CY), (3, 4)),
        p_right=np.reshape(projection(fx=FX, fy=FY, cx=CX_R, cy=CY, tx=-FX * BASELINE), (3, 4)))
    assert as_matrix == camera


@pytest.mark.parametrize("p_left, p_right, message", [
    ([0.0] * 12, projection(fx=FX, fy=FY, cx=CX_R, cy=CY, tx=-1.0), "all zeros"),
    (projection(fx=FX, fy=FY, cx=CX_L, cy=CY), projection(fx=FX, fy=FY, cx=CX_R, cy=CY),
     "no baseline"),
    (projection(fx=FX, fy=FY, cx=CX_L, cy=CY), [1.0] * 11, "12 elements"),
    (projection(fx=FX, fy=FY, cx=CX_L, cy=CY),
     projection(fx=FX, fy=FY, cx=CX_R, cy=CY, tx=+FX * BASELINE), "baseline must be positive"),
    (projection(fx=0.0, fy=FY, cx=CX_L, cy=CY),
     projection(fx=FX, fy=FY, cx=CX_R, cy=CY, tx=-1.0), "focal lengths"),
])
def test_bad_projection_matrices_raise(p_left, p_right, message):
    with pytest.raises(ValueError, match=message):
        StereoCamera.from_projection_matrices(p_left=p_left, p_right=p_right)


def test_fronto_parallel_plane_gives_its_depth_everywhere(camera):
    depth = 4.0
    disparity = np.full((H, W), camera.disparity_from_depth(depth), dtype=np.float32)
    points = camera.points_from_disparity(disparity)
    assert points.shape == (H, W, 3) and points.dtype == np.float32
    np.testing.assert_allclose(points[..., 2], depth, rtol=1e-5)
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    np.testing.assert_allclose(points[..., 0], (u - CX_L) * depth / FX, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(points[..., 1], (v - CY) * depth / FY, rtol=1e-5, atol=1e-6)


def test_principal_point_offset_is_subtracted_before_dividing(camera):
    raw_disparity = FX * BASELINE / 2.0 + (CX_L - CX_R)  # a point 2 m away
    assert camera.depth_from_disparity(raw_disparity) == pytest.approx(2.0)
    assert FX * BASELINE / raw_disparity == pytest.approx(1.7, abs=0.1)  # the naive, wrong depth


def test_slanted_ground_plane_lies_at_camera_height(camera):
    # A ground plane 1.5 m below the camera (y down in the optical frame): the ray through row
    # v (below the horizon v = cy) meets it at Z = h * fy / (v - cy).
    height_above_ground, rows, cols = 1.5, 480, 64
    v = np.arange(rows, dtype=np.float64)[:, None]
    with np.errstate(divide="ignore"):
        depth = np.where(v > CY, height_above_ground * FY / (v - CY), -1.0)
    disparity = np.broadcast_to(camera.disparity_from_depth(depth), (rows, cols)).astype(np.float32)
    points = camera.points_from_disparity(disparity)
    below_horizon = v[:, 0] > CY
    np.testing.assert_allclose(points[below_horizon, :, 1], height_above_ground, rtol=1e-4)
    np.testing.assert_allclose(points[below_horizon, :, 2],
                               np.broadcast_to(depth[below_horizon], (below_horizon.sum(), cols)),
                               rtol=1e-4)
    assert np.isnan(points[~below_horizon]).all()  # sky: no intersection, NaN
    # the plane is slanted in depth: far rows are farther than near rows
    assert points[250, 0, 2] > points[400, 0, 2]


def test_points_match_q_matrix_and_opencv_reprojection(camera):
    rng = np.random.default_rng(0)
    disparity = rng.uniform(10.0, 90.0, (H, W)).astype(np.float32)
    points = camera.points_from_disparity(disparity)
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    homogeneous = np.stack([u, v, disparity, np.ones_like(u)], axis=-1) @ camera.Q.T
    np.testing.assert_allclose(points, homogeneous[..., :3] / homogeneous[..., 3:], rtol=1e-4)
    opencv = cv2.reprojectImageTo3D(disparity, camera.Q.astype(np.float32))
    np.testing.assert_allclose(points, opencv, rtol=1e-4, atol=1e-5)


def test_invalid_disparities_become_nan_points(camera):
    offset = camera.principal_point_offset
    disparity = np.full((2, 4), camera.disparity_from_depth(3.0), dtype=np.float32)
    disparity[0, :] = [np.nan, np.inf, -5.0, offset]           # non-finite, negative, infinite Z
    disparity[1, 0] = offset + 1e-30                          # overflows to Z = inf
    disparity[1, 1] = camera.disparity_from_depth(0.1)        # closer than min_depth
    disparity[1, 2] = camera.disparity_from_depth(50.0)       # farther than max_depth
    points = camera.points_from_disparity(disparity, min_depth=0.3, max_depth=20.0)
    invalid = np.zeros((2, 4), dtype=bool)
    invalid[0, :] = True
    invalid[1, :3] = True
    assert np.isnan(points[invalid]).all()
    np.testing.assert_allclose(points[1, 3, 2], 3.0, rtol=1e-5)
    assert np.isnan(camera.depth_from_disparity(offset))
    assert np.isnan(camera.disparity_from_depth(-1.0))


def test_stride_samples_the_same_pixels_as_subsample(camera):
    rng = np.random.default_rng(1)
    disparity = rng.uniform(5.0, 60.0, (H + 1, W + 3)).astype(np.float32)
    full = camera.points_from_disparity(disparity)
    for stride in (2, 3, 5):
        strided = camera.points_from_disparity(disparity, stride=stride)
        assert strided.shape == (math.ceil((H + 1) / stride), math.ceil((W + 3) / stride), 3)
        np.testing.assert_allclose(strided, full[::stride, ::stride], rtol=1e-6)
        colours = rng.integers(0, 255, (H + 1, W + 3, 3), dtype=np.uint8)
        np.testing.assert_array_equal(subsample(colours, stride=stride),
                                      colours[::stride, ::stride])
        assert subsample(colours, stride=stride).shape[:2] == strided.shape[:2]


def test_depth_disparity_round_trip_and_projection(camera):
    depth = np.array([0.5, 1.0, 7.5, 80.0], dtype=np.float32)
    disparity = camera.disparity_from_depth(depth)
    assert disparity.dtype == np.float32
    np.testing.assert_allclose(camera.depth_from_disparity(disparity), depth, rtol=1e-5)
    assert isinstance(camera.depth_from_disparity(30.0), float)
    points = np.array([[0.3, -0.2, 2.0], [-1.0, 0.5, 10.0]])
    u, v, d = camera.project_points(points)
    homogeneous = np.stack([u, v, d, np.ones_like(u)], axis=-1) @ camera.Q.T
    np.testing.assert_allclose(homogeneous[:, :3] / homogeneous[:, 3:], points, rtol=1e-9)
    assert np.isnan(camera.project_points(np.array([0.0, 0.0, -1.0]))[0])


@pytest.mark.parametrize("kwargs, message", [
    ({"disparity": np.zeros((2, 2, 1))}, "H x W"),
    ({"disparity": np.zeros((2, 2)), "stride": 0}, "stride"),
    ({"disparity": np.zeros((2, 2)), "stride": 1.5}, "stride"),
    ({"disparity": np.zeros((2, 2)), "min_depth": 5.0, "max_depth": 1.0}, "min_depth"),
])
def test_bad_arguments_raise(camera, kwargs, message):
    disparity = kwargs.pop("disparity")
    with pytest.raises(ValueError, match=message):
        camera.points_from_disparity(disparity, **kwargs)


# --- the one camera model: size, CameraInfo matrices, the synthetic rig, PLY ----------------
def test_rectified_camera_carries_its_size_and_projection_matrices():
    camera = StereoCamera.rectified(width=8, height=6, fx=10.0, fy=11.0, cx=3.5, cy=2.5,
                                    baseline=0.1)
    assert (camera.width, camera.height, camera.cx, camera.principal_point_offset) == (8, 6, 3.5, 0)
    p_left, p_right = camera.projection_matrices
    assert StereoCamera.from_projection_matrices(p_left=p_left, p_right=p_right, width=8,
                                                 height=6) == camera
    assert p_right[0, 3] == -10.0 * 0.1
    with pytest.raises(ValueError, match="width and height"):
        StereoCamera(fx=1.0, fy=1.0, cx_left=0.0, cx_right=0.0, cy=0.0, baseline=1.0, width=4)


def test_synthetic_rig_builds_the_camera_model():
    from pmt_perception.data.synthetic.camera import StereoRig

    rig = StereoRig(height=96, width=128, fx=100.0, fy=100.0, cx=63.5, cy=47.5, baseline=0.3)
    camera = rig.stereo_camera()
    assert (camera.width, camera.height, camera.fx, camera.cx_left, camera.cx_right,
            camera.baseline) == (128, 96, 100.0, 63.5, 63.5, 0.3)
    depth = np.array([[2.0, 4.0]], np.float32)
    np.testing.assert_allclose(camera.disparity_from_depth(depth), rig.disparity_from_depth(depth),
                               rtol=1e-6)


def test_write_ply_keeps_finite_points_with_colour_and_label(tmp_path):
    from pmt_perception.geometry import write_ply

    points = np.array([[0, 0, 1], [np.nan, 0, 1], [1, 2, 3]], np.float32)
    rgb = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.uint8)
    path = tmp_path / "cloud.ply"
    assert write_ply(path, points, rgb, np.array([5, 6, 7])) == 2
    data = path.read_bytes()
    header, body = data.split(b"end_header\n")
    assert b"element vertex 2" in header and b"property uint label" in header
    vertices = np.frombuffer(body, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"),
                                          ("g", "u1"), ("b", "u1"), ("label", "<u4")])
    assert vertices["label"].tolist() == [5, 7] and vertices["z"].tolist() == [1.0, 3.0]
