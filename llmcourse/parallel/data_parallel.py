"""Chapter 10: data parallelism by hand.

Every rank holds a full copy of the model and sees a different slice of the
batch. After ``backward()`` each rank has the gradient of *its* slice's loss;
averaging those gradients over the ranks (one ``all_reduce`` per tensor, then a
division by the world size) gives every rank the gradient of the whole batch,
so one optimizer step keeps all copies identical and equal to a single process
that saw the whole batch. ``torch.nn.parallel.DistributedDataParallel`` does the
same, overlapping the all-reduces with the backward pass.

The three steps of one data-parallel step::

    broadcast_parameters(model)              # once: all copies start equal
    x_mine, y_mine = shard_batch((x, y))     # my slice of the batch
    loss_fn(model(x_mine), y_mine).backward()
    allreduce_gradients(model)               # sum over ranks, / world size
    optimizer.step()
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

Batch = TypeVar("Batch", Tensor, Sequence[Tensor])


def _world() -> tuple[int, int]:
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialized: run this inside run_parallel / notebook_launch "
                           "(llmcourse.parallel.launch) or a torchrun program.")
    return dist.get_rank(), dist.get_world_size()


def shard_batch(batch: Batch, rank: int | None = None, world_size: int | None = None) -> Batch:
    """Rank ``rank``'s contiguous slice (along dim 0) of a batch tensor, or of each tensor in a tuple/list.

    ``rank`` and ``world_size`` default to this process's. The batch size must divide evenly: with uneven
    slices the ranks' mean losses would weigh examples differently from the single-process mean.
    """
    if rank is None or world_size is None:
        rank, world_size = _world()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    tensors = [batch] if isinstance(batch, Tensor) else list(batch)
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"batch must be a tensor or a tuple/list of tensors, got {type(batch).__name__}")
    size = tensors[0].shape[0]
    if any(t.shape[0] != size for t in tensors):
        raise ValueError(f"all tensors of the batch need the same first dimension, got "
                         f"{[t.shape[0] for t in tensors]}")
    if size % world_size:
        raise ValueError(f"a batch of {size} examples cannot be split evenly over {world_size} processes; "
                         f"use a batch size that is a multiple of {world_size}")
    per_rank = size // world_size
    pieces = [t[rank * per_rank:(rank + 1) * per_rank] for t in tensors]
    return pieces[0] if isinstance(batch, Tensor) else type(batch)(pieces)


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every other rank, so all copies start identical."""
    _world()
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor, src=src)


def allreduce_gradients(model: nn.Module) -> None:
    """Replace every parameter's ``.grad`` by its average over all ranks (all_reduce SUM, then / world size).

    Call it after ``loss.backward()`` and before ``optimizer.step()``. Every rank must call it (it is a
    collective), with the same model, so the tensors line up.
    """
    _, world_size = _world()
    for param in model.parameters():
        if not param.requires_grad:
            continue
        if param.grad is None:  # a parameter this rank's loss did not reach still joins the collective
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        param.grad /= world_size


def gradients_in_sync(model: nn.Module, atol: float = 0.0) -> bool:
    """True when every rank holds the same gradients as rank 0 (a check, one broadcast per tensor)."""
    _world()
    params = list(model.parameters())
    same = True
    for param in params:
        if param.grad is None:
            continue
        reference = param.grad.clone()
        dist.broadcast(reference, src=0)
        same &= bool(torch.allclose(param.grad, reference, rtol=0.0, atol=atol))
    flag = torch.tensor([int(same)], device=params[0].device if params else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
