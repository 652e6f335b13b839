"""Conceptual diagrams for chapter 06: the residual stream through a stack of blocks, and pre-norm vs post-norm.

Every function draws boxes and arrows (not data) and returns a closed matplotlib ``Figure`` (show it as a cell's
last line). The drawing helpers come from :mod:`llmcourse.transformer.attention_diagrams`.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from llmcourse.transformer.attention_diagrams import ROLE_COLORS, canvas, check_at_most, check_sizes, draw_arrow, \
    draw_box

STREAM_COLOR = "tab:cyan"
SUBLAYER_COLORS = {"attention": ROLE_COLORS["attention"], "ffn": ROLE_COLORS["ffn"], "mlp": ROLE_COLORS["ffn"]}


def _plus(ax: Axes, x: float, y: float, r: float = 0.14) -> None:
    ax.add_patch(Circle((x, y), r, facecolor="white", edgecolor="0.2", linewidth=1.3, zorder=3))
    ax.text(x, y, "+", ha="center", va="center", fontsize=12, fontweight="bold", zorder=4)


def _stream(ax: Axes, x: float, y0: float, y1: float) -> None:
    """The residual stream: a broad band from y0 up to y1."""
    ax.plot([x, x], [y0, y1], color=STREAM_COLOR, linewidth=7, alpha=0.35, solid_capstyle="butt", zorder=1)
    ax.plot([x, x], [y0, y1], color="0.25", linewidth=1.2, zorder=2)


def _branch(ax: Axes, stream_x: float, y: float, boxes: Sequence[tuple[float, float, str, str]],
            plus_y: float, box_h: float = 0.42) -> None:
    """A sub-layer's branch: leave the stream at height ``y``, pass through ``boxes`` (x, width, text, colour)
    from left to right, and come back into a ``+`` on the stream at ``plus_y``."""
    ax.plot([stream_x], [y], marker="o", color="0.2", markersize=4, zorder=3)
    previous = stream_x
    for x, w, text, color in boxes:
        draw_arrow(ax, (previous, y), (x - w / 2, y))
        draw_box(ax, x, y, w, box_h, text, color=color)
        previous = x + w / 2
    last_x = boxes[-1][0]
    ax.plot([last_x, last_x], [y + box_h / 2, plus_y], color="0.3", linewidth=1.3)
    draw_arrow(ax, (last_x, plus_y), (stream_x + 0.15, plus_y))
    _plus(ax, stream_x, plus_y)


def _check_labels(**labels: object) -> None:
    for name, value in labels.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")


# --------------------------------------------------------------------------- (a) the residual stream


def residual_stream_diagram(n_blocks: int = 2, batch: int = 2, seq: int = 4, d_model: int = 8,
                            norm: str = "LayerNorm") -> Figure:
    """The residual stream: each pre-norm block reads x through a norm and adds its attention and FFN outputs back."""
    check_sizes(n_blocks=n_blocks, batch=batch, seq=seq, d_model=d_model)
    check_at_most(4, n_blocks=n_blocks)
    _check_labels(norm=norm)
    sub_h, bottom = 1.05, 1.05
    height = bottom + 2 * n_blocks * sub_h + 1.35
    fig, ax = canvas(8.0, height)
    sx = 2.3
    draw_box(ax, sx, 0.4, 2.9, 0.45, "token embeddings + positions", color=ROLE_COLORS["embedding"])
    top = bottom + 2 * n_blocks * sub_h
    _stream(ax, sx, 0.625, top + 0.3)
    for b in range(n_blocks):
        for k, (name, color) in enumerate([("attention", SUBLAYER_COLORS["attention"]),
                                           ("FFN", SUBLAYER_COLORS["ffn"])]):
            y = bottom + (2 * b + k) * sub_h + 0.12
            _branch(ax, sx, y, [(3.95, 1.15, norm, ROLE_COLORS["norm"]), (5.55, 1.2, name, color)], y + 0.58)
            if b == 0 and k == 0:
                ax.text(2.45, y + 0.06, "read", ha="left", va="bottom", fontsize=8, color="0.3")
                ax.text(3.95, y + 0.62, "add the output back", ha="center", va="bottom", fontsize=8, color="0.3")
        y0, y1 = bottom + 2 * b * sub_h - 0.12, bottom + (2 * b + 2) * sub_h - 0.22
        ax.plot([6.45, 6.55, 6.55, 6.45], [y0, y0, y1, y1], color="0.45", linewidth=1.1)
        ax.text(6.7, (y0 + y1) / 2, f"block {b + 1}", ha="left", va="center", fontsize=9.5, fontweight="bold")
    draw_box(ax, sx, top + 0.55, 1.6, 0.42, f"final {norm}", color=ROLE_COLORS["norm"])
    draw_arrow(ax, (sx, top + 0.76), (sx, top + 1.05))
    ax.text(sx, top + 1.1, "to the output layer", ha="center", va="bottom", fontsize=8.5, color="0.3")
    ax.text(sx - 0.25, bottom + sub_h * 0.55, f"residual\nstream x\n(batch, seq, d_model)\n= ({batch}, {seq}, "
            f"{d_model})", ha="right", va="center", fontsize=8.5, linespacing=1.3)
    ax.text(sx - 0.25, top - 0.3, f"{n_blocks} block{'s' if n_blocks > 1 else ''},\n"
            f"{2 * n_blocks} additions", ha="right", va="center", fontsize=8.5, color="0.3", linespacing=1.25)
    plt.close(fig)
    return fig


# --------------------------------------------------------------------------- (b) pre-norm vs post-norm


def norm_placement_diagram(sublayers: Sequence[str] = ("attention", "FFN"), norm: str = "LayerNorm") -> Figure:
    """Post-norm puts the norm on the residual stream after each addition; pre-norm puts it on the branch, before."""
    if isinstance(sublayers, str) or not 1 <= len(sublayers) <= 3:
        raise ValueError(f"sublayers must be a list of 1 to 3 names, e.g. ('attention', 'FFN'), got {sublayers!r}")
    _check_labels(norm=norm, **{f"sublayers[{i}]": s for i, s in enumerate(sublayers)})
    sub_h, bottom = 1.35, 0.95
    top = bottom + len(sublayers) * sub_h
    height = top + 1.75
    fig, ax = canvas(11.0, height)
    for cx, prenorm in ((2.75, False), (8.25, True)):
        sx = cx - 1.7
        draw_box(ax, sx, 0.55, 0.9, 0.4, "x", color=ROLE_COLORS["embedding"])
        _stream(ax, sx, 0.75, top + 0.3)
        for k, name in enumerate(sublayers):
            color = SUBLAYER_COLORS.get(name.lower(), "tab:purple")
            y = bottom + k * sub_h + 0.12
            if prenorm:
                _branch(ax, sx, y, [(cx - 0.05, 1.2, norm, ROLE_COLORS["norm"]), (cx + 1.55, 1.25, name, color)],
                        y + 0.55)
            else:
                _branch(ax, sx, y, [(cx + 0.55, 1.25, name, color)], y + 0.55)
                draw_box(ax, sx, y + 0.95, 1.2, 0.36, norm, color=ROLE_COLORS["norm"])
        if prenorm:
            draw_box(ax, sx, top + 0.45, 1.5, 0.38, f"final {norm}", color=ROLE_COLORS["norm"])
            ax.text(sx + 0.95, top + 0.45, "needed once, before the output layer", ha="left", va="center",
                    fontsize=8, color="0.3")
        title = "pre-norm (GPT-2, GPT-3, LLaMA)" if prenorm else "post-norm (original Transformer, BERT)"
        formula = "x = x + Sublayer(Norm(x))" if prenorm else "x = Norm(x + Sublayer(x))"
        ax.text(cx, height - 0.2, title, ha="center", va="top", fontsize=10.5, fontweight="bold")
        ax.text(cx, height - 0.55, formula, ha="center", va="top", fontsize=9.5, family="monospace")
        ax.text(sx + 0.75, 0.55, "the norm sits on the branch: the stream is a clean\nidentity path from the "
                "top to the bottom" if prenorm else "the norm sits on the stream: every sum\nis rescaled before "
                "the next sub-layer", ha="left", va="center", fontsize=8.5, color="0.25", linespacing=1.3)
    ax.plot([5.5, 5.5], [0.2, height - 0.2], color="0.8", linewidth=1.0)
    plt.close(fig)
    return fig


__all__ = ["residual_stream_diagram", "norm_placement_diagram"]
