"""Photo textures, per-view photometric asymmetry, per-scene rigs, floaters and shiny surfaces of
the synthetic generator. The photo caches are made here from generated images: nothing is
downloaded and no installed package's photos are read."""
from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np
import pytest

from pmt_perception.data.synthetic import (
    fetch_textures as fetch_cli,
    generate_pair,
    load_generator_settings,
    render_pair,
    scene as scene_module,
)
from pmt_perception.data.synthetic.camera import StereoRig
from pmt_perception.data.synthetic.classes import CLASS_ID
from pmt_perception.data.synthetic.geometry import Plane, Sphere
from pmt_perception.data.synthetic.materials import make_material
from pmt_perception.data.synthetic.photo_cache import PhotoLibrary, fetch_textures, is_excluded, open_library
from pmt_perception.data.synthetic.photometric import CameraResponse
from pmt_perception.data.synthetic.photos import make_seamless, photo_texture
from pmt_perception.data.synthetic.scene import Scene

SIZE = (160, 240)

# Names of stereo views, their ground truth and evaluation frames as the packages ship them.
STEREO_OR_EVALUATION = [
    "motorcycle_left.png", "motorcycle_right.png", "motorcycle_disp.npz",   # scikit-image
    "aloeL.jpg", "aloeR.jpg", "aloeGT.png",                                 # opencv-doc
    "left01.jpg", "right14.jpg", "left.jpg", "stereo_calib.xml",
    "rubberwhale1.png", "basketball2.png",                                  # Middlebury flow
    "tsukuba_l.png", "tsukuba_r.png", "teddy.png", "cones_im2.png",
    "im0.png", "im1.png", "view1.png", "view5.png", "disp0.pfm", "disp1.png", "depth.png",
    "sceneR.png", "kitti_000010.png", "middlebury/anything.png", "real_stereo/aloe/photo.png",
    "Stereo_Pair.jpg", "x/LEFT/a.png",
]
PHOTOS = ["astronaut.png", "coffee.png", "brick.png", "grass.png", "gravel.png", "color.png",
          "floor.png", "colour_r2.png", "chelsea.png", "baboon.jpg", "fruits.jpg", "starry_night.jpg"]


def _fake_photo(seed: int, size: tuple[int, int] = (200, 260)) -> np.ndarray:
    """A colourful photo-like uint8 BGR image: blurred noise at two scales, full range."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.random((*size, 3), dtype=np.float32), (0, 0), 1.5) \
        + cv2.GaussianBlur(rng.random((*size, 3), dtype=np.float32), (0, 0), 8.0) * 2
    image -= image.min()
    return (image / image.max() * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photo_cache")
    for index in range(4):
        cv2.imwrite(str(folder / f"photo{index}.png"), _fake_photo(index))
    return folder


@pytest.fixture(scope="module")
def settings():
    return load_generator_settings("synthetic")


def _with(settings, *, photo_dir=None, **textures):
    return dataclasses.replace(settings, textures=dataclasses.replace(settings.textures, photo_dir=photo_dir,
                                                                      **textures))


def _symmetric(settings):
    """No right-view gain/colour/gamma ratios and no (eye-dependent) highlights."""
    return dataclasses.replace(
        _with(settings, photo_dir=settings.textures.photo_dir, specular_fraction=0.0),
        photometric=dataclasses.replace(settings.photometric, view_gain=(1.0, 1.0),
                                        view_colour=(1.0, 1.0), view_gamma=(1.0, 1.0)))


# --------------------------------------------------------------------------- exclusion
@pytest.mark.parametrize("name", STEREO_OR_EVALUATION)
def test_stereo_and_evaluation_images_are_excluded(name):
    assert is_excluded(name)


@pytest.mark.parametrize("name", PHOTOS)
def test_ordinary_photos_are_not_excluded(name):
    assert not is_excluded(name)


def test_fetch_copies_photos_and_never_a_stereo_or_evaluation_image(tmp_path):
    source, evaluation = tmp_path / "source", tmp_path / "real_stereo"
    (source / "nested").mkdir(parents=True)
    evaluation.mkdir()
    for index, name in enumerate(["motorcycle_left.png", "aloeR.png", "im0.png", "view5.png"]):
        cv2.imwrite(str(source / name), _fake_photo(10 + index))
    cv2.imwrite(str(source / "nested" / "coffee.png"), _fake_photo(20))
    cv2.imwrite(str(source / "grass.png"), _fake_photo(21))
    cv2.imwrite(str(source / "icon.png"), _fake_photo(22, size=(40, 40)))             # too small
    cv2.imwrite(str(source / "logo.png"), np.full((200, 200, 3), 255, np.uint8))      # flat
    # An evaluation image under an innocent name is caught by its content.
    cv2.imwrite(str(evaluation / "aloe.png"), _fake_photo(23))
    (source / "innocent.png").write_bytes((evaluation / "aloe.png").read_bytes())

    out = tmp_path / "cache"
    entries = fetch_textures(out, {"test": source}, exclude_dirs=[evaluation])
    assert sorted(e["file"] for e in entries) == ["test__coffee.png", "test__grass.png"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test__coffee.png", "test__grass.png"]


def test_fetch_command_writes_the_cache_from_a_source_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fetch_cli, "package_sources", dict)  # no installed package's photos
    source = tmp_path / "photos"
    source.mkdir()
    cv2.imwrite(str(source / "chelsea.png"), _fake_photo(1))
    cv2.imwrite(str(source / "motorcycle_right.png"), _fake_photo(2))
    assert fetch_cli.main(["--out", str(tmp_path / "cache"), "--source", str(source)]) == 0
    assert [p.name for p in (tmp_path / "cache").glob("*.png")] == [f"{tmp_path.name}-photos__chelsea.png"]
    assert "1 photos" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fetch_cli.main(["--out", str(tmp_path / "other"), "--source", str(tmp_path / "missing")])


def test_library_skips_stereo_images_dropped_into_the_cache_by_hand(tmp_path):
    for name in ("aloeL.png", "tsukuba_r.png", "baboon.png"):
        cv2.imwrite(str(tmp_path / name), _fake_photo(3))
    library = PhotoLibrary.from_folder(tmp_path)
    assert [p.name for p in library.paths] == ["baboon.png"]
    assert library.image(0).dtype == np.float32 and library.image(0).max() <= 1.0


# --------------------------------------------------------------------------- photo textures
def test_seamless_tile_wraps_without_a_seam():
    size = 64
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    channels = np.broadcast_arrays(ramp[None, :], ramp[:, None], 0.5 * ramp[None, :] + 0.5 * ramp[:, None])
    image = np.stack(channels, axis=-1).astype(np.float32)
    tile = make_seamless(image)
    for axis in (0, 1):
        steps = np.abs(np.diff(tile, axis=axis)).max()
        wrap = np.abs(np.take(tile, 0, axis=axis) - np.take(tile, -1, axis=axis)).max()
        assert wrap <= 2.5 * steps, f"axis {axis}: the wrap step {wrap:.3f} is a seam (steps {steps:.3f})"
    # The unblended image has a full-range jump there.
    assert np.abs(image[:, 0] - image[:, -1]).max() > 0.9


def test_photo_texture_is_a_linear_albedo_tile_of_the_requested_size(photo_dir, settings):
    library = PhotoLibrary.from_folder(photo_dir)
    tile = photo_texture(np.random.default_rng(0), library, 128, settings.textures)
    assert tile.shape == (128, 128, 3) and tile.dtype == np.float32
    assert 0.0 <= tile.min() and tile.max() <= 1.0 and tile.std() > 0.02


def _count_photo_materials(monkeypatch) -> list:
    calls = []
    original = scene_module.photo_material

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(scene_module, "photo_material", counting)
    return calls


def test_photo_textures_are_used_when_the_cache_has_photos(photo_dir, settings, monkeypatch):
    calls = _count_photo_materials(monkeypatch)
    with_photos = generate_pair(_with(settings, photo_dir=str(photo_dir), photo_fraction=1.0),
                                seed=(0, 0, 3), size=SIZE, noise=False)
    assert len(calls) >= 3 and "sky" not in calls
    procedural = generate_pair(_with(settings, photo_dir=None), seed=(0, 0, 3), size=SIZE, noise=False)
    # Materials draw from their own stream (and leaf holes from theirs): the same layout and
    # ground truth, other pixels.
    np.testing.assert_array_equal(with_photos.disparity, procedural.disparity)
    np.testing.assert_array_equal(with_photos.labels, procedural.labels)
    assert np.abs(with_photos.left.astype(int) - procedural.left).mean() > 3


def test_without_a_cache_the_generator_falls_back_to_procedural_textures_and_says_so_once(
        tmp_path, settings, monkeypatch, caplog):
    calls = _count_photo_materials(monkeypatch)
    missing = _with(settings, photo_dir=str(tmp_path / "no_cache_here"))
    with caplog.at_level(logging.WARNING):
        for index in range(2):
            pair = generate_pair(missing, seed=(0, 0, index), size=SIZE)
            assert pair.left.shape == (*SIZE, 3)
    warnings = [r for r in caplog.records if "procedural textures only" in r.getMessage()]
    assert len(warnings) == 1 and "no_cache_here" in warnings[0].getMessage()
    assert calls == []
    assert open_library(None) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ground_truth_stays_exact_on_photo_textured_scenes(photo_dir, settings, seed):
    """Right image sampled at x - d reproduces the left one on non-occluded pixels."""
    symmetric = _symmetric(_with(settings, photo_dir=str(photo_dir), photo_fraction=1.0))
    pair = generate_pair(symmetric, seed=(0, 0, seed), size=SIZE, noise=False)
    height, width = SIZE
    xs = (np.arange(width, dtype=np.float32)[None, :] - pair.disparity).astype(np.float32)
    ys = np.broadcast_to(np.arange(height, dtype=np.float32)[:, None], xs.shape).astype(np.float32)

    def error(shift: float) -> np.ndarray:
        warped = cv2.remap(pair.right, xs - shift, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return np.abs(warped.astype(np.float32) - pair.left).mean(axis=2)

    # Away from depth edges (where the bilinear warp mixes two surfaces) and occlusions...
    depth = pair.depth_left
    edges = np.zeros(SIZE, dtype=np.uint8)
    edges[:, 1:] |= np.abs(np.diff(depth, axis=1)) > 0.02 * depth[:, 1:]
    edges[1:, :] |= np.abs(np.diff(depth, axis=0)) > 0.02 * depth[1:, :]
    edges = cv2.dilate(edges, np.ones((5, 5), np.uint8)).astype(bool)
    visible = pair.non_occluded() & (xs >= 2) & ~edges
    # ...on textured pixels, where the left image varies and a wrong disparity would show.
    grey = pair.left.astype(np.float32).mean(axis=2)
    textured = visible & (np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)) > 8)
    assert textured.sum() > 500
    matched = error(0.0)[textured].mean()
    assert matched < 2.0, f"mean |left - warped right| is {matched:.2f} grey levels on textured pixels"
    assert error(0.5)[textured].mean() > 1.5 * matched
    assert error(1.0)[textured].mean() > 2.5 * matched


# --------------------------------------------------------------------------- asymmetry, rigs
def test_right_view_has_its_own_gain_colour_and_gamma(settings):
    photometric = settings.photometric
    responses = [generate_pair(settings, seed=(0, 0, i), size=(64, 96)).response for i in range(6)]
    gains = np.array([r.right_gain for r in responses])
    gammas = np.array([r.right_gamma for r in responses])
    low = photometric.view_gain[0] * photometric.view_colour[0]
    high = photometric.view_gain[1] * photometric.view_colour[1]
    assert (gains >= low).all() and (gains <= high).all()
    assert np.ptp(gains) > 0.02 and np.ptp(gammas) > 0.01
    assert (gammas >= photometric.view_gamma[0]).all() and (gammas <= photometric.view_gamma[1]).all()

    radiance = np.random.default_rng(0).uniform(0.05, 0.5, size=(32, 32, 3)).astype(np.float32)
    neutral = CameraResponse(exposure=1.0, white_balance=(1.0, 1.0, 1.0), vignetting=0.0,
                             blur_sigma=0.0, noise_sigma=0.0, gamma=2.2)
    np.testing.assert_array_equal(neutral.develop(radiance, None, view="left"),
                                  neutral.develop(radiance, None, view="right"))
    redder = dataclasses.replace(neutral, right_gain=(1.2, 1.0, 1.0), right_gamma=1.05)
    left, right = (redder.develop(radiance, None, view=v).astype(int) for v in ("left", "right"))
    assert (right[..., 0] >= left[..., 0]).all() and right[..., 0].mean() > left[..., 0].mean() + 5
    assert (right[..., 1] >= left[..., 1]).all()  # higher gamma alone brightens the mid-tones


def test_the_right_view_alone_changes_with_the_view_ratios(settings):
    pair = generate_pair(settings, seed=(0, 0, 4), size=SIZE)
    symmetric = generate_pair(dataclasses.replace(settings, photometric=dataclasses.replace(
        settings.photometric, view_gain=(1.0, 1.0), view_colour=(1.0, 1.0), view_gamma=(1.0, 1.0))),
        seed=(0, 0, 4), size=SIZE)
    np.testing.assert_array_equal(pair.left, symmetric.left)    # the left view is the reference
    assert np.abs(pair.right.astype(int) - symmetric.right).mean() > 1.0
    # Ideal sensors (noise=False, for consistency tests): the right view develops like the left.
    ideal = generate_pair(settings, seed=(0, 0, 4), size=SIZE, noise=False)
    assert ideal.response.right_gain == (1.0, 1.0, 1.0) and ideal.response.right_gamma == 1.0


def test_focal_length_and_baseline_vary_per_scene_and_disparity_stays_in_bounds(settings):
    width = 240
    limit = settings.scene.max_disparity_px * width / settings.scene.reference_width
    crowded = dataclasses.replace(settings, scene=dataclasses.replace(settings.scene, floaters=(12, 12)))
    focal, baseline, largest = [], [], []
    for index in range(6):
        pair = generate_pair(crowded, seed=(2, 0, index), size=(160, width), noise=False)
        focal.append(pair.rig.fx / width)
        baseline.append(pair.rig.baseline)
        largest.append(pair.disparity.max())
        assert pair.disparity.max() <= limit * 1.0001 and (pair.disparity > 0).all()
        # The backdrop stays a far plane behind every object, whatever fx and B are.
        sky = pair.labels == CLASS_ID["sky"]
        low_px, high_px = (d * width / settings.scene.reference_width
                           for d in settings.scene.backdrop_disparity_px)
        assert low_px * 0.999 <= pair.disparity[sky].min() and pair.disparity[sky].max() <= high_px * 1.001
        assert pair.disparity[~sky].min() >= pair.disparity[sky].max() * 0.999  # a fronto-parallel plane
    low, high = settings.camera.focal_per_width
    assert low <= min(focal) and max(focal) <= high and np.ptp(focal) > 0.05 * (high - low)
    low, high = settings.camera.baseline_m
    assert low <= min(baseline) and max(baseline) <= high and np.ptp(baseline) > 0.05 * (high - low)
    assert max(largest) > 1.5 * min(largest), "every scene has the same disparity range"


def test_rig_draws_do_not_depend_on_image_size(settings):
    rigs = [StereoRig.sample(np.random.default_rng(7), settings.camera, size=size)
            for size in ((96, 144), (192, 288))]
    assert rigs[1].fx == pytest.approx(2 * rigs[0].fx) and rigs[1].baseline == rigs[0].baseline


def test_floaters_are_small_objects_in_front_of_the_scene(settings):
    only_floaters = dataclasses.replace(settings, scene=dataclasses.replace(
        settings.scene, walls=(0, 0), boxes=(0, 0), spheres=(0, 0), cylinders=(0, 0), bushes=(0, 0),
        poles=(0, 0), floaters=(8, 8)))
    pair = generate_pair(only_floaters, seed=(0, 0, 1), size=SIZE, noise=False)
    objects = np.isin(pair.labels, [CLASS_ID["box"], CLASS_ID["sphere"], CLASS_ID["cylinder"]])
    assert objects.any() and objects.mean() < 0.5
    # They float: objects are nearer than the ground behind them on their own rows.
    assert (pair.disparity[objects] > 0).all()


# --------------------------------------------------------------------------- shiny surfaces
def _sphere_scene(specular: float) -> Scene:
    rng = np.random.default_rng(0)
    ball = make_material("sphere", rng, size=64, texture_poor=True)
    ball.specular, ball.shininess = specular, 40.0
    primitives = [
        Plane(CLASS_ID["sky"], make_material("sky", rng, size=64, texture_poor=True),
              normal=np.array([0.0, 0.0, 1.0]), offset=30.0, axis_u=np.array([1.0, 0, 0]),
              axis_v=np.array([0, 1.0, 0])),
        Sphere(CLASS_ID["sphere"], ball, center=np.array([0.0, 0.0, 2.0]), radius=0.6, frame=np.eye(3)),
    ]
    sun = np.array([0.3, -0.6, -0.74])
    return Scene(primitives=primitives, sun_direction=sun / np.linalg.norm(sun),
                 sun_colour=np.ones(3, np.float32), ambient_colour=np.full(3, 0.3, np.float32),
                 up=np.array([0.0, -1.0, 0.0]))


def test_shiny_surfaces_have_a_highlight_that_moves_with_the_eye():
    rig = StereoRig(height=96, width=128, fx=100.0, fy=100.0, cx=63.5, cy=47.5, baseline=0.3)
    response = CameraResponse(exposure=1.0, white_balance=(1.0, 1.0, 1.0), vignetting=0.0, blur_sigma=0.0,
                              noise_sigma=0.0, gamma=2.2)
    matte = render_pair(_sphere_scene(0.0), rig, response, seed=0, noise_rng=None)
    shiny = render_pair(_sphere_scene(1.0), rig, response, seed=0, noise_rng=None)
    np.testing.assert_array_equal(matte.disparity, shiny.disparity)   # geometry untouched
    highlight_left = shiny.left.astype(int).sum(axis=2) - matte.left.astype(int).sum(axis=2)
    highlight_right = shiny.right.astype(int).sum(axis=2) - matte.right.astype(int).sum(axis=2)
    assert highlight_left.max() > 60 and highlight_right.max() > 60
    # The left highlight's surface point, seen from the right eye, is not the right highlight.
    v, u = np.unravel_index(np.argmax(highlight_left), highlight_left.shape)
    v_r, u_r = np.unravel_index(np.argmax(highlight_right), highlight_right.shape)
    assert abs((u - shiny.disparity[v, u]) - u_r) + abs(v - v_r) > 1.0
