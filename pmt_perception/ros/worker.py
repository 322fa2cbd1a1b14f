"""Newest-wins frame handling: model worker(s), one publishing worker, nothing queued unbounded.

    callback ──put──> [input slot: newest set] ──> model worker(s) ──> [results] ──> publisher
                       (an unread older set is         (predict)       (block the    (convert +
                        replaced and counted)                          model worker)  publish)

The input slot holds ONE set: when the camera is faster than the model the older unread set
is dropped (and counted), so latency never grows. The results hold one item per model worker
and block instead of dropping, and publishing frame N overlaps the model running frame N+1,
so throughput is set by the slower of the two stages (the model) rather than by their sum.
With several model workers (a runtime that runs frames side by side: OpenVINO streams),
results go out in the order the sets arrived: a newer result waits while an older frame is
still in the model, so the outputs' stamps never go back in time and no result is wasted.
"""
from __future__ import annotations

import heapq
import itertools
import threading
from typing import Any, Callable

__all__ = ["LatestSlot", "InOrderResults", "SlotClosed", "FramePipeline"]


class SlotClosed(Exception):
    """The slot was closed while waiting on it."""


class LatestSlot:
    """A one-item mailbox. ``put`` replaces an unread item (``dropped`` counts those)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Store ``item``; True when it replaced an unread one. Raises SlotClosed once closed."""
        with self._condition:
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


class InOrderResults:
    """Results of numbered frames (submission order) for one publisher, handed out in that
    order: a result waits while an older frame is still in a model worker, so outputs never go
    back in time and no computed result is thrown away. At most ``capacity`` results wait
    (a worker with a newer result blocks; the oldest frame's result always gets in)."""

    def __init__(self, capacity: int) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[int, Any]] = []
        self._running: set[int] = set()
        self._capacity = capacity
        self._last_taken = -1
        self._closed = False
        self.late = 0   # results older than one already handed out (see `started`)

    def started(self, number: int) -> None:
        """Frame `number` entered a model worker: newer results wait for it. (A newer frame
        finishing in the microseconds between a worker's take and this call goes out first;
        the older one then counts as `late` and is not handed out.)"""
        with self._condition:
            self._running.add(number)

    def finished(self, number: int, result: Any = None) -> None:
        """Frame `number` left its model worker with `result` (None: nothing to publish).
        Raises SlotClosed once closed."""
        with self._condition:
            try:
                if result is None:
                    return
                if number < self._last_taken:
                    self.late += 1
                    return
                self._condition.wait_for(lambda: self._closed or len(self._heap) < self._capacity
                                         or number < self._heap[0][0])
                if self._closed:
                    raise SlotClosed()
                heapq.heappush(self._heap, (number, result))
            finally:
                self._running.discard(number)
                self._condition.notify_all()

    def take(self) -> tuple[int, Any]:
        """Wait for the oldest result no running frame precedes; returns (number, result).
        Raises SlotClosed once closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._closed or self._oldest_is_ready())
            if self._closed:
                raise SlotClosed()
            number, result = heapq.heappop(self._heap)
            self._last_taken = number
            self._condition.notify_all()
            return number, result

    def _oldest_is_ready(self) -> bool:
        return bool(self._heap) and all(self._heap[0][0] < number for number in self._running)

    def close(self) -> None:
        """Wake every waiter with SlotClosed; waiting results are released."""
        with self._condition:
            self._closed = True
            self._heap.clear()
            self._condition.notify_all()


class FramePipeline:
    """Daemon threads: ``model_workers`` running ``process(item) -> result | None`` and one
    running ``publish(result)``.

    Exceptions escaping either function go to ``on_error(stage, exception)`` and the loop goes
    on: one bad frame never stops the node. ``process`` must be thread-safe when
    ``model_workers`` > 1.
    """

    def __init__(self, *, process: Callable[[Any], Any], publish: Callable[[Any], None],
                 on_error: Callable[[str, BaseException], None], name: str = "pmt",
                 model_workers: int = 1) -> None:
        if model_workers < 1:
            raise ValueError(f"model_workers must be >= 1, got {model_workers}")
        self._process, self._publish, self._on_error = process, publish, on_error
        self._inputs = LatestSlot()
        self._results = InOrderResults(capacity=model_workers)
        self._numbers = itertools.count()   # submission order (next() is atomic in CPython)
        self._threads = [threading.Thread(target=self._model_loop, daemon=True,
                                          name=f"{name}-model" + (f"-{i}" if i else ""))
                         for i in range(model_workers)]
        self._threads.append(threading.Thread(target=self._publish_loop, name=f"{name}-publish",
                                              daemon=True))
        self._started = False

    @property
    def dropped(self) -> int:
        """Input sets replaced before a model worker took them."""
        return self._inputs.dropped

    @property
    def late(self) -> int:
        """Results not published because a newer frame went out first (InOrderResults.started)."""
        return self._results.late

    def start(self) -> None:
        if self._started:
            raise RuntimeError("a FramePipeline starts once; build a new one")
        self._started = True
        for thread in self._threads:
            thread.start()

    def submit(self, item: Any) -> bool:
        """Offer a new input set; True when it displaced an unprocessed older one."""
        try:
            return self._inputs.put((next(self._numbers), item))
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
                number, item = self._inputs.take()
            except SlotClosed:
                return
            self._results.started(number)
            result = None
            try:
                result = self._process(item)
            except Exception as error:  # noqa: BLE001 - the node must survive any bad frame
                self._on_error("process", error)
            try:
                self._results.finished(number, result)
            except SlotClosed:
                return

    def _publish_loop(self) -> None:
        while True:
            try:
                _, result = self._results.take()
            except SlotClosed:
                return
            try:
                self._publish(result)
            except Exception as error:  # noqa: BLE001
                self._on_error("publish", error)
