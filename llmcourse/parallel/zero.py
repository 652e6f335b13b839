"""Chapter 10: ZeRO stage 1, the optimizer state sharded across data-parallel ranks.

In plain data parallelism every rank keeps the whole optimizer state: for AdamW
two running averages (``exp_avg``, ``exp_avg_sq``) per parameter, twice the
model's size, identical on every rank. ZeRO-1 keeps each parameter's state on one
rank only, its *owner*:

1. the gradients are averaged over the ranks, each onto its parameter's owner
   (``dist.reduce``: only the owner needs the average);
2. each rank runs the optimizer on the parameters it owns;
3. each owner sends its updated parameters to everyone (``dist.broadcast``).

The result equals the unsharded optimizer, step for step, while each rank holds
about ``1 / world`` of the state. :func:`partition_parameters` shares the
parameters out, largest first to the rank with the fewest elements so far, as
``torch.distributed.optim.ZeroRedundancyOptimizer`` does.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn


def partition_parameters(sizes: Sequence[int], world: int) -> list[list[int]]:
    """Indices of the parameters each rank owns, given every parameter's number of elements.

    Greedy: the largest parameter first, each to the rank holding the fewest elements so far (ties: lowest
    rank). Returns one sorted list of indices per rank.
    """
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be a whole number >= 1, got {world!r}")
    loads = [0] * world
    owned: list[list[int]] = [[] for _ in range(world)]
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        rank = min(range(world), key=lambda r: loads[r])
        owned[rank].append(index)
        loads[rank] += sizes[index]
    return [sorted(indices) for indices in owned]


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in an optimizer's per-parameter state (moments, step counters)."""
    return sum(value.numel() * value.element_size()
               for state in optimizer.state.values() for value in state.values() if isinstance(value, Tensor))


class ZeroOptimizer:
    """Data-parallel training with the optimizer state sharded across ranks (ZeRO-1).

    ``ZeroOptimizer(model.parameters(), torch.optim.AdamW, lr=1e-3, weight_decay=0.1)``: every rank passes the
    same parameters (its copy of the model) in the same order. ``step()`` averages the gradients (unless
    ``average_gradients=False``, when they are already averaged, e.g. by DDP), updates this rank's share and
    brings every rank's copy up to date. After ``step()``, ``.grad`` is only meaningful on owned parameters.
    """

    def __init__(self, params: Iterable[nn.Parameter], optimizer_class: type = torch.optim.AdamW,
                 average_gradients: bool = True, **defaults: Any):
        if not dist.is_initialized():
            raise RuntimeError("ZeroOptimizer shares work between processes: run it inside run_parallel / "
                               "notebook_launch (llmcourse.parallel.launch) or a torchrun program.")
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("ZeroOptimizer got no parameters that require gradients")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.average_gradients = average_gradients
        shares = partition_parameters([p.numel() for p in self.params], self.world)
        self.owner = [0] * len(self.params)
        for rank, indices in enumerate(shares):
            for i in indices:
                self.owner[i] = rank
        self.local_params = [self.params[i] for i in shares[self.rank]]
        # a rank that owns nothing still needs an optimizer object; give it an empty parameter group
        self.optimizer = optimizer_class(self.local_params or [torch.zeros(0, requires_grad=True)], **defaults)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        # 1. gradients: average each onto its owner
        if self.average_gradients:
            for p, owner in zip(self.params, self.owner):
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.reduce(p.grad, dst=owner, op=dist.ReduceOp.SUM)
                if owner == self.rank:
                    p.grad /= self.world
        # 2. update the parameters this rank owns (with the state only this rank keeps)
        self.optimizer.step()
        # 3. every owner shares its updated parameters
        for p, owner in zip(self.params, self.owner):
            dist.broadcast(p.data, src=owner)

    def state_bytes(self) -> int:
        """Bytes of optimizer state on this rank."""
        return optimizer_state_bytes(self.optimizer)
