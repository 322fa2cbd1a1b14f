"""Small pieces shared by the command-line entry points."""
from __future__ import annotations

import argparse


def parse_size(text: str, *, minimum: int = 1) -> tuple[int, int]:
    """argparse type for `HxW` (e.g. 480x720) -> (height, width)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 480x720 (HxW), got {text!r}") from None
    if height < minimum or width < minimum:
        raise argparse.ArgumentTypeError(f"size must be at least {minimum}x{minimum}, got {text!r}")
    return height, width
