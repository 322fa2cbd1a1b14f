"""Clean stops on SIGINT and SIGTERM for every node and command of the package.

A terminal's Ctrl-C reaches every process of the foreground group, and `ros2 launch` then sends
its own SIGINT (later SIGTERM) to each child: a node gets two or three signals. Python's default
SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be, and the second
one lands inside the cleanup (destroy_subscription, destroy_node), which then crashes with a
traceback and "terminate called without an active exception". rclpy's own handlers have the same
race. So each process here

  * starts rclpy without its signal handlers (``init_rclpy``),
  * turns the first SIGINT or SIGTERM into a stop request (``StopRequest``) and ignores the
    ones that follow, and
  * spins in short slices (``spin_until_stopped``), then cleans up and exits 0,
  * and, run as a command, leaves without the interpreter's final teardown (``finish``): on a
    loaded 2-core machine tearing down torch & co took 2-3 s after the cleanup was done, and
    `ros2 launch` escalates to SIGTERM after 5 s.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Callable

from pmt_perception.stop_signals import STOP_SIGNALS, raise_interrupt

__all__ = ["STOP_SIGNALS", "StopRequest", "StoppedWhileStarting", "init_rclpy", "spin_until_stopped",
           "interrupt_on_stop_signals", "finish"]


class StoppedWhileStarting(BaseException):
    """Raised by a StopRequest with ``exit_at_once`` set (a BaseException, so the model
    loader's ``except Exception`` does not take it for a bad checkpoint); the command catches
    it, cleans up and exits 0."""


class StopRequest:
    """The first SIGINT / SIGTERM sets ``requested``; later ones are ignored.

    Use as a context manager (``with StopRequest() as stop:``) in the main thread. On exit the
    stop signals stay ignored (``ignore_after``, for a process that is about to end: the second
    signal of a Ctrl-C under launch must not hit the last lines), or the previous handlers come
    back. ``request()`` stops the same way from code (a finished job).
    """

    def __init__(self, *, ignore_after: bool = True) -> None:
        self.ignore_after = ignore_after
        # Set while a command loads its model: a stop then raises StoppedWhileStarting where
        # the main thread is, instead of waiting (maybe longer than launch's 5 s) for the load.
        self.exit_at_once = False
        self._event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str = "requested") -> None:
        if not self._event.is_set():
            self.signal_name = reason
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` s, waking early on a stop request; True when requested."""
        return self._event.wait(timeout)

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.request(signal.Signals(signum).name)
        if self.exit_at_once:
            self.exit_at_once = False   # once: the cleanup that follows is not interrupted
            raise StoppedWhileStarting(self.signal_name)

    def install(self) -> "StopRequest":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc) -> None:
        if not self.ignore_after:
            self.restore()
            return
        for sig in self._previous:
            signal.signal(sig, signal.SIG_IGN)


def interrupt_on_stop_signals() -> None:
    """SIGINT and SIGTERM both raise KeyboardInterrupt from now on: for a long computation
    without a loop to check a StopRequest in (the caller catches it and exits 0)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, raise_interrupt)


def init_rclpy(args=None, **kwargs) -> None:
    """``rclpy.init`` without rclpy's SIGINT / SIGTERM handlers (StopRequest owns them)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO, **kwargs)


def spin_until_stopped(executor, stop: StopRequest, *, done: Callable[[], bool] = lambda: False,
                       period: float = 0.1) -> None:
    """Spin ``executor`` until a stop request, ``done()``, or the context shuts down.

    Short slices: a Python signal handler runs only when the executor's wait returns.
    """
    from rclpy.executors import ExternalShutdownException

    context = executor.context
    try:
        while not stop.requested and context.ok() and not done():
            executor.spin_once(timeout_sec=period)
    except ExternalShutdownException:
        pass


def finish(code: int, *, as_command: bool) -> int:
    """The end of a command's main(): returns ``code``, or, ``as_command`` (main called by its
    console script, args None), ends the process with it at once.

    The node and the executor are already destroyed and rclpy shut down by then; this destroys
    the rclpy context (the DDS participant: shared-memory segments released), runs the atexit
    handlers (log flushes), flushes stdout / stderr and calls the C library's exit(), which
    still runs the C / C++ exit handlers (Fast DDS removes its shared-memory files there) but
    not the interpreter's module teardown and final garbage collection.
    """
    if not as_command:
        return code
    import gc

    gc.collect()  # the node's and executor's handles go first: the context waits for them
    try:
        from rclpy.utilities import get_default_context

        get_default_context().destroy()
    except Exception:  # noqa: BLE001 - never initialized, or destroyed already
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe must not change the exit status
            pass
    import ctypes

    ctypes.CDLL(None).exit(code)
    os._exit(code)  # not reached
