"""Random scenes: a camera above a ground plane, a far backdrop, and objects standing on the ground.

Layout is metric and drawn independently of the image size (disparity ranges are converted to
depths with the reference-width focal length of the scene's rig), so a seed gives the same scene
at every size with the same aspect ratio. Objects are placed by disparity, log-uniformly in
`scene.object_disparity_px` (its upper end narrowed per scene by `disparity_range_scale`), so
every octave of depth is equally represented; a hard near limit (`scene.max_disparity_px`) keeps
every surface's disparity in range. Small "floaters" hang in front of the scene at any rotation.
Materials draw from their own random stream, so the layout (and so the ground truth) of a seed
is the same whether or not photo textures are available.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .camera import StereoRig
from .classes import CLASS_ID
from .geometry import Box, Cylinder, Plane, Sphere
from .materials import leaf_coverage, make_material, photo_material
from .photo_cache import PhotoLibrary
from .settings import GeneratorSettings
from .textures import Material, hsv_colour


@dataclasses.dataclass
class Scene:
    primitives: list
    sun_direction: np.ndarray   # unit, from the surface towards the sun
    sun_colour: np.ndarray      # linear RGB, intensity included
    ambient_colour: np.ndarray
    up: np.ndarray              # unit, against gravity (for sky-light falloff)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


class _Placer:
    """Draws ground positions at chosen disparities and keeps objects beyond the near limit."""

    def __init__(self, rng: np.random.Generator, settings: GeneratorSettings, rig: StereoRig):
        self.rng = rng
        self.scene = settings.scene
        reference_fx = rig.focal_per_width * self.scene.reference_width
        self.fb = reference_fx * rig.baseline        # disparity (px at reference width) * depth (m)
        self.reference_fx = reference_fx
        self.near = self.fb / self.scene.max_disparity_px
        self.half_fov = 0.5 / rig.focal_per_width    # tan of the horizontal half angle
        self.half_fov_v = self.half_fov * rig.height / rig.width
        # This scene's share of the disparity ranges: all far, or reaching the limit.
        self.range_scale = rng.uniform(*self.scene.disparity_range_scale)

        pitch = math.radians(rng.uniform(*self.scene.camera_pitch_deg))
        roll = math.radians(rng.uniform(*self.scene.camera_roll_deg))
        # World "down" seen from a camera pitched down by `pitch` and rolled by `roll`.
        self.down = np.array([-math.sin(roll) * math.cos(pitch), math.cos(roll) * math.cos(pitch),
                              math.sin(pitch)])
        self.up = -self.down
        corners = [(rig.ray_dx[u], rig.ray_dy[v]) for u in (0, -1) for v in (0, -1)]
        steepest = max(self.down @ np.array([dx, dy, 1.0]) for dx, dy in corners)
        # Raise the camera until the nearest ground (an image corner) is within the ground limit.
        needed = self.fb * steepest / (self.scene.ground_max_disparity_px * self.range_scale)
        self.height = max(rng.uniform(*self.scene.camera_height_m), needed)
        self.forward = _unit(np.array([0.0, 0.0, 1.0]) - self.up[2] * self.up)
        self.right = _unit(np.cross(self.forward, self.up))

    def depth_for(self, disparity: float) -> float:
        return self.fb / disparity

    def random_depth(self, low_px: float | None = None, high_px: float | None = None) -> float:
        low, high = self.scene.object_disparity_px
        low, high = low_px or low, high_px or high
        return self.depth_for(self.log_uniform(low, high))

    def log_uniform(self, low: float, high: float) -> float:
        """A disparity log-uniform in [low, high * range_scale] (never below low)."""
        high = max(low, high * self.range_scale)
        return math.exp(self.rng.uniform(math.log(low), math.log(high)))

    def size_cap(self, depth: float) -> float:
        """Largest object extent (m) at `depth` that spans at most ~45% of the view width, so a
        near object does not fill the frame and hide the scene."""
        return 0.9 * self.half_fov * depth

    def ground_point(self, depth: float, *, spread: float = 1.1) -> np.ndarray:
        """A point on the ground at about `depth`, somewhere across (a bit beyond) the view."""
        lateral = self.rng.uniform(-spread, spread) * self.half_fov * depth
        forward = (depth - self.height * self.down[2] - lateral * self.right[2]) / self.forward[2]
        return self.height * self.down + lateral * self.right + forward * self.forward

    def pushed_back(self, low: np.ndarray) -> float:
        """How far (m, along `forward`) an object whose bounding box starts at `low` must move
        back to clear the near limit."""
        return max(0.0, (self.near - low[2]) / self.forward[2] + 1e-3)

    def yaw_frame(self, yaw: float) -> np.ndarray:
        """Columns: a horizontal axis at `yaw`, up, and the horizontal axis across both."""
        first = math.cos(yaw) * self.right + math.sin(yaw) * self.forward
        return np.stack([first, self.up, np.cross(first, self.up)], axis=1)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


SHINY_CLASSES = ("box", "sphere", "cylinder", "pole")


def _material(rng, settings: GeneratorSettings, name: str, photos: PhotoLibrary | None) -> Material:
    """Texture-poor (procedural, nearly uniform), a photo crop, or a procedural recipe; objects
    sometimes shiny. The draws are the same with and without photos: only the recipe changes."""
    # Large surfaces get the full texture size, objects half of it (they cover fewer pixels).
    size = settings.scene.texture_size
    size = size if name in ("ground", "wall", "sky") else size // 2
    textures = settings.textures
    texture_poor = rng.uniform() < settings.scene.texture_poor_fraction
    use_photo = rng.uniform() < textures.photo_fraction
    shiny = rng.uniform() < textures.specular_fraction and name in SHINY_CLASSES
    leaf_period = rng.uniform(0.25, 0.6)
    recipe_rng, leaf_rng = rng.spawn(2)
    if photos is not None and use_photo and not texture_poor and name != "sky":
        material = photo_material(name, recipe_rng, photos, size=size, settings=textures)
    else:
        material = make_material(name, recipe_rng, size=size, texture_poor=texture_poor)
    if name == "vegetation":
        # Leaf holes are geometry: drawn from their own stream, the same with and without photos.
        material.alpha = leaf_coverage(leaf_rng, size, leaf_period)
    if shiny:
        material.specular = float(rng.uniform(*textures.specular_strength))
        material.shininess = float(rng.uniform(*textures.shininess))
    return material


def _materials(rng, settings: GeneratorSettings, name: str, count: int,
               photos: PhotoLibrary | None) -> list[Material]:
    return [_material(rng, settings, name, photos) for _ in range(count)]


def _settle(placer: _Placer, primitive) -> None:
    """Move a primitive straight back (along the ground) until it clears the near limit."""
    shift = placer.pushed_back(primitive.bounds()[0]) * placer.forward
    for name in ("center", "base"):
        if hasattr(primitive, name):
            setattr(primitive, name, getattr(primitive, name) + shift)


def _add_boxes(rng, placer: _Placer, materials, count, class_name, out, *, walls: bool) -> None:
    for _ in range(count):
        if walls:  # long, thin and farther away: a building front, a fence, a garden wall
            size = np.array([rng.uniform(2.0, 12.0), rng.uniform(1.2, 5.0), rng.uniform(0.12, 0.3)])
            depth = placer.random_depth(high_px=placer.scene.object_disparity_px[1] / 3)
        else:
            depth = placer.random_depth()
            size = np.minimum(rng.uniform(0.2, 1.2, size=3), placer.size_cap(depth))
        ground = placer.ground_point(depth)
        rotation = placer.yaw_frame(rng.uniform(0, math.pi))
        half = size / 2
        box = Box(CLASS_ID[class_name], materials[rng.integers(len(materials))],
                  center=ground + placer.up * (half[1] - 0.02), rotation=rotation, half_size=half)
        _settle(placer, box)
        out.append(box)


def _add_spheres(rng, placer, materials, count, out) -> None:
    for _ in range(count):
        depth = placer.random_depth()
        radius = min(rng.uniform(0.12, 0.7), placer.size_cap(depth) / 2)
        ground = placer.ground_point(depth)
        sphere = Sphere(CLASS_ID["sphere"], materials[rng.integers(len(materials))],
                        center=ground + placer.up * radius * rng.uniform(0.6, 1.0), radius=radius,
                        frame=_random_rotation(rng))
        _settle(placer, sphere)
        out.append(sphere)


def _seam_away(axis: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Unit vector perpendicular to `axis` pointing away from the camera (hides the texture seam)."""
    away = position - (position @ axis) * axis
    return _unit(away) if np.linalg.norm(away) > 1e-9 else _unit(np.cross(axis, [1.0, 0.0, 0.0]))


def _add_cylinders(rng, placer, materials, count, out) -> None:
    for _ in range(count):
        depth = placer.random_depth()
        cap = placer.size_cap(depth)
        radius, length = min(rng.uniform(0.08, 0.45), cap / 2), min(rng.uniform(0.3, 2.0), cap)
        ground = placer.ground_point(depth)
        if rng.uniform() < 0.7:  # upright barrel or pillar, slightly sunk so it stands on the ground
            axis, base = placer.up, ground - 0.03 * placer.up
        else:  # a log lying on the ground
            axis = placer.yaw_frame(rng.uniform(0, math.pi))[:, 0]
            base = ground + placer.up * radius - axis * length / 2
        cylinder = Cylinder(CLASS_ID["cylinder"], materials[rng.integers(len(materials))], base=base,
                            axis=axis, radius=radius, length=length, seam=_seam_away(axis, base))
        _settle(placer, cylinder)
        out.append(cylinder)


def _add_bush(rng, placer, material, centre, radius, out) -> None:
    """A bush or tree crown: leaf spheres scattered in a flattened ellipsoid, one material."""
    count = int(rng.integers(placer.scene.leaves_per_bush[0], placer.scene.leaves_per_bush[1] + 1))
    # Leaves stay within 1.5 radii of the centre (offset <= 1, leaf <= 0.5), which bounds the bush.
    shift = placer.pushed_back(centre - 1.5 * radius) * placer.forward
    for _ in range(count):
        offset = rng.normal(size=3) * np.array([1.0, 0.6, 1.0]) * radius * 0.45
        offset *= min(1.0, radius / max(np.linalg.norm(offset), 1e-9))
        leaf_radius = radius * rng.uniform(0.25, 0.5)
        out.append(Sphere(CLASS_ID["vegetation"], material, center=centre + shift + offset,
                          radius=leaf_radius, frame=_random_rotation(rng), blend=False))


def _add_bushes(rng, placer, materials, count, out) -> None:
    for _ in range(count):
        depth = placer.random_depth()
        radius = min(rng.uniform(0.3, 1.1), placer.size_cap(depth) / 2)
        ground = placer.ground_point(depth)
        _add_bush(rng, placer, materials[rng.integers(len(materials))],
                  ground + placer.up * radius * 0.7, radius, out)


def _add_poles(rng, placer, materials, crowns, count, out) -> None:
    """Poles and trunks whose width is drawn in pixels (1-4 px at the reference width), some with
    slanted branches and some (trees) with a vegetation crown."""
    for _ in range(count):
        depth = placer.random_depth()
        width_px = rng.uniform(*placer.scene.thin_width_px)
        radius = width_px * depth / (2 * placer.reference_fx)
        length = rng.uniform(1.5, 5.0)
        ground = placer.ground_point(depth)
        material = materials[rng.integers(len(materials))]
        trunk = Cylinder(CLASS_ID["pole"], material, base=ground - 0.05 * placer.up, axis=placer.up,
                         radius=radius, length=length, seam=_seam_away(placer.up, ground))
        _settle(placer, trunk)
        out.append(trunk)
        low, high = placer.scene.branches_per_pole
        branches = int(rng.integers(low, high + 1))
        for _ in range(branches):
            tilt, yaw = math.radians(rng.uniform(25, 75)), rng.uniform(0, 2 * math.pi)
            axis = _unit(math.cos(tilt) * placer.up + math.sin(tilt) * placer.yaw_frame(yaw)[:, 0])
            start = trunk.base + trunk.axis * length * rng.uniform(0.35, 0.95)
            branch = Cylinder(CLASS_ID["pole"], material, base=start, axis=axis,
                              radius=radius * rng.uniform(0.5, 0.8), length=rng.uniform(0.3, 1.4),
                              seam=_seam_away(axis, start))
            if branch.bounds()[0][2] >= placer.near:  # a branch reaching at the camera is dropped
                out.append(branch)
        if crowns and rng.uniform() < 0.4:
            crown_radius = rng.uniform(0.4, 1.2)
            top = trunk.base + trunk.axis * (length + 0.5 * crown_radius)
            _add_bush(rng, placer, crowns[rng.integers(len(crowns))], top, crown_radius, out)


# The sky recipe (materials.sky) sizes its gradient and clouds in metres for a backdrop about
# this far; the backdrop's distance varies with the rig, so they are scaled with it.
SKY_DESIGN_DISTANCE_M = 90.0


def _scaled_sky(material: Material, factor: float) -> Material:
    """The same sky seen at `factor` times the design distance: metres on it scale by `factor`."""
    for layer in material.layers:
        layer.texels_per_metre /= factor
    if material.gradient is not None:
        v0, v1, start, end = material.gradient
        material.gradient = (v0 * factor, v1 * factor, start, end)
    return material


FLOATER_SHAPES = ("box", "sphere", "cylinder")


def _add_floaters(rng, placer: _Placer, material_for, count: int, out) -> None:
    """Small objects floating anywhere in the view, in front of the scene, at any rotation; their
    disparity and size are drawn in pixels. One that would cut the ground is left out."""
    scene = placer.scene
    for _ in range(count):
        shape = FLOATER_SHAPES[int(rng.integers(len(FLOATER_SHAPES)))]
        disparity = placer.log_uniform(*scene.floater_disparity_px)
        extent = rng.uniform(*scene.floater_size_px) * placer.depth_for(disparity) / placer.reference_fx
        radius = 0.5 * extent  # bounding radius
        depth = max(placer.depth_for(disparity), placer.near + radius + 1e-3)
        ray = np.array([rng.uniform(-1, 1) * placer.half_fov, rng.uniform(-1, 1) * placer.half_fov_v, 1.0])
        centre = ray * depth
        rotation = _random_rotation(rng)
        if centre @ placer.down > placer.height - radius:  # would reach into the ground
            continue
        material = material_for(shape)
        if shape == "box":
            half = 0.5 * extent * rng.uniform(0.25, 1.0, size=3) / math.sqrt(3)
            out.append(Box(CLASS_ID["box"], material, center=centre, rotation=rotation, half_size=half))
        elif shape == "sphere":
            out.append(Sphere(CLASS_ID["sphere"], material, center=centre, radius=radius, frame=rotation))
        else:
            axis = rotation[:, 0]
            cyl_radius = radius * rng.uniform(0.15, 0.45)
            length = math.sqrt(max(extent ** 2 - (2 * cyl_radius) ** 2, (0.2 * extent) ** 2))
            base = centre - axis * length / 2
            out.append(Cylinder(CLASS_ID["cylinder"], material, base=base, axis=axis, radius=cyl_radius,
                                length=length, seam=_seam_away(axis, centre)))


def sample_scene(rng: np.random.Generator, settings: GeneratorSettings, rig: StereoRig,
                 photos: PhotoLibrary | None = None) -> Scene:
    """A random scene for `rig`; `photos` None: procedural textures only."""
    scene_settings, light = settings.scene, settings.photometric
    material_rng = rng.spawn(1)[0]
    placer = _Placer(rng, settings, rig)

    def count(name: str) -> int:
        low, high = getattr(scene_settings, name)
        return int(rng.integers(low, high + 1))

    backdrop_distance = placer.depth_for(rng.uniform(*scene_settings.backdrop_disparity_px))
    sky = _scaled_sky(_material(material_rng, settings, "sky", photos),
                      backdrop_distance / SKY_DESIGN_DISTANCE_M)
    ground_axis_u = placer.right
    primitives: list = [
        Plane(CLASS_ID["sky"], sky, normal=np.array([0.0, 0.0, 1.0]),
              offset=backdrop_distance, axis_u=np.array([1.0, 0.0, 0.0]), axis_v=np.array([0.0, 1.0, 0.0])),
        Plane(CLASS_ID["ground"], _material(material_rng, settings, "ground", photos), normal=placer.down,
              offset=placer.height, axis_u=ground_axis_u, axis_v=np.cross(placer.down, ground_axis_u)),
    ]
    counts = {name: count(name) for name in ("walls", "boxes", "spheres", "cylinders", "bushes", "poles",
                                             "floaters")}

    def materials(name: str, needed: bool) -> list[Material]:
        # Texture synthesis is a good part of a scene's cost: none for classes left out.
        return _materials(material_rng, settings, name, 2, photos) if needed else []

    walls, boxes, spheres, cylinders = (counts[n] for n in ("walls", "boxes", "spheres", "cylinders"))
    _add_boxes(rng, placer, materials("wall", walls > 0), walls, "wall", primitives, walls=True)
    _add_boxes(rng, placer, materials("box", boxes > 0), boxes, "box", primitives, walls=False)
    _add_spheres(rng, placer, materials("sphere", spheres > 0), spheres, primitives)
    _add_cylinders(rng, placer, materials("cylinder", cylinders > 0), cylinders, primitives)
    crowns = materials("vegetation", counts["bushes"] + counts["poles"] > 0)
    _add_bushes(rng, placer, crowns, counts["bushes"], primitives)
    _add_poles(rng, placer, materials("pole", counts["poles"] > 0), crowns, counts["poles"], primitives)
    floater_materials: dict[str, list[Material]] = {}

    def floater_material(shape: str) -> Material:
        # Up to two materials per shape, made when first needed (floaters are small and many).
        pool = floater_materials.setdefault(shape, [])
        if len(pool) < 2:
            pool.append(_material(material_rng, settings, shape, photos))
            return pool[-1]
        return pool[int(material_rng.integers(len(pool)))]

    _add_floaters(rng, placer, floater_material, counts["floaters"], primitives)

    elevation = math.radians(rng.uniform(*light.sun_elevation_deg))
    azimuth = rng.uniform(0, 2 * math.pi)
    horizontal = math.cos(azimuth) * placer.right + math.sin(azimuth) * placer.forward
    sun = _unit(math.cos(elevation) * horizontal + math.sin(elevation) * placer.up)
    warmth = rng.uniform(0.0, 0.15)
    sun_colour = np.array([1.0, 1.0 - warmth * 0.5, 1.0 - warmth], dtype=np.float32)
    sun_colour *= rng.uniform(*light.sun_intensity)
    ambient = hsv_colour(rng.uniform(0.5, 0.65), rng.uniform(0.0, 0.3), 1.0) * rng.uniform(*light.ambient)
    return Scene(primitives=primitives, sun_direction=sun, sun_colour=sun_colour,
                 ambient_colour=ambient.astype(np.float32), up=placer.up)
