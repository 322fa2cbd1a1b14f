"""pmt-train end to end on tiny synthetic scenes: learning, settings, run files, exact resume
after SIGKILL, refusal of bad checkpoints."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch
import yaml

from pmt_perception.checkpoint import load_checkpoint
from pmt_perception.train import main
from pmt_perception.training.monitor import read_jsonl
from pmt_perception.training.state import main as state_main, slim_checkpoint
from test_train_helpers import losses_by_step, start_training, tiny_argv

pytestmark = pytest.mark.slow  # each test trains for real: seconds to a minute on 2 cores


def test_a_few_steps_on_tiny_synthetic_data_lower_the_loss(tmp_path):
    run = tmp_path / "run"
    # Two fixed scenes, no augmentation: the loss must fall if gradients, optimizer and loss
    # weights are wired correctly.
    assert main(tiny_argv(run, iterations=24, train=2, augment=False, lr=2e-3,
                          eval_interval=24)) == 0
    losses = losses_by_step(run)
    assert sorted(losses) == list(range(1, 25))
    first, last = sum(losses[s] for s in (1, 2)) / 2, sum(losses[s] for s in range(21, 25)) / 4
    assert last < 0.6 * first, losses
    # The run directory holds what the docs promise.
    for name in ("config.yaml", "resolved.yaml", "last.pt", "best.pt", "summary.json",
                 "train_log.jsonl", "val_log.jsonl"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    validation = read_jsonl(run / "val_log.jsonl")[-1]
    assert validation["step"] == 24 and 0 <= validation["refined_miou"] <= 1
    assert validation["d1"] is not None and validation["epe"] >= 0


def test_bf16_on_the_cpu_trains_in_nchw_where_dilated_convolutions_get_exact_gradients(
        tmp_path, capsys):
    # torch 2.14.1's oneDNN returns wrong or NaN weight gradients for dilated convolutions in
    # channels-last bf16 on avx512_bf16 CPUs (the `edge` refinement went NaN on step 2), so a
    # bf16 run on the CPU trains in NCHW whatever `channels_last` says, and says so.
    run = tmp_path / "run"
    assert main(tiny_argv(run, iterations=2, precision="bf16", channels_last="true")) == 0
    assert "channels_last off" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["channels_last"] is False
    assert all(torch.isfinite(torch.tensor(loss)) for loss in losses_by_step(run).values())
    # The shape that broke: 24 channels at 20x36, dilation 4. In NCHW, bf16 matches fp32.
    generator = torch.Generator().manual_seed(0)
    inputs, weight = torch.randn(2, 24, 20, 36, generator=generator), torch.randn(24, 24, 3, 3)
    gradients = []
    for dtype in (torch.bfloat16, None):
        w = weight.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            out = torch.nn.functional.conv2d(inputs, w, padding=4, dilation=4)
        out.float().square().mean().backward()
        gradients.append(w.grad)
    bf16, fp32 = gradients
    assert torch.isfinite(bf16).all()
    assert (bf16 - fp32).abs().max() <= 0.05 * fp32.abs().max()


def test_command_line_overrides_win_and_the_resolved_config_is_written(tmp_path):
    run = tmp_path / "run"
    assert main(tiny_argv(run, iterations=1, lr="3e-4", grad_clip_norm=1.0,
                          loss_overrides="{refined_lovasz: 0.5}")) == 0
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["lr"] == pytest.approx(3e-4) and isinstance(written["lr"], float)
    assert written["grad_clip_norm"] == 1.0 and written["iterations"] == 1
    assert written["loss_overrides"] == {"refined_lovasz": 0.5}
    # Mappings from the command line are merged into the file's, not replacing it.
    assert written["data_overrides"]["loader"]["size"] == [64, 96]
    resolved = yaml.safe_load((run / "resolved.yaml").read_text())
    assert resolved["model"]["variant"] == "fast" and resolved["model"]["num_classes"] == 8
    assert resolved["loss"]["refined_lovasz"] == 0.5
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-4)
    # A fresh run never overwrites an existing one.
    with pytest.raises(FileExistsError, match="--resume auto"):
        main(tiny_argv(run, iterations=1))
    with pytest.raises(SystemExit):
        main(tiny_argv(run, iterations=1, no_such_setting=3))


def test_class_weights_train_with_one_per_class_and_a_wrong_count_stops_before_any_step(tmp_path):
    weights = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 3.0]   # the 8 synthetic classes
    run = tmp_path / "run"
    assert main(tiny_argv(run, iterations=1, loss_overrides=f"{{class_weights: {weights}}}")) == 0
    assert yaml.safe_load((run / "resolved.yaml").read_text())["loss"]["class_weights"] == weights
    assert all(torch.isfinite(torch.tensor(loss)) for loss in losses_by_step(run).values())
    with pytest.raises(ValueError, match="class_weights has 3 entries, the data has 8 classes"):
        main(tiny_argv(tmp_path / "wrong", iterations=1,
                       loss_overrides="{class_weights: [1.0, 2.0, 3.0]}"))
    assert not (tmp_path / "wrong" / "last.pt").exists()

def test_resume_after_sigkill_mid_epoch_continues_bit_for_bit(tmp_path):
    # 8 training scenes, batch 2: 4 steps per epoch; checkpoints every 3 steps land mid-epoch.
    flags = dict(iterations=10, checkpoint_interval=3, workers=1, lr_schedule="cosine",
                 warmup_iterations=2)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    assert main(tiny_argv(reference, **flags)) == 0

    process = start_training(tiny_argv(interrupted, **flags), log=tmp_path / "child.log")
    deadline = time.monotonic() + 240
    try:
        # Kill as soon as the step after the first checkpoint has been logged.
        while not (interrupted / "train_log.jsonl").exists() or \
                max(losses_by_step(interrupted), default=0) < 4:
            assert process.poll() is None, (tmp_path / "child.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the child run made no progress"
            time.sleep(0.02)
        assert process.poll() is None, "the run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    saved = load_checkpoint(interrupted / "last.pt")["progress"]
    assert saved["step"] in (3, 6, 9) and saved["step"] < 10
    assert saved["position"] % 8 != 0, "the checkpoint should be mid-epoch"

    assert main(tiny_argv(interrupted, **flags) + ["--resume", "auto"]) == 0
    expected, resumed = losses_by_step(reference), losses_by_step(interrupted)
    for step in range(saved["step"] + 1, 11):
        assert resumed[step] == expected[step], (step, resumed[step], expected[step])
    final_a = load_checkpoint(reference / "last.pt")["model_state"]
    final_b = load_checkpoint(interrupted / "last.pt")["model_state"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_ends_the_run_after_its_step_with_last_pt_written(tmp_path, stop_signal):
    # No periodic checkpoint in the way: only the stop can write last.pt. One DataLoader worker,
    # which must not die of the SIGINT a terminal sends to the whole group.
    flags = dict(iterations=400, checkpoint_interval=1000, workers=1)
    run, log = tmp_path / "run", tmp_path / "child.log"
    process = start_training(tiny_argv(run, **flags), log=log, new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (run / "train_log.jsonl").exists() or max(losses_by_step(run), default=0) < 3:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the child run made no progress"
            time.sleep(0.05)
        if stop_signal == signal.SIGINT:
            os.killpg(process.pid, stop_signal)   # a terminal's Ctrl-C: the worker gets it too
        else:
            process.send_signal(stop_signal)      # `kill PID`
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert f"stopped by {stop_signal.name} after step" in text and "Traceback" not in text, text[-3000:]
    saved = load_checkpoint(run / "last.pt")["progress"]
    assert 3 <= saved["step"] < 400 and saved["step"] == max(losses_by_step(run))
    # --resume auto continues from the step after it.
    assert main(tiny_argv(run, **flags, stop_after=saved["step"] + 2) + ["--resume", "auto"]) == 0
    assert max(losses_by_step(run)) == saved["step"] + 2


def test_resume_refuses_corrupted_and_non_weights_only_checkpoints(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_argv(run, iterations=1)) == 0
    good = (run / "last.pt").read_bytes()
    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(good[: len(good) // 2])
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "pmt_perception/1", "payload": torch.nn.Linear(2, 2)}, pickled)
    weights_only = tmp_path / "weights.pt"
    slim_checkpoint(run / "last.pt", weights_only)
    for bad, message in ((corrupted, "corrupted or truncated"),
                         (pickled, "not a weights-only checkpoint"),
                         (weights_only, "not a training checkpoint")):
        fresh = tmp_path / bad.stem
        assert main(tiny_argv(fresh, iterations=2) + ["--resume", str(bad)]) == 2
        assert message in capsys.readouterr().err
        assert not (fresh / "last.pt").exists()
    # The slim (shipping) checkpoint is fp16 and still loads into a working model.
    payload = load_checkpoint(weights_only)
    assert payload["kind"] == "weights" and "optimizer" not in payload
    assert all(v.dtype == torch.float16 for v in payload["model_state"].values()
               if v.is_floating_point())


def test_shipping_may_change_config_fields_that_hold_no_weights_only(tmp_path):
    run = tmp_path / "run"
    assert main(tiny_argv(run, iterations=1)) == 0
    assert state_main([str(run / "last.pt"), str(tmp_path / "w1.pt"), "--set", "soft_argmin_window=1"]) == 0
    assert load_checkpoint(tmp_path / "w1.pt")["model_config"]["soft_argmin_window"] == 1
    num_classes = load_checkpoint(tmp_path / "w1.pt")["model_config"]["num_classes"]
    with pytest.raises(RuntimeError, match="size mismatch"):   # the heads' weights change shape
        slim_checkpoint(run / "last.pt", tmp_path / "bad.pt", config_changes={"num_classes": num_classes + 1})
    with pytest.raises(ValueError, match="not model-config fields"):
        slim_checkpoint(run / "last.pt", tmp_path / "bad.pt", config_changes={"soft_argmin": 1})
    assert not (tmp_path / "bad.pt").exists()


def test_a_run_directory_written_before_train_config_resumes(tmp_path, capsys):
    """Run directories of the code before TrainConfig: config.yaml and the checkpoint's settings
    lack init_checkpoint (only synthetic_edge.yaml had it). The run's config.yaml is still a
    valid --config, and the resume sees no changed setting but the one asked for."""
    run = tmp_path / "run"
    assert main(tiny_argv(run, iterations=2)) == 0
    written = yaml.safe_load((run / "config.yaml").read_text())
    del written["init_checkpoint"]
    (run / "config.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
    payload = load_checkpoint(run / "last.pt")
    del payload["settings"]["init_checkpoint"]
    torch.save(payload, run / "last.pt")
    capsys.readouterr()
    argv = ["--config", str(run / "config.yaml"), "--iterations", "3", "--resume", "auto"]
    assert main(argv) == 0
    assert "changed settings (saved -> now): {'iterations': (2, 3)}" in capsys.readouterr().out
    assert sorted(losses_by_step(run)) == [1, 2, 3]


def test_resume_without_config_takes_the_runs_own_settings(tmp_path, capsys):
    # What the stop message suggests, `pmt-train --resume auto --run-dir DIR`, must continue
    # that run (tiny `fast` model, tiny data), not start the default recipe's model over it.
    run = tmp_path / "run"
    assert main(tiny_argv(run, iterations=2)) == 0
    capsys.readouterr()
    assert main(["--resume", "auto", "--run-dir", str(run), "--iterations", "3"]) == 0
    assert "the run's own settings" in capsys.readouterr().out
    assert max(losses_by_step(run)) == 3
    assert yaml.safe_load((run / "config.yaml").read_text())["model"] == "fast"
    # A checkpoint path names its run too.
    assert main(["--resume", str(run / "last.pt"), "--iterations", "4"]) == 0
    assert max(losses_by_step(run)) == 4
