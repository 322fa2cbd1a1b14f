"""Small pieces shared by the command-line entry points."""
from __future__ import annotations

import argparse
import functools
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

from .stop_signals import raise_interrupt


def parse_size(text: str, *, minimum: int = 1) -> tuple[int, int]:
    """argparse type for `HxW` (e.g. 480x720) -> (height, width)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 480x720 (HxW), got {text!r}") from None
    if height < minimum or width < minimum:
        raise argparse.ArgumentTypeError(f"size must be at least {minimum}x{minimum}, got {text!r}")
    return height, width


def stops_cleanly(main: Callable[..., int]) -> Callable[..., int]:
    """A command's `main` that ends on Ctrl-C or SIGTERM with one line on stderr and exit code
    130, instead of a traceback (SIGINT) or a silent death (SIGTERM). For the commands that
    compute for minutes (pmt-synth, pmt-evaluate, pmt-adapt, pmt-export); they write each file
    atomically (atomic.py), so a stopped command leaves none half-written."""
    @functools.wraps(main)
    def wrapped(argv: Optional[list[str]] = None) -> int:
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, raise_interrupt) if in_main_thread else None
        try:
            return main(argv)
        except KeyboardInterrupt as stopped:
            # A new line first: a progress line may be unfinished.
            print(f"\n{Path(sys.argv[0]).name}: stopped ({str(stopped) or 'SIGINT'})",
                  file=sys.stderr, flush=True)
            return 130
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous)
    return wrapped
