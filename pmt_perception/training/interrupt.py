"""Ctrl-C and SIGTERM end a training run at a step boundary: the step in flight finishes,
`last.pt` is written, the run exits 0 and `--resume auto` continues it exactly. A second signal
stops at once; the last periodic checkpoint stays valid (checkpoints are written atomically).

DataLoader workers ignore SIGINT: a terminal's Ctrl-C reaches the whole process group, and a
worker that died of it would fail the main process's next fetch instead of letting it stop.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Optional

from pmt_perception.stop_signals import STOP_SIGNALS


class StoppedAtOnce(Exception):
    """The second stop signal: the run ends without finishing its step."""


class StopAtStepBoundary:
    """Context manager (main thread) that turns the first SIGINT / SIGTERM into a request the
    training loop reads between steps (`requested`), and the second into StoppedAtOnce."""

    def __init__(self) -> None:
        self.signal_name: Optional[str] = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            raise StoppedAtOnce(name)
        self.signal_name = name
        print(f"[pmt-train] {name}: stopping after this step and writing last.pt "
              "(a second signal stops at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopAtStepBoundary":
        if threading.current_thread() is threading.main_thread():  # signals reach it only
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_interrupts_in_worker(_worker_id: int) -> None:
    """DataLoader `worker_init_fn`: the main process alone decides when the run stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
