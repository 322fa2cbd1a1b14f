"""The node's stereo input synchronizer: message_filters when installed, the package's own
equivalent (pmt_perception.data.stamp_sync, no ROS) otherwise.

The node does not deal with either library directly. It uses :class:`InputSynchronizer`:

    sync = InputSynchronizer(input_count=4, queue_size=5, approximate=True, slop=0.01)
    sync.register_callback(self.on_stereo)            # on_stereo(l_img, r_img, l_info, r_info)
    node.create_subscription(Image, "left/image_rect", partial(sync.add, 0), qos)  # and 1, 2, 3

which builds on message_filters when it imports and on stamp_sync otherwise; ``sync.backend``
says which. The node owns its subscriptions (QoS, topic names) either way, so its code is the
same in both cases. Policies: pmt_perception/data/stamp_sync.py.
"""
from __future__ import annotations

from typing import Callable

from pmt_perception.data.ros_messages import stamp_nanoseconds
from pmt_perception.data.stamp_sync import ApproximateTimeSynchronizer, MessageInput, TimeSynchronizer

__all__ = [
    "MessageInput", "TimeSynchronizer", "ApproximateTimeSynchronizer", "InputSynchronizer",
    "stamp_nanoseconds",
]


class InputSynchronizer:
    """The node's synchronizer: ``add(index, msg)`` in, ``callback(*msgs)`` out.

    Uses message_filters' synchronizers when message_filters imports (``prefer_message_filters``)
    and this module's otherwise; either way the inputs are plain filters that ``add`` signals,
    so the node's own subscriptions drive it.
    """

    def __init__(self, *, input_count: int, queue_size: int, approximate: bool,
                 slop: float = 0.0, prefer_message_filters: bool = True):
        if isinstance(input_count, bool) or not isinstance(input_count, int) or input_count < 2:
            raise ValueError(f"input_count must be an integer >= 2, got {input_count!r}")
        library = _import_message_filters() if prefer_message_filters else None
        if library is None:
            self.backend = "pmt_perception"
            filter_class, exact_class, approx_class = (
                MessageInput, TimeSynchronizer, ApproximateTimeSynchronizer)
        else:
            self.backend = "message_filters"
            filter_class, exact_class, approx_class = (
                library.SimpleFilter, library.TimeSynchronizer,
                library.ApproximateTimeSynchronizer)
        self._inputs = [filter_class() for _ in range(input_count)]
        # message_filters reads stamps with rclpy's Time.from_msg, which accepts only
        # builtin_interfaces/Time objects; messages from other sources (rosbags' dataclasses in
        # bag evaluation) get their stamp re-typed on the way in (same sec / nanosec).
        self._stamp_type = _builtin_time_type() if library is not None else None
        if approximate:
            self.synchronizer = approx_class(self._inputs, queue_size, slop)
        else:
            self.synchronizer = exact_class(self._inputs, queue_size)

    def add(self, index: int, msg) -> None:
        """Feed ``msg`` as input ``index`` (0-based, the order of the callback's arguments)."""
        if not 0 <= index < len(self._inputs):
            raise ValueError(f"input index {index} out of range for {len(self._inputs)} inputs")
        if self._stamp_type is not None:
            header = getattr(msg, "header", None)
            stamp = getattr(header, "stamp", None)
            if stamp is not None and not isinstance(stamp, self._stamp_type):
                header.stamp = self._stamp_type(sec=int(stamp.sec), nanosec=int(stamp.nanosec))
        self._inputs[index].signalMessage(msg)

    def register_callback(self, cb: Callable, *args) -> None:
        """Call ``cb(msg_0, ..., msg_n-1, *args)`` for every synchronized set."""
        self.synchronizer.registerCallback(cb, *args)


def _builtin_time_type():
    from builtin_interfaces.msg import Time

    return Time


def _import_message_filters():
    try:
        import message_filters
    except ImportError:
        return None
    return message_filters
