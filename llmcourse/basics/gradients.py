"""Gradients two ways: by nudging numbers, and by backpropagating sensitivities (chapter 02).

**Finite differences.** The slope of ``f`` along one number ``x_i`` is about
``(f(x + ε e_i) - f(x - ε e_i)) / 2ε`` ("central differences"):
:func:`numerical_gradient` does this for every element of a tensor and
:func:`gradient_check` compares the result with ``torch.autograd``. It needs
two evaluations of ``f`` per parameter; :func:`gradient_cost` measures how
that grows compared with one forward and one backward pass.

**Backpropagation by hand.** For a dense layer ``z = a_prev @ W + b``,
``a = A(z)``, call ``δz = ∂loss/∂z`` the *sensitivity* of the loss to the
layer's pre-activations (the lesson's δ). Then

* :func:`layer_sensitivity`: ``δz_i = A'(z_i) · Σ_j W_ij · δz_next_j`` (one layer back),
* :func:`weight_gradient`: ``∂loss/∂W_ij = a_prev_i · δz_j`` (summed over a batch),
* :func:`bias_gradient`: ``∂loss/∂b_j = δz_j`` (summed over a batch),
* :func:`loss_sensitivity`: where it all starts, δ of the last layer's outputs.

:func:`mlp_backward_by_hand` chains them for a two-layer network. Weights are
stored ``(n_in, n_out)`` as in chapter 01, so ``W[i, j]`` links input ``i`` to neuron ``j``.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

from llmcourse.basics.activations import ACTIVATIONS, softmax
from llmcourse.basics.losses import cross_entropy, mse

ScalarFunction = Callable[[Tensor], "Tensor | float"]


# --------------------------------------------------------------------------- finite differences


def numerical_gradient(f: ScalarFunction, x: Tensor, eps: float = 1e-6) -> Tensor:
    """∂f/∂x by central differences, one element at a time, in float64.

    ``f`` maps a tensor shaped like ``x`` to one number. Returns a float64
    tensor shaped like ``x``; ``x`` itself is not modified. Costs ``2 * x.numel()``
    calls of ``f``. The error is about ``ε²`` (from the curvature) plus
    ``(rounding error of f) / ε``, so ``ε ≈ 1e-6`` suits float64.
    """
    point = x.detach().to(torch.float64).clone().contiguous()
    flat = point.view(-1)  # shares memory with ``point``: nudging flat[i] nudges point
    grad = torch.zeros_like(flat)
    with torch.no_grad():
        for i in range(flat.numel()):
            original = flat[i].item()
            up, down = original + eps, original - eps
            flat[i] = up
            f_up = float(f(point))
            flat[i] = down
            f_down = float(f(point))
            flat[i] = original
            grad[i] = (f_up - f_down) / (up - down)  # up - down: the step actually taken, after rounding
    return grad.view_as(point)


def gradient_check(f: ScalarFunction, x: Tensor, eps: float = 1e-6, floor: float = 1e-8) -> float:
    """The largest relative difference between ``torch.autograd``'s gradient of ``f`` at ``x`` and finite differences.

    Per element: ``|g_auto - g_num| / max(|g_auto|, |g_num|, floor)``; ``floor``
    stops elements whose gradient is (nearly) zero from dividing by zero. In
    float64 a correct gradient typically scores below 1e-7; a wrong one near 1.
    Finite differences carry an absolute error of about ``|f| · 1e-16 / ε``, so
    where ``f`` is large next to its slope (a saturated tanh or sigmoid) the
    tiny entries score worse even when autograd is right.
    """
    point = x.detach().to(torch.float64).clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(f(point), point)
    g_num = numerical_gradient(f, x, eps)
    scale = torch.maximum(g_auto.abs(), g_num.abs()).clamp(min=floor)
    return ((g_auto - g_num).abs() / scale).max().item()


# --------------------------------------------------------------------------- the cost of finite differences


def gradient_cost(sizes: Sequence[int] = (1, 10, 100, 1000), batch: int = 32, repeats: int = 3,
                  seed: int = 0) -> dict[str, list]:
    """Time finite differences against backprop for a loss with ``n`` parameters, for each ``n`` in ``sizes``.

    The loss is ``mean(tanh(X @ w))`` for fixed data ``X`` of shape ``(batch, n)``.
    Returns lists, one entry per size, ready to plot: ``n_params``,
    ``fd_evaluations`` (calls of the loss: ``2n``), ``backprop_passes``
    (always 2: one forward, one backward), ``fd_seconds`` and ``backprop_seconds``
    (best of ``repeats``), and ``max_difference`` between the two gradients.
    """
    g = torch.Generator().manual_seed(seed)
    result: dict[str, list] = {key: [] for key in ("n_params", "fd_evaluations", "backprop_passes",
                                                   "fd_seconds", "backprop_seconds", "max_difference")}
    for n in sizes:
        X = torch.randn(batch, n, generator=g, dtype=torch.float64)
        w = torch.randn(n, generator=g, dtype=torch.float64) / n ** 0.5
        calls = 0

        def loss(v: Tensor) -> Tensor:
            nonlocal calls
            calls += 1
            return torch.tanh(X @ v).mean()

        fd_times, bp_times = [], []
        for _ in range(repeats):
            calls = 0
            start = time.perf_counter()
            g_num = numerical_gradient(loss, w)
            fd_times.append(time.perf_counter() - start)
            fd_calls = calls

            start = time.perf_counter()
            v = w.clone().requires_grad_(True)
            loss(v).backward()
            bp_times.append(time.perf_counter() - start)
        result["n_params"].append(n)
        result["fd_evaluations"].append(fd_calls)
        result["backprop_passes"].append(2)
        result["fd_seconds"].append(min(fd_times))
        result["backprop_seconds"].append(min(bp_times))
        result["max_difference"].append((g_num - v.grad).abs().max().item())
    return result


def plot_gradient_cost(cost: dict[str, list]) -> Figure:
    """Two log-log panels from :func:`gradient_cost`: work (calls of the loss) and time, against the parameter count."""
    n = cost["n_params"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.loglog(n, cost["fd_evaluations"], "o-", label="finite differences: 2n loss calls")
    left.loglog(n, cost["backprop_passes"], "s-", label="backprop: 1 forward + 1 backward")
    left.set_ylabel("passes through the loss")
    right.loglog(n, cost["fd_seconds"], "o-", label="finite differences")
    right.loglog(n, cost["backprop_seconds"], "s-", label="backprop")
    right.set_ylabel("seconds for one gradient")
    for ax in (left, right):
        ax.set_xlabel("number of parameters n")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


# --------------------------------------------------------------------------- sensitivities, layer by layer


def loss_sensitivity(z_out: Tensor, y: Tensor, loss: str = "mse") -> Tensor:
    """δ of the network's last pre-activations ``z_out`` (no activation after them): ``∂loss/∂z_out``.

    * ``"mse"``: loss = mean of (z_out - y)² over all elements, so δ = 2 (z_out - y) / z_out.numel().
    * ``"cross_entropy"``: ``z_out`` are logits ``(N, C)`` (or ``(C,)``), ``y`` integer classes ``(N,)``
      (or a scalar); loss = mean over examples of -log softmax(z_out)[y], so δ = (softmax(z_out) - onehot(y)) / N.
    """
    if loss == "mse":
        if z_out.shape != y.shape:
            raise ValueError(f"predictions {tuple(z_out.shape)} and targets {tuple(y.shape)} differ in shape")
        return 2.0 * (z_out - y) / z_out.numel()
    if loss == "cross_entropy":
        if z_out.shape[:-1] != y.shape:
            raise ValueError(f"logits {tuple(z_out.shape)} and classes {tuple(y.shape)} do not match: "
                             "expected (N, C) and (N,)")
        n_examples = z_out[..., 0].numel()
        onehot = torch.nn.functional.one_hot(y.long(), z_out.shape[-1]).to(z_out.dtype)
        return (softmax(z_out, dim=-1) - onehot) / n_examples
    raise ValueError(f"unknown loss {loss!r}; choose 'mse' or 'cross_entropy'")


def layer_sensitivity(delta_next: Tensor, W: Tensor, z: Tensor, activation_grad: Callable[[Tensor], Tensor]) -> Tensor:
    """One step back: δ of this layer's pre-activations ``z`` from δ of the next layer's.

    The next layer computes ``z_next = A(z) @ W + b`` with ``W`` of shape
    ``(n_this, n_next)``. A nudge of ``z_i`` moves ``A(z_i)`` by ``A'(z_i)``
    times as much, and that reaches every ``z_next_j`` through ``W_ij``, so
    ``δz_i = A'(z_i) · Σ_j W_ij δz_next_j``, i.e. ``A'(z) * (delta_next @ W.T)``.
    Works for one example (1-D tensors) or a batch (one row per example).
    """
    if delta_next.shape[-1] != W.shape[1] or z.shape[-1] != W.shape[0]:
        raise ValueError(f"W {tuple(W.shape)} should be (n_this, n_next) = ({z.shape[-1]}, {delta_next.shape[-1]})")
    return activation_grad(z) * (delta_next @ W.T)


def weight_gradient(a_prev: Tensor, delta: Tensor) -> Tensor:
    """``∂loss/∂W_ij = a_prev_i · δ_j`` for a layer ``z = a_prev @ W + b``.

    One example: the outer product of the two vectors, shape ``(n_in, n_out)``.
    A batch (one row per example): ``a_prev.T @ delta``, the sum over the
    examples (the loss's 1/N, if any, is already inside ``delta``).
    """
    if a_prev.dim() == 1:
        return torch.outer(a_prev, delta)
    return a_prev.T @ delta


def bias_gradient(delta: Tensor) -> Tensor:
    """``∂loss/∂b_j = δ_j`` (the bias is added with weight 1), summed over a batch."""
    return delta if delta.dim() == 1 else delta.sum(dim=0)


# --------------------------------------------------------------------------- a two-layer MLP by hand


def init_mlp_params(n_in: int, n_hidden: int, n_out: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """Random parameters ``W1 (n_in, n_hidden)``, ``b1``, ``W2 (n_hidden, n_out)``, ``b2`` (normal / √fan-in)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "W1": torch.randn(n_in, n_hidden, generator=g, dtype=dtype) / n_in ** 0.5,
        "b1": torch.randn(n_hidden, generator=g, dtype=dtype) * 0.1,
        "W2": torch.randn(n_hidden, n_out, generator=g, dtype=dtype) / n_hidden ** 0.5,
        "b2": torch.randn(n_out, generator=g, dtype=dtype) * 0.1,
    }


def mlp_forward(params: dict[str, Tensor], x: Tensor, activation: str = "sigmoid") -> dict[str, Tensor]:
    """The forward pass, keeping what the backward pass needs: ``z1 = x W1 + b1``, ``a1 = A(z1)``, ``z2 = a1 W2 + b2``."""
    A = ACTIVATIONS[activation][0]
    z1 = x @ params["W1"] + params["b1"]
    a1 = A(z1)
    z2 = a1 @ params["W2"] + params["b2"]
    return {"z1": z1, "a1": a1, "z2": z2}


def mlp_loss(params: dict[str, Tensor], x: Tensor, y: Tensor, loss: str = "mse", activation: str = "sigmoid") -> Tensor:
    """The loss of the two-layer MLP: MSE against targets ``y``, or cross-entropy against class indices ``y``."""
    z2 = mlp_forward(params, x, activation)["z2"]
    if loss == "mse":
        return mse(z2, y)
    if loss == "cross_entropy":
        return cross_entropy(z2, y)
    raise ValueError(f"unknown loss {loss!r}; choose 'mse' or 'cross_entropy'")


def mlp_backward_by_hand(params: dict[str, Tensor], x: Tensor, y: Tensor, loss: str = "mse",
                         activation: str = "sigmoid") -> dict[str, Tensor]:
    """All four parameter gradients of :func:`mlp_loss`, by backpropagating sensitivities, for a whole batch.

    δ2 of the outputs from the loss, then δ1 of the hidden pre-activations one
    layer back; each weight's gradient is (what came in) × (δ of where it goes).
    Returns ``{"W1", "b1", "W2", "b2"}`` shaped like ``params``.
    """
    A_grad = ACTIVATIONS[activation][1]
    f = mlp_forward(params, x, activation)
    delta2 = loss_sensitivity(f["z2"], y, loss)
    delta1 = layer_sensitivity(delta2, params["W2"], f["z1"], A_grad)
    return {
        "W1": weight_gradient(x, delta1),
        "b1": bias_gradient(delta1),
        "W2": weight_gradient(f["a1"], delta2),
        "b2": bias_gradient(delta2),
    }


__all__ = [
    "numerical_gradient", "gradient_check", "gradient_cost", "plot_gradient_cost",
    "loss_sensitivity", "layer_sensitivity", "weight_gradient", "bias_gradient",
    "init_mlp_params", "mlp_forward", "mlp_loss", "mlp_backward_by_hand",
]
