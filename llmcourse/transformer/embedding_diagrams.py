"""Conceptual pictures for chapter 04: an embedding lookup as a table and as one_hot(ids) @ W, and RoPE as a rotation.
Every function returns a closed matplotlib ``Figure`` (show it as a cell's last line).
"""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Arc, Circle, FancyArrowPatch, Rectangle

from llmcourse.basics.backprop_diagrams import blank_canvas

MAX_VOCAB, MAX_DIM, MAX_IDS = 12, 8, 8      # what still fits the lookup picture at a readable size
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"]


def _whole(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return int(value)


def _grid(ax: plt.Axes, x: float, y_top: float, rows: int, cols: int, cell: tuple[float, float],
          fills: dict[int, str] | None = None, cell_fills: dict[tuple[int, int], str] | None = None,
          values: np.ndarray | None = None, fontsize: float = 7) -> None:
    """A matrix drawn cell by cell from its top-left corner; ``fills`` colours whole rows, ``cell_fills`` cells."""
    w, h = cell
    for r in range(rows):                               # one patch per coloured row or cell, then the grid lines
        if (fills or {}).get(r):
            ax.add_patch(Rectangle((x, y_top - (r + 1) * h), cols * w, h, facecolor=fills[r], edgecolor="none",
                                   alpha=0.9))
    for (r, c), face in (cell_fills or {}).items():
        ax.add_patch(Rectangle((x + c * w, y_top - (r + 1) * h), w, h, facecolor=face, edgecolor="none", alpha=0.9))
    ax.vlines([x + c * w for c in range(1, cols)], y_top - rows * h, y_top, colors="#888888", lw=0.6)
    ax.hlines([y_top - r * h for r in range(1, rows)], x, x + cols * w, colors="#888888", lw=0.6)
    if values is not None:
        for r in range(rows):
            for c in range(cols):
                ax.text(x + (c + 0.5) * w, y_top - (r + 0.5) * h, f"{values[r, c]:.2g}", ha="center", va="center",
                        fontsize=fontsize)
    ax.add_patch(Rectangle((x, y_top - rows * h), cols * w, rows * h, fill=False, edgecolor="#333333", lw=1.1))


def _light(color: str) -> str:
    r, g, b = (int(color[k:k + 2], 16) for k in (1, 3, 5))
    return "#{:02x}{:02x}{:02x}".format(*(int(v + (255 - v) * 0.55) for v in (r, g, b)))


def draw_embedding_lookup(ids: Sequence[int] = (3, 0, 3, 4), vocab_size: int = 5, d_model: int = 3,
                          table: Sequence[Sequence[float]] | torch.Tensor | None = None) -> Figure:
    """An embedding lookup: each id picks one row of the (vocab_size, d_model) table W, the same as one_hot(ids) @ W.

    ``table``: the numbers of the table to print in its cells (shape ``(vocab_size, d_model)``); without it the
    cells stay empty and only the rows' colours show which id selected them.
    """
    vocab_size = _whole("vocab_size", vocab_size, 2, MAX_VOCAB)
    d_model = _whole("d_model", d_model, 1, MAX_DIM)
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    if not 1 <= len(ids) <= MAX_IDS:
        raise ValueError(f"pass between 1 and {MAX_IDS} token ids, got {len(ids)}")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"token ids must be in 0..{vocab_size - 1} (the rows of the table), got {bad}")
    values = None
    if table is not None:
        values = np.asarray(table.detach().cpu() if isinstance(table, torch.Tensor) else table, dtype=float)
        if values.shape != (vocab_size, d_model):
            raise ValueError(f"table has shape {values.shape}, expected (vocab_size, d_model) = "
                             f"({vocab_size}, {d_model})")
    colours = {}
    for i in ids:
        colours.setdefault(i, PALETTE[len(colours) % len(PALETTE)])
    n = len(ids)
    cw, ch = (0.46 if values is not None else 0.3), 0.26
    cell = (cw, ch)
    hot = (0.26, ch)                                    # one-hot cells hold a 0 or a 1
    band = max(vocab_size, n) * ch
    top_band, gap = 0.75, 1.05
    height = top_band + band + gap + band + 0.55
    x_ids, x_table = 1.25, 2.9
    x_out = x_table + d_model * cw + 1.6
    x_hot = 0.35
    x_w2 = x_hot + vocab_size * hot[0] + 0.6
    x_e2 = x_w2 + d_model * cw + 0.6
    width = max(x_out + d_model * cw, x_e2 + d_model * cw) + 0.45
    fig, ax = blank_canvas(width, height)
    row_fill = {i: _light(c) for i, c in colours.items()}

    # band 1: the lookup, ids -> rows of W -> the output
    y1 = height - top_band
    ax.text(0.2, height - 0.28, f"lookup: each of the {n} ids selects one row of the table", ha="left",
            va="center", fontsize=10, weight="bold")
    ids_top = y1 - (band - n * ch) / 2
    for r, i in enumerate(ids):
        y = ids_top - (r + 0.5) * ch
        ax.add_patch(Rectangle((x_ids, y - ch / 2), 0.45, ch, facecolor=row_fill[i], edgecolor=colours[i], lw=1.0))
        ax.text(x_ids + 0.225, y, str(i), ha="center", va="center", fontsize=9)
    ax.text(x_ids + 0.225, ids_top + 0.05, "ids", ha="center", va="bottom", fontsize=9)
    ax.text(x_ids + 0.225, ids_top - n * ch - 0.05, f"({n},)", ha="center", va="top", fontsize=8)
    table_top = y1 - (band - vocab_size * ch) / 2
    _grid(ax, x_table, table_top, vocab_size, d_model, cell, fills={i: row_fill[i] for i in colours}, values=values)
    for v in range(vocab_size):
        ax.text(x_table - 0.06, table_top - (v + 0.5) * ch, f"token {v}", ha="right", va="center", fontsize=7,
                color="#555555")
    ax.text(x_table + d_model * cw / 2, table_top + 0.05, "table W", ha="center", va="bottom", fontsize=9)
    ax.text(x_table + d_model * cw / 2, table_top - vocab_size * ch - 0.05,
            f"(vocab_size, d_model) = ({vocab_size}, {d_model})", ha="center", va="top", fontsize=8)
    out_top = ids_top
    out_values = values[ids] if values is not None else None
    _grid(ax, x_out, out_top, n, d_model, cell, fills={r: row_fill[i] for r, i in enumerate(ids)}, values=out_values)
    ax.text(x_out + d_model * cw / 2, out_top + 0.05, "W[ids]", ha="center", va="bottom", fontsize=9)
    ax.text(x_out + d_model * cw / 2, out_top - n * ch - 0.05, f"({n}, {d_model})", ha="center", va="top", fontsize=8)
    for r, i in enumerate(ids):
        y_id = ids_top - (r + 0.5) * ch
        y_row = table_top - (i + 0.5) * ch
        ax.add_patch(FancyArrowPatch((x_ids + 0.47, y_id), (x_table - 0.62, y_row), arrowstyle="-|>",
                                     mutation_scale=9, color=colours[i], lw=1.0, shrinkA=0, shrinkB=0))
        ax.add_patch(FancyArrowPatch((x_table + d_model * cw + 0.05, y_row), (x_out - 0.05, y_id), arrowstyle="-|>",
                                     mutation_scale=9, color=colours[i], lw=1.0, shrinkA=0, shrinkB=0))

    # band 2: the same numbers as a matrix product
    y2 = y1 - band - gap
    ax.text(0.2, y2 + 0.45, "the same as a matrix product: one_hot(ids) @ W", ha="left", va="center",
            fontsize=10, weight="bold")
    hot_top = y2 - (band - n * ch) / 2
    hot_cells = {(r, i): colours[i] for r, i in enumerate(ids)}
    _grid(ax, x_hot, hot_top, n, vocab_size, hot, cell_fills=hot_cells)
    for r, i in enumerate(ids):
        for v in range(vocab_size):
            ax.text(x_hot + (v + 0.5) * hot[0], hot_top - (r + 0.5) * ch, "1" if v == i else "0", ha="center",
                    va="center", fontsize=7, color="white" if v == i else "#999999",
                    weight="bold" if v == i else "normal")
    ax.text(x_hot + vocab_size * hot[0] / 2, hot_top + 0.05, "one_hot(ids)", ha="center", va="bottom", fontsize=9)
    ax.text(x_hot + vocab_size * hot[0] / 2, hot_top - n * ch - 0.05, f"({n}, {vocab_size})", ha="center",
            va="top", fontsize=8)
    w_top = y2 - (band - vocab_size * ch) / 2
    _grid(ax, x_w2, w_top, vocab_size, d_model, cell, fills={i: row_fill[i] for i in colours}, values=values)
    ax.text(x_w2 + d_model * cw / 2, w_top + 0.05, "W", ha="center", va="bottom", fontsize=9)
    ax.text(x_w2 + d_model * cw / 2, w_top - vocab_size * ch - 0.05, f"({vocab_size}, {d_model})", ha="center",
            va="top", fontsize=8)
    _grid(ax, x_e2, hot_top, n, d_model, cell, fills={r: row_fill[i] for r, i in enumerate(ids)}, values=out_values)
    ax.text(x_e2 + d_model * cw / 2, hot_top + 0.05, "embeddings", ha="center", va="bottom", fontsize=9)
    ax.text(x_e2 + d_model * cw / 2, hot_top - n * ch - 0.05, f"({n}, {d_model})", ha="center", va="top", fontsize=8)
    mid = y2 - band / 2
    ax.text(x_hot + vocab_size * hot[0] + 0.3, mid, "@", ha="center", va="center", fontsize=13)
    ax.text(x_w2 + d_model * cw + 0.3, mid, "=", ha="center", va="center", fontsize=13)
    ax.text(0.2, 0.25, "a 1 in column v of a one-hot row keeps row v of W; every other row is multiplied by 0",
            ha="left", va="center", fontsize=8, color="#444444")
    plt.close(fig)
    return fig


# ------------------------------------------------------------------------------------------------------------- RoPE

def _pair(name: str, v: Sequence[float]) -> np.ndarray:
    try:
        arr = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=float).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be two numbers (one pair of coordinates), got {v!r}") from exc
    if arr.shape != (2,) or not np.all(np.isfinite(arr)) or not np.any(arr):
        raise ValueError(f"{name} must be two finite numbers, not both 0 (one pair of coordinates), got {v!r}")
    return arr


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def draw_rope_rotation(q: Sequence[float] = (1.0, 2.0), k: Sequence[float] = (0.5, -1.0), theta: float = 0.4,
                       positions: Sequence[int] = (0, 1, 2, 3),
                       pairs: Sequence[tuple[int, int]] = ((5, 2), (10, 7), (3, 5))) -> Figure:
    """RoPE on one 2-D pair: the query turned by position x theta, and q.k of a rotated query and key set by m - n."""
    q, k = _pair("q", q), _pair("k", k)
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0 < theta < math.pi or \
            not math.isfinite(theta):
        raise ValueError(f"theta must be an angle in radians between 0 and pi, got {theta!r}")
    positions = [_whole("a position", m, 0, 10_000) for m in positions]
    if not 1 <= len(positions) <= 6 or len(set(positions)) != len(positions):
        raise ValueError(f"pass 1 to 6 different positions, got {positions}")
    pairs = [(_whole("a query position m", m, 0, 10_000), _whole("a key position n", n, 0, 10_000))
             for m, n in pairs]
    if not 1 <= len(pairs) <= 4:
        raise ValueError(f"pass 1 to 4 (m, n) pairs, got {len(pairs)}")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 5.6))
    fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.2, wspace=0.08)
    q_len, k_len = float(np.hypot(*q)), float(np.hypot(*k))
    for ax, reach in ((left, 1.5 * q_len), (right, 1.45 * max(q_len, k_len))):
        ax.set_aspect("equal")
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        ax.set_axis_off()
        ax.set_xticks([])   # no tick labels hidden behind the picture
        ax.set_yticks([])
        ax.axhline(0, color="#dddddd", lw=0.8, zorder=0)
        ax.axvline(0, color="#dddddd", lw=0.8, zorder=0)
    left.add_patch(Circle((0, 0), q_len, fill=False, ls=":", color="#bbbbbb"))
    reach = 1.5 * q_len
    left.set_title(f"the query's pair turned by position × θ (θ = {theta:g} rad)\n"
                   f"its length stays |q| = {q_len:.4f}", fontsize=10)
    base = math.atan2(q[1], q[0])
    cmap = plt.get_cmap("viridis")
    for order, m in enumerate(sorted(positions)):
        colour = cmap(0.85 * order / max(1, len(positions) - 1))
        tip = _rotate(q, m * theta)
        left.add_patch(FancyArrowPatch((0, 0), tuple(tip), arrowstyle="-|>", mutation_scale=12, color=colour, lw=1.8,
                                       shrinkA=0, shrinkB=0))
        out = tip / q_len * (q_len + 0.2 * reach)
        angle = "no turn" if m == 0 else f"{'' if m == 1 else m}θ = {m * theta:.2g}"
        left.text(out[0], out[1], f"m = {m}\n{angle}", ha="center", va="center", fontsize=8, color=colour,
                  linespacing=1.1)
        if m > 0:       # the angle turned, as an arc from the unrotated query
            radius = (0.3 + 0.6 * order / len(positions)) * q_len
            left.add_patch(Arc((0, 0), 2 * radius, 2 * radius, theta1=math.degrees(base),
                               theta2=math.degrees(base + m * theta), color=colour, lw=1.2))

    right.set_title("a rotated query and key: q·k depends only on m − n", fontsize=10)
    reach = 1.45 * max(q_len, k_len)
    lines = []
    for p_index, (m, n) in enumerate(pairs):
        colour = PALETTE[p_index % len(PALETTE)]
        qm, kn = _rotate(q, m * theta), _rotate(k, n * theta)
        for vec, style, name in ((qm, "-", f"q at {m}"), (kn, "--", f"k at {n}")):
            right.add_patch(FancyArrowPatch((0, 0), tuple(vec), arrowstyle="-|>", mutation_scale=12, color=colour,
                                            lw=1.6, ls=style, shrinkA=0, shrinkB=0))
            length = float(np.hypot(*vec))
            out = vec / length * (length + 0.13 * reach)
            right.text(out[0], out[1], name, ha="center", va="center", fontsize=8, color=colour)
        score = float(qm @ kn)
        lines.append((f"m = {m}, n = {n}:  m − n = {m - n}   q·k = {score:.4f}", colour))
    for row, (line, colour) in enumerate(lines):
        fig.text(0.55, 0.14 - row * 0.045, line, ha="left", va="center", fontsize=9, color=colour, family="monospace")
    fig.text(0.03, 0.14, f"q = ({q[0]:g}, {q[1]:g}),  k = ({k[0]:g}, {k[1]:g})", ha="left", va="center", fontsize=9)
    fig.text(0.03, 0.095, "rotating both by the same extra angle changes nothing:", ha="left", va="center",
             fontsize=9)
    fig.text(0.03, 0.05, r"$R(m\theta)q \cdot R(n\theta)k = q \cdot R((n-m)\theta)\,k$", ha="left", va="center",
             fontsize=10)
    plt.close(fig)
    return fig


__all__ = ["draw_embedding_lookup", "draw_rope_rotation"]
