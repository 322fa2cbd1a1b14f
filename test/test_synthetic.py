"""The synthetic generator's ground truth checked against geometry and against its own images."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from pmt_perception.data.synthetic import CLASS_NAMES, generate_pair, load_generator_settings, render_pair
from pmt_perception.data.synthetic.camera import StereoRig
from pmt_perception.data.synthetic.classes import CLASS_ID
from pmt_perception.data.synthetic.geometry import Plane, Sphere
from pmt_perception.data.synthetic.materials import make_material
from pmt_perception.data.synthetic.photometric import CameraResponse
from pmt_perception.data.synthetic.scene import Scene

SMALL = (120, 180)


@pytest.fixture(scope="module")
def settings():
    """The shipped settings with procedural textures only (no dependence on a local photo cache;
    test_synthetic_photos.py covers photos)."""
    loaded = load_generator_settings("synthetic")
    return dataclasses.replace(loaded, textures=dataclasses.replace(loaded.textures, photo_dir=None))


def photo_consistent(settings):
    """Settings whose two views differ only by geometry: no right-view gain/colour/gamma ratios,
    no eye-dependent highlights (both are tested on their own)."""
    return dataclasses.replace(
        settings,
        textures=dataclasses.replace(settings.textures, specular_fraction=0.0),
        photometric=dataclasses.replace(settings.photometric, view_gain=(1.0, 1.0),
                                        view_colour=(1.0, 1.0), view_gamma=(1.0, 1.0)))


def _warp_right_to_left(right: np.ndarray, disparity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right image sampled at (x - d, y): equals the left image wherever the disparity is right."""
    height, width = disparity.shape
    xs = (np.arange(width, dtype=np.float32)[None, :] - disparity).astype(np.float32)
    ys = np.broadcast_to(np.arange(height, dtype=np.float32)[:, None], xs.shape).astype(np.float32)
    warped = cv2.remap(right, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return warped.astype(np.float32), xs >= 0


def _neutral_response() -> CameraResponse:
    return CameraResponse(exposure=1.0, white_balance=(1.0, 1.0, 1.0), vignetting=0.0, blur_sigma=0.0,
                          noise_sigma=0.0, gamma=2.2)


def _known_scene(rig: StereoRig, *, sphere_center, sphere_radius, ground_height, backdrop) -> Scene:
    rng = np.random.default_rng(0)
    down = np.array([0.0, 1.0, 0.0])
    primitives = [
        Plane(CLASS_ID["sky"], make_material("sky", rng, size=64, texture_poor=False),
              normal=np.array([0.0, 0.0, 1.0]), offset=backdrop, axis_u=np.array([1.0, 0, 0]),
              axis_v=np.array([0, 1.0, 0])),
        Plane(CLASS_ID["ground"], make_material("ground", rng, size=64, texture_poor=False), normal=down,
              offset=ground_height, axis_u=np.array([1.0, 0, 0]), axis_v=np.array([0, 0, 1.0])),
        Sphere(CLASS_ID["sphere"], make_material("sphere", rng, size=64, texture_poor=False),
               center=np.asarray(sphere_center, float), radius=sphere_radius, frame=np.eye(3)),
    ]
    return Scene(primitives=primitives, sun_direction=np.array([0.0, -1.0, 0.0]),
                 sun_colour=np.ones(3, np.float32), ambient_colour=np.full(3, 0.3, np.float32),
                 up=-down)


def test_same_seed_same_pair_and_different_seed_different_pair(settings):
    first = generate_pair(settings, seed=(3, 0, 7), size=SMALL)
    again = generate_pair(settings, seed=(3, 0, 7), size=SMALL)
    other = generate_pair(settings, seed=(3, 0, 8), size=SMALL)
    for name in ("left", "right", "disparity", "labels"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.left, other.left)


def test_disparity_matches_fx_baseline_over_depth_on_known_planes_and_sphere():
    rig = StereoRig(height=96, width=128, fx=100.0, fy=100.0, cx=63.5, cy=47.5, baseline=0.1)
    center, radius, height, backdrop = (0.3, 0.2, 4.0), 0.5, 1.0, 20.0
    scene = _known_scene(rig, sphere_center=center, sphere_radius=radius, ground_height=height,
                         backdrop=backdrop)
    pair = render_pair(scene, rig, _neutral_response(), seed=0, noise_rng=None)

    # Analytic depth of every ray in float64: sphere, ground (y = height), backdrop (z = backdrop).
    us, vs = np.meshgrid((np.arange(rig.width) - rig.cx) / rig.fx,
                         (np.arange(rig.height) - rig.cy) / rig.fy)
    rays = np.stack([us, vs, np.ones_like(us)], axis=-1)
    offset = -np.asarray(center)
    a = (rays ** 2).sum(-1)
    b = (rays * offset).sum(-1)
    c = (offset ** 2).sum() - radius ** 2
    disc = b * b - a * c
    t_sphere = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
    t_ground = np.where(vs > 0, height / np.where(vs > 0, vs, 1), np.inf)
    depth = np.minimum(np.minimum(t_sphere, t_ground), backdrop)
    expected_labels = np.select([depth == t_sphere, depth == t_ground],
                                [CLASS_ID["sphere"], CLASS_ID["ground"]], CLASS_ID["sky"])

    # Labels may differ only where two surfaces are within float32 rounding of each other.
    assert (pair.labels != expected_labels).mean() < 0.002
    same = pair.labels == expected_labels
    expected_disparity = rig.fx * rig.baseline / depth
    np.testing.assert_allclose(pair.disparity[same], expected_disparity[same], rtol=1e-4)
    # The backdrop's disparity is exactly fx * B / Z everywhere it is seen.
    sky = pair.labels == CLASS_ID["sky"]
    np.testing.assert_allclose(pair.disparity[sky], rig.fx * rig.baseline / backdrop, rtol=1e-6)
    # The ground is a slanted plane: disparity grows linearly with the row, d = B * (v - cy) / h.
    ground = pair.labels == CLASS_ID["ground"]
    rows = np.broadcast_to(np.arange(rig.height)[:, None], ground.shape)[ground]
    expected_ground = rig.baseline * (rows - rig.cy) / height * rig.fx / rig.fy
    np.testing.assert_allclose(pair.disparity[ground], expected_ground, rtol=1e-4)


def test_labels_change_exactly_where_the_depth_jumps_at_object_borders():
    rig = StereoRig(height=96, width=128, fx=100.0, fy=100.0, cx=63.5, cy=47.5, baseline=0.1)
    scene = _known_scene(rig, sphere_center=(0.0, 0.0, 3.0), sphere_radius=0.6, ground_height=2.0,
                         backdrop=20.0)
    pair = render_pair(scene, rig, _neutral_response(), seed=0, noise_rng=None)
    label_edge = pair.labels[:, 1:] != pair.labels[:, :-1]
    depth_jump = np.abs(np.diff(pair.depth_left, axis=1)) > 0.5
    # A depth jump at the sphere's silhouette is always also a label change, and vice versa
    # (sphere vs the backdrop or the ground, which lie metres behind it).
    np.testing.assert_array_equal(label_edge, depth_jump)
    sphere = pair.labels == CLASS_ID["sphere"]
    assert sphere.any()
    near, far = 3.0 - 0.6, 3.0
    assert pair.disparity[sphere].min() >= rig.fx * rig.baseline / far - 1e-4
    assert pair.disparity[sphere].max() <= rig.fx * rig.baseline / near + 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_right_image_at_x_minus_d_reproduces_left_on_non_occluded_pixels(settings, seed):
    pair = generate_pair(photo_consistent(settings), seed=(0, 0, seed), size=(160, 240), noise=False)
    warped, inside = _warp_right_to_left(pair.right, pair.disparity)
    error = np.abs(warped - pair.left.astype(np.float32)).mean(axis=2)
    visible = pair.non_occluded() & inside
    occluded = ~pair.non_occluded() & inside
    assert visible.mean() > 0.8
    matched = error[visible].mean()
    assert matched < 2.5, f"mean |left - warped right| is {matched:.2f} grey levels on visible pixels"
    # A 2 px wrong disparity, or an occluded pixel, does not reproduce the left image.
    shifted, _ = _warp_right_to_left(pair.right, pair.disparity + 2.0)
    assert np.abs(shifted - pair.left).mean(axis=2)[visible].mean() > 2 * matched
    if occluded.sum() > 100:
        assert error[occluded].mean() > 5 * matched


def test_sensor_noise_is_independent_per_view_and_at_the_drawn_level(settings):
    clean = generate_pair(settings, seed=(0, 0, 1), size=(160, 240), noise=False)
    noisy = generate_pair(settings, seed=(0, 0, 1), size=(160, 240), noise=True)
    np.testing.assert_array_equal(clean.disparity, noisy.disparity)
    difference_left = noisy.left.astype(np.float32) - clean.left
    difference_right = noisy.right.astype(np.float32) - clean.right
    if noisy.response.noise_sigma > 0.002:
        assert np.abs(difference_left).mean() > 0.2
        # Two sensors, two noise realisations: the differences are uncorrelated.
        correlation = np.corrcoef(difference_left.ravel(), difference_right.ravel())[0, 1]
        assert abs(correlation) < 0.1


def test_every_pixel_is_labelled_and_disparity_stays_in_the_configured_range(settings):
    width = 240
    limit = settings.scene.max_disparity_px * width / settings.scene.reference_width
    seen = set()
    for index in range(6):
        pair = generate_pair(settings, seed=(0, 0, index), size=(160, width), noise=False)
        assert pair.labels.max() < len(CLASS_NAMES)
        assert (pair.disparity > 0).all() and np.isfinite(pair.disparity).all()
        assert pair.disparity.max() <= limit * 1.0001
        seen.update(np.unique(pair.labels).tolist())
    assert len(seen) >= 6, f"only classes {sorted(seen)} in six scenes"


def test_most_of_the_scene_sits_below_96_px_at_480x720(settings):
    """The network's correlation reaches +-64 px; most ground truth must be in a realistic range."""
    values = []
    for index in range(8):
        # Same aspect as 480x720 at a quarter of the pixels: disparities scale with the width.
        pair = generate_pair(settings, seed=(0, 0, index), size=(120, 180), noise=False)
        values.append(pair.disparity.ravel() * (720 / 180))
    values = np.concatenate(values)
    assert np.mean(values < 96) > 0.8
    assert np.median(values) < 64


def test_scene_layout_does_not_depend_on_image_size(settings):
    small = generate_pair(settings, seed=(1, 0, 4), size=(96, 144), noise=False)
    large = generate_pair(settings, seed=(1, 0, 4), size=(192, 288), noise=False)
    # Same metric scene: at twice the width, disparities double and depths agree pixel for pixel
    # (compare at the small image's pixel centres: every other large pixel is 0.25 px off, so
    # compare depth medians per class instead of single pixels).
    for class_id in np.unique(small.labels):
        small_depth = np.median(small.depth_left[small.labels == class_id])
        large_depth = np.median(large.depth_left[large.labels == class_id])
        assert abs(small_depth - large_depth) <= 0.1 * small_depth + 0.05
    assert large.rig.fx == pytest.approx(2 * small.rig.fx)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(256, 256), (1024, 2048)])
def test_extreme_sizes_render(settings, size):
    pair = generate_pair(settings, seed=(0, 0, 0), size=size)
    assert pair.left.shape == (*size, 3) and pair.left.dtype == np.uint8
    assert pair.disparity.shape == size and pair.labels.shape == size
    assert pair.disparity.max() <= settings.scene.max_disparity_px * size[1] / 720 * 1.0001
