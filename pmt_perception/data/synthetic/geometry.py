"""Analytic ray intersections for the scene's primitives, vectorised over a block of pixels.

A ray leaves the eye (eye_x, 0, 0) along (dx, dy, 1), dx of shape (1, w) and dy of shape (h, 1),
so its parameter t is the depth Z (see camera.py). `intersect` returns t of shape (h, w), +inf
where the ray misses. `surface` gives, for hit points, unit normals and the surface coordinates
(metres) a material is looked up at; those depend on the 3-D point only, never on the view, which
is what makes the right view see the left view's texture shifted by the disparity.

Numerics: everything is float32, and spheres/cylinders use the closest-approach form
(t_c = -(w.d)/(d.d), then the offset q = w + t_c d) instead of b^2 - ac, which loses all
precision in float32 when the object is metres away and the ray grazes it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .textures import Material

INF = np.float32(np.inf)


def transform_points(points: np.ndarray, origin: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(points - origin) @ matrix for (N, 3) float32 points and a (3, k) matrix.

    Written out per component: numpy's matmul with an inner dimension of 3 does not reach BLAS
    and is ~10x slower than these few fused multiply-adds on whole columns.
    """
    x = points[:, 0] - np.float32(origin[0])
    y = points[:, 1] - np.float32(origin[1])
    z = points[:, 2] - np.float32(origin[2])
    matrix = np.asarray(matrix, dtype=np.float32).reshape(3, -1)
    out = np.empty((len(points), matrix.shape[1]), dtype=np.float32)
    for j in range(matrix.shape[1]):
        out[:, j] = x * matrix[0, j] + y * matrix[1, j] + z * matrix[2, j]
    return out


@dataclasses.dataclass
class Surface:
    normals: np.ndarray                 # (N, 3) unit, not yet turned towards the camera
    uvs: list[np.ndarray]               # one or more (N, 2) coordinate sets in metres
    weights: list[np.ndarray] | None    # per-set (N,) blend weights (triplanar), or None for one set


def _hits_with_coverage(t: np.ndarray, dx: np.ndarray, dy: np.ndarray, eye_x: float, primitive,
                        inv_focal: float) -> np.ndarray:
    """Boolean (h, w): where the surface at depth t is solid (not a hole in an alpha material)."""
    solid = np.isfinite(t)
    rows, cols = np.nonzero(solid)
    if rows.size == 0:
        return solid
    depth = t[rows, cols]
    points = np.stack([eye_x + depth * dx[0, cols], depth * dy[rows, 0], depth], axis=1)
    surface = primitive.surface(points)
    footprint = depth * np.float32(inv_focal)  # the same number in both views for one 3-D point
    coverage = np.zeros(rows.size, dtype=np.float32)
    weights = surface.weights or [np.ones(rows.size, dtype=np.float32)]
    for uv, weight in zip(surface.uvs, weights):
        coverage += weight * (~primitive.material.is_hole(uv, footprint)).astype(np.float32)
    solid[rows[coverage < 0.5], cols[coverage < 0.5]] = False
    return solid


@dataclasses.dataclass
class Plane:
    """Points P with normal . P = offset; unbounded. Texture axes e1, e2 span the plane."""

    class_id: int
    material: Material
    normal: np.ndarray
    offset: float
    axis_u: np.ndarray
    axis_v: np.ndarray

    def bounds(self):
        return None  # the whole image

    def intersect(self, eye_x: float, dx: np.ndarray, dy: np.ndarray, inv_focal: float) -> np.ndarray:
        n = self.normal.astype(np.float32)
        denominator = n[0] * dx + n[1] * dy + n[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (np.float32(self.offset) - n[0] * np.float32(eye_x)) / denominator
        return np.where(np.isfinite(t) & (t > 0), t, INF).astype(np.float32)

    def surface(self, points: np.ndarray) -> Surface:
        axes = np.stack([self.axis_u, self.axis_v], axis=1)
        uv = transform_points(points, self.normal * self.offset, axes)
        return Surface(np.broadcast_to(self.normal.astype(np.float32), points.shape), [uv], None)


# Projection planes of the sphere's three mapping axes: along local x use (y, z), and so on.
_PLANAR_U = np.array([1, 0, 0])
_PLANAR_V = np.array([2, 2, 1])


@dataclasses.dataclass
class Sphere:
    """Solid sphere; `frame` orients its texture projection; an alpha material cuts holes in it.

    `blend` True: triplanar mapping (three lookups blended by the normal; no seams, no pinched
    poles). False: only the dominant projection (one lookup, seams where it switches), which is
    invisible on noisy leaf textures and makes the many small leaf spheres three times cheaper.
    """

    class_id: int
    material: Material
    center: np.ndarray
    radius: float
    frame: np.ndarray
    blend: bool = True

    def bounds(self):
        return self.center - self.radius, self.center + self.radius

    def intersect(self, eye_x: float, dx: np.ndarray, dy: np.ndarray, inv_focal: float) -> np.ndarray:
        wx, wy, wz = (np.float32(v) for v in (eye_x - self.center[0], -self.center[1], -self.center[2]))
        a = dx * dx + dy * dy + 1.0
        t_closest = -(wx * dx + wy * dy + wz) / a
        qx, qy, qz = wx + t_closest * dx, wy + t_closest * dy, wz + t_closest
        h2 = np.float32(self.radius ** 2) - (qx * qx + qy * qy + qz * qz)
        hit = h2 >= 0
        half_chord = np.sqrt(np.where(hit, h2, 0) / a)
        near = np.where(hit & (t_closest - half_chord > 0), t_closest - half_chord, INF)
        if self.material.alpha is None:
            return near.astype(np.float32)
        # Through a hole in the front the ray may still meet the inside of the back.
        front_solid = _hits_with_coverage(near, dx, dy, eye_x, self, inv_focal)
        far = np.where(hit & ~front_solid & (t_closest + half_chord > 0), t_closest + half_chord, INF)
        back_solid = _hits_with_coverage(far, dx, dy, eye_x, self, inv_focal)
        return np.where(front_solid, near, np.where(back_solid, far, INF)).astype(np.float32)

    def surface(self, points: np.ndarray) -> Surface:
        local = transform_points(points, self.center, self.frame)
        normal_local = local / np.float32(self.radius)
        normals = transform_points(normal_local, np.zeros(3), self.frame.T)
        if not self.blend:
            dominant = np.argmax(np.abs(normal_local), axis=1)
            rows = np.arange(len(points))
            uv = np.stack([local[rows, _PLANAR_U[dominant]], local[rows, _PLANAR_V[dominant]]], axis=1)
            return Surface(normals, [uv], None)
        weights = np.abs(normal_local) ** 4
        weights /= weights.sum(axis=1, keepdims=True)
        uvs = [local[:, [1, 2]], local[:, [0, 2]], local[:, [0, 1]]]
        return Surface(normals, uvs, [weights[:, 0], weights[:, 1], weights[:, 2]])


@dataclasses.dataclass
class Cylinder:
    """Closed cylinder from `base` along unit `axis` for `length`; `seam` (unit, perpendicular to
    the axis) points where the texture's u wraps, chosen facing away from the camera."""

    class_id: int
    material: Material
    base: np.ndarray
    axis: np.ndarray
    radius: float
    length: float
    seam: np.ndarray

    def bounds(self):
        ends = np.stack([self.base, self.base + self.length * self.axis])
        return ends.min(axis=0) - self.radius, ends.max(axis=0) + self.radius

    def intersect(self, eye_x: float, dx: np.ndarray, dy: np.ndarray, inv_focal: float) -> np.ndarray:
        a = self.axis.astype(np.float32)
        w = (np.array([eye_x, 0.0, 0.0]) - self.base).astype(np.float32)
        w_along = np.float32(w @ a)
        d_along = a[0] * dx + a[1] * dy + a[2]
        # Ray and eye offset with the axis component removed: the problem becomes a circle in 2-D.
        px, py, pz = dx - d_along * a[0], dy - d_along * a[1], 1.0 - d_along * a[2]
        wx, wy, wz = w - w_along * a
        area = np.maximum(px * px + py * py + pz * pz, np.float32(1e-20))
        t_closest = -(wx * px + wy * py + wz * pz) / area
        qx, qy, qz = wx + t_closest * px, wy + t_closest * py, wz + t_closest * pz
        h2 = np.float32(self.radius ** 2) - (qx * qx + qy * qy + qz * qz)
        side = t_closest - np.sqrt(np.maximum(h2, 0) / area)
        along = w_along + side * d_along
        best = np.where((h2 >= 0) & (side > 0) & (along >= 0) & (along <= self.length), side, INF)
        with np.errstate(divide="ignore", invalid="ignore"):
            for cap_along in (0.0, self.length):
                t_cap = (np.float32(cap_along) - w_along) / d_along
                rx = w[0] + t_cap * dx - cap_along * a[0]
                ry = w[1] + t_cap * dy - cap_along * a[1]
                rz = w[2] + t_cap - cap_along * a[2]
                on_cap = (t_cap > 0) & (rx * rx + ry * ry + rz * rz <= np.float32(self.radius ** 2))
                best = np.where(on_cap & (t_cap < best), t_cap, best)
        return best.astype(np.float32)

    def surface(self, points: np.ndarray) -> Surface:
        axis = self.axis.astype(np.float32)
        rel = points - self.base.astype(np.float32)
        along = transform_points(rel, np.zeros(3), axis)[:, 0]
        radial = rel - along[:, None] * axis
        radial_len = np.linalg.norm(radial, axis=1)
        on_side = radial_len > np.float32(self.radius * 0.999)
        cap_normal = np.where((along > self.length / 2)[:, None], axis, -axis)
        normals = np.where(on_side[:, None], radial / np.maximum(radial_len, 1e-12)[:, None], cap_normal)
        seam_u = self.seam.astype(np.float32)
        seam_v = np.cross(axis, seam_u)
        x, y = transform_points(radial, np.zeros(3), np.stack([seam_u, seam_v], axis=1)).T
        # Angle measured from the direction opposite the seam, so the wrap sits on the far side.
        side_uv = np.stack([np.arctan2(y, -x) * np.float32(self.radius), along], axis=1)
        cap_uv = np.stack([x, y], axis=1)
        uv = np.where(on_side[:, None], side_uv, cap_uv).astype(np.float32)
        return Surface(normals.astype(np.float32), [uv], None)


@dataclasses.dataclass
class Box:
    """Oriented box: `rotation` columns are the local axes in camera coordinates. On the faces
    across local axes 0 and 2 the texture's v runs along local axis 1 ("up"), so brick courses
    and siding stay horizontal on walls."""

    class_id: int
    material: Material
    center: np.ndarray
    rotation: np.ndarray
    half_size: np.ndarray

    def bounds(self):
        extent = np.abs(self.rotation) @ self.half_size
        return self.center - extent, self.center + extent

    def intersect(self, eye_x: float, dx: np.ndarray, dy: np.ndarray, inv_focal: float) -> np.ndarray:
        rot = self.rotation.astype(np.float32)
        eye_local = (np.array([eye_x, 0.0, 0.0]) - self.center) @ self.rotation
        t_enter = np.full(np.broadcast_shapes(dx.shape, dy.shape), -INF, dtype=np.float32)
        t_exit = np.full_like(t_enter, INF)
        for i in range(3):
            d_local = rot[0, i] * dx + rot[1, i] * dy + rot[2, i]
            d_local = np.where(np.abs(d_local) < 1e-12, np.float32(1e-12), d_local)
            inverse = 1.0 / d_local
            t1 = (np.float32(-self.half_size[i] - eye_local[i])) * inverse
            t2 = (np.float32(self.half_size[i] - eye_local[i])) * inverse
            t_enter = np.maximum(t_enter, np.minimum(t1, t2))
            t_exit = np.minimum(t_exit, np.maximum(t1, t2))
        return np.where((t_enter <= t_exit) & (t_enter > 0), t_enter, INF).astype(np.float32)

    def surface(self, points: np.ndarray) -> Surface:
        local = transform_points(points, self.center, self.rotation)
        x, y, z = local[:, 0], local[:, 1], local[:, 2]
        half = self.half_size.astype(np.float32)
        # The face is the axis along which the point is furthest out, relative to the half size.
        ax, ay, az = np.abs(x) / half[0], np.abs(y) / half[1], np.abs(z) / half[2]
        on_x = (ax >= ay) & (ax >= az)
        on_y = ~on_x & (ay >= az)
        sign = np.sign(np.where(on_x, x, np.where(on_y, y, z)))
        axes = self.rotation.astype(np.float32)
        normals = np.where(on_x[:, None], axes[:, 0], np.where(on_y[:, None], axes[:, 1], axes[:, 2]))
        normals *= sign[:, None]
        # Texture axes per face (u, v): x-face (z, y), y-face (x, z), z-face (x, y).
        uv = np.stack([np.where(on_x, z, x), np.where(on_y, z, y)], axis=1)
        return Surface(normals, [uv], None)
