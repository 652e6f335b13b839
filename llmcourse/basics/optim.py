"""Optimizers from scratch: SGD, momentum, AdaGrad, RMSProp, Adam and AdamW (chapter 02).

An optimizer turns gradients into parameter updates. Every rule here is first
written as a *pure function* that performs one step on one tensor and returns
the new values (nothing is modified in place)::

    sgd_step(param, grad, lr)                                   -> param
    momentum_step(param, grad, buf, lr, momentum, ...)          -> (param, buf)
    adagrad_step(param, grad, sum_sq, t, lr, ...)               -> (param, sum_sq)
    rmsprop_step(param, grad, square_avg, lr, ...)              -> (param, square_avg, buf, grad_avg)
    adam_step(param, grad, m, v, t, lr, betas, eps)             -> (param, m, v)
    adamw_step(param, grad, m, v, t, lr, betas, eps, wd)        -> (param, m, v)

The classes (:class:`SGD`, :class:`AdaGrad`, :class:`RMSProp`, :class:`Adam`,
:class:`AdamW`) wrap those functions in the familiar ``torch.optim`` interface:
they keep the per-parameter state (momentum buffers, running averages, the step
count ``t``) and ``step()`` writes the new values into the parameters. They use
the same update rules and defaults as ``torch.optim`` (single parameter group,
no ``maximize``/``amsgrad``/``foreach`` options); the tests check that both give
the same trajectories.

Weight decay comes in two flavours:

* **L2, coupled** (SGD, AdaGrad, RMSProp, Adam): add ``weight_decay * param`` to
  the gradient, as if the loss had an extra ``weight_decay/2 * ||param||^2``.
  In Adam that extra gradient is then divided by sqrt(v) like every other one.
* **Decoupled** (AdamW): shrink the parameter directly,
  ``param *= 1 - lr * weight_decay``, outside the adaptive update.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor

# --------------------------------------------------------------------------- pure one-step rules


def sgd_step(param: Tensor, grad: Tensor, lr: float) -> Tensor:
    """Plain gradient descent: step against the gradient, ``param - lr * grad``."""
    return param - lr * grad


def momentum_step(param: Tensor, grad: Tensor, buf: Tensor | None, lr: float, momentum: float = 0.9,
                  dampening: float = 0.0, nesterov: bool = False) -> tuple[Tensor, Tensor]:
    """SGD with momentum (PyTorch's form). Returns ``(new_param, new_buf)``.

    The buffer is a running sum of past gradients, ``buf = momentum * buf + (1 - dampening) * grad``;
    on the first step (``buf is None``) it is simply ``grad``. The step is ``lr * buf``, or with
    Nesterov ``lr * (grad + momentum * buf)``: a look at where the momentum is about to carry us.
    """
    if buf is None:
        buf = grad.clone()
    else:
        buf = momentum * buf + (1 - dampening) * grad
    direction = grad + momentum * buf if nesterov else buf
    return param - lr * direction, buf


def adagrad_step(param: Tensor, grad: Tensor, sum_sq: Tensor, t: int, lr: float = 0.01, eps: float = 1e-10,
                 lr_decay: float = 0.0) -> tuple[Tensor, Tensor]:
    """AdaGrad: divide each coordinate's step by the root of *all* its squared gradients so far.

    ``sum_sq += grad**2``; ``param -= lr_t * grad / (sqrt(sum_sq) + eps)`` with
    ``lr_t = lr / (1 + (t - 1) * lr_decay)`` (``t`` counts steps from 1). Coordinates that
    had large gradients get small steps, rarely-moved ones keep large steps. Because
    ``sum_sq`` only grows, the steps shrink for good: the reason RMSProp was invented.
    Returns ``(new_param, new_sum_sq)``.
    """
    sum_sq = sum_sq + grad * grad
    lr_t = lr / (1 + (t - 1) * lr_decay)
    return param - lr_t * grad / (sum_sq.sqrt() + eps), sum_sq


def rmsprop_step(param: Tensor, grad: Tensor, square_avg: Tensor, lr: float = 0.01, alpha: float = 0.99,
                 eps: float = 1e-8, *, momentum: float = 0.0, buf: Tensor | None = None,
                 grad_avg: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """RMSProp: like AdaGrad, but a *moving average* of squared gradients, so old ones are forgotten.

    ``square_avg = alpha * square_avg + (1 - alpha) * grad**2``; ``param -= lr * grad / (sqrt(square_avg) + eps)``.

    Options, as in ``torch.optim.RMSprop``: pass ``grad_avg`` (a running mean of the gradient,
    start it at zeros) for the *centered* variant, which divides by an estimate of the gradient's
    standard deviation instead; pass ``momentum > 0`` and ``buf`` (zeros at first) to accumulate
    the scaled steps in a momentum buffer. Returns ``(param, square_avg, buf, grad_avg)``.
    """
    square_avg = alpha * square_avg + (1 - alpha) * grad * grad
    if grad_avg is not None:  # centered: variance = E[g^2] - E[g]^2
        grad_avg = alpha * grad_avg + (1 - alpha) * grad
        denom = (square_avg - grad_avg * grad_avg).sqrt() + eps
    else:
        denom = square_avg.sqrt() + eps
    if momentum > 0:
        buf = momentum * (torch.zeros_like(param) if buf is None else buf) + grad / denom
        return param - lr * buf, square_avg, buf, grad_avg
    return param - lr * grad / denom, square_avg, buf, grad_avg


def adam_step(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, t: int, lr: float = 1e-3,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> tuple[Tensor, Tensor, Tensor]:
    """Adam: momentum (``m``) plus RMSProp-style scaling (``v``), both bias-corrected.

    ``m = beta1 m + (1 - beta1) grad`` (mean of the gradient),
    ``v = beta2 v + (1 - beta2) grad**2`` (mean of its square). Both start at 0, so early
    on they are too small; dividing by ``1 - beta**t`` (``t`` counts steps from 1) undoes that.
    ``param -= lr * m_hat / (sqrt(v_hat) + eps)``. Returns ``(new_param, new_m, new_v)``.
    """
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


def adamw_step(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, t: int, lr: float = 1e-3,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
               weight_decay: float = 0.01) -> tuple[Tensor, Tensor, Tensor]:
    """AdamW: first shrink the weights, ``param * (1 - lr * weight_decay)``, then an ordinary :func:`adam_step`."""
    return adam_step(param * (1 - lr * weight_decay), grad, m, v, t, lr, betas, eps)


# --------------------------------------------------------------------------- checking hyper-parameters


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_common(lr: float, weight_decay: float, eps: float | None = None) -> None:
    _check(math.isfinite(lr) and lr >= 0, f"learning rate must be a finite number >= 0, got lr={lr}")
    _check(weight_decay >= 0, f"weight_decay must be >= 0, got {weight_decay}")
    if eps is not None:
        _check(eps >= 0, f"eps must be >= 0, got {eps}")


def _check_betas(betas: tuple[float, float]) -> None:
    _check(len(betas) == 2, f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        _check(0.0 <= beta < 1.0, f"betas[{i}] must be in [0, 1), got {beta}")


# --------------------------------------------------------------------------- the optimizer classes


class Optimizer:
    """What every optimizer shares: a list of parameters, a state per parameter, ``zero_grad``.

    Subclasses implement ``_update(param, grad, state)``; ``step()`` calls it for every
    parameter that has a gradient, under ``torch.no_grad()``, and copies the result in place.
    """

    def __init__(self, params: Iterable[Tensor]) -> None:
        self.params: list[Tensor] = list(params)
        if not self.params:
            raise ValueError("the optimizer got an empty list of parameters")
        for p in self.params:
            if not isinstance(p, Tensor):
                raise TypeError(f"parameters must be torch.Tensor objects, got {type(p).__name__}")
        self.state: list[dict] = [{} for _ in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients of the last backward pass (PyTorch adds new ones to old ones)."""
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            p.copy_(self._update(p.detach(), p.grad.detach(), state))

    def _update(self, param: Tensor, grad: Tensor, state: dict) -> Tensor:
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        """The settings (lr, betas, ...): everything but the parameters and their state."""
        return {k: v for k, v in vars(self).items() if k not in ("params", "state")}

    def state_dict(self) -> dict:
        """What a checkpoint needs to continue exactly: the settings and each parameter's state (copied)."""
        copy = lambda v: v.detach().clone() if isinstance(v, Tensor) else v  # noqa: E731
        return {"hyperparameters": self.hyperparameters(),
                "state": [{k: copy(v) for k, v in st.items()} for st in self.state]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue from :meth:`state_dict`: same kind of optimizer, same parameters in the same order."""
        saved = state_dict.get("state") if isinstance(state_dict, dict) else None
        if not isinstance(saved, list) or len(saved) != len(self.params):
            have = len(saved) if isinstance(saved, list) else "no"
            raise ValueError(f"this state is for {have} parameters, but the optimizer has {len(self.params)}: "
                             f"build the optimizer over the same parameters before loading")
        for param, st in zip(self.params, saved):
            for key, value in st.items():
                if isinstance(value, Tensor) and value.shape != param.shape:
                    raise ValueError(f"saved {key!r} has shape {tuple(value.shape)}, the parameter "
                                     f"{tuple(param.shape)}: the parameters are not the ones it was saved for")
        for key, value in state_dict.get("hyperparameters", {}).items():
            setattr(self, key, value)
        self.state = [{k: (v.detach().clone().to(p.device) if isinstance(v, Tensor) else v) for k, v in st.items()}
                      for p, st in zip(self.params, saved)]

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in vars(self).items() if k not in ("params", "state"))
        return f"{type(self).__name__}({hyper})"


def clip_grad_norm(params: Iterable[Tensor], max_norm: float) -> float:
    """Scale all gradients together so that their joint L2 norm is at most ``max_norm`` (chapter 02).

    Returns the norm before clipping, like ``torch.nn.utils.clip_grad_norm_``. Parameters without a
    gradient are skipped.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be a positive number, got {max_norm!r}")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = torch.sqrt(sum((g.detach().double() ** 2).sum() for g in grads))
    factor = max_norm / (float(total) + 1e-6)
    if factor < 1:
        for g in grads:
            g.mul_(factor)
    return float(total)


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum, Nesterov momentum and L2 weight decay."""

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        _check_common(lr, weight_decay)
        _check(momentum >= 0, f"momentum must be >= 0, got {momentum}")
        _check(not nesterov or (momentum > 0 and dampening == 0),
               "Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params)
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.nesterov, self.weight_decay = nesterov, weight_decay

    def _update(self, param: Tensor, grad: Tensor, state: dict) -> Tensor:
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if self.momentum == 0:
            return sgd_step(param, grad, self.lr)
        new_param, state["buf"] = momentum_step(param, grad, state.get("buf"), self.lr, self.momentum,
                                                self.dampening, self.nesterov)
        return new_param


class AdaGrad(Optimizer):
    """AdaGrad: a per-coordinate step size that shrinks with the sum of past squared gradients."""

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01, eps: float = 1e-10, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, lr_decay: float = 0.0) -> None:
        _check_common(lr, weight_decay, eps)
        _check(initial_accumulator_value >= 0,
               f"initial_accumulator_value must be >= 0, got {initial_accumulator_value}")
        _check(lr_decay >= 0, f"lr_decay must be >= 0, got {lr_decay}")
        super().__init__(params)
        self.lr, self.eps, self.weight_decay = lr, eps, weight_decay
        self.initial_accumulator_value, self.lr_decay = initial_accumulator_value, lr_decay

    def _update(self, param: Tensor, grad: Tensor, state: dict) -> Tensor:
        if not state:
            state["t"] = 0
            state["sum_sq"] = torch.full_like(param, self.initial_accumulator_value)
        state["t"] += 1
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        new_param, state["sum_sq"] = adagrad_step(param, grad, state["sum_sq"], state["t"], self.lr, self.eps,
                                                  self.lr_decay)
        return new_param


class RMSProp(Optimizer):
    """RMSProp: divide by a moving root-mean-square of recent gradients (optionally centered, with momentum)."""

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, centered: bool = False, weight_decay: float = 0.0) -> None:
        _check_common(lr, weight_decay, eps)
        _check(0.0 <= alpha < 1.0, f"alpha (the smoothing constant) must be in [0, 1), got {alpha}")
        _check(momentum >= 0, f"momentum must be >= 0, got {momentum}")
        super().__init__(params)
        self.lr, self.alpha, self.eps = lr, alpha, eps
        self.momentum, self.centered, self.weight_decay = momentum, centered, weight_decay

    def _update(self, param: Tensor, grad: Tensor, state: dict) -> Tensor:
        if not state:
            state["square_avg"] = torch.zeros_like(param)
            state["buf"] = torch.zeros_like(param) if self.momentum > 0 else None
            state["grad_avg"] = torch.zeros_like(param) if self.centered else None
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        new_param, state["square_avg"], state["buf"], state["grad_avg"] = rmsprop_step(
            param, grad, state["square_avg"], self.lr, self.alpha, self.eps,
            momentum=self.momentum, buf=state["buf"], grad_avg=state["grad_avg"])
        return new_param


class Adam(Optimizer):
    """Adam with (coupled) L2 weight decay, like ``torch.optim.Adam``; for decoupled decay use :class:`AdamW`."""

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        _check_common(lr, weight_decay, eps)
        _check_betas(betas)
        super().__init__(params)
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay

    def _init_state(self, param: Tensor, state: dict) -> None:
        if not state:
            state.update(t=0, m=torch.zeros_like(param), v=torch.zeros_like(param))
        state["t"] += 1

    def _update(self, param: Tensor, grad: Tensor, state: dict) -> Tensor:
        self._init_state(param, state)
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        new_param, state["m"], state["v"] = adam_step(param, grad, state["m"], state["v"], state["t"], self.lr,
                                                      self.betas, self.eps)
        return new_param


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), like ``torch.optim.AdamW``; default decay 0.01."""

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)

    def _update(self, param: Tensor, grad: Tensor, state: dict) -> Tensor:
        self._init_state(param, state)
        new_param, state["m"], state["v"] = adamw_step(param, grad, state["m"], state["v"], state["t"], self.lr,
                                                       self.betas, self.eps, self.weight_decay)
        return new_param


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "adagrad": AdaGrad, "rmsprop": RMSProp, "adam": Adam, "adamw": AdamW,
}

__all__ = [
    "sgd_step", "momentum_step", "adagrad_step", "rmsprop_step", "adam_step", "adamw_step",
    "Optimizer", "SGD", "AdaGrad", "RMSProp", "Adam", "AdamW", "OPTIMIZERS", "clip_grad_norm",
]
