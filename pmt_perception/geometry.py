"""Disparity -> depth -> 3-D points for a rectified stereo pair, as image_geometry does it.

The camera model is the one of image_geometry's ``StereoCameraModel`` (ROS 2 version), built
from the two rectified projection matrices of ``sensor_msgs/CameraInfo.p``::

    P_left  = [fx  0  cx_l  0    ]      P_right = [fx  0  cx_r  -fx*B ]
              [0   fy cy    0    ]                [0   fy cy     0     ]
              [0   0  1     0    ]                [0   0  1      0     ]

Disparity here is the raw horizontal match ``d = u_left - u_right`` (what the network predicts).
For verged/offset rectifications ``cx_l != cx_r`` and the depth is

    Z = fx * B / (d - (cx_l - cx_r))

Points are in the left camera's optical frame (REP-103: x right, y down, z forward), metres
when B is in metres. Pure numpy, no ROS: the node, the stereo source, the bag writer and reader,
the synthetic rig, the evaluator and the tests share this one camera model (CameraInfo
messages are built from it in ros/conversions.py, read into it in data/ros_messages.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["StereoCamera", "subsample", "write_ply"]


def _as_projection(matrix, *, name: str) -> np.ndarray:
    """A 3x4 float64 projection matrix from a 12-vector (CameraInfo.p) or a 3x4 array."""
    array = np.asarray(matrix, dtype=np.float64)
    if array.size != 12:
        raise ValueError(f"{name} must have 12 elements (3x4 projection matrix), got {array.size}")
    return array.reshape(3, 4)


def _require_stride(stride: int) -> int:
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    return int(stride)


def subsample(array: np.ndarray, *, stride: int = 1) -> np.ndarray:
    """Every ``stride``-th row and column (a view): colours and labels on the point grid.

    ``points_from_disparity(..., stride=s)`` samples pixel (v, u) = (i*s, j*s) for its grid cell
    (i, j), so ``subsample(image, stride=s)`` gives the colour of exactly that pixel.
    """
    stride = _require_stride(stride)
    array = np.asarray(array)
    if array.ndim < 2:
        raise ValueError(f"expected an image (H x W [x C]), got shape {array.shape}")
    return array[::stride, ::stride]


@dataclass(frozen=True)
class StereoCamera:
    """Rectified stereo geometry: left intrinsics, right principal point and the baseline.

    ``baseline`` is positive (the right camera sits at +x of the left one), in the units of
    the calibration's translation (metres for ROS calibrations). ``width`` / ``height``: the
    image size the calibration is for, where known (CameraInfo needs it; the geometry does not).
    """

    fx: float
    fy: float
    cx_left: float
    cx_right: float
    cy: float
    baseline: float
    width: int | None = None
    height: int | None = None

    def __post_init__(self):
        for field_name in ("fx", "fy", "cx_left", "cx_right", "cy", "baseline"):
            value = getattr(self, field_name)
            if not math.isfinite(value):
                raise ValueError(f"{field_name} must be finite, got {value}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if self.baseline <= 0:
            raise ValueError(
                f"baseline must be positive (right camera at +x of the left), got {self.baseline}")
        if (self.width is None) != (self.height is None):
            raise ValueError(f"give both width and height or neither, got {self.width}x{self.height}")
        if self.width is not None and (self.width < 1 or self.height < 1):
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @classmethod
    def rectified(cls, *, width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                  baseline: float) -> "StereoCamera":
        """A pair rectified to one principal point (cx_left == cx_right), as a stereo
        calibration of two identical cameras and the synthetic rig produce."""
        return cls(fx=float(fx), fy=float(fy), cx_left=float(cx), cx_right=float(cx),
                   cy=float(cy), baseline=float(baseline), width=int(width), height=int(height))

    @classmethod
    def from_projection_matrices(cls, *, p_left, p_right, width: int | None = None,
                                 height: int | None = None) -> "StereoCamera":
        """Build from the left and right rectified projection matrices (CameraInfo.p).

        As image_geometry: fx, fy, cx_left, cy from the left P; cx_right from the right P;
        baseline B = -P_right[0, 3] / P_right[0, 0] (P_right[0, 3] = Tx = -fx * B).
        """
        left = _as_projection(p_left, name="p_left")
        right = _as_projection(p_right, name="p_right")
        if not np.any(left) or not np.any(right):
            raise ValueError("a projection matrix is all zeros (camera not calibrated/rectified)")
        if right[0, 0] == 0:
            raise ValueError("p_right has fx == 0, cannot derive the baseline")
        if right[0, 3] == 0:
            raise ValueError(
                "p_right[0, 3] (Tx = -fx * baseline) is 0: right P carries no baseline")
        return cls(
            fx=float(left[0, 0]), fy=float(left[1, 1]), cx_left=float(left[0, 2]),
            cx_right=float(right[0, 2]), cy=float(left[1, 2]),
            baseline=float(-right[0, 3] / right[0, 0]), width=width, height=height)

    # --- derived quantities -------------------------------------------------------------
    @property
    def cx(self) -> float:
        """The left principal point: the one of the image the outputs are registered to."""
        return self.cx_left

    @property
    def projection_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(P_left, P_right), 3x4 float64, as CameraInfo.p holds them (Tx = -fx * baseline)."""
        p_left = np.array([[self.fx, 0.0, self.cx_left, 0.0], [0.0, self.fy, self.cy, 0.0],
                           [0.0, 0.0, 1.0, 0.0]])
        p_right = p_left.copy()
        p_right[0, 2] = self.cx_right
        p_right[0, 3] = -self.fx * self.baseline
        return p_left, p_right

    @property
    def principal_point_offset(self) -> float:
        """cx_left - cx_right: the disparity that corresponds to infinite depth."""
        return self.cx_left - self.cx_right

    @property
    def Q(self) -> np.ndarray:  # noqa: N802 - the name every stereo text uses
        """4x4 reprojection matrix: [X Y Z W]^T = Q [u v d 1]^T, point = (X, Y, Z) / W.

        Same full form as image_geometry (fx != fy allowed, cx offset in Q[3, 3]) and as
        cv::reprojectImageTo3D expects; ``d`` is the raw (not pre-adjusted) disparity.
        """
        tx = -self.baseline  # P_right[0, 3] / fx
        q = np.zeros((4, 4), dtype=np.float64)
        q[0, 0] = self.fy * tx
        q[0, 3] = -self.fy * self.cx_left * tx
        q[1, 1] = self.fx * tx
        q[1, 3] = -self.fx * self.cy * tx
        q[2, 3] = self.fx * self.fy * tx
        q[3, 2] = -self.fy
        q[3, 3] = self.fy * self.principal_point_offset
        return q

    # --- disparity <-> depth --------------------------------------------------------------
    def depth_from_disparity(self, disparity):
        """Z = fx * B / (d - (cx_l - cx_r)); NaN where that denominator is <= 0 or d is not finite.

        Works on scalars and arrays (float32 in -> float32 out, else float64).
        """
        d = np.asarray(disparity)
        dtype = np.float32 if d.dtype == np.float32 else np.float64
        adjusted = d.astype(dtype, copy=False) - dtype(self.principal_point_offset)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = dtype(self.fx * self.baseline) / adjusted
        depth = np.where(adjusted > 0, depth, dtype(np.nan))  # NaN input fails `> 0` too
        return depth if depth.ndim else depth.item()

    def disparity_from_depth(self, depth):
        """Inverse of :meth:`depth_from_disparity`: d = fx * B / Z + (cx_l - cx_r).

        NaN where Z <= 0 or not finite (no point in front of the camera). Infinite depth maps to
        the principal point offset.
        """
        z = np.asarray(depth)
        dtype = np.float32 if z.dtype == np.float32 else np.float64
        z = z.astype(dtype, copy=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            disparity = dtype(self.fx * self.baseline) / z + dtype(self.principal_point_offset)
        disparity = np.where(z > 0, disparity, dtype(np.nan))
        return disparity if disparity.ndim else disparity.item()

    # --- points ---------------------------------------------------------------------------
    def points_from_disparity(self, disparity: np.ndarray, *, stride: int = 1,
                              min_depth: float = 0.0, max_depth: float = math.inf,
                              out: np.ndarray | None = None) -> np.ndarray:
        """Organized point cloud (H' x W' x 3 float32) of a left disparity map (H x W).

        H' = ceil(H / stride), W' = ceil(W / stride); grid cell (i, j) is pixel (i*stride,
        j*stride). X = (u - cx_l) Z / fx, Y = (v - cy) Z / fy, Z from the disparity. Invalid
        pixels are NaN in all three coordinates (as stereo_image_proc marks them): disparity not
        finite, d - (cx_l - cx_r) <= 0, or Z outside [min_depth, max_depth]. `out`: an
        H' x W' x 3 float32 array (any strides, e.g. a view into a message's buffer) to write
        the points into; it is returned.
        """
        disparity = np.asarray(disparity)
        if disparity.ndim != 2:
            raise ValueError(f"disparity must be H x W, got shape {disparity.shape}")
        if not np.issubdtype(disparity.dtype, np.number):
            raise ValueError(f"disparity must be numeric, got dtype {disparity.dtype}")
        if not (0.0 <= min_depth < max_depth):
            raise ValueError(
                "need 0 <= min_depth < max_depth, "
                f"got min_depth={min_depth}, max_depth={max_depth}")
        sampled = subsample(disparity, stride=stride)
        stride = int(stride)
        rows, cols = sampled.shape

        # float32 all the way: half the memory traffic of float64 and the precision of the
        # PointCloud2 fields anyway.
        f32 = np.float32
        adjusted = np.subtract(sampled, f32(self.principal_point_offset), dtype=f32)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            z = f32(self.fx * self.baseline) / adjusted
        # A tiny positive disparity overflows to Z = inf: the float32 cap keeps it out.
        largest_depth = f32(min(max_depth, float(np.finfo(f32).max)))
        valid = (adjusted > 0) & (z >= min_depth) & (z <= largest_depth)
        z[~valid] = np.nan  # NaN propagates into X and Y below

        u = np.arange(0, cols * stride, stride, dtype=f32) - f32(self.cx_left)
        v = np.arange(0, rows * stride, stride, dtype=f32) - f32(self.cy)
        if out is not None and out.shape != (rows, cols, 3):
            raise ValueError(f"out must be {(rows, cols, 3)}, got {out.shape}")
        points = np.empty((rows, cols, 3), dtype=f32) if out is None else out
        np.multiply(z, u[None, :] * f32(1.0 / self.fx), out=points[..., 0])
        np.multiply(z, v[:, None] * f32(1.0 / self.fy), out=points[..., 1])
        points[..., 2] = z
        return points

    def project_points(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Left-image pixel (u, v) and raw disparity d of points (... x 3) in the left frame.

        The inverse of :meth:`points_from_disparity` for points with Z > 0 (others give NaN).
        """
        points = np.asarray(points, dtype=np.float64)
        if points.shape[-1] != 3:
            raise ValueError(f"points must be ... x 3, got shape {points.shape}")
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            in_front = np.where(z > 0, z, np.nan)
            u = self.fx * x / in_front + self.cx_left
            v = self.fy * y / in_front + self.cy
        return u, v, self.disparity_from_depth(in_front)


def write_ply(path: str | Path, points: np.ndarray, rgb: np.ndarray,
              labels: np.ndarray | None = None) -> int:
    """Binary little-endian PLY of the finite points (N x 3 float, N x 3 uint8 [, N labels]).

    Returns the number of points written. MeshLab, CloudCompare and Open3D read it.
    """
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    keep = np.isfinite(points).all(axis=1)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
              ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if labels is not None:
        fields.append(("label", "<u4"))
    vertices = np.empty(int(keep.sum()), dtype=fields)
    for axis, name in enumerate("xyz"):
        vertices[name] = points[keep, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = rgb[keep, channel]
    if labels is not None:
        vertices["label"] = np.asarray(labels).reshape(-1)[keep]
    kinds = {"<f4": "float", "u1": "uchar", "<u4": "uint"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}"]
    header += [f"property {kinds[kind]} {name}" for name, kind in fields] + ["end_header"]
    with open(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        handle.write(vertices.tobytes())
    return len(vertices)
