"""The node's parts without DDS: parameters, the newest-wins pipeline, input checks, docs."""
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from pmt_perception.config import config_dir
from pmt_perception.ros.conversions import numpy_to_image
from pmt_perception.ros.diagnostics import PROBLEM_KINDS, ProblemLog, StageStatistics
from pmt_perception.ros.inputs import CameraCache, InputProblem, decode_stereo_set
from pmt_perception.ros.outputs import OUTPUT_TOPICS
from pmt_perception.ros.params import PARAMETER_SPECS, check_value, load_defaults
from pmt_perception.ros.stereo_source import SOURCE_PARAMETER_SPECS, CameraModel, camera_infos, encode
from pmt_perception.ros.worker import FramePipeline, InOrderResults, LatestSlot, SlotClosed

DOCS = Path(__file__).resolve().parent.parent / "docs" / "node.md"


# ----------------------------------------------------------------------------- parameters
def test_yaml_defaults_and_specs_name_the_same_parameters(tmp_path):
    assert set(load_defaults()) == set(PARAMETER_SPECS)
    assert set(load_defaults(config_dir() / "stereo_source.yaml", SOURCE_PARAMETER_SPECS)) == \
        set(SOURCE_PARAMETER_SPECS)
    broken = tmp_path / "broken.yaml"
    broken.write_text((config_dir() / "stereo_seg.yaml").read_text().replace("sync_slop", "sync_slp"))
    with pytest.raises(ValueError, match="missing \\['sync_slop'\\], unknown \\['sync_slp'\\]"):
        load_defaults(broken)


def test_check_value_enforces_choices_and_ranges():
    assert check_value("precision", "bf16") is None
    assert "one of" in check_value("precision", "int8")
    assert ">= 1" in check_value("points_stride", 0)
    assert "[H, W]" in check_value("warmup_size", [256])
    assert check_value("input_reliability", "reliable") is None


def test_docs_table_every_parameter_topic_and_problem_kind():
    text = DOCS.read_text()
    for name in [*PARAMETER_SPECS, *SOURCE_PARAMETER_SPECS, *OUTPUT_TOPICS, *PROBLEM_KINDS,
                 "seg_classes", "left/image_rect", "right/camera_info"]:
        assert f"`{name}`" in text, f"docs/node.md does not list {name}"


def test_docs_parameter_tables_are_current(tmp_path):
    """docs/node.md's tables are generated (python -m pmt_perception.ros.param_docs); a spec or
    YAML default changed without regenerating them fails here."""
    from pmt_perception.ros import param_docs

    assert param_docs.render(DOCS.read_text()) == DOCS.read_text(), \
        "docs/node.md is not current: run python -m pmt_perception.ros.param_docs"
    assert param_docs.main(["--check", str(DOCS)]) == 0
    stale = tmp_path / "node.md"
    stale.write_text(DOCS.read_text().replace("Pairs per second.", "Frames per second."))
    assert param_docs.main(["--check", str(stale)]) == 1
    assert param_docs.main([str(stale)]) == 0 and stale.read_text() == DOCS.read_text()


# ----------------------------------------------------------------------------- worker
def test_latest_slot_replaces_unread_items_and_counts_them():
    slot = LatestSlot()
    assert slot.put(1) is False and slot.put(2) is True and slot.put(3) is True
    assert slot.take() == 3 and slot.dropped == 2
    slot.close()
    with pytest.raises(SlotClosed):
        slot.take()


def test_pipeline_drops_old_inputs_while_the_model_is_busy_and_loses_no_result():
    release = threading.Event()
    published, errors = [], []

    def process(item):
        if item == 0:
            release.wait(5)          # a slow first frame: later inputs pile up meanwhile
        if item == 7:
            raise RuntimeError("bad frame")
        return item

    pipeline = FramePipeline(process=process, publish=published.append,
                             on_error=lambda stage, error: errors.append((stage, str(error))))
    pipeline.start()
    pipeline.submit(0)
    time.sleep(0.2)
    for item in range(1, 6):
        pipeline.submit(item)        # 1..4 are replaced by their successor
    release.set()
    deadline = time.monotonic() + 5
    while published[-1:] != [5] and time.monotonic() < deadline:
        time.sleep(0.01)
    pipeline.submit(7)
    time.sleep(0.2)
    pipeline.submit(8)
    while published[-1:] != [8] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pipeline.stop()
    assert published == [0, 5, 8] and pipeline.dropped == 4
    assert errors == [("process", "bad frame")]


def test_in_order_results_hold_newer_frames_back_until_older_ones_leave_the_model():
    results = InOrderResults(capacity=2)
    taken = []
    publisher = threading.Thread(target=lambda: taken.extend(results.take() for _ in range(3)))
    publisher.start()
    for number in (5, 6, 7):
        results.started(number)
    results.finished(7, "seven")
    results.finished(6, "six")
    time.sleep(0.1)
    assert taken == []                   # frame 5 is still in the model
    results.finished(5)                  # an unusable set: nothing to publish, no wait
    deadline = time.monotonic() + 2
    while len(taken) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert taken == [(6, "six"), (7, "seven")]
    results.started(8)
    results.finished(8, "eight")
    publisher.join(2)
    assert taken == [(6, "six"), (7, "seven"), (8, "eight")]
    results.finished(4, "four")          # older than one handed out: counted, never handed out
    assert results.late == 1
    results.close()
    with pytest.raises(SlotClosed):
        results.take()


def test_in_order_results_block_a_newer_result_when_full_but_never_the_oldest():
    results = InOrderResults(capacity=1)
    for number in (1, 2, 3):
        results.started(number)
    results.finished(2, "two")
    blocked = threading.Thread(target=results.finished, args=(3, "three"))
    blocked.start()
    time.sleep(0.1)
    assert blocked.is_alive()            # full, and 3 is newer than what waits
    results.finished(1, "one")           # the oldest always gets in (else nothing could leave)
    assert [results.take(), results.take()] == [(1, "one"), (2, "two")]
    blocked.join(2)
    assert not blocked.is_alive() and results.take() == (3, "three")


def test_pipeline_with_two_model_workers_runs_two_frames_at_once_and_publishes_in_order():
    both_started = threading.Barrier(2, timeout=5)
    one_finished = threading.Event()
    published, seen_when_zero_finished = [], []

    def process(item):
        if item in (0, 1):
            both_started.wait()          # fails unless the two frames run at once
        if item == 1:
            one_finished.set()
        if item == 0:                    # frame 0 finishes after frame 1
            one_finished.wait(5)
            time.sleep(0.1)
            seen_when_zero_finished.extend(published)
        return item

    pipeline = FramePipeline(process=process, publish=published.append, model_workers=2,
                             on_error=lambda stage, error: pytest.fail(f"{stage}: {error}"))
    pipeline.start()
    pipeline.submit(0)
    time.sleep(0.1)
    pipeline.submit(1)
    deadline = time.monotonic() + 5
    for item in (1, 2, 3):
        if item > 1:
            pipeline.submit(item)
        while published[-1:] != [item] and time.monotonic() < deadline:
            time.sleep(0.01)
    assert pipeline.stop()
    # Frame 1 waited for frame 0 instead of going out first: order kept, nothing wasted.
    assert seen_when_zero_finished == [] and published == [0, 1, 2, 3]
    assert pipeline.late == 0 and pipeline.dropped == 0


# ----------------------------------------------------------------------------- inputs
CAMERA = CameraModel(width=8, height=6, fx=10.0, fy=10.0, cx=3.5, cy=2.5, baseline=0.1)


def stereo_set(encoding="rgb8"):
    rgb = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    left, right = (numpy_to_image(encode(rgb, encoding), encoding) for _ in range(2))
    return [left, right, *camera_infos(CAMERA, left_frame_id="l", right_frame_id="r")]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "mono16"])
def test_decode_accepts_the_supported_encodings(encoding):
    frame = decode_stereo_set(*stereo_set(encoding), CameraCache())
    assert frame.left.shape == (6, 8, 3) and frame.left.dtype == np.uint8
    assert frame.camera.baseline == pytest.approx(0.1)


def test_decode_names_each_problem():
    def problem(mutate):
        messages = stereo_set()
        mutate(messages)
        with pytest.raises(InputProblem) as caught:
            decode_stereo_set(*messages, CameraCache())
        return caught.value.kind, str(caught.value)

    assert problem(lambda m: setattr(m[0], "encoding", "32FC1"))[0] == "encoding"
    assert problem(lambda m: setattr(m[1], "width", 7))[0] == "size_mismatch"
    assert problem(lambda m: setattr(m[0], "data", b"\0" * 10))[0] == "malformed_image"
    assert problem(lambda m: setattr(m[3], "p", [0.0] * 12))[0] == "camera_info"
    kind, message = problem(lambda m: setattr(m[2], "width", 16))
    assert kind == "camera_info" and "differ" in message
    missing_baseline = CameraInfo(width=8, height=6, p=[10.0, 0, 3.5, 0, 0, 10.0, 2.5, 0, 0, 0, 1, 0])
    assert "baseline" in problem(lambda m: m.__setitem__(3, missing_baseline))[1]


# ----------------------------------------------------------------------------- diagnostics
def test_problem_log_counts_every_problem_but_throttles_warnings():
    warnings = []
    log = ProblemLog(warnings.append, throttle=60.0)
    for _ in range(3):
        log.report("encoding", "left image encoding 'yuv422' is not supported")
    log.report("camera_info", "camera_info rejected")
    assert log.snapshot()["encoding"] == 3 and log.snapshot()["camera_info"] == 1
    assert len(warnings) == 2 and "[encoding #1" in warnings[0]
    with pytest.raises(ValueError):
        log.report("no_such_kind", "?")


def test_stage_statistics_drain_per_period():
    stats = StageStatistics()
    stats.add_many({"model": 0.010, "convert": 0.001})
    stats.add("model", 0.030)
    assert stats.drain() == {"model": (2, pytest.approx(20.0), pytest.approx(30.0)),
                             "convert": (1, pytest.approx(1.0), pytest.approx(1.0))}
    assert stats.drain() == {}


# ----------------------------------------------------------------------------- source
def test_source_reads_a_pmt_synth_folder(tmp_path):
    from pmt_perception.data.synthetic import load_generator_settings, write_folder
    from pmt_perception.ros.stereo_source import folder_pool

    write_folder(tmp_path, load_generator_settings(), count=2, seed=0, size=(64, 96))
    pool = folder_pool(tmp_path, count=10)
    assert len(pool) == 2
    assert pool[0].left.shape == (64, 96, 3) and pool[0].camera.width == 96
    left_info, right_info = camera_infos(pool[0].camera, left_frame_id="l", right_frame_id="r")
    assert right_info.p[3] == pytest.approx(-pool[0].camera.fx * pool[0].camera.baseline)
    with pytest.raises(ValueError, match="no pairs"):
        folder_pool(tmp_path / "left", count=1)


def test_health_levels():
    from pmt_perception.ros.diagnostics import health

    assert health("inactive", 0.0, {}) == ("ok", "inactive")
    assert health("active", 5.0, {}) == ("ok", "5.0 Hz")
    assert health("active", 0.0, {})[0] == "warn"
    assert health("active", 0.0, {}, no_subscribers=True)[0] == "ok"
    assert health("active", 5.0, {"encoding": 2}) == ("warn", "bad input: encoding x2")
    assert health("active", 5.0, {"encoding": 1, "model": 1})[0] == "error"


def test_nodes_answer_help_without_starting_ros():
    import subprocess
    import sys

    from pmt_perception.ros.params import help_requested

    assert help_requested(["node", "--help"]) and not help_requested(["node"])
    assert not help_requested(["node", "--ros-args", "-p", "x:=--help"])
    result = subprocess.run([sys.executable, "-m", "pmt_perception.ros.node", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert all(f"  {name} = " in result.stdout for name in PARAMETER_SPECS)
