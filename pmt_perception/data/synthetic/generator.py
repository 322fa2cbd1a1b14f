"""One call, one stereo pair with exact ground truth: `generate_pair(settings, seed=..., size=...)`."""
from __future__ import annotations

import dataclasses

import numpy as np

from .camera import StereoRig
from .classes import CLASS_NAMES
from .photo_cache import open_library
from .photometric import CameraResponse
from .render import RenderedView, render_view
from .scene import Scene, sample_scene
from .settings import GeneratorSettings, check_size

Seed = int | tuple[int, ...]

# Splits draw from disjoint seed streams: (base seed, split code, index).
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def sample_seed(base_seed: int, split: str, index: int) -> tuple[int, int, int]:
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown synthetic split {split!r}; known: {sorted(SPLIT_CODES)}")
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    return (int(base_seed), SPLIT_CODES[split], int(index))


@dataclasses.dataclass
class SyntheticPair:
    left: np.ndarray              # (H, W, 3) uint8 RGB
    right: np.ndarray             # (H, W, 3) uint8 RGB
    disparity: np.ndarray         # (H, W) float32 px, left view, fx * B / Z; > 0 everywhere
    labels: np.ndarray            # (H, W) uint8 class ids (CLASS_NAMES), left view
    depth_left: np.ndarray        # (H, W) float32 metres (Z)
    depth_right: np.ndarray       # (H, W) float32 metres (Z), right view
    labels_right: np.ndarray      # (H, W) uint8, right view (for occlusion tests and figures)
    rig: StereoRig
    response: CameraResponse
    seed: Seed

    def non_occluded(self, tolerance: float = 0.01) -> np.ndarray:
        """Left pixels whose surface point is also the visible one in the right view.

        The right view sees the left pixel (u, v) at u - d; if the right depth there (nearest
        column) matches the left depth, no nearer surface hides the point. Tolerance is relative.
        """
        height, width = self.disparity.shape
        columns = np.round(np.arange(width)[None, :] - self.disparity).astype(int)
        inside = (columns >= 0) & (columns < width)
        rows = np.broadcast_to(np.arange(height)[:, None], columns.shape)
        right_depth = self.depth_right[rows, np.clip(columns, 0, width - 1)]
        return inside & (np.abs(right_depth - self.depth_left) <= tolerance * self.depth_left)

    def camera_info(self) -> dict:
        rig = self.rig
        return {"fx": rig.fx, "fy": rig.fy, "cx": rig.cx, "cy": rig.cy, "baseline": rig.baseline,
                "width": rig.width, "height": rig.height}


def scene_rng(seed: Seed) -> np.random.Generator:
    entropy = list(seed) if isinstance(seed, tuple) else int(seed)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def render_pair(scene: Scene, rig: StereoRig, response: CameraResponse, *, seed: Seed,
                noise_rng: np.random.Generator | None) -> SyntheticPair:
    """Render a given scene from both eyes and develop both images with one camera response
    (the right view with its own gain and gamma ratios, see photometric.py)."""
    left: RenderedView = render_view(scene, rig, "left")
    right: RenderedView = render_view(scene, rig, "right")
    if (left.primitive < 0).any() or (right.primitive < 0).any():
        raise ValueError("scene leaves pixels without a surface; add a backdrop plane")
    class_of = np.array([p.class_id for p in scene.primitives], dtype=np.uint8)
    noise_left = noise_right = None
    if noise_rng is not None:
        noise_left, noise_right = noise_rng.spawn(2)
    return SyntheticPair(
        left=response.develop(left.radiance, noise_left, view="left"),
        right=response.develop(right.radiance, noise_right, view="right"),
        disparity=rig.disparity_from_depth(left.depth),
        labels=class_of[left.primitive],
        depth_left=left.depth, depth_right=right.depth,
        labels_right=class_of[right.primitive],
        rig=rig, response=response, seed=seed)


def generate_pair(settings: GeneratorSettings, *, seed: Seed, size: tuple[int, int] | None = None,
                  noise: bool = True) -> SyntheticPair:
    """A random scene for `seed` rendered at `size` (H, W; default settings.size).

    Deterministic: the same settings, seed, size and photo cache give the same pair, bit for bit.
    `noise=False` gives ideal sensors: no sensor noise, and the right view developed exactly like
    the left (no gain/colour/gamma mismatch); tests of photometric consistency use it. Photo
    textures come from `settings.textures.photo_dir` when it holds photos (photo_cache.py);
    the layout and ground truth of a seed do not depend on whether it does.
    """
    size = check_size(size or settings.size)
    rng = scene_rng(seed)
    layout_rng, response_rng, noise_rng, camera_rng = rng.spawn(4)
    rig = StereoRig.sample(camera_rng, settings.camera, size=size)
    scene = sample_scene(layout_rng, settings, rig, open_library(settings.textures.photo_dir))
    response = CameraResponse.sample(response_rng, settings.photometric,
                                     width_scale=size[1] / settings.scene.reference_width)
    if not noise:
        response = dataclasses.replace(response, right_gain=(1.0, 1.0, 1.0), right_gamma=1.0)
    return render_pair(scene, rig, response, seed=seed, noise_rng=noise_rng if noise else None)


__all__ = ["SyntheticPair", "generate_pair", "render_pair", "sample_seed", "CLASS_NAMES"]
