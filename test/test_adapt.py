"""Self-supervised adaptation: each loss term against values worked out by hand on tiny
tensors, the SGBM proxy labels, and `pmt-adapt` end to end on a tiny model (a synthetic pair
with its ground truth withheld; NaN steps discarded; resume = uninterrupted run)."""
from __future__ import annotations

import importlib.util
import math

import cv2
import numpy as np
import pytest
import torch

from pmt_perception import adapt, adapt_cli, adapt_settings, adapt_sources, photometric as P
from pmt_perception.checkpoint import load_checkpoint, load_model

torch.set_num_threads(1)


def ramp(width: int, height: int = 2) -> torch.Tensor:
    """1 x 1 x H x W image whose value is the column index."""
    return torch.arange(width, dtype=torch.float32).repeat(height, 1)[None, None]


# ----------------------------------------------------------------------------- warping
def test_warp_samples_right_image_at_x_minus_d_with_validity():
    right = ramp(4)
    warped, valid = P.warp_right_to_left(right, torch.full_like(right, 1.0))
    # left pixel x sees right pixel x - 1: column 0 would need x = -1 (outside, masked).
    assert warped[0, 0, 0, 1:].tolist() == [0.0, 1.0, 2.0]
    assert valid[0, 0, 0].tolist() == [False, True, True, True]
    warped, valid = P.warp_right_to_left(right, torch.full_like(right, 0.5))
    assert torch.allclose(warped[0, 0, 0, 1:], torch.tensor([0.5, 1.5, 2.5]))   # bilinear
    assert valid[0, 0, 0].tolist() == [False, True, True, True]
    # Negative disparity points past the right edge: the last column is invalid.
    _, valid = P.warp_right_to_left(right, torch.full_like(right, -1.0))
    assert valid[0, 0, 0].tolist() == [True, True, True, False]


def test_warp_reconstructs_a_shifted_image_and_passes_gradients():
    torch.manual_seed(0)
    right = torch.rand(1, 3, 5, 9)
    left = torch.zeros_like(right)
    left[..., 2:] = right[..., :-2]                  # left(x) = right(x - 2)
    disparity = torch.full((1, 1, 5, 9), 2.0, requires_grad=True)
    warped, valid = P.warp_right_to_left(right, disparity)
    assert torch.allclose(warped[..., 2:], left[..., 2:])
    assert not valid[..., :2].any() and valid[..., 2:].all()
    P.photometric_loss(left, right, disparity + 0.3).backward()
    assert disparity.grad is not None and disparity.grad.abs().sum() > 0


def test_warp_rejects_bad_shapes():
    with pytest.raises(ValueError, match="disparity B x 1 x H x W"):
        P.warp_right_to_left(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="differ"):
        P.warp_right_to_left(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 5))


# ----------------------------------------------------------------------------- SSIM, photometric
def test_ssim_identical_is_one_and_constants_match_the_formula():
    torch.manual_seed(1)
    image = torch.rand(1, 3, 4, 5)
    assert torch.allclose(P.ssim(image, image), torch.ones_like(image), atol=1e-6)
    # Constant images a, b: no variance, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = torch.full((1, 1, 3, 3), 0.5), torch.full((1, 1, 3, 3), 0.25)
    expected = (2 * 0.5 * 0.25 + 1e-4) / (0.25 + 0.0625 + 1e-4)
    assert torch.allclose(P.ssim(a, b), torch.full_like(a, expected), atol=1e-6)


def test_ssim_of_a_3x3_window_by_hand():
    # Centre pixel of a 3x3 image: its window is the whole image (no padding involved).
    x = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    y = torch.full_like(x, 0.5)
    mu_x, mu_y, var_x = 4 / 9, 0.5, 4 / 9 - (4 / 9) ** 2   # y constant: var_y = cov = 0
    expected = ((2 * mu_x * mu_y + P.SSIM_C1) * P.SSIM_C2
                / ((mu_x ** 2 + mu_y ** 2 + P.SSIM_C1) * (var_x + P.SSIM_C2)))
    assert P.ssim(x, y)[0, 0, 1, 1].item() == pytest.approx(expected, rel=1e-5)


def test_photometric_error_weights_ssim_and_l1():
    a, b = torch.full((1, 3, 3, 3), 0.5), torch.full((1, 3, 3, 3), 0.25)
    s = (2 * 0.5 * 0.25 + 1e-4) / (0.25 + 0.0625 + 1e-4)
    expected = 0.85 * (1 - s) / 2 + 0.15 * 0.25
    error = P.photometric_error(a, b)
    assert error.shape == (1, 1, 3, 3)
    assert torch.allclose(error, torch.full_like(error, expected), atol=1e-6)
    assert torch.allclose(P.photometric_error(a, a), torch.zeros(1, 1, 3, 3), atol=1e-6)


def test_photometric_loss_masks_outside_and_occluded_pixels():
    right = torch.zeros(1, 3, 2, 4)
    left = torch.zeros(1, 3, 2, 4)
    left[..., 3] = 0.4                      # only column 3 is wrong, by 0.4 (L1)
    disparity = torch.zeros(1, 1, 2, 4)
    error = P.photometric_error(left, right)
    assert P.photometric_loss(left, right, disparity).item() == pytest.approx(error.mean().item())
    mask = torch.ones(1, 1, 2, 4, dtype=torch.bool)
    mask[..., 2:] = False   # "occluded": the wrong column and its SSIM neighbour are ignored
    assert P.photometric_loss(left, right, disparity, mask=mask).item() == pytest.approx(0.0, abs=1e-6)
    # d = 1: column 0 leaves the image and is not counted.
    only_inside = P.photometric_error(left, P.warp_right_to_left(right, disparity + 1)[0])[..., 1:]
    assert P.photometric_loss(left, right, disparity + 1).item() == pytest.approx(only_inside.mean().item())


def test_masked_mean_by_hand_and_empty_mask():
    values = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert P.masked_mean(values, torch.tensor([True, False, True, True])).item() == pytest.approx(10 / 3)
    assert P.masked_mean(values, torch.zeros(4, dtype=torch.bool)).item() == 0.0


# ----------------------------------------------------------------------------- left-right
def block_matcher(max_disparity: int):
    """A left-referenced 'network' for tests: winner-takes-all on the per-pixel absolute
    difference, candidates 0..max_disparity (sampling at x - d)."""
    def forward(left, right):
        costs = []
        for d in range(max_disparity + 1):
            warped, valid = P.warp_right_to_left(right, torch.full_like(left[:, :1], float(d)))
            cost = (left - warped).abs().sum(1, keepdim=True)
            costs.append(torch.where(valid, cost, torch.full_like(cost, 1e9)))
        return torch.cat(costs, 1).argmin(1, keepdim=True).float()
    return forward


def test_right_disparity_by_flipping_the_swapped_pair():
    torch.manual_seed(2)
    right = torch.rand(1, 3, 4, 12)
    left = torch.zeros_like(right)
    left[..., 3:] = right[..., :-3]        # disparity 3 everywhere (left pixel x = right x - 3)
    left[..., :3] = torch.rand(1, 3, 4, 3)
    matcher = block_matcher(5)
    assert (matcher(left, right)[..., 3:] == 3).all()
    right_disparity = P.right_disparity(matcher, left, right)
    # Right pixel x matches left pixel x + 3: known wherever x + 3 is inside the image.
    assert (right_disparity[..., :-3] == 3).all()
    # The network must see the mirrored right image in the left slot.
    seen = {}

    def spy(left_view, right_view):
        seen["left"], seen["right"] = left_view, right_view
        return left_view[:, :1]
    out = P.right_disparity(spy, left, right)
    assert torch.equal(seen["left"], torch.flip(right, [-1]))
    assert torch.equal(seen["right"], torch.flip(left, [-1]))
    assert torch.equal(out, right[:, :1])


def test_left_right_consistency_by_hand():
    d_left = torch.full((1, 1, 1, 5), 1.0)
    d_right = torch.full((1, 1, 1, 5), 1.0)
    assert P.left_right_consistency(d_left, d_right)[0, 0, 0].tolist() == [False, True, True, True, True]
    d_right[..., 2] = 4.0   # right pixel 2 disagrees: left pixel 3 (3 - 1 = 2) is flagged
    assert P.left_right_consistency(d_left, d_right)[0, 0, 0].tolist() == [False, True, True, False, True]
    # threshold 3 px tolerates it (|1 - 4| = 3 <= 3)
    assert P.left_right_consistency(d_left, d_right, threshold=3.0)[0, 0, 0, 3].item()


# ----------------------------------------------------------------------------- smoothness
def test_edge_aware_smoothness_by_hand():
    disparity = torch.tensor([[0.0, 1.0, 3.0], [0.0, 1.0, 3.0]])[None, None]
    flat = torch.zeros(1, 3, 2, 3)
    # x gradients 1, 2 (both rows), y gradients 0: mean 1.5 + 0.
    assert P.edge_aware_smoothness(disparity, flat, normalize=False).item() == pytest.approx(1.5)
    edge = torch.zeros(1, 3, 2, 3)
    edge[..., 2] = 1.0      # an image edge between columns 1 and 2 weights that step by e^-1
    expected = (1.0 + 2.0 * math.exp(-1.0)) / 2
    assert P.edge_aware_smoothness(disparity, edge, normalize=False).item() == pytest.approx(expected)
    # normalised by the mean disparity (4/3): the same value divided by 4/3
    assert P.edge_aware_smoothness(disparity, flat).item() == pytest.approx(1.5 / (4 / 3), rel=1e-5)
    assert P.edge_aware_smoothness(torch.full((1, 1, 2, 3), 7.0), flat).item() == 0.0


# ----------------------------------------------------------------------------- distillation, proxy
def test_distillation_kl_by_hand():
    teacher = torch.tensor([0.5, 0.5]).view(1, 2, 1, 1)
    student = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)     # softmax: 0.25, 0.75
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert P.distillation_loss(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    same = torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1)
    assert P.distillation_loss(same, same.softmax(1)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ"):
        P.distillation_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 3, 1, 1))


def test_proxy_l1_only_on_kept_pixels():
    disparity = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4)
    proxy = torch.tensor([math.nan, 2.5, 0.0, 1.0]).view(1, 1, 1, 4)
    assert P.proxy_l1_loss(disparity, proxy).item() == pytest.approx((0.5 + 3.0) / 2)
    empty = torch.full((1, 1, 1, 4), math.nan)
    assert P.proxy_l1_loss(disparity, empty).item() == 0.0


def test_proxy_holes_take_the_background_of_their_row_and_only_the_holes():
    nan = math.nan
    proxy = np.array([[nan, 5.0, nan, nan, 2.0, nan], [nan] * 6], np.float32)
    holes = P.proxy_holes(proxy)
    # row 0: an end takes its one neighbour, an inner hole the smaller (farther) of the two
    np.testing.assert_array_equal(holes[0], [5.0, nan, 2.0, 2.0, nan, 2.0])
    assert np.isnan(holes[1]).all()  # a row without labels gets none


def test_proxy_distribution_puts_the_cost_volume_on_the_proxy_candidate():
    # Two cells of a stride-2 volume with 3 candidates; the proxy (2 x 3 px) is one column short
    # of the grid (a padded input): that column counts as unlabelled.
    probability = torch.tensor([[0.2, 0.1], [0.3, 0.6], [0.5, 0.3]]).view(1, 3, 1, 2)
    proxy = torch.tensor([[4.0, 4.0, 2.0], [4.0, 4.0, 2.0]]).view(1, 1, 2, 3)
    # cell 0: 4 px / stride 2 = candidate 2; cell 1: half its pixels labelled, 2 px -> candidate 1
    expected = -(math.log(0.5) + math.log(0.6)) / 2
    assert P.proxy_distribution_loss(probability, proxy, 2).item() == pytest.approx(expected, rel=1e-4)
    proxy[..., 2] = math.nan  # cell 1 unlabelled: only cell 0 counts
    assert P.proxy_distribution_loss(probability, proxy, 2).item() == pytest.approx(-math.log(0.5), rel=1e-4)


def textured_pair(height=64, width=128, disparity=4, seed=0):
    """A smooth random texture and its copy shifted by `disparity` px (uint8 HxWx3 each)."""
    rng = np.random.default_rng(seed)
    texture = cv2.resize(rng.random((height // 4, (width + disparity) // 4 + 1, 3)).astype(np.float32),
                         ((width + disparity) // 4 * 4 + 4, height), interpolation=cv2.INTER_CUBIC)
    texture = (np.clip(texture, 0, 1) * 255).astype(np.uint8)
    right = np.ascontiguousarray(texture[:, disparity:disparity + width])
    left = np.ascontiguousarray(texture[:, :width])    # left(x) = right(x - disparity)
    return left, right


def test_sgbm_proxy_keeps_correct_pixels_only():
    left, right = textured_pair(disparity=6)
    proxy = P.sgbm_proxy(left, right, P.sgbm_settings("3way", num_disparities=16))
    kept = np.isfinite(proxy)
    assert 0.2 < kept.mean() < 1.0                          # sparse: borders etc. rejected
    assert not kept[:, :6].any()                            # no match exists left of d
    error = np.abs(proxy[kept] - 6)
    assert (error <= 1.0).mean() > 0.99 and error.max() <= 2.0
    with pytest.raises(ValueError, match="left-right check"):
        P.sgbm_settings("3way", disp12_max_diff=-1)
    with pytest.raises(ValueError, match="unknown SGBM preset"):
        P.sgbm_settings("nope")


# ----------------------------------------------------------------------------- pmt-adapt
def write_pair_folder(root, *, disparity=4, count=1):
    (root / "left").mkdir(parents=True)
    (root / "right").mkdir()
    (root / "disparity").mkdir()
    for index in range(count):
        left, right = textured_pair(disparity=disparity, seed=index)
        name = f"{index:03d}.png"
        cv2.imwrite(str(root / "left" / name), left[..., ::-1])
        cv2.imwrite(str(root / "right" / name), right[..., ::-1])
        gt = np.full(left.shape[:2], disparity * 256, np.uint16)
        gt[:, :disparity] = 0
        cv2.imwrite(str(root / "disparity" / name), gt)
    return root


def small_settings(tmp_path, **changes):
    text = (adapt_settings.default_settings_path()).read_text()
    path = tmp_path / "adapt.yaml"
    path.write_text(text)
    settings = dict(crop=[0, 0], lr=1e-3, cache_pairs=2, save_every=0, precision="fp32", device="cpu",
                    sgbm={"preset": "3way", "num_disparities": 16, "uniqueness_ratio": 10,
                          "disp12_max_diff": 1},
                    occlusion={"enabled": True, "threshold_px": 3.0, "refresh_every": 2})
    settings.update(changes)
    import yaml
    data = yaml.safe_load(text)
    data["replay"]["weight"] = 0.0      # tests of the replay: test_adapt_replay.py
    data.update(settings)
    path.write_text(yaml.safe_dump(data))
    return path


def test_settings_file_and_errors(tmp_path):
    settings = adapt_settings.load_settings()
    assert settings.steps > 0 and settings.weights["photometric"] > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        adapt_settings.load_settings(bad)
    with pytest.raises(ValueError, match="crop"):
        adapt_settings.load_settings(crop=[100, 100])
    with pytest.raises(ValueError, match="lr_schedule"):
        adapt_settings.load_settings(lr_schedule="step")


def test_cosine_schedule_by_hand():
    settings = adapt_settings.load_settings(lr=1e-3, steps=4, lr_schedule="cosine")
    assert [adapt_settings.scheduled_lr(settings, s) for s in range(4)] == pytest.approx(
        [1e-3, 0.5e-3 * (1 + math.cos(math.pi / 4)), 0.5e-3, 0.5e-3 * (1 + math.cos(3 * math.pi / 4))])
    constant = adapt_settings.load_settings(lr=2e-4, steps=4, lr_schedule="constant")
    assert adapt_settings.scheduled_lr(constant, 3) == 2e-4
    warm = adapt_settings.load_settings(lr=1e-3, online_warmup_steps=4)
    assert [adapt_settings.online_lr(warm, u) for u in range(6)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert adapt_settings.online_lr(adapt_settings.load_settings(lr=1e-3, online_warmup_steps=0), 0) == 1e-3


def test_list_pairs_folder_and_middlebury_and_errors(tmp_path):
    folder = write_pair_folder(tmp_path / "pairs", count=2)
    pairs = adapt_sources.list_pairs(folder)
    assert [p.name for p in pairs] == ["000", "001"] and pairs[0].gt_kind == "png16"
    left, right, gt = adapt_sources.load_pair(pairs[0], (32, 64))     # resized: GT scaled by 64/128
    assert left.shape == (32, 64, 3) and gt.max() == pytest.approx(2.0)
    scene = tmp_path / "mb"
    scene.mkdir()
    l_img, r_img = textured_pair()
    cv2.imwrite(str(scene / "thingL.png"), l_img)
    cv2.imwrite(str(scene / "thingR.png"), r_img)
    cv2.imwrite(str(scene / "thingGT.png"), np.full(l_img.shape[:2], 12, np.uint8))
    pairs = adapt_sources.list_pairs(scene)
    assert len(pairs) == 1 and pairs[0].gt_kind == "middlebury"
    with pytest.raises(ValueError, match="neither left/"):
        adapt_sources.list_pairs(tmp_path / "pairs" / "left")
    (tmp_path / "pairs" / "right" / "001.png").unlink()
    with pytest.raises(ValueError, match="lacks 1 image"):
        adapt_sources.list_pairs(folder)


def test_adaptation_lowers_photometric_loss_and_moves_disparity_to_ground_truth(tmp_path, tiny_checkpoint):
    """A synthetic pair, ground truth withheld from the adaptation, used only to score."""
    torch.manual_seed(0)
    left, right = textured_pair(disparity=4)
    gt = np.full(left.shape[:2], 4.0, np.float32)
    gt[:, :4] = 0
    model, _ = load_model(tiny_checkpoint)
    settings = adapt_settings.load_settings(small_settings(tmp_path), parameters="all")
    adapter = adapt.Adapter(model, settings, device=torch.device("cpu"))
    pair = adapter.prepare(0, left, right)
    window = (slice(0, 64), slice(0, 128))

    def scores():
        with torch.no_grad():
            disparity = adapt.forward_padded(adapter.model, pair.left, pair.right)[0]
            photo = P.photometric_loss(pair.left, pair.right, disparity).item()
        error = (disparity[0, 0].numpy() - gt)[gt > 0]
        return photo, float(np.abs(error).mean())

    photo_before, epe_before = scores()
    for _ in range(40):
        result = adapter.step(pair, window)
        assert result["applied"]
    photo_after, epe_after = scores()
    assert photo_after < photo_before
    assert epe_after < 0.5 * epe_before
    assert adapter.discarded == 0


def test_non_finite_step_is_discarded(tmp_path, tiny_checkpoint, monkeypatch):
    model, _ = load_model(tiny_checkpoint)
    settings = adapt_settings.load_settings(small_settings(tmp_path), parameters="disparity")
    adapter = adapt.Adapter(model, settings, device=torch.device("cpu"))
    left, right = textured_pair()
    pair = adapter.prepare("a", left, right)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    original = adapter.losses

    def poisoned(*args, **kwargs):
        terms = original(*args, **kwargs)
        terms["total"] = terms["total"] * float("nan")
        return terms
    monkeypatch.setattr(adapter, "losses", poisoned)
    result = adapter.step(pair, (slice(0, 64), slice(0, 128)))
    assert not result["applied"] and adapter.discarded == 1
    assert all(torch.equal(v, adapter.model.state_dict()[k]) for k, v in before.items())
    # parameters=disparity: only the disparity branch takes gradients.
    assert all(p.requires_grad == n.startswith(("disparity.", "spp_f2."))
               for n, p in adapter.model.named_parameters())


def test_pmt_adapt_command_checkpoint_resume_and_determinism(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    data = write_pair_folder(tmp_path / "pairs", count=2)
    config = small_settings(tmp_path, crop=[32, 64], save_every=2)
    common = ["--checkpoint", str(tiny_checkpoint), "--data", str(data), "--config", str(config),
              "--steps", "4", "--seed", "3"]
    assert adapt_cli.main([*common, "--out", str(tmp_path / "a.pt"), "--eval", "--json"]) == 0
    report = capsys.readouterr().out
    assert '"before"' in report and '"after"' in report
    payload = load_checkpoint(tmp_path / "a.pt")
    original = load_checkpoint(tiny_checkpoint)
    assert payload["class_names"] == original["class_names"]
    assert payload["model_config"] == original["model_config"]
    assert payload["adapted"]["steps"] == 4 and payload["adapted"]["from_checkpoint"] == str(tiny_checkpoint)
    assert payload["adapted"]["pairs"] == ["000", "001"] and "adapt_state" not in payload
    assert not (tmp_path / "a.partial.pt").exists()

    # Interrupted after 3 steps (a snapshot at step 2), then resumed: same weights as a.pt.
    calls = {"n": 0}
    real_step = adapt.Adapter.step

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)
    monkeypatch.setattr(adapt.Adapter, "step", interrupted)
    # Ctrl-C ends the command with exit code 130 and one line, no traceback (cli.stops_cleanly).
    assert adapt_cli.main([*common, "--out", str(tmp_path / "b.pt")]) == 130
    assert "stopped (SIGINT)" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "b.partial.pt")["adapt_state"]["step"] == 2
    monkeypatch.setattr(adapt.Adapter, "step", real_step)
    assert adapt_cli.main([*common, "--out", str(tmp_path / "b.pt")]) == 0
    resumed = load_checkpoint(tmp_path / "b.pt")["model_state"]
    for key, value in payload["model_state"].items():
        assert torch.equal(value, resumed[key]), key


def write_synthetic_bag(tmp_path, num):
    """A bag with the node's input topics and ground truth, written by pmt-bag-write from small
    generated synthetic frames."""
    import yaml

    from pmt_perception.config import config_dir
    from pmt_perception.ros.bags import writer

    config = yaml.safe_load((config_dir() / "data" / "synthetic.yaml").read_text())
    config["loader"]["size"] = [64, 128]
    config_path = tmp_path / "synthetic_small.yaml"
    config_path.write_text(yaml.safe_dump(config))
    bag = tmp_path / "bag"
    assert writer.main(["--out", str(bag), "--num", str(num), "--data", str(config_path),
                        "--split", "val"]) == 0
    return bag


def test_pmt_adapt_reads_a_bag_keeping_a_bounded_seeded_sample(tmp_path, tiny_checkpoint, capsys):
    bag = write_synthetic_bag(tmp_path, num=5)
    every = adapt_sources.list_pairs(bag, bag_frames=10)
    assert len(every) == 5 and all(p.gt_kind == "bag" for p in every)
    stamps = [p.frame.stamp_ns for p in every]
    assert stamps == sorted(stamps)
    kept = adapt_sources.list_pairs(bag, bag_frames=3, seed=1)
    again = adapt_sources.list_pairs(bag, bag_frames=3, seed=1)
    assert len(kept) == 3 and [p.name for p in kept] == [p.name for p in again]
    assert {p.name for p in kept} <= {p.name for p in every}
    left, right, gt = adapt_sources.load_pair(every[0], None)
    assert left.shape == right.shape == (64, 128, 3) and left.dtype == np.uint8
    assert gt.shape == (64, 128) and gt.max() > 0
    config = small_settings(tmp_path, bag_frames=2)
    assert adapt_cli.main(["--checkpoint", str(tiny_checkpoint), "--data", str(bag), "--config",
                       str(config), "--steps", "2", "--out", str(tmp_path / "bag.pt"), "--eval",
                       "--json"]) == 0
    assert '"after"' in capsys.readouterr().out
    assert len(load_checkpoint(tmp_path / "bag.pt")["adapted"]["pairs"]) == 2


def test_pmt_adapt_reports_bad_inputs(tmp_path, tiny_checkpoint, capsys):
    code = adapt_cli.main(["--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path / "none"),
                       "--out", str(tmp_path / "x.pt")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("refinement", [0, 4])
@pytest.mark.parametrize("which", ["disparity", "all", "disparity_head"])
def test_adapter_runs_on_the_edge_variant(tmp_path, which, refinement):
    """Any variant adapts: edge has a cost-volume disparity head, and run 7's graph an H/4
    refinement stage; every disparity group includes the stage that makes the full-size
    disparity (refinement or upsampler), disparity_head leaves segmentation alone."""
    from pmt_perception.config import load_model_config
    from pmt_perception.network import build_model

    torch.manual_seed(0)
    config = load_model_config("edge", num_classes=8, spp_f1_windows=(8, 4), spp_f2_windows=(4, 2),
                               max_disparity=16, disparity_refinement_scale=refinement)
    model = build_model(config).eval()
    settings = adapt_settings.load_settings(small_settings(tmp_path), parameters=which)
    adapter = adapt.Adapter(model, settings, device=torch.device("cpu"))
    last_stage = model.disparity_refinement if refinement else model.disparity.upsample
    assert all(p.requires_grad for p in last_stage.parameters())
    if which == "disparity_head":
        assert not any(p.requires_grad for p in model.coarse_segmentation.parameters())
        assert not any(p.requires_grad for p in model.disparity.context.parameters())
    left, right = textured_pair()
    pair = adapter.prepare(0, left, right)
    before = [p.detach().clone() for p in adapter.parameters]
    assert adapter.step(pair, (slice(0, 64), slice(0, 128)))["applied"]
    assert any(not torch.equal(b, p) for b, p in zip(before, adapter.parameters))


def test_disparity_head_group_leaves_segmentation_untouched(tmp_path, tiny_checkpoint):
    """parameters=disparity_head adapts only what runs after Fdisp: both segmentation outputs
    stay bit-identical while the disparity changes."""
    model, _ = load_model(tiny_checkpoint)
    settings = adapt_settings.load_settings(small_settings(tmp_path), parameters="disparity_head")
    adapter = adapt.Adapter(model, settings, device=torch.device("cpu"))
    assert all(p.requires_grad == n.startswith("disparity.head.")
               for n, p in adapter.model.named_parameters())
    left, right = textured_pair()
    pair = adapter.prepare(0, left, right)
    with torch.no_grad():
        before = adapt.forward_padded(adapter.model, pair.left, pair.right)
    for _ in range(2):
        assert adapter.step(pair, (slice(0, 64), slice(0, 128)))["applied"]
    with torch.no_grad():
        after = adapt.forward_padded(adapter.model, pair.left, pair.right)
    assert not torch.equal(before[0], after[0])
    assert torch.equal(before[1], after[1]) and torch.equal(before[2], after[2])
    with pytest.raises(ValueError, match="unknown module"):
        adapt.select_parameters(adapter.model, ["nope"])


# ----------------------------------------------------------------------------- online (node)
def online(tmp_path, tiny_checkpoint, installed, **kwargs):
    from pmt_perception.ros.adaptation import OnlineAdaptation

    model, _ = load_model(tiny_checkpoint)
    settings = adapt_settings.load_settings(small_settings(tmp_path, crop=[32, 64]), parameters="disparity")
    return OnlineAdaptation(model, settings, install=installed.append, device=torch.device("cpu"),
                            **kwargs)


def test_online_adaptation_steps_swaps_and_discards(tmp_path, tiny_checkpoint, monkeypatch):
    installed = []
    worker = online(tmp_path, tiny_checkpoint, installed, every_n=1, min_swap_interval=0.0)
    left, right = textured_pair()
    assert worker.step(left, right) and worker.stats.steps == 1 and len(installed) == 1
    assert installed[0] is not worker.adapter.model           # a frozen copy, not the live one
    assert float(worker.diagnostics()["adapt_swap_seconds"]) >= 0.0   # timed, no longer nan
    assert not any(p.requires_grad for p in installed[0].parameters())
    original = worker.adapter.losses

    def poisoned(*args, **kwargs):
        terms = original(*args, **kwargs)
        terms["total"] = terms["total"] * float("nan")
        return terms
    monkeypatch.setattr(worker.adapter, "losses", poisoned)
    assert not worker.step(left, right)
    assert worker.stats.discarded == 1 and len(installed) == 1   # nothing swapped in
    assert worker.diagnostics()["adapt_discarded_steps"] == "1"
    # The checkpoint written from the node's adaptation loads as an ordinary one.
    payload = load_checkpoint(tiny_checkpoint)
    path = worker.save(tmp_path / "online.pt", class_names=payload["class_names"],
                       palette=payload["palette"], info={"from_checkpoint": str(tiny_checkpoint)})
    saved = load_checkpoint(path)
    assert saved["adapted"]["online"] is True and saved["adapted"]["steps"] == 1
    assert saved["model_config"] == payload["model_config"]


def test_online_steps_per_pair_share_the_pairs_preparation(tmp_path, tiny_checkpoint, monkeypatch):
    installed, proxies = [], []
    worker = online(tmp_path, tiny_checkpoint, installed, every_n=1, steps_per_pair=3,
                    min_swap_interval=3600.0)
    original = P.sgbm_proxy
    monkeypatch.setattr(P, "sgbm_proxy", lambda *a, **k: proxies.append(1) or original(*a, **k))
    left, right = textured_pair()
    assert worker.step(left, right)
    assert worker.stats.steps == 3 and worker.adapter.steps_done == 3
    assert len(proxies) == 1                      # one SGBM proxy (and teacher pass) for the pair
    assert len(installed) == 1                    # swaps stay bounded by min_swap_interval
    # The online warm-up: the third update ran at 3/warmup of the learning rate.
    settings = worker.settings
    assert worker.adapter.optimizer.param_groups[0]["lr"] == pytest.approx(
        settings.lr * 3 / settings.online_warmup_steps)
    worker._stop = True                           # stopping: no further update of a pair
    assert not worker.step(left, right) and worker.stats.steps == 3
    with pytest.raises(ValueError, match="adapt_steps_per_pair"):
        online(tmp_path, tiny_checkpoint, installed, steps_per_pair=0)


def test_online_offer_never_waits_for_a_held_step(tmp_path, tiny_checkpoint, monkeypatch):
    """While a (deliberately stuck) step holds the thread, every offer returns at once and the
    mailbox keeps only the newest pair (bounded memory)."""
    import threading

    installed = []
    worker = online(tmp_path, tiny_checkpoint, installed, every_n=2)
    entered, release = threading.Event(), threading.Event()

    def held_step(left, right):
        entered.set()
        release.wait(30)
        return True
    monkeypatch.setattr(worker, "step", held_step)
    worker.start()
    left, right = textured_pair()
    worker.offer(left, right)
    assert worker.offer(left, right)          # the 2nd pair is queued and taken by the thread
    assert entered.wait(10)
    delivered = 0
    for _ in range(20):                        # "frames" published while the step is held
        worker.offer(left, right)
        delivered += 1
    assert delivered == 20 and worker.stats.offered == 22
    assert worker.stats.queued == 11 and worker.stats.replaced == 9   # one slot, newest wins
    release.set()
    assert worker.stop(timeout=10)


def test_node_wires_online_adaptation(tmp_path, tiny_checkpoint):
    """adapt: true starts the thread on activate; a step's weights reach the node's predictor;
    deactivate stops it and writes adapt_save_path. No DDS traffic: the pair is offered directly."""
    import time

    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from pmt_perception.ros.node import StereoSegNode

    # An ONNX runtime builds a graph per input size, so the swap warms it up (eager would not).
    swap_backend = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "eager"
    context = Context()
    rclpy.init(context=context, domain_id=41)
    node = None
    try:
        node = StereoSegNode(context=context, parameter_overrides=[
            Parameter("autostart", value=False), Parameter("checkpoint", value=str(tiny_checkpoint)),
            Parameter("backend", value=swap_backend), Parameter("adapt", value=True),
            Parameter("adapt_every_n", value=1), Parameter("adapt_swap_interval", value=0.0),
            Parameter("adapt_save_path", value=str(tmp_path / "online.pt"))])
        assert node.start()
        worker, first = node._adaptation, node.predictor
        assert worker is not None
        pair = textured_pair()
        node._last_frame_size = pair[0].shape[:2]    # as if a frame of that size was predicted
        worker.offer(*pair)
        deadline = time.monotonic() + 60
        while worker.stats.swaps < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.stats.steps == 1 and node.predictor is not first
        # The new Predictor ran once at the latest frame's size before the swap, in the
        # adaptation thread (a graph build must not land on the publishing path).
        assert node.predictor.backend == swap_backend
        assert (node.predictor.warmup_seconds is not None) == (swap_backend != "eager")

        # ~/save_adapted over DDS (a second node publishes std_msgs/Empty): written at once.
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import Empty
        operator = rclpy.create_node("operator", context=context)
        publisher = operator.create_publisher(Empty, "/stereo_seg_node/save_adapted", 1)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 30
        while not (tmp_path / "online.pt").exists() and time.monotonic() < deadline:
            publisher.publish(Empty())
            executor.spin_once(timeout_sec=0.2)
        assert load_checkpoint(tmp_path / "online.pt")["adapted"]["steps"] == 1
        (tmp_path / "online.pt").unlink()
        assert node._save_adapted()[0]                      # what the Trigger service answers
        executor.remove_node(node)
        operator.destroy_node()

        node.trigger_deactivate()
        assert node._adaptation is None
        assert load_checkpoint(tmp_path / "online.pt")["adapted"]["steps"] == 1
        saved, message = node._save_adapted()                # nothing running: refused, clear
        assert not saved and "not running" in message
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=context)


def test_sgbm_proxy_narrow_image_shrinks_the_search_range():
    left, right = textured_pair(height=32, width=40, disparity=3)
    proxy = P.sgbm_proxy(left, right, P.sgbm_settings("3way"))     # 128 candidates > 40 px
    assert proxy.shape == (32, 40)
    assert np.isnan(P.sgbm_proxy(left[:, :16], right[:, :16], "3way")).all()
