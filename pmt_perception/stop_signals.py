"""The stop signals every process of the package answers (SIGINT, SIGTERM), and the handler that
turns them into KeyboardInterrupt. ROS-free: the commands (cli.py), training (training/interrupt.py)
and the nodes (ros/shutdown.py) build their own stop policies on these."""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def raise_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    """Signal handler: KeyboardInterrupt named after the signal ("SIGTERM")."""
    raise KeyboardInterrupt(signal.Signals(signum).name)
