"""The minutes-long commands stop on Ctrl-C and SIGTERM with one line and exit code 130, no
traceback, and leave no half-written file (pmt-train has its own, resumable stop: test_train)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from pmt_perception import adapt_cli, evaluate, export
from pmt_perception.data import synth_cli
from test_train_helpers import REPO, child_env


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_pmt_synth_stops_with_one_line_and_exit_130(tmp_path, stop_signal):
    out = tmp_path / "scenes"
    process = subprocess.Popen(
        [sys.executable, "-m", "pmt_perception.data.synth_cli", "--out", str(out), "--num", "500",
         "--size", "96x128"], cwd=REPO, env=child_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "left").is_dir() or not list((out / "left").glob("*.png")):
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no scene written"
            time.sleep(0.05)
        process.send_signal(stop_signal)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err[-2000:]
    assert f"stopped ({stop_signal.name})" in err and "Traceback" not in err, err[-2000:]
    # atomic.py writes through hidden temp files (".<stem>.XXXX<suffix>") it renames or removes.
    assert not [p for p in out.rglob(".*") if p.is_file()], "a half-written file was left behind"
    assert len(list((out / "left").glob("*.png"))) < 500


def test_every_long_command_is_wrapped():
    for main in (synth_cli.main, evaluate.main, adapt_cli.main, export.main):
        assert hasattr(main, "__wrapped__"), main.__module__
