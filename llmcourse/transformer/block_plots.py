"""Pictures for chapter 06. Every function returns a closed matplotlib ``Figure`` (show it as a cell's last line)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from llmcourse.transformer.counting import PARTS

PART_COLORS = {"embeddings": "tab:gray", "attention": "tab:blue", "attention_scores": "tab:cyan",
               "ffn": "tab:orange", "norms": "tab:green", "head": "tab:purple"}


def plot_gradient_flow(curves: Mapping[str, Sequence[float]], ylabel: str = "gradient norm at layer input") -> Figure:
    """One line per setting: the gradient norm at each layer (layer 0 = the input), log scale."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for label, values in curves.items():
        ax.semilogy(range(len(values)), np.maximum(np.asarray(values, dtype=float), 1e-30), marker=".", label=label)
    ax.set_xlabel("layer (0 = input of the stack)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_loss_curves(curves: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Training loss against step, one line per run."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for label, values in curves.items():
        ax.plot(range(len(values)), values, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_parameter_shares(counts: Mapping[str, Mapping[str, int]], parts: Sequence[str] = PARTS) -> Figure:
    """One horizontal bar per model, split into the share of each part of its parameters."""
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.55 * len(counts)))
    names = list(counts)
    left = np.zeros(len(names))
    for part in parts:
        share = np.array([counts[n].get(part, 0) / counts[n]["total"] for n in names])
        ax.barh(names, share, left=left, color=PART_COLORS.get(part), label=part)
        for i, s in enumerate(share):
            if s > 0.06:
                ax.text(left[i] + s / 2, i, f"{s:.0%}", ha="center", va="center", fontsize=8, color="white")
        left += share
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share of the parameters")
    ax.legend(ncol=len(parts), fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_expert_load(counts: Sequence[float] | Mapping[str, Sequence[float]]) -> Figure:
    """Bars of how many tokens each expert received (one group per setting if a mapping is given)."""
    groups = counts if isinstance(counts, Mapping) else {"tokens": counts}
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    n = len(next(iter(groups.values())))
    width = 0.8 / len(groups)
    for g, (label, values) in enumerate(groups.items()):
        ax.bar(np.arange(n) + g * width - 0.4 + width / 2, np.asarray(values, dtype=float), width, label=label)
    ax.set_xticks(range(n))
    ax.set_xlabel("expert")
    ax.set_ylabel("tokens routed")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_routing_table(counts, rows: Sequence[str], titles: Sequence[str] = ("",)) -> Figure:
    """Heat maps of (rows, experts) routing counts, each row as shares of its tokens; one panel per table.

    ``counts``: one (rows, experts) table or a list of them (e.g. by token kind and by topic).
    """
    tables = counts if isinstance(counts, (list, tuple)) else [counts]
    row_names = rows if isinstance(rows[0], (list, tuple)) else [rows] * len(tables)
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 3.4), squeeze=False)
    for ax, table, names, title in zip(axes[0], tables, row_names, titles):
        table = np.asarray(table, dtype=float)
        shares = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="viridis", vmin=0, vmax=max(0.5, float(shares.max())), aspect="auto")
        for (r, c), v in np.ndenumerate(shares):
            ax.text(c, r, f"{v:.0%}", ha="center", va="center", fontsize=7, color="white" if v < 0.3 else "black")
        ax.set_xticks(range(table.shape[1]))
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.set_xlabel("expert (first choice)")
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


__all__ = ["plot_gradient_flow", "plot_loss_curves", "plot_parameter_shares", "plot_expert_load", "plot_routing_table",
           "PART_COLORS"]
