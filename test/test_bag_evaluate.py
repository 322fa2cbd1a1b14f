"""pmt-evaluate --data bag: the same report as dataset evaluation of the same frames, plus timing
and temporal stability; bags without ground truth still report; --bag is a deprecated alias."""
from __future__ import annotations

import json

import pytest
import yaml

from pmt_perception import evaluate
from pmt_perception.checkpoint import shipped_checkpoint
from pmt_perception.config import config_dir
from pmt_perception.ros.bags import writer

SIZE = (64, 96)
NUM = 3


@pytest.fixture(scope="module")
def synthetic_config(tmp_path_factory):
    """config/data/synthetic.yaml at a small size: the dataset the bags are written from."""
    config = yaml.safe_load((config_dir() / "data" / "synthetic.yaml").read_text())
    config["loader"]["size"] = list(SIZE)
    path = tmp_path_factory.mktemp("data") / "synthetic_small.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_bag(out, config, *extra):
    assert writer.main(["--out", str(out), "--num", str(NUM), "--data", str(config),
                        "--split", "val", *extra]) == 0
    return out


def run_evaluate(*argv):
    assert evaluate.main([*argv, "--threads", "1", "--figure-samples", "2"]) == 0


def test_bag_scores_exactly_as_the_dataset(tmp_path, synthetic_config, tiny_checkpoint):
    bag = write_bag(tmp_path / "bag", synthetic_config, "--storage", "mcap")
    run_evaluate("--data", "bag", "--data-root", str(bag), "--checkpoint", str(tiny_checkpoint),
                 "--out", str(tmp_path / "from_bag"))
    run_evaluate("--data", str(synthetic_config), "--split", "val", "--limit", str(NUM),
                 "--workers", "0", "--checkpoint", str(tiny_checkpoint),
                 "--out", str(tmp_path / "from_dataset"))
    from_bag = json.loads((tmp_path / "from_bag" / "report.json").read_text())
    from_dataset = json.loads((tmp_path / "from_dataset" / "report.json").read_text())
    for key in ("num_samples", "image_sizes", "class_names", "segmentation", "disparity"):
        assert from_bag[key] == from_dataset[key], key
    assert from_bag["segmentation"]["refined"] is not None
    # The same figures as dataset evaluation.
    assert {p.name for p in (tmp_path / "from_bag").glob("*.png")} == {
        p.name for p in (tmp_path / "from_dataset").glob("*.png")}
    # Per-frame timing and stability on top.
    assert [row["stamp_ns"] for row in from_bag["frames"]] == [
        writer.frame_stamps(i, start_time=1_700_000_000.0, rate=10.0) for i in range(NUM)]
    assert all(row["model_ms"] > 0 for row in from_bag["frames"])
    assert from_bag["dataset"]["frames"] == NUM and from_bag["dataset"]["unpaired_left_images"] == 0
    assert from_bag["ground_truth"] == {"frames_with_seg": NUM, "frames_with_disparity": NUM}


def test_bag_without_ground_truth_reports_timing_and_stability(tmp_path, synthetic_config,
                                                               tiny_checkpoint, capsys):
    bag = write_bag(tmp_path / "no_gt", synthetic_config, "--no-ground-truth")
    out = tmp_path / "eval"
    capsys.readouterr()
    run_evaluate("--bag", str(bag), "--checkpoint", str(tiny_checkpoint), "--out", str(out))
    assert f"--bag is deprecated; use --data bag --data-root {bag}" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["ground_truth"] == {"frames_with_seg": 0, "frames_with_disparity": 0}
    assert report["disparity"]["epe"] is None          # nothing to score against
    stability = report["temporal_stability"]
    assert stability["label_flip_fraction"]["pairs"] == NUM - 1
    assert 0.0 <= stability["label_flip_fraction"]["mean"] <= 1.0
    assert stability["disparity_change_median_px"]["median"] >= 0.0
    shares = report["output_statistics"]["class_pixel_share"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert report["timing"]["model_ms"]["mean"] > 0


def test_shipped_model_is_the_default(tmp_path, synthetic_config):
    shipped = shipped_checkpoint()
    if shipped is None:
        pytest.skip("no models/*.pt shipped")
    bag = write_bag(tmp_path / "bag", synthetic_config, "--no-ground-truth")
    out = tmp_path / "eval"
    run_evaluate("--data", "bag", "--data-root", str(bag), "--limit", "1", "--warmup", "0",
                 "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    assert report["method"]["checkpoint"] == str(shipped)
    assert report["num_samples"] == 1


def test_bag_options_are_the_nodes_defaults_and_refused_for_other_data(tmp_path, synthetic_config,
                                                                       tiny_checkpoint):
    from pmt_perception.data.bag import node_sync_settings

    node = yaml.safe_load((config_dir() / "stereo_seg.yaml").read_text())["/**"]["ros__parameters"]
    sync = node_sync_settings()
    assert (sync.approximate, sync.slop, sync.queue_size) == (
        node["approximate_sync"], node["sync_slop"], node["sync_queue_size"])
    bag = write_bag(tmp_path / "bag", synthetic_config, "--no-ground-truth")
    out = tmp_path / "eval"
    run_evaluate("--data", "bag", "--data-root", str(bag), "--checkpoint", str(tiny_checkpoint),
                 "--sync-queue-size", "7", "--limit", "1", "--out", str(out))
    dataset = json.loads((out / "report.json").read_text())["dataset"]
    assert (dataset["sync_queue_size"], dataset["sync_slop"]) == (7, node["sync_slop"])
    assert dataset["topics"]["left_image"] == "left/image_rect"
    with pytest.raises(SystemExit, match="for --data bag"):
        evaluate.main(["--data", str(synthetic_config), "--checkpoint", str(tiny_checkpoint),
                       "--sync-slop", "0.5", "--out", str(tmp_path / "other")])
