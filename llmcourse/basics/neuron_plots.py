"""Plots for chapter 01: activations, softmax, losses and decision boundaries.

Every function returns a matplotlib ``Figure`` (already closed in pyplot, so a
notebook shows it exactly once when it is the cell's last expression).
"""
from __future__ import annotations

from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

from llmcourse.basics.activations import ACTIVATIONS, softmax
from llmcourse.basics.neurons import CLASS_NAMES, FEATURE_NAMES

DEFAULT_ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "silu")
CLASS_COLOURS = ("tab:green", "tab:orange")  # leaf, flower


def scatter_leaf_flower(ax: plt.Axes, X: Tensor, y: Tensor) -> None:
    """Draw the labelled leaf/flower points on ``ax``, one colour per class, with labelled axes."""
    for label, (name, colour) in enumerate(zip(CLASS_NAMES, CLASS_COLOURS)):
        pts = X[y == label]
        ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=14, color=colour, edgecolor="k", linewidth=0.3, label=name)
    ax.set_xlabel(FEATURE_NAMES[0])
    ax.set_ylabel(f"{FEATURE_NAMES[1]} (x 10 ml)")


def plot_activations(names: Sequence[str] = DEFAULT_ACTIVATIONS, x_range: tuple[float, float] = (-4.0, 4.0)) -> Figure:
    """One panel per activation: the function (solid) and its derivative (dashed)."""
    x = torch.linspace(*x_range, 401)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), sharex=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        f, df = ACTIVATIONS[name]
        ax.plot(x.numpy(), f(x).numpy(), label=name, color="tab:blue")
        ax.plot(x.numpy(), df(x).numpy(), "--", label="derivative", color="tab:red")
        ax.set_title(name)
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_softmax(logits: Sequence[float] | Tensor, temperatures: Sequence[float] = (1.0,)) -> Figure:
    """Bar charts: the raw scores, then softmax(scores / T) for each temperature T."""
    z = torch.as_tensor(logits, dtype=torch.float32)
    positions = range(len(z))
    fig, axes = plt.subplots(1, 1 + len(temperatures), figsize=(3.2 * (1 + len(temperatures)), 3.0))
    axes[0].bar(positions, z.numpy(), color="tab:gray")
    axes[0].set_title("scores (logits)")
    for ax, t in zip(axes[1:], temperatures):
        ax.bar(positions, softmax(z / t).numpy(), color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_title(f"softmax, T = {t:g}" if len(temperatures) > 1 else "softmax: probabilities")
    for ax in axes:
        ax.set_xticks(list(positions))
        ax.set_xlabel("class")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_losses() -> Figure:
    """Left: MSE and L1 penalty against the error. Right: cross-entropy against the probability of the right class."""
    err = torch.linspace(-3, 3, 301)
    p = torch.linspace(0.01, 1.0, 300)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.0))
    left.plot(err.numpy(), (err**2).numpy(), label="squared error (MSE)")
    left.plot(err.numpy(), err.abs().numpy(), label="absolute error (L1)")
    left.set_xlabel("prediction - target")
    left.set_title("regression losses")
    left.legend(fontsize=8)
    right.plot(p.numpy(), (-torch.log(p)).numpy(), color="tab:purple")
    right.set_xlabel("probability given to the right class")
    right.set_title("cross-entropy: -log p")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_decision_boundary(score_fn: Callable[[Tensor], Tensor], X: Tensor, y: Tensor,
                           title: str = "leaf or flower?", resolution: int = 150) -> Figure:
    """Colour the plane by the class ``score_fn`` picks, then scatter the labelled points ``X``, ``y``.

    ``score_fn`` maps an ``(N, 2)`` batch to ``(N, 2)`` scores (leaf, flower).
    """
    lo = X.min(dim=0).values - 0.2
    hi = X.max(dim=0).values + 0.2
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], resolution), torch.linspace(lo[1], hi[1], resolution),
                            indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], dim=1)
    with torch.no_grad():
        picked = score_fn(grid).argmax(dim=-1).reshape(gx.shape).float()
    fig, ax = plt.subplots(figsize=(4.5, 4.0))
    ax.contourf(gx.numpy(), gy.numpy(), picked.numpy(), levels=[-0.5, 0.5, 1.5], colors=CLASS_COLOURS, alpha=0.25)
    scatter_leaf_flower(ax, X, y)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_leaf_flower(X: Tensor, y: Tensor) -> Figure:
    """Scatter plot of the leaf/flower data, one colour per class."""
    fig, ax = plt.subplots(figsize=(4.5, 4.0))
    scatter_leaf_flower(ax, X, y)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig


__all__ = ["scatter_leaf_flower", "plot_activations", "plot_softmax", "plot_losses", "plot_decision_boundary", "plot_leaf_flower"]
