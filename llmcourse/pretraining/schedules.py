"""Learning-rate schedules: linear warmup, then cosine decay (chapter 08).

GPT-style pretraining rarely uses one fixed learning rate. It starts small,
while the freshly initialised weights give large, unreliable gradients
(**warmup**), then slowly lowers the rate so that the last steps settle into a
minimum instead of bouncing around it (**decay**). The rule used here, for step
``t`` (counted from 0), warmup ``W`` and total ``S`` steps:

* ``t < W``:       ``lr = max_lr * t / W``   (a straight line from 0; step W reaches max_lr)
* ``W <= t <= S``: ``lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * (t - W) / (S - W))) / 2``
* ``t > S``:       ``lr = min_lr``           (training past the plan keeps the final rate)

This is the definition of transformers' ``get_cosine_with_min_lr_schedule_with_warmup``
and of PyTorch's ``LinearLR`` (from 0) followed by ``CosineAnnealingLR``; the tests
compare with both. Note that step 0 has learning rate 0 when ``W > 0``: that first
update changes nothing (nanoGPT's newer code uses ``(t + 1) / (W + 1)`` to avoid it).
"""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _check(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> None:
    for name, value in (("step", step), ("warmup_steps", warmup_steps), ("total_steps", total_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    if total_steps < warmup_steps:
        raise ValueError(f"total_steps={total_steps} must be at least warmup_steps={warmup_steps} "
                         "(the warmup is part of the run)")
    if not 0.0 <= min_lr <= max_lr:
        raise ValueError(f"need 0 <= min_lr <= max_lr, got min_lr={min_lr}, max_lr={max_lr}")


def warmup_cosine_lr(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """The learning rate at ``step``: linear warmup from 0 to ``max_lr``, then a cosine down to ``min_lr``."""
    _check(step, max_lr, warmup_steps, total_steps, min_lr)
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(optimizer: Optimizer, warmup_steps: int, total_steps: int,
                           min_lr: float = 0.0) -> LambdaLR:
    """A ``LambdaLR`` that follows :func:`warmup_cosine_lr` for every parameter group.

    Each group's current ``lr`` is its ``max_lr``; ``min_lr`` is the same absolute
    floor for all groups. Call ``scheduler.step()`` once after each ``optimizer.step()``.
    """
    _check(0, max(group["lr"] for group in optimizer.param_groups), warmup_steps, total_steps, 0.0)
    lambdas = []
    for i, group in enumerate(optimizer.param_groups):
        max_lr = group["lr"]
        if min_lr > max_lr or min_lr < 0:
            raise ValueError(f"min_lr={min_lr} must be between 0 and the learning rate of parameter group {i} "
                             f"({max_lr})")

        def factor(step: int, max_lr: float = max_lr) -> float:
            if max_lr == 0:
                return 1.0
            return warmup_cosine_lr(step, max_lr, warmup_steps, total_steps, min_lr) / max_lr

        lambdas.append(factor)
    return LambdaLR(optimizer, lambdas)


__all__ = ["warmup_cosine_lr", "warmup_cosine_schedule"]
