"""Conceptual diagrams for chapter 05: one attention head, heads splitting and joining, grouped key/value heads.

Every function draws boxes and arrows (not data), labels each block with its real shape, and returns a closed
matplotlib ``Figure`` (show it as a cell's last line). The drawing helpers at the top (``canvas``, ``draw_box``,
``draw_matrix``, ``draw_arrow``) are shared by the diagrams of chapters 06 and 07.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

ROLE_COLORS = {"input": "tab:gray", "query": "tab:blue", "key": "tab:orange", "value": "tab:green",
               "scores": "tab:purple", "output": "tab:red", "norm": "tab:green", "ffn": "tab:orange",
               "attention": "tab:blue", "embedding": "tab:gray", "head": "tab:purple"}
HEAD_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
               "tab:cyan", "tab:gray"]


# --------------------------------------------------------------------------- drawing helpers


def check_sizes(**sizes: int) -> None:
    """Refuse a size that is not a whole number >= 1, naming the argument."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def check_at_most(limit: int, **sizes: int) -> None:
    """Refuse a size too large to draw readably."""
    for name, value in sizes.items():
        if value > limit:
            raise ValueError(f"{name}={value} is too large to draw readably: use at most {limit} "
                             f"(the picture is about the idea; the shapes in its labels scale to any size)")


def canvas(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure of ``width`` x ``height`` inches whose one hidden axes measures in inches from the bottom left."""
    fig, ax = plt.subplots(figsize=(width, height))
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def draw_box(ax: Axes, x: float, y: float, w: float, h: float, text: str = "", color: str = "tab:blue",
             fontsize: float = 9, alpha: float = 0.22, textcolor: str = "black", **text_kw) -> FancyBboxPatch:
    """A rounded box centred on (x, y), ``w`` wide and ``h`` high, with ``text`` in the middle."""
    r, g, b, _ = to_rgba(color)
    face = (1 - alpha * (1 - r), 1 - alpha * (1 - g), 1 - alpha * (1 - b))  # a light, opaque tint of the colour
    box = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.06",
                         facecolor=face, edgecolor=color, linewidth=1.3, zorder=3)
    ax.add_patch(box)
    if text:
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color=textcolor, zorder=4, **text_kw)
    return box


def draw_matrix(ax: Axes, x: float, y: float, rows: int, cols: int, cell: float, color: str = "tab:blue",
                hidden: set[tuple[int, int]] | None = None, alpha: float = 0.35,
                col_colors: list[str] | None = None, blank: set[tuple[int, int]] | None = None,
                min_side: float = 0.0) -> tuple[float, float, float, float]:
    """A ``rows`` x ``cols`` grid of cells centred on (x, y); ``hidden`` cells are dark grey (masked), ``blank``
    cells white (zero). A side shorter than ``min_side`` is stretched to it, so that a small matrix stays visible.

    Returns (left, bottom, width, height) of the grid.
    """
    w, h = max(cols * cell, min_side), max(rows * cell, min_side)
    cell_w, cell_h = w / cols, h / rows
    left, bottom = x - w / 2, y - h / 2
    hidden, blank = hidden or set(), blank or set()
    grid = rows <= 16 and cols <= 16
    cells, faces, edges = [], [], []
    if grid:
        for i in range(rows):
            for j in range(cols):
                c = col_colors[j] if col_colors is not None else color
                cells.append(Rectangle((left + j * cell_w, bottom + h - (i + 1) * cell_h), cell_w, cell_h))
                faces.append(to_rgba("0.35", 0.9) if (i, j) in hidden else to_rgba("white") if (i, j) in blank
                             else to_rgba(c, alpha))
                edges.append(to_rgba(c, 0.9))
    elif col_colors is not None:  # too many cells to draw one by one: colour column bands
        for j, c in enumerate(col_colors):
            cells.append(Rectangle((left + j * cell_w, bottom), cell_w, h))
            faces.append(to_rgba(c, alpha))
            edges.append(to_rgba(c, 0.0))
    else:
        cells.append(Rectangle((left, bottom), w, h))
        faces.append(to_rgba(color, alpha))
        edges.append(to_rgba(color, 0.9))
    # one collection per matrix: far faster to build and draw than a patch per cell
    ax.add_collection(PatchCollection(cells, facecolors=faces, edgecolors=edges, linewidths=0.6, zorder=2),
                      autolim=False)
    ax.add_patch(Rectangle((left, bottom), w, h, fill=False, edgecolor="0.2", linewidth=1.0, zorder=2))
    return left, bottom, w, h


def draw_arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], color: str = "0.3",
               lw: float = 1.3, style: str = "-|>", ls: str = "-", rad: float = 0.0) -> FancyArrowPatch:
    """An arrow from ``start`` to ``end`` (bent by ``rad``: 0 is straight)."""
    arrow = FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=11, color=color, linewidth=lw,
                            linestyle=ls, connectionstyle=f"arc3,rad={rad}", shrinkA=0, shrinkB=0)
    ax.add_patch(arrow)
    return arrow


def _cell_size(limit_w: float, limit_h: float, rows: int, cols: int, largest: float = 0.22) -> float:
    return min(largest, limit_w / cols, limit_h / rows)


# --------------------------------------------------------------------------- (a) one head


def one_head_diagram(seq: int = 4, d_model: int = 8, d_k: int = 4, d_v: int | None = None,
                     causal: bool = True) -> Figure:
    """One attention head: x times W_q, W_k, W_v gives queries, keys and values; softmax(Q K^T / sqrt(d_k)) V."""
    d_v = d_k if d_v is None else d_v
    check_sizes(seq=seq, d_model=d_model, d_k=d_k, d_v=d_v)
    check_at_most(16, seq=seq)
    check_at_most(4096, d_model=d_model, d_k=d_k, d_v=d_v)
    fig, ax = canvas(12.0, 5.7)
    # one cell size for every matrix, so that shapes compare at a glance (wide ones are drawn at most 1.3 in)
    cell = _cell_size(1.3, 0.95, max(seq, d_model), max(seq, d_model, d_k, d_v), largest=0.2)
    rows_y = {"query": 4.65, "key": 2.95, "value": 1.25}
    projections = {"query": ("W_q", "Q: queries", d_k, "d_k"), "key": ("W_k", "K: keys", d_k, "d_k"),
                   "value": ("W_v", "V: values", d_v, "d_v")}

    def labelled(x, y, rows, cols, name, shape, color, hidden=None, blank=None, name_gap=0.1):
        left, bottom, w, h = draw_matrix(ax, x, y, rows, cols, cell, color, hidden=hidden, blank=blank,
                                         min_side=0.3)
        ax.text(x, bottom + h + name_gap, name, ha="center", va="bottom", fontsize=9.5, fontweight="bold")
        ax.text(x, bottom - 0.08, shape, ha="center", va="top", fontsize=8.5, linespacing=1.25)
        return left, bottom, w, h

    x_left, x_bottom, x_w, x_h = labelled(0.85, 2.95, seq, d_model, "x (input)",
                                          f"(seq, d_model)\n= ({seq}, {d_model})", ROLE_COLORS["input"])
    out_boxes = {}
    for role, y in rows_y.items():
        w_name, m_name, width, sym = projections[role]
        wl, wb, ww, wh = labelled(2.85, y, d_model, width, w_name, f"(d_model, {sym})\n= ({d_model}, {width})",
                                  ROLE_COLORS[role], name_gap=0.06)
        draw_arrow(ax, (x_left + x_w + 0.05, 2.95), (wl - 0.08, y))
        ql, qb, qw, qh = labelled(4.75, y, seq, width, m_name, f"(seq, {sym})\n= ({seq}, {width})",
                                  ROLE_COLORS[role])
        draw_arrow(ax, (wl + ww + 0.08, y), (ql - 0.08, y))
        ax.text((wl + ww + ql) / 2, y + 0.07, f"x {w_name}", ha="center", va="bottom", fontsize=8, color="0.3")
        out_boxes[role] = (ql, qb, qw, qh)

    hidden = {(i, j) for i in range(seq) for j in range(seq) if j > i} if causal else set()
    sy = (rows_y["query"] + rows_y["key"]) / 2
    sl, sb, sw, sh = labelled(7.0, sy, seq, seq, "scores", f"Q K$^T$ / $\\sqrt{{d_k}}$: (seq, seq)\n= ({seq}, {seq})",
                              ROLE_COLORS["scores"], hidden=hidden)
    for role in ("query", "key"):
        ql, qb, qw, qh = out_boxes[role]
        draw_arrow(ax, (ql + qw + 0.08, rows_y[role]), (sl - 0.08, sy), rad=-0.15 if role == "query" else 0.15)
    if causal:
        ax.text(7.0, sb - 0.62, "causal mask: key j > query i\nset to $-\\infty$ (dark)", ha="center", va="top",
                fontsize=8, color="0.25", linespacing=1.3)
    wl, wb, ww, wh = labelled(9.05, sy, seq, seq, "weights", f"softmax of each row\n(seq, seq) = ({seq}, {seq})",
                              ROLE_COLORS["scores"], blank=hidden)
    draw_arrow(ax, (sl + sw + 0.08, sy), (wl - 0.08, sy))
    ax.text((sl + sw + wl) / 2, sy + 0.07, "softmax", ha="center", va="bottom", fontsize=8, color="0.3")
    if causal:
        ax.text(9.05, wb - 0.62, "masked weights are 0 (white):\neach row still sums to 1", ha="center", va="top",
                fontsize=8, color="0.25", linespacing=1.3)
    oy = rows_y["value"] + 0.35
    ol, ob, ow, oh = labelled(11.05, oy, seq, d_v, "output", f"weights V: (seq, d_v)\n= ({seq}, {d_v})",
                              ROLE_COLORS["output"])
    draw_arrow(ax, (wl + ww + 0.08, sy), (ol + ow / 2, ob + oh + 0.45), rad=-0.3)
    vl, vb, vw, vh = out_boxes["value"]
    draw_arrow(ax, (vl + vw + 0.08, rows_y["value"]), (ol - 0.08, oy - 0.1))
    ax.text(8.0, rows_y["value"] - 0.22, "the values, mixed by the weights", ha="center", va="top", fontsize=8,
            color="0.3")
    plt.close(fig)
    return fig


# --------------------------------------------------------------------------- (b) heads split and joined


def split_heads_diagram(batch: int = 2, seq: int = 4, d_model: int = 8, n_heads: int = 2) -> Figure:
    """Multi-head attention's reshapes: (batch, seq, d_model) -> heads -> attention per head -> merged back."""
    check_sizes(batch=batch, seq=seq, d_model=d_model, n_heads=n_heads)
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}: "
                         f"each head gets d_model / n_heads features")
    check_at_most(8, n_heads=n_heads)
    check_at_most(16, seq=seq)
    check_at_most(64, d_model=d_model)
    head_dim = d_model // n_heads
    gap = 0.12                                  # between the heads' pieces
    cell = _cell_size(1.55 - gap * (n_heads - 1), (3.2 - gap * (n_heads - 1)) / n_heads, seq, d_model,
                      largest=0.2)
    half = (n_heads * seq * cell + (n_heads - 1) * gap) / 2 + 0.07 * 2   # half the tallest stage, with shadows
    fig, ax = canvas(12.5, 2 * half + 1.8)
    mid = half + 1.05
    top_y = mid + half + 0.2
    colors = [HEAD_COLORS[h % len(HEAD_COLORS)] for h in range(n_heads)]
    col_colors = [colors[j // head_dim] for j in range(d_model)]
    shadows = min(batch, 3) - 1                 # the other sequences of the batch, drawn behind the first

    def behind(left, bottom, w, h):
        for s in range(shadows, 0, -1):
            ax.add_patch(Rectangle((left + 0.07 * s, bottom + 0.07 * s), w, h, facecolor="white",
                                   edgecolor="0.55", linewidth=0.8, zorder=0.5 - 0.01 * s))

    def whole(x):
        w, h = d_model * cell, seq * cell
        behind(x - w / 2, mid - h / 2, w, h)
        draw_matrix(ax, x, mid, seq, d_model, cell, col_colors=col_colors)
        return mid - h / 2

    def pieces_in_a_row(x):
        width = d_model * cell + gap * (n_heads - 1)
        h = seq * cell
        left = x - width / 2
        for head in range(n_heads):
            piece_x = left + head * (head_dim * cell + gap) + head_dim * cell / 2
            behind(piece_x - head_dim * cell / 2, mid - h / 2, head_dim * cell, h)
            draw_matrix(ax, piece_x, mid, seq, head_dim, cell, colors[head])
        return mid - h / 2

    def pieces_stacked(x, label_side, alpha=0.35):
        h = seq * cell
        total = n_heads * h + (n_heads - 1) * gap
        ys = [mid + total / 2 - h / 2 - head * (h + gap) for head in range(n_heads)]
        for head, y in enumerate(ys):
            behind(x - head_dim * cell / 2, y - h / 2, head_dim * cell, h)
            draw_matrix(ax, x, y, seq, head_dim, cell, colors[head], alpha=alpha)
            tx = x + label_side * (head_dim * cell / 2 + 0.12 + 0.07 * shadows)
            ax.text(tx, y, f"head {head}", ha="left" if label_side > 0 else "right", va="center", fontsize=8.5,
                    color=colors[head], fontweight="bold")
        return mid - total / 2

    stages = [
        (1.2, "x: the layer's input\n(or its queries, keys, values)", "(batch, seq, d_model)",
         f"({batch}, {seq}, {d_model})", whole),
        (3.75, "split the features:\n.view(batch, seq, n_heads, head_dim)", "(batch, seq, n_heads, head_dim)",
         f"({batch}, {seq}, {n_heads}, {head_dim})", pieces_in_a_row),
        (6.3, "heads first:\n.transpose(1, 2)", "(batch, n_heads, seq, head_dim)",
         f"({batch}, {n_heads}, {seq}, {head_dim})", lambda x: pieces_stacked(x, -1)),
        (8.75, "attention in each head\n(its own seq x seq weights)", "(batch, n_heads, seq, head_dim)",
         f"({batch}, {n_heads}, {seq}, {head_dim})", lambda x: pieces_stacked(x, +1, alpha=0.7)),
        (11.25, "merge: .transpose(1, 2)\n.reshape(batch, seq, d_model)", "(batch, seq, d_model)",
         f"({batch}, {seq}, {d_model})", whole),
    ]
    for x, title, symbols, numbers, draw in stages:
        draw(x)
        ax.text(x, top_y, title, ha="center", va="bottom", fontsize=9, linespacing=1.3)
        ax.text(x, mid - half - 0.05, f"{symbols}\n= {numbers}", ha="center", va="top", fontsize=8.5,
                linespacing=1.3)
    for (x0, *_), (x1, *_) in zip(stages, stages[1:]):
        draw_arrow(ax, (x0 + 0.95, mid), (x1 - 0.95, mid))
    ax.text(6.25, 0.2, f"head_dim = d_model / n_heads = {d_model} / {n_heads} = {head_dim};   " +
            (f"batch = {batch} sequences (drawn behind each other), each handled the same way" if batch > 1
             else "batch = 1 sequence"),
            ha="center", va="center", fontsize=8.5, color="0.3")
    plt.close(fig)
    return fig


# --------------------------------------------------------------------------- (c) grouped key/value heads


def grouped_heads_diagram(n_heads: int = 8, n_kv_heads: int = 2) -> Figure:
    """Grouped-query attention: n_heads query heads share n_kv_heads key/value heads (MHA and MQA are the ends)."""
    check_sizes(n_heads=n_heads, n_kv_heads=n_kv_heads)
    check_at_most(16, n_heads=n_heads)
    if n_kv_heads > n_heads or n_heads % n_kv_heads:
        raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}: each key/value head "
                         f"serves a group of n_heads / n_kv_heads query heads")
    group = n_heads // n_kv_heads
    kind = "MHA" if n_kv_heads == n_heads else "MQA" if n_kv_heads == 1 else "GQA"
    fig, ax = canvas(10.0, 3.8)
    left, right = 1.9, 9.7
    step = (right - left) / n_heads
    box_w = min(0.75, step - 0.08)
    q_y, kv_y = 2.6, 0.95
    colors = [HEAD_COLORS[g % len(HEAD_COLORS)] for g in range(n_kv_heads)]
    kv_x = []
    for g in range(n_kv_heads):
        first, last = left + g * group * step + step / 2, left + ((g + 1) * group - 1) * step + step / 2
        kv_x.append((first + last) / 2)
        draw_box(ax, kv_x[-1], kv_y, min(max(last - first + box_w, 0.6), 2.2), 0.5,
                 f"K, V {g}" if box_w > 0.45 or group > 1 else f"{g}", color=colors[g], fontsize=8.5)
    for h in range(n_heads):
        x = left + h * step + step / 2
        g = h // group
        draw_box(ax, x, q_y, box_w, 0.45, f"Q {h}" if box_w >= 0.4 else f"{h}", color=colors[g],
                 fontsize=8.5 if box_w >= 0.4 else 7.5)
        draw_arrow(ax, (kv_x[g], kv_y + 0.25), (x, q_y - 0.23), color=colors[g], lw=1.0, style="-")
    ax.text(left - 0.15, q_y, f"query heads\nn_heads = {n_heads}", ha="right", va="center", fontsize=9,
            linespacing=1.3)
    ax.text(left - 0.15, kv_y, f"key/value heads\nn_kv_heads = {n_kv_heads}", ha="right", va="center",
            fontsize=9, linespacing=1.3)
    share = {"MHA": "every query head has its own keys and values",
             "MQA": "all query heads share one key/value head",
             "GQA": f"each group of {group} query heads shares one key/value head"}[kind]
    ax.text(5.0, 3.5, f"{kind}: {share}", ha="center", va="center", fontsize=10, fontweight="bold")
    ax.text(5.0, 0.3, f"KV cache: {n_kv_heads} of {n_heads} heads' keys and values are stored "
            f"({n_kv_heads}/{n_heads} of MHA's); query head i uses key/value head i // {group}",
            ha="center", va="center", fontsize=8.5, color="0.3")
    plt.close(fig)
    return fig


__all__ = ["one_head_diagram", "split_heads_diagram", "grouped_heads_diagram", "canvas", "draw_box", "draw_matrix",
           "draw_arrow", "check_sizes", "check_at_most", "ROLE_COLORS", "HEAD_COLORS"]
