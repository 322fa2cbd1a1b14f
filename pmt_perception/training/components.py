"""Building what a run needs from its resolved settings: datasets and loaders, the model, the
loss, the optimizer and the LR schedule. Kept apart from the loop so each reads in one sitting.
"""
from __future__ import annotations

import math
import os
from typing import Any, Optional

import torch
from torch import nn

from pmt_perception.checkpoint import load_checkpoint, model_config_of
from pmt_perception.config import from_dict, load_model_config, load_yaml, resolve_config_path, to_plain
from pmt_perception.data import DataConfig, build_dataset, build_train_sampler
from pmt_perception.losses import PMTLoss
from pmt_perception.network import build_model, initial_weights, to_channels_last
from pmt_perception.runtime import cpu_has_native_bf16

from .distributed import DistributedContext
from .interrupt import ignore_interrupts_in_worker
from .recipes import merge
from .sampling import ResumableSampler, SeededSamples, collate_samples
from .settings import TrainConfig


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """None for fp32. `auto`: bf16 on CPUs with native bf16 (avx512_bf16 / AMX run it about 2x
    faster than fp32; on plain AVX2 it is emulated and several times slower, so fp32 there)
    and on GPUs that support it, fp16 on older GPUs."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 is a GPU path; use bf16 (or auto) on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def channels_last_trains_exactly(dtype: Optional[torch.dtype], device: torch.device) -> bool:
    """False for bf16 on the CPU: there, torch 2.14.1's oneDNN (3.12) returns wrong weight
    gradients for dilated convolutions in channels-last format on avx512_bf16 CPUs (garbage at
    dilation 2, NaN at 4 and 8, for some shapes only: the disparity refinement's 24-channel
    body at a 160x288 crop went non-finite on step 2), while the forward pass, the input
    gradient and the contiguous (NCHW) kernels are right. NCHW costs about 11 % of a bf16
    step there (0.72 vs 0.64 s forward + backward of `edge`, batch 8)."""
    return not (dtype == torch.bfloat16 and device.type == "cpu")


def load_data_settings(config: TrainConfig) -> DataConfig:
    path = resolve_config_path(config.data, "data")
    merged = merge(load_yaml(path), to_plain(config.data_overrides))
    return from_dict(DataConfig, merged, source=f"{path} + data_overrides")


class NetworkWithLoss(nn.Module):
    """Network and loss as ONE module, so DistributedDataParallel all-reduces the loss's learned
    uncertainty weights together with the network's gradients (separately they would drift
    apart between ranks)."""

    def __init__(self, network: nn.Module, criterion: PMTLoss, *,
                 dtype: Optional[torch.dtype], device_type: str) -> None:
        super().__init__()
        self.network = network
        self.criterion = criterion
        self.dtype = dtype
        self.device_type = device_type

    def forward(self, left: torch.Tensor, right: torch.Tensor, seg: torch.Tensor,
                disparity: torch.Tensor):
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None):
            output = self.network(left, right)
        # The losses cast to float32 themselves; running them outside autocast keeps the
        # Lovasz sort and the CE sums in full precision.
        total, terms = self.criterion(output, seg=seg, disparity=disparity)
        return total, terms, output


def build_network(config: TrainConfig, num_classes: int, context: DistributedContext,
                  ) -> nn.Module:
    model_config = load_model_config(config.model, **{"num_classes": num_classes,
                                                      **to_plain(config.model_overrides)})
    if model_config.num_classes != num_classes:
        raise ValueError(f"model_overrides.num_classes {model_config.num_classes} does not match "
                         f"the dataset's {num_classes} classes")
    # The recipe's `pretrained` asks for ImageNet weights; build_model never reads it itself.
    network = build_model(model_config, weights=initial_weights(model_config))
    init = config.init_checkpoint            # weights to start from (not a resume)
    if init:
        payload = load_checkpoint(init)
        # Through ModelConfig: a field added since that checkpoint takes its default (no weights).
        if to_plain(model_config_of(payload, source=init)) != to_plain(model_config):
            raise ValueError(f"init_checkpoint {init}: its model config differs from this run's")
        # Parameters the architecture gained since that checkpoint keep their initialisation.
        missing, unexpected = network.load_state_dict(
            {k: v.float() for k, v in payload["model_state"].items()}, strict=False)
        if unexpected:
            raise ValueError(f"init_checkpoint {init}: parameters this model lacks: {unexpected}")
    if config.sync_batchnorm and context.is_distributed:
        if context.device.type != "cuda":
            raise ValueError("sync_batchnorm needs CUDA devices (torch's SyncBatchNorm is "
                             "GPU-only); set --sync-batchnorm false for CPU/gloo training")
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    network = network.to(context.device)
    if config.channels_last:
        network = to_channels_last(network)
    return network


def build_optimizer(config: TrainConfig, parameters) -> torch.optim.Optimizer:
    lr, weight_decay = config.lr, config.weight_decay
    betas = tuple(config.betas)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, betas=betas, weight_decay=weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=betas[0], weight_decay=weight_decay)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base LR at `step`: linear warm-up, then none | cosine | poly (0.9) |
    step (x0.1 after 2/3 of the run), never below min_lr_ratio."""
    warmup, total = config.warmup_iterations, config.iterations
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = config.min_lr_ratio
    schedule = config.lr_schedule
    if schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "poly":
        return floor + (1 - floor) * (1 - progress) ** 0.9
    if schedule == "step":
        return max(floor, 0.1 if progress >= 2 / 3 else 1.0)
    return 1.0


def loader_options(config: TrainConfig, device: torch.device) -> dict[str, Any]:
    workers = int(config.workers)
    if workers > 0:
        # Worker processes are forked from this one: OpenCV's thread pool, if this process has
        # started it, does not survive a fork (a worker that touches it deadlocks in
        # pthread_cond_destroy), and N workers x N OpenCV threads would oversubscribe the cores
        # anyway. One OpenCV thread, set BEFORE forking, is inherited by every worker.
        import cv2

        cv2.setNumThreads(1)
    options: dict[str, Any] = {"num_workers": workers, "collate_fn": collate_samples,
                               "pin_memory": bool(config.pin_memory) and device.type == "cuda"}
    if workers > 0:
        options.update(persistent_workers=bool(config.persistent_workers),
                       prefetch_factor=int(config.prefetch_factor),
                       worker_init_fn=ignore_interrupts_in_worker)
    return options


def build_loaders(config: TrainConfig, data_config: DataConfig,
                  context: DistributedContext):
    """(train dataset, val dataset, train loader, its ResumableSampler, val loader)."""
    if config.batch_size % context.world_size:
        raise ValueError(f"batch_size {config.batch_size} (global) is not divisible by "
                         f"the {context.world_size} processes")
    train_set = build_dataset(data_config, split=config.train_split)
    val_set = build_dataset(data_config, split=config.val_split, augment=False)
    base_sampler = build_train_sampler(train_set, data_config, seed=config.seed)
    sampler = ResumableSampler(len(train_set), seed=config.seed, rank=context.rank,
                               world_size=context.world_size, base_sampler=base_sampler)
    options = loader_options(config, context.device)
    # Private generators: creating a DataLoader iterator draws worker seeds from its generator,
    # and from the GLOBAL RNG without one, which would make a resumed run's RNG drift.
    train_loader = torch.utils.data.DataLoader(
        SeededSamples(train_set), batch_size=config.batch_size // context.world_size,
        sampler=sampler, drop_last=True, generator=torch.Generator().manual_seed(config.seed),
        **options)
    limit = config.val_samples
    count = len(val_set) if limit is None else min(int(limit), len(val_set))
    # Validation samples keep their full size, which may differ between images: batch 1.
    val_indices = list(range(context.rank, count, context.world_size))
    val_options = dict(options)
    if val_options["num_workers"]:
        val_options["persistent_workers"] = False  # used once per evaluation interval
    val_loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(val_set, val_indices), batch_size=1, shuffle=False,
        generator=torch.Generator().manual_seed(config.seed), **val_options)
    return train_set, val_set, train_loader, sampler, val_loader


def default_threads(config: TrainConfig) -> Optional[int]:
    threads = config.threads
    if threads is None:
        return None
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1 or null, got {threads}")
    return min(threads, os.cpu_count() or threads)
