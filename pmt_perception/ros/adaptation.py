"""Online self-supervised adaptation for stereo_seg_node (`adapt: true`).

The node offers every synchronized pair (`offer`, non-blocking, O(1)); every `every_n`-th one
is kept in a one-slot mailbox (a newer pair replaces an unused one: memory stays bounded). A
background thread takes it and runs `steps_per_pair` `pmt_perception.adapt.Adapter` steps
(random crops of it) on its OWN copy of the model, with the offline losses (photometric,
smoothness, SGBM proxy, segmentation self-distillation, replay). At most every
`min_swap_interval` seconds it hands a frozen copy of the adapted weights to `install` (the node
builds a new Predictor from it in this thread and swaps the reference between frames). The
publishing path never waits for a step. A step whose loss is not finite, or above
`explode_factor` x the median of the recent accepted losses, is discarded and counted. No rclpy
here: the node does the ROS side (parameters, /diagnostics, service).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import statistics
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..adapt import Adapter, crop_window
from ..adapt_settings import AdaptSettings, online_lr
from ..checkpoint import save_checkpoint

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class AdaptationStats:
    offered: int = 0          # pairs the node offered
    queued: int = 0           # pairs put into the mailbox (every_n-th)
    replaced: int = 0         # queued pairs replaced by a newer one before a step took them
    steps: int = 0            # steps applied
    discarded: int = 0        # steps discarded (non-finite or exploding loss)
    swaps: int = 0            # weights handed to the predictor
    last_loss: float = float("nan")
    last_step_seconds: float = float("nan")
    last_swap_seconds: float = float("nan")   # building the new Predictor and its warm-up
                                              # frame (an ONNX runtime re-exports and
                                              # recompiles, compile recompiles: seconds)


class OnlineAdaptation:
    def __init__(self, model: torch.nn.Module, settings: AdaptSettings, *,
                 install: Callable[[torch.nn.Module], None], device: torch.device,
                 class_names: Optional[list[str]] = None, every_n: int = 5,
                 steps_per_pair: int = 1, min_swap_interval: float = 2.0, explode_factor: float = 10.0,
                 history: int = 50) -> None:
        if every_n < 1:
            raise ValueError(f"adapt_every_n must be >= 1, got {every_n}")
        if steps_per_pair < 1:
            raise ValueError(f"adapt_steps_per_pair must be >= 1, got {steps_per_pair}")
        self.steps_per_pair = steps_per_pair
        settings = dataclasses.replace(settings, cache_pairs=1)   # one pair in memory at a time
        self.adapter = Adapter(copy.deepcopy(model), settings, device=device, class_names=class_names)
        self.settings = settings
        self.install = install
        self.every_n, self.min_swap_interval = every_n, min_swap_interval
        self.explode_factor = explode_factor
        self.stats = AdaptationStats()
        self._losses: deque[float] = deque(maxlen=history)
        self._mailbox: Optional[tuple[np.ndarray, np.ndarray]] = None
        self._condition = threading.Condition()
        self._stop = False
        self._last_swap = 0.0
        self._model_lock = threading.Lock()    # the adapter's model vs save()
        self._thread = threading.Thread(target=self._run, name="pmt-online-adapt", daemon=True)

    # ------------------------------------------------------------------ node side
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to end after its current step; True if it ended within `timeout`."""
        with self._condition:
            self._stop = True
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """True once stop() was asked: the thread ends after its current update."""
        return self._stop

    def offer(self, left: np.ndarray, right: np.ndarray) -> bool:
        """Called by the node for every synchronized pair (H x W x 3 uint8 RGB); never blocks on
        a step. Returns True when the pair was queued for adaptation."""
        with self._condition:   # several model workers may offer at once
            self.stats.offered += 1
            if self.stats.offered % self.every_n:
                return False
        pair = (np.array(left, copy=True), np.array(right, copy=True))
        with self._condition:
            if self._mailbox is not None:
                self.stats.replaced += 1
            self._mailbox = pair
            self.stats.queued += 1
            self._condition.notify()
        return True

    def diagnostics(self) -> dict[str, str]:
        """Key/values for the node's /diagnostics status."""
        s = self.stats
        return {"adapt_steps": str(s.steps), "adapt_discarded_steps": str(s.discarded),
                "adapt_loss": f"{s.last_loss:.5f}", "adapt_swaps": str(s.swaps),
                "adapt_pairs_offered": str(s.offered), "adapt_pairs_replaced": str(s.replaced),
                "adapt_step_seconds": f"{s.last_step_seconds:.3f}",
                "adapt_swap_seconds": f"{s.last_swap_seconds:.3f}"}

    def save(self, path: str | Path, *, class_names: list[str], palette: Any,
             info: dict[str, Any]) -> Path:
        """The adapted weights as an ordinary checkpoint (atomic), marked as adapted online."""
        model = self.adapter.model
        with self._model_lock:
            save_checkpoint(Path(path), model=model, config=model.config,
                            class_names=list(class_names), palette=palette, kind="adapted",
                            adapted={**info, "online": True, "steps": self.stats.steps,
                                     "discarded_steps": self.stats.discarded})
        return Path(path)

    # ------------------------------------------------------------------ thread
    def _take(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        with self._condition:
            while self._mailbox is None and not self._stop:
                self._condition.wait()
            if self._stop:
                return None
            pair, self._mailbox = self._mailbox, None
            return pair

    def _run(self) -> None:
        while True:
            pair = self._take()
            if pair is None:
                return
            try:
                self.step(*pair)
            except Exception:   # a failing step must not kill adaptation or the node
                LOG.exception("online adaptation step failed; discarded")
                self.stats.discarded += 1

    def step(self, left: np.ndarray, right: np.ndarray) -> bool:
        """The updates of one taken pair, `steps_per_pair` of them on random crops (the
        thread's body; public for tests). True when at least one was applied."""
        index = self.stats.queued
        generator = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + index)
        applied = False
        for _ in range(self.steps_per_pair):
            if self._stop:   # shutting down: the pair's remaining updates are dropped, so a
                break        # stop waits for one update at most, not for steps_per_pair of them
            applied = self._update(("online", index), left, right, generator) or applied
        return applied

    def _update(self, key: Any, left: np.ndarray, right: np.ndarray,
                generator: torch.Generator) -> bool:
        started = time.perf_counter()
        max_loss = None
        if len(self._losses) >= 5:
            max_loss = self.explode_factor * statistics.median(self._losses)
        with self._model_lock:
            # Cached after the pair's first update: teacher, SGBM proxy and mask are shared.
            prepared = self.adapter.prepare(key, left, right)
            window = crop_window(tuple(prepared.left.shape[-2:]), self.settings.crop, generator)
            self.adapter.set_lr(online_lr(self.settings, self.adapter.steps_done))
            result = self.adapter.step(prepared, window, max_loss=max_loss)
        self.stats.last_step_seconds = time.perf_counter() - started
        if not result["applied"]:
            self.stats.discarded += 1
            return False
        self.stats.steps += 1
        self.stats.last_loss = result["total"]
        self._losses.append(result["total"])
        now = time.monotonic()
        if now - self._last_swap >= self.min_swap_interval:
            with self._model_lock:
                frozen = copy.deepcopy(self.adapter.model).eval()
            for parameter in frozen.parameters():
                parameter.requires_grad_(False)
            swap_started = time.perf_counter()
            self.install(frozen)
            self.stats.last_swap_seconds = time.perf_counter() - swap_started
            self.stats.swaps += 1
            self._last_swap = time.monotonic()   # the interval runs between swaps, not builds
        return True
