"""Newest-wins frame handling: one model worker, one publishing worker, nothing queued unbounded.

    callback ──put──> [input slot: newest set] ──> model worker ──> [result slot] ──> publisher
                       (an unread older set is         (predict)     (blocks the      (convert +
                        replaced and counted)                         model worker)     publish)

The input slot holds ONE set: when the camera is faster than the model the older unread set
is dropped (and counted), so latency never grows. The result slot also holds one item but
blocks instead of dropping: a computed result is never thrown away, and publishing frame N
overlaps the model running frame N+1, so throughput is set by the slower of the two stages
(the model) rather than by their sum.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

__all__ = ["LatestSlot", "SlotClosed", "FramePipeline"]


class SlotClosed(Exception):
    """The slot was closed while waiting on it."""


class LatestSlot:
    """A one-item mailbox. ``put`` replaces an unread item (``dropped`` counts those) or, with
    ``block=True``, waits until the previous item was taken."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False
        self.dropped = 0

    def put(self, item: Any, *, block: bool = False) -> bool:
        """Store ``item``; True when it replaced an unread one. Raises SlotClosed once closed."""
        with self._condition:
            if block:
                self._condition.wait_for(lambda: not self._full or self._closed)
            if self._closed:
                raise SlotClosed()
            replaced = self._full
            if replaced:
                self.dropped += 1
            self._item, self._full = item, True
            self._condition.notify_all()
            return replaced

    def take(self) -> Any:
        """Wait for an item and return it. Raises SlotClosed once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._full or self._closed)
            if self._closed:
                raise SlotClosed()
            item, self._item, self._full = self._item, None, False
            self._condition.notify_all()
            return item

    def close(self) -> None:
        """Wake every waiter with SlotClosed; an unread item is released."""
        with self._condition:
            self._closed = True
            self._item, self._full = None, False
            self._condition.notify_all()


class FramePipeline:
    """Two daemon threads: ``process(item) -> result | None`` and ``publish(result)``.

    Exceptions escaping either function go to ``on_error(stage, exception)`` and the loop goes
    on: one bad frame never stops the node.
    """

    def __init__(self, *, process: Callable[[Any], Any], publish: Callable[[Any], None],
                 on_error: Callable[[str, BaseException], None], name: str = "pmt") -> None:
        self._process, self._publish, self._on_error = process, publish, on_error
        self._inputs = LatestSlot()
        self._results = LatestSlot()
        self._threads = [
            threading.Thread(target=self._model_loop, name=f"{name}-model", daemon=True),
            threading.Thread(target=self._publish_loop, name=f"{name}-publish", daemon=True)]
        self._started = False

    @property
    def dropped(self) -> int:
        """Input sets replaced before the model worker took them."""
        return self._inputs.dropped

    def start(self) -> None:
        if self._started:
            raise RuntimeError("a FramePipeline starts once; build a new one")
        self._started = True
        for thread in self._threads:
            thread.start()

    def submit(self, item: Any) -> bool:
        """Offer a new input set; True when it displaced an unprocessed older one."""
        try:
            return self._inputs.put(item)
        except SlotClosed:
            return False

    def stop(self, timeout: float = 10.0) -> bool:
        """Close both slots and join the threads; True when both ended within ``timeout``.

        The frame in flight (if any) finishes first: a forward pass cannot be interrupted.
        """
        self._inputs.close()
        self._results.close()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    def _model_loop(self) -> None:
        while True:
            try:
                item = self._inputs.take()
            except SlotClosed:
                return
            try:
                result = self._process(item)
            except Exception as error:  # noqa: BLE001 - the node must survive any bad frame
                self._on_error("process", error)
                continue
            if result is None:
                continue
            try:
                self._results.put(result, block=True)
            except SlotClosed:
                return

    def _publish_loop(self) -> None:
        while True:
            try:
                result = self._results.take()
            except SlotClosed:
                return
            try:
                self._publish(result)
            except Exception as error:  # noqa: BLE001
                self._on_error("publish", error)
