"""Start and stop the package's ROS processes (node, source, monitor) for the demo, tests and
benchmarks: each one a separate Python process in the shared-memory-only DDS environment."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["start_module", "stop_process", "read_log"]


def start_module(module: str, *arguments: str, env: dict[str, str],
                 log_path: str | os.PathLike | None = None,
                 ros_arguments: list[str] | None = None) -> subprocess.Popen:
    """``python -m module arguments... [--ros-args ros_arguments...]`` in its own session.

    Output goes to ``log_path`` (stdout and stderr together) or is discarded. The process gets
    its own session so a Ctrl-C in the caller's terminal reaches the caller only, and the
    caller decides how its children stop (:func:`stop_process`).
    """
    command = [sys.executable, "-m", module, *arguments]
    if ros_arguments:
        command += ["--ros-args", *ros_arguments]
    output = open(log_path, "wb") if log_path is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        if log_path is not None:
            output.close()  # the child holds its own descriptor


def stop_process(process: subprocess.Popen, *, timeout: float = 10.0) -> int:
    """SIGINT (a clean stop), then SIGTERM, then SIGKILL; returns the exit code.

    Signals go to this one process id only, never to a name or a group. An escalation is
    reported on stderr (naming the process), so a child that had to be killed is never silent;
    the caller sees its exit code (-15, -9) too.
    """
    sent = None
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        if sent is not None:
            print(f"pmt_perception: {_describe(process)} did not exit within {timeout:g} s of "
                  f"{sent.name}; sending {sig.name}", file=sys.stderr, flush=True)
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            break
        sent = sig
        try:
            process.wait(timeout=timeout if sig != signal.SIGKILL else None)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()


def _describe(process: subprocess.Popen) -> str:
    args = process.args if isinstance(process.args, (list, tuple)) else [process.args]
    words = [str(a) for a in args]
    name = words[2] if len(words) > 2 and words[1] == "-m" else " ".join(words[:2])
    return f"process {process.pid} ({name})"


def read_log(path: str | os.PathLike, *, tail: int = 4000) -> str:
    """The last ``tail`` characters of a process log (for error messages)."""
    path = Path(path)
    if not path.is_file():
        return ""
    return path.read_text(errors="replace")[-tail:]
