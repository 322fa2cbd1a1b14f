"""Predictor: round trips, padding/cropping, precisions, checkpoints, bad inputs."""
import dataclasses
import threading

import numpy as np
import pytest
import torch

from pmt_perception.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from pmt_perception.config import load_model_config
from pmt_perception.frames import photometric_confidence
from pmt_perception.inference import Predictor
from pmt_perception.network import build_model, pmt

SMALL = dict(backbone="resnet18", spp_f1_windows=(8, 4), spp_f2_windows=(4, 2), num_classes=5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(load_model_config("fast", **SMALL)).eval()


class UnsafePayload:
    """A plain Python object: pickling it makes a checkpoint that is not weights-only."""


def random_pair(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2))


@pytest.mark.parametrize("size", [(64, 96), (70, 101), (33, 47)])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predict_shapes_dtypes_and_cropping(model, size, precision):
    predictor = Predictor(model, device="cpu", precision=precision)
    left, right = random_pair(*size)
    out = predictor.predict(left, right, confidence=True, extras=True)
    assert out.labels.shape == out.disparity.shape == size
    assert out.labels.dtype == np.uint8 and out.disparity.dtype == np.float32
    assert out.labels.max() < 5
    assert out.seg_confidence.shape == out.disparity_confidence.shape == size
    assert (out.seg_confidence >= 1 / 5 - 1e-4).all() and (out.seg_confidence <= 1 + 1e-6).all()
    assert (out.disparity_confidence >= 0).all() and (out.disparity_confidence <= 1).all()
    assert out.coarse_labels.shape == size
    assert set(out.timings) == {"pre", "model", "post"}


def test_padding_and_cropping_match_a_manual_padded_forward(model):
    """The predictor's crop of its padded forward equals the network run on the same padding."""
    predictor = Predictor(model, device="cpu", precision="fp32", channels_last=False)
    left, right = random_pair(50, 70, seed=1)
    out = predictor.predict(left, right)

    def to_tensor(a):
        return torch.from_numpy(a).permute(2, 0, 1).float().div(255).unsqueeze(0)

    def pad(t):
        return torch.nn.functional.pad(t, (0, 96 - 70, 0, 64 - 50), mode="replicate")

    with torch.no_grad():
        reference = model(pad(to_tensor(left)), pad(to_tensor(right)))
    np.testing.assert_allclose(out.disparity, reference.disparity[0, 0, :50, :70].numpy(), atol=1e-4)
    np.testing.assert_array_equal(out.labels, reference.refined_logits[0, :, :50, :70].argmax(0).numpy())


def test_inference_scale_runs_the_network_smaller_and_answers_at_the_input_size(model):
    """inference_scale 0.5 on 128 x 200: the network sees the pair resized to 64 x 96 (sides
    rounded to multiples of 32), and the outputs equal the network's own outputs on that
    resized pair, brought back to 128 x 200 with disparity in input pixels (x 200 / 96)."""
    scaled = Predictor(model, device="cpu", channels_last=False, inference_scale=0.5)
    assert scaled.network_size(128, 200) == (64, 96)
    assert scaled.network_size(480, 720) == (256, 352)
    assert Predictor(model, device="cpu", inference_scale=2 / 3).network_size(480, 720) == (320, 480)
    left, right = random_pair(128, 200, seed=5)
    out = scaled.predict(left, right, confidence=True, extras=True)
    assert out.labels.shape == out.disparity.shape == out.seg_confidence.shape == (128, 200)
    assert out.coarse_labels.shape == out.disparity_confidence.shape == (128, 200)

    def resized(a):   # uint8 in, uint8 out, as the Predictor resizes uint8 images on the CPU
        t = torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0)
        return torch.nn.functional.interpolate(t, size=(64, 96), mode="bilinear", antialias=True,
                                               align_corners=False)[0].permute(1, 2, 0).numpy()

    small = Predictor(model, device="cpu", channels_last=False).predict(resized(left), resized(right))
    back = torch.nn.functional.interpolate(torch.from_numpy(small.disparity)[None, None],
                                           size=(128, 200), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out.disparity, back[0, 0].numpy() * 200 / 96, rtol=1e-4, atol=1e-3)
    # Nearest neighbour (half-pixel centres): input pixel (y, x) takes the small map's label at
    # (floor((y + 0.5) * 64 / 128), floor((x + 0.5) * 96 / 200)); the column ratio is not whole.
    rows = np.floor((np.arange(128) + 0.5) * 64 / 128).astype(int)
    cols = np.floor((np.arange(200) + 0.5) * 96 / 200).astype(int)
    np.testing.assert_array_equal(out.labels, small.labels[rows][:, cols])
    # Float inputs are resized as floats: the same network input within 1/255.
    as_float = [torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in (left, right)]
    from_float = scaled.predict(*as_float)
    assert from_float.disparity.shape == (128, 200)
    np.testing.assert_allclose(from_float.disparity, out.disparity, atol=0.05)
    with pytest.raises(ValueError, match="inference_scale"):
        Predictor(model, device="cpu", inference_scale=0.0)


def test_float_tensor_inputs_equal_uint8_inputs(model):
    predictor = Predictor(model, device="cpu")
    left, right = random_pair(64, 96, seed=2)

    def as_float(a):
        return torch.from_numpy(a).permute(2, 0, 1).float() / 255

    a = predictor.predict(left, right)
    b = predictor.predict(as_float(left), as_float(right))
    np.testing.assert_allclose(a.disparity, b.disparity, atol=1e-5)


def test_checkpoint_round_trip(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", model=model, config=model.config,
                           class_names=list("abcde"), palette=[[i, i, i] for i in range(5)])
    from_file = Predictor(path, device="cpu")
    from_model = Predictor(model, device="cpu")
    left, right = random_pair(64, 96, seed=3)
    np.testing.assert_allclose(from_file.predict(left, right).disparity,
                               from_model.predict(left, right).disparity, atol=1e-5)
    assert from_file.class_names == list("abcde")
    assert from_file.colorize(np.array([[4, 200]], np.uint8)).tolist() == [[[4, 4, 4], [0, 0, 0]]]



def test_a_checkpoint_of_a_pretrained_recipe_loads_as_stored_without_downloading(model, tmp_path,
                                                                                  monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not fetch ImageNet weights")

    monkeypatch.setattr(pmt, "load_imagenet_weights", no_download)
    config = dataclasses.replace(model.config, pretrained=True)
    path = save_checkpoint(tmp_path / "pretrained.pt", model=model, config=config,
                           class_names=list("abcde"), palette=[[0, 0, 0]] * 5)
    loaded, payload = load_model(path)
    assert loaded.config == config and payload["model_config"]["pretrained"] is True
    reference = model.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in loaded.state_dict().items())


def test_fp16_weights_checkpoint_loads(model, tmp_path):
    path = save_checkpoint(tmp_path / "half.pt", model=model, config=model.config,
                           class_names=list("abcde"), palette=[[0, 0, 0]] * 5, half=True)
    assert load_checkpoint(path)["model_state"]["disparity.head.predict.weight"].dtype == torch.float16
    left, right = random_pair(64, 96)
    assert np.isfinite(Predictor(path, device="cpu").predict(left, right).disparity).all()


def test_corrupt_and_unsafe_checkpoints_are_refused(tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(truncated)

    unsafe = tmp_path / "unsafe.pt"  # any pickled object: weights_only loading must refuse it
    torch.save({"format": "pmt_perception/1", "obj": UnsafePayload()}, unsafe)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(unsafe)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a pmt_perception checkpoint"):
        load_checkpoint(foreign)


@pytest.mark.parametrize("left, right, message", [
    (np.zeros((64, 96, 3), np.float32), np.zeros((64, 96, 3), np.uint8), "uint8"),
    (np.zeros((64, 96), np.uint8), np.zeros((64, 96), np.uint8), "H x W x 3"),
    (np.zeros((64, 96, 3), np.uint8), np.zeros((64, 80, 3), np.uint8), "sizes differ"),
    (torch.zeros(2, 64, 96), torch.zeros(2, 64, 96), "3 x H x W"),
    ([1, 2, 3], [1, 2, 3], "numpy array or torch tensor"),
])
def test_bad_inputs_raise_clear_errors(model, left, right, message):
    with pytest.raises(ValueError, match=message):
        Predictor(model, device="cpu").predict(left, right)


def test_bad_settings_raise_clear_errors(model):
    with pytest.raises(ValueError, match="precision"):
        Predictor(model, device="cpu", precision="int8")
    with pytest.raises(ValueError, match="bf16"):
        Predictor(model, device="cpu", precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Predictor(model, device="cuda")


def test_predict_is_thread_safe(model):
    predictor = Predictor(model, device="cpu")
    left, right = random_pair(64, 96, seed=4)
    expected = predictor.predict(left, right).disparity
    results = []
    threads = [threading.Thread(target=lambda: results.append(predictor.predict(left, right).disparity))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(np.allclose(r, expected, atol=1e-5) for r in results)


def test_photometric_confidence_prefers_the_true_disparity():
    torch.manual_seed(0)
    left = torch.rand(3, 32, 64)
    right = torch.zeros_like(left)
    right[..., :-5] = left[..., 5:]                          # left(x) = right(x - 5): d = 5
    true = photometric_confidence(left, right, torch.full((32, 64), 5.0))
    wrong = photometric_confidence(left, right, torch.full((32, 64), 2.0))
    assert true[:, 10:].mean() > 0.9 and wrong[:, 10:].mean() < 0.5
    assert (true[:, :5] == 0).all()                          # x - d leaves the image


def test_batchnorm_folding_keeps_outputs_and_leaves_the_model_alone(model):
    trained_like = build_model(model.config).train()
    with torch.no_grad():  # non-trivial running statistics
        trained_like(torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96))
    trained_like.eval()
    folded = Predictor(trained_like, device="cpu", fold_bn=True)
    plain = Predictor(trained_like, device="cpu", fold_bn=False)
    left, right = random_pair(64, 96, seed=5)
    np.testing.assert_allclose(folded.predict(left, right).disparity,
                               plain.predict(left, right).disparity, atol=1e-3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trained_like.modules())
