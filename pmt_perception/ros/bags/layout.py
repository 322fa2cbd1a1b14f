"""rclpy message classes of the type names bags store (``pkg/msg/Name``), for play and record.

Topic names of a stereo bag: pmt_perception/topics.py (StereoTopics); message type names:
pmt_perception/data/ros_messages.py.
"""
from __future__ import annotations

import importlib

__all__ = ["message_class"]


def message_class(msgtype: str):
    """The rclpy message class of a ``pkg/msg/Name`` type string (as bags store it)."""
    parts = msgtype.split("/")
    if len(parts) == 2:  # ROS 1 style "pkg/Name"
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ValueError(f"not a message type name: {msgtype!r}")
    package, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"message type {msgtype} is not installed: {error}") from None
