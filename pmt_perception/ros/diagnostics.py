"""Counters, latency statistics and throttled warnings of the perception node.

The node reports once per period on /diagnostics (diagnostic_msgs/DiagnosticArray). Where
diagnostic_msgs is not installed the same figures go to the log, one line per period.
"""
from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from typing import Callable

__all__ = ["PROBLEM_KINDS", "ProblemLog", "StageStatistics", "diagnostics_available", "health",
           "make_diagnostic_array", "summary_line"]

try:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
except ImportError:  # not every install ships diagnostic_msgs
    DiagnosticArray = DiagnosticStatus = KeyValue = None

# Kinds of trouble the node survives, each with its own counter (docs/node.md lists them).
PROBLEM_KINDS = {
    "size_mismatch": "left and right images (or an image and its camera_info) differ in size",
    "encoding": "an image encoding the node cannot turn into RGB",
    "malformed_image": "step or data length inconsistent with width, height and encoding",
    "camera_info": "camera_info invalid (unrectified, zero focal length, no baseline, ...)",
    "frame_id": "an image and its camera_info name different frames (the set is still used)",
    "sync_stall": "inputs arrive but never form a synchronized set (stamps, a missing topic)",
    "model": "the model raised on a frame",
    "publish": "building or publishing an output raised",
}


def diagnostics_available() -> bool:
    return DiagnosticArray is not None


class ProblemLog:
    """Counts problems by kind and warns at most once per ``throttle`` seconds per kind."""

    def __init__(self, warn: Callable[[str], None], *, throttle: float) -> None:
        self._warn = warn
        self.throttle = throttle
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {kind: 0 for kind in PROBLEM_KINDS}
        self._last_warning: dict[str, float] = {}

    def report(self, kind: str, message: str) -> None:
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        now = time.monotonic()
        # Warn inside the lock: `snapshot` (the /diagnostics counters) takes it too, so a count
        # seen there always has its warning already in the log. A log call is short.
        with self._lock:
            self.counts[kind] += 1
            last = self._last_warning.get(kind)
            if last is None or now - last >= self.throttle:
                self._last_warning[kind] = now
                repeats = (f"; repeats within {self.throttle:g} s are counted, not logged"
                           if self.throttle > 0 else "")
                self._warn(f"{message} [{kind} #{self.counts[kind]}{repeats}]")

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


class StageStatistics:
    """Per-stage durations (seconds) collected over one period; ``drain`` returns and resets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[str, list[float]] = defaultdict(list)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._samples[stage].append(seconds)

    def add_many(self, durations: dict[str, float]) -> None:
        with self._lock:
            for stage, seconds in durations.items():
                self._samples[stage].append(seconds)

    def drain(self) -> dict[str, tuple[int, float, float]]:
        """stage -> (count, mean ms, max ms) of the period that ends now."""
        with self._lock:
            samples, self._samples = self._samples, defaultdict(list)
        return {stage: (len(values), 1e3 * math.fsum(values) / len(values), 1e3 * max(values))
                for stage, values in samples.items() if values}


def health(state: str, output_rate_hz: float, new_problems: dict[str, int], *,
           no_subscribers: bool = False) -> tuple[str, str]:
    """(level, message) of one period: failures are errors, bad input and silence warnings;
    input without any subscriber to the outputs is fine (the node idles on purpose)."""
    if state != "active":
        return "ok", state
    listed = ", ".join(f"{kind} x{count}" for kind, count in new_problems.items())
    if new_problems.get("model") or new_problems.get("publish"):
        return "error", f"failures: {listed}"
    if new_problems:
        return "warn", f"bad input: {listed}"
    if output_rate_hz == 0 and no_subscribers:
        return "ok", "idle: no subscriber to any enabled output"
    if output_rate_hz == 0:
        return "warn", "active, no frames in this period"
    return "ok", f"{output_rate_hz:.1f} Hz"


def make_diagnostic_array(*, stamp, name: str, hardware_id: str, level: str, message: str,
                          values: dict[str, object]):
    """One DiagnosticStatus in a DiagnosticArray; ``level`` is ok | warn | error | stale."""
    if DiagnosticArray is None:
        raise RuntimeError("diagnostic_msgs is not installed")
    levels = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN,
              "error": DiagnosticStatus.ERROR, "stale": DiagnosticStatus.STALE}
    status = DiagnosticStatus(level=levels[level], name=name, message=message,
                              hardware_id=hardware_id)
    status.values = [KeyValue(key=str(k), value=_format(v)) for k, v in values.items()]
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array


def summary_line(message: str, values: dict[str, object]) -> str:
    """The log-line form of a diagnostics period (when diagnostic_msgs is missing)."""
    return message + " | " + ", ".join(f"{k}={_format(v)}" for k, v in values.items())


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
