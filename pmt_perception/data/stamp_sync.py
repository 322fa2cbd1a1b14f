"""Stamp synchronization of several message streams, without ROS: message_filters' policies.

message_filters is not installable on every machine (DESIGN §5), and bags are read without
rclpy, so this module keeps API-compatible stand-ins for its Python ``TimeSynchronizer`` and
``ApproximateTimeSynchronizer``: ``(fs, queue_size[, slop, allow_headerless])`` constructors,
``connectInput(fs)``, ``registerCallback(cb, *args)``, and callbacks called as
``cb(msg_0, ..., msg_n-1, *args)``. Inputs are any objects with ``registerCallback`` (message
filters, or :class:`MessageInput`); they feed :meth:`TimeSynchronizer.add` as
``add(index, msg)``. Messages need only ``header.stamp`` (sec, nanosec), so rclpy messages and
rosbags' dataclasses both work. The node wraps these (or message_filters) in
pmt_perception.ros.sync.InputSynchronizer; data/bag.py pairs a bag's messages with them.

Exact mode: a set is emitted when all inputs hold a message with the same stamp.

Approximate mode here is a simpler, documented variant of message_filters' policy:
  * every input keeps its newest ``queue_size`` messages, sorted by stamp;
  * after each arrival, candidate sets are formed by taking each queued message as the newest
    member and, from every other input, the newest message no newer than it; a candidate is
    valid when all its stamps lie within ``slop`` (max - min <= slop);
  * the valid set with the newest stamp is emitted (lowest latency), and every message at or
    before its members is dropped: outputs go forward in time, stale frames are skipped;
  * messages older than an input's last emitted message are dropped on arrival.
Choose ``slop`` below half the frame period so neighbouring frames cannot pair up.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from bisect import insort
from typing import Callable

from pmt_perception.data.ros_messages import stamp_nanoseconds

__all__ = ["MessageInput", "TimeSynchronizer", "ApproximateTimeSynchronizer"]

_log = logging.getLogger(__name__)


class MessageInput:
    """Stand-in for message_filters.SimpleFilter: fans ``signalMessage`` out to callbacks."""

    def __init__(self):
        self.callbacks: dict[int, tuple[Callable, tuple]] = {}
        self._next_connection = itertools.count()

    def registerCallback(self, cb: Callable, *args) -> int:  # noqa: N802 - message_filters API
        """Call ``cb(*msgs, *args)`` on every output; returns a connection id."""
        connection = next(self._next_connection)
        self.callbacks[connection] = (cb, args)
        return connection

    register_callback = registerCallback

    def signalMessage(self, *msgs) -> None:  # noqa: N802 - message_filters API
        for cb, args in list(self.callbacks.values()):
            cb(*(msgs + args))


class TimeSynchronizer(MessageInput):
    """Emits one message per input when all inputs hold a message with the same stamp.

    After emitting stamp t, everything stamped at or before t is dropped, so outputs are
    strictly increasing in time. Each input keeps at most ``queue_size`` messages.
    """

    def __init__(self, fs, queue_size: int):
        super().__init__()
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be a positive integer, got {queue_size!r}")
        self.queue_size = queue_size
        self.allow_headerless = False
        self.lock = threading.Lock()
        self.connectInput(fs)

    def connectInput(self, fs) -> None:  # noqa: N802 - message_filters API
        """Listen to the filters ``fs``; message i of every emitted set comes from ``fs[i]``."""
        fs = list(fs)
        if len(fs) < 2:
            raise ValueError(f"a synchronizer needs at least 2 inputs, got {len(fs)}")
        # Per input: (stamp_ns, arrival number, msg), sorted; arrival breaks ties so msgs
        # themselves are never compared.
        self.queues: list[list[tuple[int, int, object]]] = [[] for _ in fs]
        self._last_emitted: list[int | None] = [None] * len(fs)
        self._arrivals = itertools.count()
        self.input_connections = [f.registerCallback(self._add_from_input, i)
                                  for i, f in enumerate(fs)]

    def _add_from_input(self, msg, index: int) -> None:
        self.add(index, msg)

    def add(self, index: int, msg) -> None:
        """Feed ``msg`` as input ``index``; runs the registered callbacks for completed sets.

        Thread-safe. Callbacks run after the lock is released, so a slow callback (inference)
        does not block other subscriptions, and a callback may feed messages back in. Under a
        multi-threaded executor two sets completed by different threads may therefore reach
        the callback in either order; each set is delivered exactly once.
        """
        if not 0 <= index < len(self.queues):
            raise ValueError(f"input index {index} out of range for {len(self.queues)} inputs")
        stamp = stamp_nanoseconds(msg)
        if stamp is None:
            if not self.allow_headerless:
                _log.warning("dropping a message without header.stamp; set allow_headerless=True "
                             "to stamp such messages with their arrival time")
                return
            stamp = self._now_nanoseconds()
        with self.lock:
            ready = self._insert_and_match(index, stamp, msg)
        for msgs in ready:
            self.signalMessage(*msgs)

    def _now_nanoseconds(self) -> int:
        return time.time_ns()

    def _insert_and_match(self, index: int, stamp: int, msg) -> list[tuple]:
        last = self._last_emitted[index]
        if last is not None and stamp <= last:
            return []  # would go back in time: drop
        queue = self.queues[index]
        queue[:] = [entry for entry in queue if entry[0] != stamp]  # newest copy of a stamp wins
        insort(queue, (stamp, next(self._arrivals), msg))
        del queue[:-self.queue_size]
        chosen = self._select()
        if chosen is None:
            return []
        for i, (queue, (chosen_stamp, _, _)) in enumerate(zip(self.queues, chosen)):
            queue[:] = [entry for entry in queue if entry[0] > chosen_stamp]
            self._last_emitted[i] = chosen_stamp
        return [tuple(entry[2] for entry in chosen)]

    def _select(self):
        """The newest set of entries (one per input) with identical stamps, or None."""
        common = set.intersection(*({entry[0] for entry in queue} for queue in self.queues))
        if not common:
            return None
        newest = max(common)
        return [next(entry for entry in queue if entry[0] == newest) for queue in self.queues]


class ApproximateTimeSynchronizer(TimeSynchronizer):
    """Emits sets whose stamps lie within ``slop`` seconds; see the module docstring."""

    def __init__(self, fs, queue_size: int, slop: float, allow_headerless: bool = False):
        super().__init__(fs, queue_size)
        if not slop >= 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop!r}")
        self.slop = float(slop)
        self._slop_ns = int(round(self.slop * 1e9))
        self.allow_headerless = bool(allow_headerless)

    def _select(self):
        best, best_stamp = None, None
        for anchor_queue in self.queues:
            for anchor in anchor_queue:
                stamp = anchor[0]
                if best_stamp is not None and stamp <= best_stamp:
                    continue
                members = [self._newest_at_or_before(queue, stamp) for queue in self.queues]
                if any(m is None or stamp - m[0] > self._slop_ns for m in members):
                    continue
                best, best_stamp = members, stamp
        return best

    @staticmethod
    def _newest_at_or_before(queue, stamp: int):
        for entry in reversed(queue):
            if entry[0] <= stamp:
                return entry
        return None
