"""Chapter 10: fp16 underflow and loss scaling.

fp16 cannot hold magnitudes below about 6e-8 (its smallest subnormal): smaller
gradients round to exactly 0 and their information is lost. Multiplying the loss
by a scale S multiplies every gradient by S (the chain rule is linear), lifting
them into fp16's range; dividing by S afterwards, in fp32, gives back the true
gradients. Too large an S overflows to inf, so a *dynamic* scaler halves S when
a step finds inf/nan (and skips that step), and doubles it after
``growth_interval`` good steps in a row — the rule of ``torch.amp.GradScaler``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

FP16_SMALLEST_SUBNORMAL = float(torch.finfo(torch.float16).smallest_normal) * 2.0 ** -10
FP16_MAX = float(torch.finfo(torch.float16).max)


def underflow_fraction(grads: torch.Tensor, scale: float = 1.0) -> float:
    """The share of the non-zero values of ``grads * scale`` that become exactly 0 when stored in fp16."""
    if not isinstance(grads, torch.Tensor):
        raise TypeError(f"grads must be a torch.Tensor, got {type(grads).__name__}.")
    values = grads.detach().double().flatten() * scale
    nonzero = values != 0
    if not bool(nonzero.any()):
        return 0.0
    flushed = (values.to(torch.float16) == 0) & nonzero
    return float(flushed.sum()) / float(nonzero.sum())


def overflow_fraction(grads: torch.Tensor, scale: float = 1.0) -> float:
    """The share of the values of ``grads * scale`` that become inf (or are nan) in fp16."""
    values = grads.detach().double().flatten() * scale
    return float((~torch.isfinite(values.to(torch.float16))).double().mean())


def dynamic_scale_update(scale: float, found_inf: bool, good_steps: int, growth_factor: float = 2.0,
                         backoff_factor: float = 0.5, growth_interval: int = 2000) -> tuple[float, int]:
    """One update of a dynamic loss scale; returns ``(new_scale, new_good_steps)``.

    inf/nan found: scale x backoff_factor, count back to 0. Otherwise count + 1, and when the count
    reaches ``growth_interval`` the scale grows by ``growth_factor`` and the count restarts at 0.
    """
    if found_inf:
        return scale * backoff_factor, 0
    good_steps += 1
    if good_steps == growth_interval:
        grown = scale * growth_factor
        return (grown if grown != float("inf") else scale), 0
    return scale, good_steps


def _gradients(target: torch.optim.Optimizer | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(target, torch.optim.Optimizer):
        return [p.grad for group in target.param_groups for p in group["params"] if p.grad is not None]
    grads = list(target)
    if not all(isinstance(g, torch.Tensor) for g in grads):
        raise TypeError("unscale_ takes an optimizer or an iterable of gradient tensors.")
    return grads


class StaticLossScaler:
    """Multiply the loss by a fixed ``scale``; divide the gradients by it before the optimizer step."""

    def __init__(self, scale: float = 2.0 ** 16) -> None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"the loss scale must be a positive number, got {scale!r}.")
        self.scale = float(scale)
        self.found_inf = False  # did the last unscale_ see an inf or nan?
        self._unscaled = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale:g})"

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss times the current scale (call ``.backward()`` on this)."""
        return loss * self.scale

    def unscale_(self, target: torch.optim.Optimizer | Iterable[torch.Tensor]) -> bool:
        """Divide the gradients by the scale in place; return (and remember) whether any is inf or nan."""
        grads = _gradients(target)
        for g in grads:
            g.mul_(1.0 / self.scale)
        self.found_inf = any(not bool(torch.isfinite(g).all()) for g in grads)
        self._unscaled = True
        return self.found_inf

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Unscale (if not done yet) and take the optimizer step unless a gradient is inf/nan; True if stepped."""
        if not self._unscaled:
            self.unscale_(optimizer)
        if self.found_inf:
            return False
        optimizer.step()
        return True

    def update(self) -> None:
        """Get ready for the next step (a static scale never changes)."""
        self._unscaled = False
        self.found_inf = False


class DynamicLossScaler(StaticLossScaler):
    """A loss scale that backs off on inf/nan and grows after ``growth_interval`` good steps (GradScaler's rule)."""

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000) -> None:
        super().__init__(init_scale)
        if not growth_factor > 1:
            raise ValueError(f"growth_factor must be > 1, got {growth_factor!r}.")
        if not 0 < backoff_factor < 1:
            raise ValueError(f"backoff_factor must be between 0 and 1, got {backoff_factor!r}.")
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) or growth_interval < 1:
            raise ValueError(f"growth_interval must be a whole number >= 1, got {growth_interval!r}.")
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self.good_steps = 0  # good steps in a row since the last change

    def __repr__(self) -> str:
        return f"DynamicLossScaler(scale={self.scale:g}, good_steps={self.good_steps})"

    def update(self) -> None:
        """Move the scale by :func:`dynamic_scale_update` using this step's ``found_inf``."""
        self.scale, self.good_steps = dynamic_scale_update(self.scale, self.found_inf, self.good_steps,
                                                           self.growth_factor, self.backoff_factor,
                                                           self.growth_interval)
        super().update()


@dataclass
class Fp16Run:
    """What :func:`fp16_training_demo` records at every step."""

    losses: list[float]
    scales: list[float]
    zero_share: list[float]  # share of the gradient entries that were 0 after the fp16 round trip


def fp16_training_demo(scaler: StaticLossScaler | None = None, steps: int = 100, lr: float = 0.2,
                       target_scale: float = 1e-8, seed: int = 0) -> Fp16Run:
    """Fit a tiny linear regression whose gradients are around 1e-8, storing the gradients in fp16.

    The weights and the update stay in fp32 (a master copy, as in mixed precision); only the
    gradients make a round trip through fp16, where values below ~6e-8 become 0. With
    ``scaler=None`` (no scaling) most gradients vanish and the loss stalls far from 0;
    a loss scale keeps them alive. Losses are reported relative to the starting loss (so they start at 1).
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 16, generator=generator)
    true_w = torch.randn(16, 1, generator=generator) * target_scale
    y = x @ true_w
    w = torch.zeros(16, 1, requires_grad=True)
    run = Fp16Run([], [], [])
    start = float(((x @ w.detach() - y) ** 2).mean())
    for _ in range(steps):
        loss = ((x @ w - y) ** 2).mean()
        scaled = scaler.scale_loss(loss) if scaler is not None else loss
        (grad,) = torch.autograd.grad(scaled, w)
        grad = grad.to(torch.float16).float()  # the fp16 round trip
        run.zero_share.append(float((grad == 0).double().mean()))
        run.scales.append(scaler.scale if scaler is not None else 1.0)
        stepped = True
        if scaler is not None:
            scaler.unscale_([grad])
            stepped = not scaler.found_inf
            scaler.update()
        if stepped:
            with torch.no_grad():
                w -= lr * grad
        run.losses.append(loss.item() / start)
    return run
