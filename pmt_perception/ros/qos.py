"""QoS profiles of the node's inputs and outputs, from the reliability / depth parameters."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

__all__ = ["input_qos", "output_qos", "latched_qos"]

_RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
    "system_default": ReliabilityPolicy.SYSTEM_DEFAULT,
}


def _reliability(name: str) -> ReliabilityPolicy:
    try:
        return _RELIABILITY[name]
    except KeyError:
        raise ValueError(f"reliability must be one of {sorted(_RELIABILITY)}, got {name!r}") from None


def input_qos(reliability: str, depth: int) -> QoSProfile:
    """Sensor-data QoS (best effort, keep last, volatile) with the chosen reliability and depth.

    Best effort by default: a camera driver publishing best effort (the common case) does not
    match a reliable subscription, and an old frame is worth nothing to a perception node.
    """
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=_reliability(reliability),
                      durability=qos_profile_sensor_data.durability)


def output_qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last, volatile publishers; reliable ones match reliable AND best-effort readers."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=_reliability(reliability),
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Transient local, depth 1: a subscriber that joins late still gets the class table."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
