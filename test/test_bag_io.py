"""Bags written by pmt-bag-write read back exactly (both storages), pair like the node, refuse
to be overwritten, and a broken bag gives one clear error naming it."""
from __future__ import annotations

import numpy as np
import pytest

from pmt_perception.config import from_dict
from pmt_perception.data import SyntheticStereo, load_data_config
from pmt_perception.data.bag import ReadStatistics, read_stereo_frames
from pmt_perception.data.bag_io import BagError, read_messages, typestore
from pmt_perception.data.synthetic.settings import GeneratorSettings
from pmt_perception.ros.bags import writer

SIZE = (64, 96)
NUM = 3
RATE = 7.0   # an odd rate: stamps are not round numbers of seconds


def write(out, *extra):
    argv = ["--out", str(out), "--num", str(NUM), "--size", f"{SIZE[0]}x{SIZE[1]}",
            "--rate", str(RATE), *extra]
    return writer.main(argv)


def reference_samples():
    config = load_data_config("synthetic")
    settings = from_dict(GeneratorSettings, config.loader, source="synthetic loader")
    dataset = SyntheticStereo(settings, split=config.val_split, length=NUM, size=SIZE)
    return [dataset[i] for i in range(NUM)]


def to_uint8(image):
    return (np.clip(image.numpy().transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("storage,compression", [("sqlite3", "none"), ("mcap", "message")])
def test_round_trip_is_pixel_and_stamp_exact(tmp_path, storage, compression):
    bag = tmp_path / f"bag_{storage}"
    assert write(bag, "--storage", storage, "--compression", compression) == 0
    stats = ReadStatistics()
    frames = list(read_stereo_frames(bag, statistics=stats))
    assert (stats.left_images, stats.frames, stats.with_seg, stats.with_disparity) == (NUM,) * 4
    for index, (frame, sample) in enumerate(zip(frames, reference_samples())):
        expected_stamp = writer.frame_stamps(index, start_time=1_700_000_000.0, rate=RATE)
        assert frame.stamp_ns == expected_stamp
        np.testing.assert_array_equal(frame.left, to_uint8(sample["left"]))
        np.testing.assert_array_equal(frame.right, to_uint8(sample["right"]))
        np.testing.assert_array_equal(frame.seg, sample["seg"].numpy())
        np.testing.assert_array_equal(frame.disparity, sample["disparity"].numpy())
        assert frame.camera.fx == pytest.approx(sample["meta"]["fx"])
        assert frame.camera.baseline == pytest.approx(sample["meta"]["baseline"])
    # Every message carries its frame's stamp in the header and as its log time.
    store, seen = typestore(), {}
    for topic, msgtype, log_time, data in read_messages(bag):
        header = store.deserialize_cdr(data, msgtype).header
        assert header.stamp.sec * 1_000_000_000 + header.stamp.nanosec == log_time
        seen[topic] = seen.get(topic, 0) + 1
    assert seen == {t: NUM for t in ("left/image_rect", "right/image_rect", "left/camera_info",
                                     "right/camera_info", "ground_truth/seg",
                                     "ground_truth/disparity")}


def test_size_h_w_still_works_with_a_deprecation_message(capsys):
    assert writer.build_parser().parse_args(["--out", "x", "--num", "1", "--size", "64x96"]).size \
        == (64, 96)
    capsys.readouterr()
    args = writer.build_parser().parse_args(["--out", "x", "--num", "1", "--size", "64", "96"])
    assert args.size == (64, 96)
    assert "--size H W is deprecated; use --size 64x96" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        writer.build_parser().parse_args(["--out", "x", "--num", "1", "--size", "64", "x"])


def test_unsynchronized_stamps_need_approximate_pairing(tmp_path):
    bag = tmp_path / "jittered"
    assert write(bag, "--right-stamp-offset", "0.004", "--no-ground-truth",
                 "--gt-disparity-as", "image") == 0
    exact = ReadStatistics()
    assert list(read_stereo_frames(bag, statistics=exact)) == []
    assert exact.unpaired == NUM
    frames = list(read_stereo_frames(bag, approximate=True, slop=0.01))
    assert len(frames) == NUM and all(f.seg is None and f.disparity is None for f in frames)


def test_existing_bag_is_refused_unless_overwrite(tmp_path, capsys):
    bag = tmp_path / "bag"
    assert write(bag) == 0
    before = sorted(p.name for p in bag.iterdir())
    assert write(bag) == 2
    assert "exists already" in capsys.readouterr().err
    assert sorted(p.name for p in bag.iterdir()) == before
    assert write(bag, "--overwrite", "--storage", "mcap") == 0
    assert any(p.suffix == ".mcap" for p in bag.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag_error_names_the_bag(tmp_path, storage, capsys):
    from pmt_perception import evaluate

    bag = tmp_path / f"broken_{storage}"
    assert write(bag, "--storage", storage) == 0
    data_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 3])
    with pytest.raises(BagError, match=str(bag)):
        list(read_stereo_frames(bag))
    code = evaluate.main(["--bag", str(bag), "--checkpoint", "unused.pt", "--out",
                          str(tmp_path / "eval")])
    assert code == 2 and str(bag) in capsys.readouterr().err


def test_folder_without_metadata_is_not_a_bag(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(BagError, match="not a ROS 2 bag folder"):
        list(read_stereo_frames(tmp_path / "junk"))
    with pytest.raises(BagError, match="no such file"):
        list(read_stereo_frames(tmp_path / "missing"))


def test_a_corrupted_mcap_chunk_is_an_error_naming_the_bag(tmp_path, capsys):
    """MCAP chunks carry their CRC-32: a flipped byte inside a chunk fails reading (and
    pmt-evaluate --bag, exit 2) with the bag's name, instead of decoding other numbers."""
    from pmt_perception import evaluate

    bag = tmp_path / "crc"
    assert write(bag, "--storage", "mcap") == 0
    list(read_stereo_frames(bag))                        # intact: reads
    mcap = next(bag.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    data[len(data) // 3] ^= 0xFF                         # inside the (uncompressed) image chunk
    mcap.write_bytes(bytes(data))
    with pytest.raises(BagError, match="checksum") as caught:
        list(read_stereo_frames(bag))
    assert str(bag) in str(caught.value)
    capsys.readouterr()
    assert evaluate.main(["--bag", str(bag), "--out", str(tmp_path / "eval"), "--device",
                          "cpu"]) == 2
    assert str(bag) in capsys.readouterr().err


def test_cycle_repeats_a_real_pair_and_fx_baseline_fill_missing_calibration(tmp_path):
    """A Middlebury 2006-style scene (no calib.txt) becomes a long bag: --cycle repeats its one
    pair, --fx / --baseline give the camera_info it lacks; without them a clear refusal."""
    import cv2

    scene = tmp_path / "scene"
    scene.mkdir()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(scene / "thingL.png"), image)
    cv2.imwrite(str(scene / "thingR.png"), np.roll(image, -4, axis=1))
    cv2.imwrite(str(scene / "thingGT.png"), np.full((48, 64), 12, np.uint8))
    common = ["--data", "middlebury", "--data-root", str(scene), "--num", "3"]
    with pytest.raises(SystemExit, match="--fx and --baseline"):
        writer.main(["--out", str(tmp_path / "no_calib"), "--cycle", *common])
    with pytest.raises(SystemExit, match="has 1 samples"):
        writer.main(["--out", str(tmp_path / "short"), "--fx", "50", "--baseline", "0.1", *common])
    assert writer.main(["--out", str(tmp_path / "bag"), "--cycle", "--fx", "50", "--baseline",
                        "0.1", *common]) == 0
    frames = list(read_stereo_frames(tmp_path / "bag"))
    assert len(frames) == 3
    assert all(np.array_equal(f.left, frames[0].left) for f in frames)
    assert frames[0].camera.fx == pytest.approx(50) and frames[0].camera.baseline == pytest.approx(0.1)
    assert frames[0].disparity is not None and frames[0].disparity.max() > 0
