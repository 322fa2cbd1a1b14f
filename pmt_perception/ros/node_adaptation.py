"""stereo_seg_node's side of online adaptation (`adapt: true`): start and stop the
background OnlineAdaptation (ros/adaptation.py), swap its weights into the node's Predictor,
and write the adapted checkpoint (adapt_save_path, ~/save_adapted).

A mixin of StereoSegNode: it uses the node's `predictor`, `_predictor_values`, `_loaded`,
`_outputs`, `_output_settings`, `_last_frame_size`, `_adaptation` and `_new_predictor`.
"""
from __future__ import annotations

from pmt_perception.adapt_settings import load_settings as load_adapt_settings
from pmt_perception.ros.adaptation import OnlineAdaptation
from pmt_perception.ros.params import settings_snapshot

__all__ = ["OnlineAdaptationHooks"]


class OnlineAdaptationHooks:
    def _start_adaptation(self, values: dict) -> None:
        try:
            settings = load_adapt_settings(values["adapt_config"] or None)
            adaptation = OnlineAdaptation(
                self._loaded.model, settings, device=self.predictor.device,
                class_names=list(self._loaded.class_names),
                install=lambda model: self._install_adapted(adaptation, model),
                every_n=values["adapt_every_n"], steps_per_pair=values["adapt_steps_per_pair"],
                min_swap_interval=values["adapt_swap_interval"])
        except Exception as error:  # noqa: BLE001 - the node serves without adaptation
            self.get_logger().error(f"adapt: not started: {type(error).__name__}: {error}")
            return
        self._adaptation = adaptation
        adaptation.start()
        self.get_logger().info(f"adapt: online adaptation of {settings.parameters} on every "
                               f"{values['adapt_every_n']}-th pair")

    def _install_adapted(self, adaptation: OnlineAdaptation, model) -> None:
        """Adaptation thread: a Predictor for the new weights, built with the settings of the
        one it replaces, run once at the latest frame's size where the runtime builds a graph
        per size (seconds that must not fall on the publishing path), then swapped in by
        reference; the model worker reads self.predictor once per frame, so the swap falls
        between frames. Only the running adaptation swaps: a thread left over from an earlier
        activation (stop() waits 10 s at most) must not install its weights into a later one."""
        def current() -> bool:
            return self._adaptation is adaptation and not adaptation.stopping

        if not current() or self.predictor is None:
            return
        candidate = self._new_predictor(self._predictor_values, model)
        size = self._last_frame_size or tuple(self._predictor_values["warmup_size"])
        if candidate.backend != "eager" and all(size) and current():
            outputs = self._outputs   # read once: cleanup may drop it meanwhile
            # The graph of the outputs wanted now; a confidence subscriber arriving later still
            # costs one graph build on the publishing path.
            confidence = outputs is not None and outputs.needs_confidence(self._output_settings)
            candidate.warmup(size, iterations=1, confidence=confidence)
        if current():
            self.predictor = candidate

    def _stop_adaptation(self) -> None:
        adaptation = self._adaptation
        if adaptation is None:
            return
        if not adaptation.stop():
            self.get_logger().warning("adapt: the adaptation step did not end within 10 s")
        if settings_snapshot(self)["adapt_save_path"]:
            self._save_adapted()
        self._adaptation = None

    def _save_adapted(self) -> tuple[bool, str]:
        """(saved, message): the adaptation's current weights to adapt_save_path, atomically."""
        adaptation, path = self._adaptation, settings_snapshot(self)["adapt_save_path"]
        if adaptation is None or self._loaded is None or self.predictor is None:
            message = "adapt: nothing to save: online adaptation is not running"
        elif not path:
            message = "adapt: nothing saved: adapt_save_path is empty"
        else:
            try:
                adaptation.save(path, class_names=list(self.predictor.class_names),
                                palette=self.predictor.palette.tolist(),
                                info={"from": self._loaded.description})
            except Exception as error:  # noqa: BLE001 - a full disk must not stop the node
                message = f"adapt: cannot write {path}: {type(error).__name__}: {error}"
                self.get_logger().error(message)
                return False, message
            message = f"adapt: adapted checkpoint written to {path} ({adaptation.stats.steps} steps)"
            self.get_logger().info(message)
            return True, message
        self.get_logger().warning(message)
        return False, message
