"""Collective helpers that are no-ops in a single process.

Every rank must call a collective at the same point of the program with a tensor of the same shape,
or the job hangs. The callers in this package only call these helpers from code that every rank
runs in lockstep (one call per micro-batch or per optimizer step).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Return True when a torch.distributed process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks in place and return it; return it unchanged in one process.

    The tensor must live on a device that the process group's backend supports (CPU for gloo,
    CUDA for NCCL).
    """
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
