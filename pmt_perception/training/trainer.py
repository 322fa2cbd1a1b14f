"""The training loop: step-based (the paper counts iterations), validation every eval_interval
steps, early stopping on a validation metric, atomic checkpoints, exact resume.

Exact resume rests on four things: (1) the sampler's order depends only on (seed, epoch) and it
can start mid-epoch; (2) each sample's augmentation runs under its own seed; (3) the DataLoaders
draw their worker seeds from private generators, so creating a new iterator after a resume does
not move the global RNG; (4) the checkpoint carries optimizer, scheduler, scaler, loss-module
and RNG states. Given the same settings, thread count and hardware, step s+1 after a resume
computes the same loss, bit for bit, as step s+1 of a run that was never interrupted.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pmt_perception.atomic import write_json_atomic
from pmt_perception.checkpoint import unwrap
from pmt_perception.config import dump_yaml_atomic, load_loss_config, to_plain
from pmt_perception.losses import PMTLoss

from . import state as checkpoints
from .components import (
    NetworkWithLoss,
    autocast_dtype,
    build_loaders,
    build_network,
    build_optimizer,
    channels_last_trains_exactly,
    load_data_settings,
    lr_factor,
)
from .distributed import DistributedContext, all_gather_objects, all_reduce_sum, barrier, broadcast_flag
from .interrupt import StopAtStepBoundary
from .monitor import NullMonitor, TrainingMonitor
from .settings import TrainConfig
from .validation import is_improvement, metric_mode, validate


class Trainer:
    def __init__(self, config: TrainConfig, context: DistributedContext, *,
                 resume_path: Path | None = None, config_source: str | None = None,
                 stop_request: StopAtStepBoundary | None = None) -> None:
        # Read between steps: a stop signal ends the run there, with last.pt written.
        self.stop_request = stop_request or StopAtStepBoundary()
        self.dtype = autocast_dtype(config.precision, context.device)
        if config.channels_last and not channels_last_trains_exactly(self.dtype, context.device):
            print("[pmt-train] channels_last off: bf16 on this CPU computes dilated convolutions' "
                  "weight gradients wrongly in channels-last (components.py says why)", flush=True)
            config = dataclasses.replace(config, channels_last=False)
        self.config = config
        self.config_source = config_source     # the --config file, recorded in the run files
        self.context = context
        self.run_dir = Path(config.run_dir)
        if resume_path is None and (self.run_dir / "last.pt").exists():
            raise FileExistsError(f"{self.run_dir} already holds a run (last.pt); continue it "
                                  "with --resume auto or choose another --run-dir")
        checkpoints.seed_everything(config.seed + context.rank)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif context.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        self.data_config = load_data_settings(config)
        (self.train_set, self.val_set, self.train_loader, self.sampler,
         self.val_loader) = build_loaders(config, self.data_config, context)
        self.class_names = list(self.train_set.class_names)
        self.palette = np.asarray(self.train_set.palette, dtype=np.uint8)
        self.network = build_network(config, self.train_set.num_classes, context)
        self.model_config = unwrap(self.network).config
        loss_config = load_loss_config(config.loss, **to_plain(config.loss_overrides))
        weights = loss_config.class_weights
        if weights is not None and len(weights) != len(self.class_names):
            # Before any step: a wrong list is a typo, and the classes name what it should be.
            raise ValueError(f"loss class_weights has {len(weights)} entries, the data has "
                             f"{len(self.class_names)} classes: {self.class_names}")
        self.criterion = PMTLoss(loss_config).to(context.device)
        self.module = NetworkWithLoss(self.network, self.criterion, dtype=self.dtype,
                                      device_type=context.device.type)
        self.optimizer = build_optimizer(config, self.module.parameters())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, config))
        self.scaler = torch.amp.GradScaler(context.device.type,
                                           enabled=self.dtype == torch.float16)
        self.progress: dict[str, Any] = {"step": 0, "epoch": 0, "position": 0, "best": None,
                                         "best_step": None, "early_stop_best": None,
                                         "evals_without_improvement": 0, "train_seconds": 0.0,
                                         "stopped_early": False}
        self.last_metrics: dict[str, Any] = {}
        if resume_path is not None:
            self._restore(resume_path)
        # A zero-weighted loss term (single-task training) leaves its head without gradients;
        # DDP must be told to expect that.
        unused = any(w == 0 for w in self.criterion.weights.values())
        self.trained = (DistributedDataParallel(
            self.module, device_ids=[context.device] if context.device.type == "cuda" else None,
            find_unused_parameters=unused) if context.is_distributed else self.module)
        self.monitor = (TrainingMonitor(self.run_dir, self.palette) if context.is_main
                        else NullMonitor())
        if context.is_main:
            self._write_run_files()

    # ------------------------------------------------------------------ setup helpers
    def _restore(self, path: Path) -> None:
        payload = checkpoints.load_training_checkpoint(path)
        self.network.load_state_dict(payload["model_state"])
        self.criterion.load_state_dict(payload["loss_state"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.progress.update(payload["progress"])
        self.last_metrics = dict(payload.get("metrics", {}))
        saved_world = len(payload["rng"])
        if saved_world == self.context.world_size:
            checkpoints.restore_rng_state(payload["rng"][self.context.rank])
        else:
            # Another process count cannot continue the same random streams; start fresh ones
            # that still depend only on (seed, rank, step).
            checkpoints.seed_everything(self.config.seed + 7919 * self.progress["step"]
                                        + self.context.rank)
        saved_sampler = payload["progress"].get("sampler_world_size", saved_world)
        if saved_sampler != self.context.world_size:
            # Sampler positions count per-rank samples; rescale to the new world size.
            self.progress["position"] = (self.progress["position"] * saved_sampler
                                         // self.context.world_size)
        # Checkpoints hold the settings as plain values; those written before a key existed
        # lack it, and .get's None is that key's default (init_checkpoint).
        saved = payload["settings"]
        changed = {k: (saved.get(k), v) for k, v in self.config.to_dict().items()
                   if saved.get(k) != v}
        if changed and self.context.is_main:
            print(f"[pmt-train] resuming {path} with changed settings (saved -> now): {changed}",
                  flush=True)

    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml_atomic(self.config.to_dict(), self.run_dir / "config.yaml")
        dump_yaml_atomic({"model": to_plain(self.model_config),
                          "loss": to_plain(self.criterion.config),
                          "data": to_plain(self.data_config),
                          "world_size": self.context.world_size,
                          "autocast_dtype": str(self.dtype),
                          "config_source": self.config_source},
                         self.run_dir / "resolved.yaml")

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        config, context = self.config, self.context
        total_steps = config.iterations
        per_rank_batch = config.batch_size // context.world_size
        step, epoch, position = (self.progress[k] for k in ("step", "epoch", "position"))
        self.monitor.start(step, total_steps)
        sums: dict[str, float] = {}
        steps_in_window, window_start = 0, time.perf_counter()
        session_start = time.perf_counter()
        seconds_before = float(self.progress["train_seconds"])
        # stop_after ends this invocation early while the LR schedule still spans `iterations`
        # (time-boxed sessions; --resume auto continues, equal-budget snapshots of longer runs).
        last_step = min(total_steps, config.stop_after or total_steps)
        stop = self.progress["stopped_early"] or step >= last_step
        while not stop:
            self.sampler.set_epoch(epoch, position)
            for batch in self.train_loader:
                want_sample = self._due(step + 1, config.image_interval)
                terms, sample = self._train_step(batch, want_sample=want_sample)
                step += 1
                position += per_rank_batch
                steps_in_window += 1
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                if step % config.log_interval == 0 or step == last_step:
                    elapsed = time.perf_counter() - window_start
                    self._log_train(step, epoch, sums, steps_in_window, elapsed)
                    sums, steps_in_window, window_start = {}, 0, time.perf_counter()
                if sample is not None:
                    self.monitor.train_images(step, sample)
                self.progress.update(step=step, epoch=epoch, position=position,
                                     train_seconds=seconds_before + time.perf_counter() - session_start)
                if step % config.eval_interval == 0 or step == last_step:
                    stop = self._evaluate(step)
                # Every rank stops at the same step when rank 0 got the signal.
                interrupted = broadcast_flag(self.stop_request.requested, context)
                stop = stop or step >= last_step or interrupted
                if step % config.checkpoint_interval == 0 or stop:
                    self._save(self.run_dir / "last.pt")
                if step in config.snapshot_steps:
                    self._save(self.run_dir / f"step_{step}.pt")
                if stop:
                    break
            else:
                epoch, position = epoch + 1, 0
        self.monitor.close()
        summary = {"steps": step, "best_metric": config.best_metric,
                   "best": self.progress["best"], "best_step": self.progress["best_step"],
                   "stopped_early": self.progress["stopped_early"],
                   "interrupted_by": self.stop_request.signal_name,
                   "train_seconds": self.progress["train_seconds"],
                   "world_size": context.world_size, "last_validation": self.last_metrics}
        if context.is_main:
            write_json_atomic(self.run_dir / "summary.json", summary)
        barrier(context)
        return summary

    def _due(self, step: int, interval: int) -> bool:
        return bool(interval) and step % interval == 0 and self.context.is_main

    def _train_step(self, batch: dict[str, Any], *, want_sample: bool):
        device = self.context.device
        channels_last = self.config.channels_last
        left = batch["left"].to(device, non_blocking=True)
        right = batch["right"].to(device, non_blocking=True)
        if channels_last:
            left = left.contiguous(memory_format=torch.channels_last)
            right = right.contiguous(memory_format=torch.channels_last)
        seg = batch["seg"].to(device, non_blocking=True)
        disparity = batch["disparity"].to(device, non_blocking=True)
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, terms, output = self.trained(left, right, seg, disparity)
        if not torch.isfinite(total) and self.dtype != torch.float16:
            raise FloatingPointError(f"non-finite training loss {terms} at step "
                                     f"{self.progress['step'] + 1}; lower --lr or set "
                                     "--grad-clip-norm")
        self.scaler.scale(total).backward()
        if self.config.grad_clip_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.config.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        sample = None
        if want_sample:
            sample = {"left": left[0].detach().float().cpu(), "seg": seg[0].cpu(),
                      "disparity": disparity[0].cpu(),
                      "pred_seg": output.refined_logits[0].detach().argmax(0).cpu(),
                      "pred_disparity": output.disparity[0, 0].detach().float().cpu()}
        return terms, sample

    def _log_train(self, step: int, epoch: int, sums: dict[str, float], steps: int,
                   elapsed: float) -> None:
        names = sorted(sums)
        # Mean over ranks and over the steps of the window: what the whole job trained on.
        values = torch.tensor([sums[n] for n in names], dtype=torch.float64)
        all_reduce_sum(values, self.context)
        values /= self.context.world_size * max(steps, 1)
        record = {"step": step, "epoch": epoch}
        for name, value in zip(names, values.tolist()):
            record["loss" if name == "total" else name] = value
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["images_per_s"] = steps * self.config.batch_size / max(elapsed, 1e-9)
        self.monitor.train_step(step, record)

    def _evaluate(self, step: int) -> bool:
        """Validate; save best.pt on improvement; True when early stopping says stop."""
        metrics, sample = validate(
            unwrap(self.network), self.criterion, self.val_loader, context=self.context,
            autocast_dtype=self.dtype, channels_last=self.config.channels_last,
            num_classes=self.model_config.num_classes,
            ignore_index=self.criterion.config.ignore_index, keep_first=self.context.is_main)
        self.last_metrics = metrics
        self.monitor.validation(step, metrics, sample)
        best_name = self.config.best_metric
        if best_name not in metrics:
            raise ValueError(f"best_metric {best_name!r} is not a validation metric; known: "
                             f"{sorted(k for k, v in metrics.items() if isinstance(v, float))}")
        value = metrics[best_name]
        if is_improvement(value, self.progress["best"], metric_mode(best_name)):
            self.progress.update(best=value, best_step=step)
            self._save(self.run_dir / "best.pt")
        patience = self.config.early_stopping_patience
        stop_name = self.config.early_stopping_metric
        stop_value = metrics.get(stop_name, math.nan)
        if is_improvement(stop_value, self.progress["early_stop_best"], metric_mode(stop_name)):
            self.progress.update(early_stop_best=stop_value, evals_without_improvement=0)
        else:
            self.progress["evals_without_improvement"] += 1
        stop = bool(patience) and self.progress["evals_without_improvement"] >= patience
        stop = broadcast_flag(stop, self.context)
        if stop:
            self.progress["stopped_early"] = True
            self.monitor.message(f"early stopping at step {step}: {stop_name} did not improve "
                                 f"for {patience} evaluations")
        return stop

    def _save(self, path: Path) -> None:
        rng_states = all_gather_objects(checkpoints.capture_rng_state(), self.context)
        if not self.context.is_main:
            return
        progress = {**self.progress, "sampler_world_size": self.context.world_size}
        checkpoints.save_training_checkpoint(
            path, network=self.network, model_config=self.model_config,
            class_names=self.class_names, palette=self.palette, optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler, criterion=self.criterion,
            progress=progress, rng_states=rng_states,
            settings={**self.config.to_dict(), "config_source": self.config_source},
            metrics=self.last_metrics)
