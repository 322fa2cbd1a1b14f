"""`~/save_adapted`: ask a running node to write its adapted checkpoint now.

A std_srvs/Trigger service where std_srvs is installed (every ROS distribution ships it; the
PyPI wheels this package also runs on do not), and always a std_msgs/Empty topic of the same
name, so `ros2 topic pub --once ~/save_adapted std_msgs/msg/Empty` works everywhere.
"""
from __future__ import annotations

from typing import Callable

from std_msgs.msg import Empty

NAME = "~/save_adapted"


def create_save_triggers(node, save: Callable[[], tuple[bool, str]]) -> None:
    """Wire `save` (returns (saved, message)) to the topic and, where possible, the service."""
    node.create_subscription(Empty, NAME, lambda _msg: save(), 1)
    try:
        from std_srvs.srv import Trigger
    except ImportError:
        return

    def trigger(_request, response):
        response.success, response.message = save()
        return response
    node.create_service(Trigger, NAME, trigger)
