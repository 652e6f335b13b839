"""Plots for chapter 02: descent paths on loss surfaces, learning-rate sweeps, gradient flow, overfitting.

Every function returns a matplotlib ``Figure`` (already closed in pyplot, so a
notebook shows it exactly once when it is the cell's last expression). Each
trajectory or curve is one line (``ax.get_lines()``); markers for start points
and minima are scatter points, not lines.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from llmcourse.basics.descent import DTYPE, Surface, SweepResult, TrainValCurves, get_surface

_FLOOR = 1e-16  # losses are drawn on a log scale; a gap of exactly 0 is drawn at this floor


def draw_surface(ax: Axes, surface: str | Surface, resolution: int = 200, levels: int = 25) -> None:
    """Filled contours of ``surface.loss`` over its window (log-spaced levels), with its minimum as a star."""
    surface = get_surface(surface)
    xs = torch.linspace(*surface.xlim, resolution, dtype=DTYPE)
    ys = torch.linspace(*surface.ylim, resolution, dtype=DTYPE)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    gap = (surface.loss(torch.stack([gx, gy], dim=-1)) - surface.min_value).clamp_min(0).numpy()
    positive = gap[gap > 0]
    lo = max(float(positive.min()), float(positive.max()) * 1e-6) if positive.size else 1e-3
    bounds = np.geomspace(lo, float(gap.max()) * 1.0001, levels)
    ax.contourf(gx.numpy(), gy.numpy(), np.maximum(gap, lo), levels=bounds, cmap="viridis", alpha=0.55,
                norm=LogNorm(vmin=bounds[0], vmax=bounds[-1]))
    ax.contour(gx.numpy(), gy.numpy(), np.maximum(gap, lo), levels=bounds, colors="k", linewidths=0.3, alpha=0.4)
    ax.scatter([surface.minimum[0]], [surface.minimum[1]], marker="*", s=160, color="gold", edgecolor="k",
               zorder=5, label="minimum")
    ax.set_xlim(*surface.xlim)
    ax.set_ylim(*surface.ylim)
    ax.set_xlabel(surface.labels[0])
    ax.set_ylabel(surface.labels[1])


def _draw_path(ax: Axes, path: Tensor, label: str, color=None) -> None:
    pts = path.detach().numpy()
    (line,) = ax.plot(pts[:, 0], pts[:, 1], ".-", lw=1.2, ms=3, label=label, color=color)
    ax.scatter(pts[:1, 0], pts[:1, 1], s=30, color=line.get_color(), edgecolor="k", zorder=4)


def plot_descent(surface: str | Surface, trajectories: Mapping[str, Tensor], title: str | None = None) -> Figure:
    """Contour map of ``surface`` with each trajectory (``(steps + 1, 2)`` paths) drawn on top, one line each."""
    surface = get_surface(surface)
    fig, ax = plt.subplots(figsize=(6.0, 4.6))
    draw_surface(ax, surface)
    for label, path in trajectories.items():
        _draw_path(ax, path, label)
    ax.set_title(title or f"gradient descent on the {surface.name} surface")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_lr_sweep(results: Sequence[SweepResult], surface: str | Surface = "bowl") -> Figure:
    """Left: each run's path on the surface. Right: its loss gap to the minimum per step (log scale).

    A run that diverged gets an ``x`` where its loss first rose above the start; one line per run on each panel.
    """
    surface = get_surface(surface)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.2))
    draw_surface(left, surface)
    for r in results:
        label = f"lr={r.lr:g} ({r.verdict})"
        _draw_path(left, r.trajectory, label)
        gap = (r.losses - surface.min_value).clamp_min(_FLOOR).numpy()
        (line,) = right.plot(np.arange(len(gap)), gap, lw=1.5, label=label)
        if r.diverged_at is not None:
            y = gap[r.diverged_at] if np.isfinite(gap[r.diverged_at]) else gap[np.isfinite(gap)][-1]
            right.scatter([r.diverged_at], [y], marker="x", s=60, color=line.get_color(), zorder=5)
    left.set_title("paths")
    left.legend(loc="best", fontsize=8)
    right.set_yscale("log")
    right.set_xlabel("step")
    right.set_ylabel("loss - minimum")
    right.set_title("loss")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_gradient_norms(norms: Mapping[str, Sequence[float]], ylabel: str = "gradient norm") -> Figure:
    """One line per network: the gradient norm of each layer (1 = next to the input), on a log scale."""
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for label, values in norms.items():
        values = np.maximum(np.asarray(values, dtype=float), 1e-300)
        ax.plot(np.arange(1, len(values) + 1), values, "o-", ms=3, label=label)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (1 = next to the input)")
    ax.set_ylabel(ylabel)
    ax.set_title("how much gradient reaches each layer")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_train_val(curves: TrainValCurves | Sequence[TrainValCurves] | Mapping[str, Mapping[str, Sequence[float]]],
                   ylabel: str = "cross-entropy loss") -> Figure:
    """Training (solid) and validation (dashed) loss per epoch, two lines per run, one colour per run.

    ``curves`` is one :class:`TrainValCurves`, a list of them, or a dict ``label -> {"train": [...], "val": [...]}``.
    A dot marks each run's lowest validation loss (where early stopping would stop).
    """
    if isinstance(curves, TrainValCurves):
        runs = [(curves.label, curves.train, curves.val)]
    elif isinstance(curves, Mapping):
        runs = [(label, c["train"], c["val"]) for label, c in curves.items()]
    else:
        runs = [(c.label, c.train, c.val) for c in curves]
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for i, (label, train, val) in enumerate(runs):
        color = f"C{i}"
        epochs = np.arange(1, len(train) + 1)
        ax.plot(epochs, train, "-", color=color, label=f"{label}: train")
        ax.plot(epochs, val, "--", color=color, label=f"{label}: validation")
        best = int(np.argmin(val))
        ax.scatter([best + 1], [val[best]], color=color, edgecolor="k", zorder=5)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title("training vs validation loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


__all__ = ["draw_surface", "plot_descent", "plot_lr_sweep", "plot_gradient_norms", "plot_train_val"]
