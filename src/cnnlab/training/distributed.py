"""Data-parallel training with PyTorch's own engine: `torchrun --nproc-per-node N -m cnnlab run ...`.

Every process holds the whole (small) dataset and draws the same epoch permutation; process
r trains on positions r, r+N, r+2N, ... of each global batch, so N processes with batch
B/N each see exactly the images one process sees with batch B. DDP averages the gradients;
losses and accuracies are summed over processes; only process 0 writes files and prints.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> Dist:
    """The process's place in a torchrun job (a single process outside one)."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Dist()


def setup(device_name: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return current()


def device_for(ctx: Dist, device: torch.device) -> torch.device:
    """Under torchrun each process drives its own GPU."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap(module: nn.Module, ctx: Dist, device: torch.device) -> nn.Module:
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (in place) when distributed."""
    if dist.is_available() and dist.is_initialized():
        if tensor.device.type == "cpu" and dist.get_backend() == "nccl":
            moved = tensor.cuda()
            dist.all_reduce(moved)
            tensor.copy_(moved.cpu())
        else:
            dist.all_reduce(tensor)
    return tensor


def broadcast(obj):
    """Process 0's value of `obj`, on every process."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
