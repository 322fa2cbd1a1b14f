"""One material recipe per synthetic class, each with its own colour and texture statistics.

The statistics overlap on purpose (a grey box and a grey wall, a brown pole and brown ground) so
colour alone does not give the class away: shape, texture and context have to. `texture_poor`
variants are nearly uniform, where a matcher has nothing to lock onto and disparity has to come
from the surface's extent and class (a painted wall is a plane; fill it in).
"""
from __future__ import annotations

import numpy as np

from .photo_cache import PhotoLibrary
from .photos import photo_texture
from .settings import TextureSettings
from .textures import (
    Material,
    TextureLayer,
    bricks,
    checker,
    fractal_noise,
    hsv_colour,
    stripes,
    tint,
    two_colour,
)

POOR_CONTRAST = 0.04  # what is left of a texture on a "texture-poor" surface


def _layer(image: np.ndarray, texels_per_metre: float) -> TextureLayer:
    return TextureLayer.from_image(np.clip(image, 0.0, 1.0), texels_per_metre=texels_per_metre)


def _macro(rng: np.random.Generator, size: int, *, strength: float, period_m: float) -> TextureLayer:
    """A slowly varying brightness layer (patches metres wide) that breaks up tiling repeats."""
    noise = fractal_noise(rng, size // 4, beta=3.0)
    return _layer(np.repeat((1.0 + strength * noise)[..., None], 3, axis=2), (size // 4) / period_m)


def sky(rng: np.random.Generator, size: int, *, texture_poor: bool) -> Material:
    overcast = rng.uniform()
    clear = hsv_colour(rng.uniform(0.55, 0.62), rng.uniform(0.4, 0.7), rng.uniform(0.75, 0.95))
    zenith = (1 - overcast) * clear + overcast * hsv_colour(0.58, 0.05, rng.uniform(0.7, 0.9))
    horizon = zenith * 0.4 + hsv_colour(rng.uniform(0.05, 0.6), 0.15, 0.95) * 0.6
    clouds = fractal_noise(rng, size, beta=3.2)
    contrast = POOR_CONTRAST if texture_poor else rng.uniform(0.05, 0.35)
    layer = _layer(tint(clouds, np.ones(3, np.float32) * 0.8, contrast), size / rng.uniform(60.0, 200.0))
    # v is the backdrop's y (metres, down): the colour fades from zenith (above) to horizon.
    return Material(layers=[layer], emissive=True, gradient=(-60.0, 10.0, zenith / 0.8, horizon / 0.8))


def ground(rng: np.random.Generator, size: int, *, texture_poor: bool) -> Material:
    kind = rng.choice(["grass", "gravel", "dirt", "asphalt", "tiles"])
    if kind == "grass":
        colour = hsv_colour(rng.uniform(0.18, 0.30), rng.uniform(0.45, 0.8), rng.uniform(0.35, 0.6))
        pattern = 0.6 * fractal_noise(rng, size, beta=1.2, low=8) + 0.4 * fractal_noise(rng, size, beta=2.5)
        contrast, period = 0.45, rng.uniform(0.8, 2.0)
    elif kind == "gravel":
        colour = hsv_colour(rng.uniform(0.05, 0.12), rng.uniform(0.05, 0.25), rng.uniform(0.5, 0.75))
        pattern = fractal_noise(rng, size, beta=0.8, low=16)
        contrast, period = 0.5, rng.uniform(0.5, 1.2)
    elif kind == "dirt":
        colour = hsv_colour(rng.uniform(0.06, 0.11), rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6))
        pattern = fractal_noise(rng, size, beta=2.0, low=2)
        contrast, period = 0.35, rng.uniform(1.0, 3.0)
    elif kind == "asphalt":
        colour = hsv_colour(0.6, rng.uniform(0.0, 0.1), rng.uniform(0.25, 0.45))
        pattern = fractal_noise(rng, size, beta=0.5, low=32)
        contrast, period = 0.15, rng.uniform(0.5, 1.5)
    else:
        colour = hsv_colour(rng.uniform(0.0, 0.12), rng.uniform(0.1, 0.5), rng.uniform(0.5, 0.8))
        count = int(rng.choice([4, 8]))
        pattern = 0.3 * checker(size, count=count) + 0.3 * fractal_noise(rng, size, beta=1.5)
        grout = np.minimum(np.abs(stripes(size, count=count, along_v=True, sharpness=8.0)),
                           np.abs(stripes(size, count=count, along_v=False, sharpness=8.0)))
        pattern = np.where(grout < 0.25, -1.5, pattern)
        contrast, period = 0.5, count * rng.uniform(0.3, 0.6)
    if texture_poor:
        contrast = POOR_CONTRAST
    detail = _layer(tint(pattern, colour, contrast), size / period)
    return Material(layers=[detail, _macro(rng, size, strength=0.0 if texture_poor else 0.15,
                                               period_m=rng.uniform(8.0, 20.0))])


def wall(rng: np.random.Generator, size: int, *, texture_poor: bool) -> Material:
    kind = "plaster" if texture_poor else rng.choice(["bricks", "siding", "concrete", "plaster"])
    if kind == "bricks":
        brick = hsv_colour(rng.uniform(0.0, 0.08), rng.uniform(0.4, 0.7), rng.uniform(0.45, 0.7))
        mortar_colour = hsv_colour(0.1, 0.1, rng.uniform(0.6, 0.85))
        shade, mortar = bricks(rng, size, rows=8, columns=4, mortar=0.04)
        image = tint(0.25 * shade + 0.15 * fractal_noise(rng, size, beta=1.0, low=16), brick, 1.0)
        image[mortar] = mortar_colour
        return Material(layers=[_layer(image, size / 0.6)])
    if kind == "siding":
        # Stripes parallel to the epipolar lines: every horizontal shift matches. Hard on purpose.
        colour = hsv_colour(rng.uniform(0, 1), rng.uniform(0.1, 0.5), rng.uniform(0.5, 0.9))
        pattern = stripes(size, count=int(rng.choice([8, 16])), along_v=True, sharpness=3.0)
        image = tint(0.3 * pattern + 0.05 * fractal_noise(rng, size, beta=2.0), colour, 1.0)
        return Material(layers=[_layer(image, size / rng.uniform(1.5, 3.0))])
    colour = hsv_colour(rng.uniform(0, 1), rng.uniform(0.0, 0.35), rng.uniform(0.45, 0.9))
    if kind == "concrete":
        pattern, contrast = fractal_noise(rng, size, beta=1.6, low=2), rng.uniform(0.15, 0.3)
    else:
        pattern, contrast = fractal_noise(rng, size, beta=2.5), POOR_CONTRAST if texture_poor else 0.08
    return Material(layers=[_layer(tint(pattern, colour, contrast), size / rng.uniform(1.0, 4.0))])


def box(rng: np.random.Generator, size: int, *, texture_poor: bool) -> Material:
    kind = "painted" if texture_poor else rng.choice(["wood", "cardboard", "painted", "checker"])
    if kind == "wood":
        colour = hsv_colour(rng.uniform(0.06, 0.1), rng.uniform(0.4, 0.7), rng.uniform(0.4, 0.75))
        grain = stripes(size, count=int(rng.choice([4, 8, 16])), along_v=True, sharpness=1.0)
        pattern = 0.3 * grain + 0.25 * fractal_noise(rng, size, beta=1.8)
        return Material(layers=[_layer(tint(pattern, colour, 1.0), size / rng.uniform(0.4, 1.0))])
    if kind == "cardboard":
        colour = hsv_colour(rng.uniform(0.07, 0.1), rng.uniform(0.35, 0.55), rng.uniform(0.55, 0.75))
        pattern = fractal_noise(rng, size, beta=1.4, low=4)
        return Material(layers=[_layer(tint(pattern, colour, 0.12), size / rng.uniform(0.3, 0.8))])
    if kind == "checker":
        first = hsv_colour(rng.uniform(0, 1), rng.uniform(0.5, 0.9), rng.uniform(0.6, 0.95))
        second = hsv_colour(rng.uniform(0, 1), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.6))
        pattern = 0.5 + 0.5 * checker(size, count=int(rng.choice([2, 4, 8])))
        return Material(layers=[_layer(two_colour(pattern, first, second), size / rng.uniform(0.3, 1.0))])
    colour = hsv_colour(rng.uniform(0, 1), rng.uniform(0.3, 0.9), rng.uniform(0.4, 0.95))
    contrast = POOR_CONTRAST if texture_poor else 0.1
    return Material(layers=[_layer(tint(fractal_noise(rng, size, beta=2.2), colour, contrast), size / 1.0)])


def sphere(rng: np.random.Generator, size: int, *, texture_poor: bool) -> Material:
    if texture_poor or rng.uniform() < 0.3:  # a painted ball
        colour = hsv_colour(rng.uniform(0, 1), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
        contrast = POOR_CONTRAST if texture_poor else 0.1
        return Material(layers=[_layer(tint(fractal_noise(rng, size, beta=2.5), colour, contrast), size)])
    colour = hsv_colour(rng.uniform(0.0, 0.15), rng.uniform(0.0, 0.3), rng.uniform(0.35, 0.7))
    pattern = 0.7 * fractal_noise(rng, size, beta=1.7) + 0.3 * fractal_noise(rng, size, beta=0.8, low=16)
    return Material(layers=[_layer(tint(pattern, colour, 0.35), size / rng.uniform(0.3, 1.0))])


def cylinder(rng: np.random.Generator, size: int, *, texture_poor: bool) -> Material:
    colour = hsv_colour(rng.uniform(0, 1), rng.uniform(0.2, 0.9), rng.uniform(0.35, 0.9))
    if texture_poor:
        noise = fractal_noise(rng, size, beta=2.5)
        return Material(layers=[_layer(tint(noise, colour, POOR_CONTRAST), size)])
    if rng.uniform() < 0.5:  # barrel: bands around it (along v = height)
        bands = stripes(size, count=int(rng.choice([2, 4, 8])), along_v=True, sharpness=4.0)
        pattern = 0.35 * bands + 0.15 * fractal_noise(rng, size, beta=1.5)
    else:  # trunk-like: streaks along the height
        pattern = 0.5 * fractal_noise(rng, size, beta=1.2, low=4) * stripes(
            size, count=16, along_v=False, sharpness=1.0) + 0.2 * fractal_noise(rng, size, beta=2.0)
    return Material(layers=[_layer(tint(pattern, colour, 1.0), size / rng.uniform(0.5, 1.5))])


def _leaf_colour(rng: np.random.Generator) -> np.ndarray:
    return hsv_colour(rng.uniform(0.17, 0.33), rng.uniform(0.5, 0.9), rng.uniform(0.45, 0.75))


def leaf_coverage(rng: np.random.Generator, size: int, period: float) -> TextureLayer:
    """Leaf-card alpha: coverage > 0.5 is leaf, the rest holes (part of the geometry)."""
    coverage = fractal_noise(rng, size, beta=1.2, low=6) + rng.uniform(-0.1, 0.5)  # > 0 is leaf
    return _layer((coverage > 0).astype(np.float32)[..., None], size / period)


def vegetation(rng: np.random.Generator, size: int, *, texture_poor: bool) -> Material:
    """Leafy blotches with holes: the ragged, see-through border of a bush."""
    light = _leaf_colour(rng)
    dark = light * rng.uniform(0.2, 0.45)
    leaves = fractal_noise(rng, size, beta=1.0, low=6)
    image = two_colour(0.5 + 0.35 * leaves, dark, light)
    if texture_poor:
        image = two_colour(0.5 + POOR_CONTRAST * leaves, dark, light)
    period = rng.uniform(0.25, 0.6)
    return Material(layers=[_layer(image, size / period)], alpha=leaf_coverage(rng, size, period))


def pole(rng: np.random.Generator, size: int, *, texture_poor: bool) -> Material:
    if rng.uniform() < 0.5:  # painted metal, possibly with warning bands
        colour = hsv_colour(rng.uniform(0, 1), rng.uniform(0.0, 0.8), rng.uniform(0.5, 0.95))
        bands = 0.0 if texture_poor or rng.uniform() < 0.5 else 0.4
        pattern = bands * stripes(size, count=4, along_v=True, sharpness=6.0)
        return Material(layers=[_layer(tint(pattern + 0.03 * fractal_noise(rng, size, beta=2.0), colour, 1.0),
                                       size / rng.uniform(0.5, 1.2))])
    colour = hsv_colour(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.5))  # bark
    noise = fractal_noise(rng, size, beta=1.2, low=4)
    return Material(layers=[_layer(tint(noise, colour, 0.35), size / 0.3)])


RECIPES = {"sky": sky, "ground": ground, "wall": wall, "box": box, "sphere": sphere, "cylinder": cylinder,
           "vegetation": vegetation, "pole": pole}


# Metres covered by one photo tile, per class (a photo's own scale is unknown: any is plausible).
PHOTO_PERIOD_M = {"ground": (0.6, 3.0), "wall": (0.8, 4.0), "box": (0.3, 1.5), "sphere": (0.3, 1.5),
                  "cylinder": (0.4, 2.0), "vegetation": (0.25, 0.8), "pole": (0.2, 1.0)}


def photo_material(class_name: str, rng: np.random.Generator, library: PhotoLibrary, *, size: int,
                   settings: TextureSettings) -> Material:
    """A material from a crop of a real photograph (photos.py). Vegetation gets a green tint and
    no holes yet (scene.py cuts them with `leaf_coverage`, the same with and without photos);
    the ground a macro brightness layer like its procedural recipes."""
    if class_name not in PHOTO_PERIOD_M:
        raise ValueError(f"no photo material for class {class_name!r}; known: {sorted(PHOTO_PERIOD_M)}")
    tint = _leaf_colour(rng) if class_name == "vegetation" else None
    period = rng.uniform(*PHOTO_PERIOD_M[class_name])
    layers = [_layer(photo_texture(rng, library, size, settings, tint), size / period)]
    if class_name == "ground":
        layers.append(_macro(rng, size, strength=0.15, period_m=rng.uniform(8.0, 20.0)))
    return Material(layers=layers)


def make_material(class_name: str, rng: np.random.Generator, *, size: int, texture_poor: bool) -> Material:
    try:
        recipe = RECIPES[class_name]
    except KeyError:
        raise ValueError(f"no material recipe for class {class_name!r}; known: {sorted(RECIPES)}") from None
    return recipe(rng, size, texture_poor=texture_poor)
