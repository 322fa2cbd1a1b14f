"""The environment every process that starts DDS here runs in: shared memory only (DESIGN §5).

Default Fast DDS discovery multicasts on the machine's network interface. Tests, the demo and
the benchmarks must never do that, so each of them builds its processes' environment here:

    env = dds_environment(domain_id=42, log_dir=tmp_path)   # for subprocess.Popen(env=env)
    apply_dds_environment(domain_id=42, log_dir=tmp_path)   # in this process, before rclpy.init

Two independent guards, as the networking rule asks: FASTDDS_BUILTIN_TRANSPORTS=SHM and the
shipped shared-memory-only profile (config/fastdds_shm.xml, which also enlarges the segment so
megabyte images are delivered). No rclpy import here: this must run before DDS loads.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from pmt_perception.config import config_dir

__all__ = ["DOMAIN_ID_RANGE", "fastdds_profile_path", "dds_environment", "apply_dds_environment"]

# Domain ids this project's tests, demo and benchmarks use; each process group picks its own.
DOMAIN_ID_RANGE = range(1, 102)  # never 0 (the default domain); <= 101 is portable on Linux

# Variables that would route discovery over UDP (static peers, a discovery server) or replace
# the profile; they are removed so an outer shell cannot undo the shared-memory-only setup.
_UNSAFE_VARIABLES = ("ROS_STATIC_PEERS", "ROS_DISCOVERY_SERVER", "ROS_LOCALHOST_ONLY",
                     "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTRTPS_DEFAULT_PROFILES_FILE",
                     "RMW_FASTRTPS_USE_QOS_FROM_XML")


def fastdds_profile_path() -> Path:
    """config/fastdds_shm.xml of this installation (source tree or share directory)."""
    path = config_dir() / "fastdds_shm.xml"
    if not path.is_file():
        raise FileNotFoundError(f"shared-memory DDS profile not found: {path}")
    return path


def dds_environment(*, domain_id: int, log_dir: str | os.PathLike,
                    base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: os.environ) set up for shared-memory-only Fast DDS.

    ``domain_id`` must lie in DOMAIN_ID_RANGE (1-101) so runs never meet the default domain 0.
    """
    if isinstance(domain_id, bool) or domain_id not in DOMAIN_ID_RANGE:
        raise ValueError(f"domain_id must be one of {DOMAIN_ID_RANGE.start}.."
                         f"{DOMAIN_ID_RANGE.stop - 1}, got {domain_id!r}")
    env = dict(os.environ if base is None else base)
    for name in _UNSAFE_VARIABLES:
        env.pop(name, None)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    env.update({
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "FASTDDS_BUILTIN_TRANSPORTS": "SHM",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(fastdds_profile_path()),
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_LOG_DIR": str(log_dir),
        # Child processes print as they go (the demo and tests read their output live).
        "PYTHONUNBUFFERED": "1",
    })
    return env


def apply_dds_environment(*, domain_id: int, log_dir: str | os.PathLike) -> dict[str, str]:
    """Set up os.environ as :func:`dds_environment` does; call before ``rclpy.init``."""
    env = dds_environment(domain_id=domain_id, log_dir=log_dir)
    for name in _UNSAFE_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(env)
    return env
