"""One process or many (torchrun): who am I, which device, and the few collectives training uses.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for every process, on
one node or many; a plain `pmt-train` has none of them and runs as a world of one without any
process group, so the single-process path never touches torch.distributed.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_setting: str = "auto") -> DistributedContext:
    """Join the torchrun process group when there is one; pick this process's device.

    NCCL on GPUs, gloo on CPUs (the backend the CPU test uses). With CUDA each process takes the
    GPU of its LOCAL_RANK, so a node with N GPUs runs `torchrun --nproc-per-node N`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_setting == "auto":
        device_setting = "cuda" if torch.cuda.is_available() else "cpu"
    if device_setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device_setting!r} requested but CUDA is not available")
        device = torch.device("cuda", local_rank if device_setting == "cuda" else
                              torch.device(device_setting).index)
        torch.cuda.set_device(device)
    elif device_setting == "cpu":
        device = torch.device("cpu")
    else:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device_setting!r}")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def teardown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum over ranks, in place, on the backend's device (gloo: CPU, NCCL: GPU)."""
    if not context.is_distributed:
        return tensor
    staged = tensor.to(context.device) if context.device.type == "cuda" else tensor
    dist.all_reduce(staged, op=dist.ReduceOp.SUM)
    if staged is not tensor:
        tensor.copy_(staged.to(tensor.device))
    return tensor


def all_gather_objects(value: Any, context: DistributedContext) -> list[Any]:
    """One picklable value per rank, in rank order (small things only: RNG states, flags)."""
    if not context.is_distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_flag(flag: bool, context: DistributedContext) -> bool:
    """Rank 0's decision for everyone (early stopping must stop every rank at the same step)."""
    if not context.is_distributed:
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int64, device=context.device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def barrier(context: DistributedContext) -> None:
    if context.is_distributed:
        dist.barrier()
