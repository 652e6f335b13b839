"""Plots for chapters 04 and 05: position tables, attention weights, ALiBi, KV-cache sizes, word maps.

Every function returns a matplotlib ``Figure`` (already closed in pyplot, so a
notebook shows it exactly once when it is the cell's last expression).
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor


def _as_numpy(t: Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().float().numpy() if isinstance(t, Tensor) else np.asarray(t, dtype=float)


def draw_attention(ax: Axes, weights: Tensor, tokens: Sequence[str] | None = None,
                   query_tokens: Sequence[str] | None = None, annotate: bool | None = None) -> None:
    """Draw one (q_len, k_len) weight matrix on ``ax``: rows are queries, columns keys."""
    w = _as_numpy(weights)
    image = ax.imshow(w, cmap="Blues", vmin=0.0, vmax=max(1e-9, float(np.nanmax(w))))
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    keys = list(tokens) if tokens is not None else [str(j) for j in range(w.shape[1])]
    queries = list(query_tokens) if query_tokens is not None else (keys if w.shape[0] == w.shape[1]
                                                                    else [str(i) for i in range(w.shape[0])])
    ax.set_xticks(range(w.shape[1]), keys, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(w.shape[0]), queries, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if annotate if annotate is not None else max(w.shape) <= 8:
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if w[i, j] > 0.6 * np.nanmax(w) else "black")


def plot_attention_weights(weights: Tensor, tokens: Sequence[str] | None = None,
                           query_tokens: Sequence[str] | None = None, title: str = "attention weights") -> Figure:
    """Heat map of a (q_len, k_len) attention matrix, or one panel per head for (heads, q_len, k_len)."""
    w = weights.detach() if isinstance(weights, Tensor) else torch.as_tensor(weights)
    if w.dim() == 2:
        w = w.unsqueeze(0)
    if w.dim() != 3:
        raise ValueError(f"weights must be (q_len, k_len) or (heads, q_len, k_len), got {tuple(w.shape)}")
    n = w.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    for h, ax in enumerate(axes[0]):
        draw_attention(ax, w[h], tokens, query_tokens)
        ax.set_title(title if n == 1 else f"{title}: head {h}", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_positional_heatmap(pe: Tensor, title: str = "sinusoidal position encoding") -> Figure:
    """Heat map of a position table (n_positions, d_model): one row per position, one column per dimension."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    image = ax.pcolormesh(_as_numpy(pe), cmap="RdBu_r", vmin=-1, vmax=1, shading="auto")
    fig.colorbar(image, ax=ax)
    ax.invert_yaxis()
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel("position")
    ax.set_title(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_alibi(bias: Tensor, heads: Sequence[int] | None = None) -> Figure:
    """ALiBi bias matrices (heads, seq, seq), one panel per chosen head, each with its own colour scale.

    -inf entries (the masked future) are left blank. Default heads: first, middle, last.
    """
    b = _as_numpy(bias)
    heads = list(heads) if heads is not None else sorted({0, b.shape[0] // 2, b.shape[0] - 1})
    fig, axes = plt.subplots(1, len(heads), figsize=(3.8 * len(heads), 3.2), squeeze=False)
    for ax, h in zip(axes[0], heads):
        finite = b[h][np.isfinite(b[h])]
        image = ax.imshow(np.ma.masked_invalid(b[h]), cmap="viridis", vmin=float(finite.min()) if finite.size else -1,
                          vmax=0.0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(f"head {h}: bias added to the score", fontsize=9)
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_kv_cache(table: Sequence[dict], value: str = "gib_at_context") -> Figure:
    """Horizontal bars, one per model row of :func:`~llmcourse.transformer.attention.kv_cache_table`, coloured by kind."""
    colours = {"MHA": "tab:red", "GQA": "tab:blue", "MQA": "tab:green"}
    names = [row["model"] for row in table]
    values = [row[value] / (2**20 if value == "bytes_per_token" else 1) for row in table]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(table) + 1.2))
    bars = ax.barh(names, values, color=[colours.get(row["kind"], "tab:gray") for row in table])
    for bar, row in zip(bars, table):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {row['kind']} ({row['n_kv_heads']} kv)",
                va="center", fontsize=8)
    ax.invert_yaxis()
    if value == "bytes_per_token":
        ax.set_xlabel("KV cache per token (MiB, fp16)")
    else:
        ax.set_xlabel(f"KV cache for one sequence of {table[0]['context_len']} tokens (GiB, fp16)")
    ax.margins(x=0.25)
    ax.set_title("KV-cache size: MHA vs GQA vs MQA")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_embeddings_2d(points: Tensor, words: Sequence[str], groups: Sequence[str] | None = None) -> Figure:
    """Scatter of 2-D points (e.g. from ``project_2d``) labelled with their words, optionally coloured by group.

    Each label takes the first of a ring of spots around its point (near ones first) where it overlaps no label
    placed before it, no other point and not the edge of the plot; a label pushed further out gets a thin line to
    its point.
    """
    p = _as_numpy(points)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) != len(words):
        raise ValueError(f"points must be (n, 2) with one word per point; got points {p.shape} and {len(words)} words")
    fig, ax = plt.subplots(figsize=(7.2, 5.0))
    if groups is None:
        ax.scatter(p[:, 0], p[:, 1], s=18, color="tab:blue", zorder=3)
    else:
        for g in dict.fromkeys(groups):
            idx = [i for i, gi in enumerate(groups) if gi == g]
            ax.scatter(p[idx, 0], p[idx, 1], s=18, label=g, zorder=3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel("first principal direction")
    ax.set_ylabel("second principal direction")
    ax.set_title("word vectors projected to 2-D")
    ax.grid(alpha=0.3)
    ax.margins(0.12)
    fig.tight_layout()
    # freeze the scales (the labels are placed in screen space below), keeping only the ticks inside the view
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        axis.set_ticks([t for t in axis.get_ticklocs() if lo <= t <= hi])
        axis.reset_ticks()

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    screen = ax.transData.transform(p)
    dot = 4.0 * fig.dpi / 72                            # a marker's radius, in pixels
    placed = []
    ring = [(dx, dy) for r in (3, 9, 16, 24, 34) for dx, dy in
            ((r, r * 0.6), (r, -r * 0.6), (-r, r * 0.6), (-r, -r * 0.6), (0, r), (0, -r), (r * 1.4, 0), (-r * 1.4, 0))]

    def clashes(box, own: int) -> float:
        """How badly a label box collides: with placed labels, other points and the plot's edge (0 = not at all)."""
        grown = box.padded(2)
        score = sum(1.0 for other in placed if grown.overlaps(other))
        for k, (x, y) in enumerate(screen):
            if k != own and grown.x0 - dot < x < grown.x1 + dot and grown.y0 - dot < y < grown.y1 + dot:
                score += 0.5
        if box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1:
            score += 10.0
        return score

    for i, ((x, y), word) in enumerate(zip(p, words)):
        best = None
        for dx, dy in ring:
            label = ax.annotate(word, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                va="bottom" if dy > 0 else "top" if dy < 0 else "center")
            box = label.get_window_extent(renderer)
            score = clashes(box, i)
            if best is None or score < best[0]:
                if best is not None:
                    best[1].remove()
                best = (score, label, box, (dx, dy))
            else:
                label.remove()
            if score == 0:
                break
        _, label, box, (dx, dy) = best
        placed.append(box)
        if abs(dx) + abs(dy) > 12:                      # far from its point: a thin line shows whose label it is
            end = ax.transData.inverted().transform((min(max(screen[i][0], box.x0), box.x1),
                                                     min(max(screen[i][1], box.y0), box.y1)))
            ax.plot([x, end[0]], [y, end[1]], color="gray", lw=0.5, zorder=2)
    plt.close(fig)
    return fig


__all__ = ["draw_attention", "plot_attention_weights", "plot_positional_heatmap", "plot_alibi", "plot_kv_cache",
           "plot_embeddings_2d"]
