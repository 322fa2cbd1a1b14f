"""Ray casting with a z-buffer, then deferred shading: one view at a time, the same code for both.

Pass 1 (visibility): every primitive intersects the rays of its own screen rectangle and writes
its depth and index where it is nearer than what the z-buffer holds. Pass 2 (shading): for each
primitive, the pixels it won are turned back into 3-D points (eye + t * ray), and the material is
looked up at the points' surface coordinates and lit (Lambert sun + sky ambient, plus a
Blinn-Phong sun highlight on shiny materials, which depends on the eye). Rendering the
right view means running both passes again from the right eye, so occlusion and disocclusion are
those of the geometry, not of a warped image.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .camera import StereoRig
from .geometry import transform_points
from .scene import Scene


@dataclasses.dataclass
class RenderedView:
    depth: np.ndarray       # (H, W) float32: Z of the visible surface, +inf where nothing is hit
    primitive: np.ndarray   # (H, W) int32: index into scene.primitives, -1 where nothing is hit
    radiance: np.ndarray    # (H, W, 3) float32 linear RGB, before the camera response


def _pixel_rectangle(primitive, rig: StereoRig, eye_x: float):
    bounds = primitive.bounds()
    if bounds is None:
        return 0, rig.height, 0, rig.width
    return rig.project_bounds(np.asarray(bounds[0]), np.asarray(bounds[1]), eye_x=eye_x)


def rasterize(scene: Scene, rig: StereoRig, eye_x: float) -> tuple[np.ndarray, np.ndarray, list]:
    """Z-buffer visibility: depth (H, W), primitive index (H, W), and each primitive's rectangle."""
    dx_all, dy_all = rig.ray_dx[None, :], rig.ray_dy[:, None]
    depth = np.full((rig.height, rig.width), np.inf, dtype=np.float32)
    index = np.full((rig.height, rig.width), -1, dtype=np.int32)
    rectangles = []
    inv_focal = 1.0 / rig.fx
    for k, primitive in enumerate(scene.primitives):
        rectangle = _pixel_rectangle(primitive, rig, eye_x)
        rectangles.append(rectangle)
        if rectangle is None:
            continue
        v0, v1, u0, u1 = rectangle
        t = primitive.intersect(eye_x, dx_all[:, u0:u1], dy_all[v0:v1], inv_focal)
        depth_block = depth[v0:v1, u0:u1]
        nearer = t < depth_block
        depth_block[nearer] = t[nearer]
        index[v0:v1, u0:u1][nearer] = k
    return depth, index, rectangles


def shade(scene: Scene, rig: StereoRig, eye_x: float, depth: np.ndarray, index: np.ndarray,
          rectangles: list) -> np.ndarray:
    width = rig.width
    radiance = np.zeros((rig.height * width, 3), dtype=np.float32)
    depth_flat = depth.ravel()
    dx_all, dy_all = rig.ray_dx, rig.ray_dy
    inv_focal = np.float32(1.0 / rig.fx)
    sun = scene.sun_direction.astype(np.float32)
    up = scene.up.astype(np.float32)
    for k, (primitive, rectangle) in enumerate(zip(scene.primitives, rectangles)):
        if rectangle is None:
            continue
        v0, v1, u0, u1 = rectangle
        # Flat indices: gathers and scatters on 1-D indices cost a fraction of (rows, cols) pairs.
        local = np.flatnonzero(index[v0:v1, u0:u1] == k)
        if local.size == 0:
            continue
        rows, cols = np.divmod(local, u1 - u0)
        rows += v0
        cols += u0
        flat = rows * width + cols
        t = depth_flat[flat]
        dxs, dys = dx_all[cols], dy_all[rows]
        points = np.empty((t.size, 3), dtype=np.float32)
        points[:, 0] = t * dxs + np.float32(eye_x)
        points[:, 1] = t * dys
        points[:, 2] = t
        surface = primitive.surface(points)
        material = primitive.material
        if material.emissive:  # the sky: no lighting, seen face-on; skip the normal work
            radiance[flat] = _albedo(material, surface, t * inv_focal)
            continue
        normals = surface.normals
        facing = normals[:, 0] * dxs + normals[:, 1] * dys + normals[:, 2]
        # The side the camera sees: a normal pointing away from the camera is flipped.
        side = np.where(facing > 0, np.float32(-1.0), np.float32(1.0))
        cos_view = np.abs(facing) / np.sqrt(dxs * dxs + dys * dys + 1.0)
        # A pixel covers about Z/fx metres, stretched by 1/cos on slanted surfaces (the geometric
        # mean of the two footprint axes is what 1/sqrt(cos) gives).
        footprint = t * inv_focal / np.sqrt(np.maximum(cos_view, np.float32(0.05)))
        albedo = _albedo(material, surface, footprint)
        towards = transform_points(normals, np.zeros(3), np.stack([sun, up], axis=1))
        direct = np.maximum(side * towards[:, 0], 0.0)
        sky_light = 0.65 + 0.35 * side * towards[:, 1]
        light = direct[:, None] * scene.sun_colour + sky_light[:, None] * scene.ambient_colour
        if material.alpha is not None:
            # Seen through a hole, the inside of a bush is in its own shade (a cheap stand-in for
            # the self-shadowing of foliage, which also makes the holes readable).
            light[side < 0] *= np.float32(0.4)
        albedo *= light
        if material.specular > 0:
            albedo += _highlight(material, side[:, None] * normals, dxs, dys, sun)[:, None] * scene.sun_colour
        radiance[flat] = albedo
    return radiance.reshape(rig.height, width, 3)


def _highlight(material, normals: np.ndarray, dxs: np.ndarray, dys: np.ndarray,
               sun: np.ndarray) -> np.ndarray:
    """Blinn-Phong: specular * (n . h)^shininess, h halfway between the sun and the eye, for
    normals (N, 3) facing the eye; zero where the sun is behind the surface. (N,) float32."""
    to_eye = np.stack([-dxs, -dys, np.full_like(dxs, -1.0)], axis=1)
    to_eye /= np.linalg.norm(to_eye, axis=1, keepdims=True)
    half = to_eye + sun[None, :]
    half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), np.float32(1e-6))
    cos_half = np.maximum((normals * half).sum(axis=1), 0.0)
    lit = (normals @ sun) > 0
    return np.where(lit, np.float32(material.specular) * cos_half ** np.float32(material.shininess),
                    np.float32(0.0)).astype(np.float32)


def _albedo(material, surface, footprint: np.ndarray) -> np.ndarray:
    albedo = None
    for uv, weight in zip(surface.uvs, surface.weights or [None] * len(surface.uvs)):
        sample = material.albedo(uv, footprint)
        if weight is not None:
            sample *= weight[:, None]
        albedo = sample if albedo is None else albedo + sample
    return albedo


def render_view(scene: Scene, rig: StereoRig, view: str) -> RenderedView:
    eye_x = rig.eye_x(view)
    depth, index, rectangles = rasterize(scene, rig, eye_x)
    radiance = shade(scene, rig, eye_x, depth, index, rectangles)
    return RenderedView(depth=depth, primitive=index, radiance=radiance)
