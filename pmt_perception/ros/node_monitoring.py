"""stereo_seg_node's monitoring: input arrivals, the sync-stall warning that names the
lagging input, and the periodic /diagnostics report (rates, counters, problems, stage times).

A mixin of StereoSegNode: it uses the node's `_lock`, `counters`, `_received`, `_arrivals`,
`_subscriptions_in`, `_stall_timeout`, `_problems`, `_pipeline`, `_dropped_earlier`,
`_last_report`, `_previous_problems`, `_stats`, `_adaptation`, `_loaded`, `predictor`,
`_sync_backend` and `_diagnostics_pub`.
"""
from __future__ import annotations

import time

from pmt_perception import topics
from pmt_perception.ros import diagnostics

__all__ = ["NodeMonitoring"]


class NodeMonitoring:
    def _reset_arrivals(self) -> None:
        self._arrivals: list = [None] * len(topics.INPUT_TOPICS)
        self._last_set_time = None
        self._active_since = time.monotonic()

    def _check_sync_stall(self) -> None:
        """Warn (naming the lagging input) when inputs arrive but never form a set."""
        if not self._subscriptions_in:
            return
        now = time.monotonic()
        with self._lock:
            arrivals = list(self._arrivals)
            last_set = self._last_set_time if self._last_set_time is not None else self._active_since
        recent = [a is not None and now - a[0] < self._stall_timeout for a in arrivals]
        if not any(recent) or now - last_set < self._stall_timeout:
            return
        names = [s.topic_name for s in self._subscriptions_in]
        silent = [name for name, ok in zip(names, recent) if not ok]
        if silent:
            reason = f"nothing received on {', '.join(silent)} for {self._stall_timeout:g} s"
        else:
            stamps = ", ".join(f"{name} {a[1].sec}.{a[1].nanosec:09d}"
                               for name, a in zip(names, arrivals))
            reason = (f"the stamps never match (newest: {stamps}); exact sync needs identical "
                      "stamps: check the driver, or set approximate_sync / sync_slop")
        self._problems.report("sync_stall", f"no synchronized stereo set for "
                                            f"{now - last_set:.1f} s: {reason}")
        with self._lock:
            self._last_set_time = now  # one report per stall_timeout, not one per check

    def _report_diagnostics(self) -> None:
        now = time.monotonic()
        with self._lock:
            counters = dict(self.counters)
            received = list(self._received)
        pipeline = self._pipeline
        dropped = self._dropped_earlier + (pipeline.dropped if pipeline is not None else 0)
        last_time, last_counters = self._last_report
        self._last_report = (now, counters)
        elapsed = max(now - last_time, 1e-9)
        problems = self._problems.snapshot()
        values: dict[str, object] = {
            "state": self._state_machine.current_state[1],
            "model": self._loaded.description if self._loaded else "-",
            "device": str(self.predictor.device) if self.predictor else "-",
            "sync_backend": self._sync_backend,
            "input_rate_hz": (counters["sets"] - last_counters["sets"]) / elapsed,
            "output_rate_hz": (counters["published"] - last_counters["published"]) / elapsed,
            "sets_received": counters["sets"], "frames_processed": counters["processed"],
            "frames_published": counters["published"], "sets_dropped": dropped,
            "sets_skipped_no_subscribers": counters["unwanted"],
            # Per input topic: DDS-level loss shows as fewer of one than of the others.
            **{f"received_{topic.replace('/', '_')}": count
               for topic, count in zip(topics.INPUT_TOPICS, received)},
            **{f"problems_{kind}": count for kind, count in problems.items()},
        }
        adaptation = self._adaptation
        if adaptation is not None:
            values.update(adaptation.diagnostics())
        for stage, (_count, mean_ms, max_ms) in sorted(self._stats.drain().items()):
            values[f"{stage}_ms_mean"] = mean_ms
            values[f"{stage}_ms_max"] = max_ms
        new_problems = {kind: count - self._previous_problems.get(kind, 0)
                        for kind, count in problems.items()
                        if count > self._previous_problems.get(kind, 0)}
        self._previous_problems = problems
        idle = counters["unwanted"] > last_counters["unwanted"]
        level, message = diagnostics.health(values["state"], values["output_rate_hz"],
                                            new_problems, no_subscribers=idle)
        if self._diagnostics_pub is None:
            self.get_logger().info(diagnostics.summary_line(message, values))
            return
        self._diagnostics_pub.publish(diagnostics.make_diagnostic_array(
            stamp=self.get_clock().now().to_msg(), name=f"{self.get_fully_qualified_name()}: "
            "stereo segmentation", hardware_id=values["device"], level=level, message=message,
            values=values))
