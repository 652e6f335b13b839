"""Conceptual pictures for chapter 08. Every function returns a closed matplotlib ``Figure`` (show it as a cell's
last line)."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

INPUT_COLOUR, TARGET_COLOUR, EXTRA_COLOUR = "#cfe3f7", "#d9f2d0", "#f3f3f3"
FORWARD_COLOUR, BACKWARD_COLOUR, STEP_COLOUR = "#cfe3f7", "#fde3c8", "#d9f2d0"
SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _whole(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or a ValueError that names the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high} (so the picture stays readable), "
                         f"got {value!r}")
    return value


def _box(ax: Axes, x: float, y: float, width: float, height: float, text: str, colour: str,
         fontsize: float = 9, **style) -> None:
    """A rounded box centred on (x, y) with ``text`` in its middle."""
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=colour, edgecolor=style.pop("edgecolor", "black"),
                                linewidth=style.pop("linewidth", 0.8), **style))
    if text:
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], colour: str = "black",
           bend: float = 0.0, lw: float = 1.1) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color=colour, lw=lw,
                                 connectionstyle=f"arc3,rad={bend}", shrinkA=0, shrinkB=0))


def _shown(token: str) -> str:
    return {" ": "␣", "\n": "↵", "\t": "⇥"}.get(token, token)


def plot_window_shift(text: str = "the cat sat on the mat", context_length: int = 8) -> Figure:
    """A training window: context_length + 1 tokens, inputs = the first context_length, targets = the same moved
    one place left, and every input position predicting its target in one forward pass (teacher forcing)."""
    T = _whole("context_length", context_length, 2, 16)
    if not isinstance(text, str):
        raise ValueError(f"text must be a string (one character = one token), got {type(text).__name__}")
    if len(text) < T + 1:
        raise ValueError(f"a window of context_length {T} needs {T + 1} tokens (characters), but the text "
                         f"{text!r} has only {len(text)}: give a longer text or a smaller context_length")
    tokens = [_shown(c) for c in text[:T + 1]]
    unit = 0.62  # inches per token box
    width = max(6.8, unit * (T + 1) + 2.6)
    centre, span = (T - 2.2) / 2, width / unit
    fig, ax = plt.subplots(figsize=(width, 4.0))
    ax.set_xlim(centre - span / 2, centre + span / 2)
    ax.set_ylim(-1.45, 4.4)
    ax.set_axis_off()
    rows = {"window": 3.0, "inputs": 1.6, "targets": 0.0}
    ax.text(-0.65, rows["window"], f"window\n{T + 1} tokens", ha="right", va="center", fontsize=9)
    ax.text(-0.65, rows["inputs"], f"inputs x\n= window[0:{T}]\nshape ({T},)", ha="right", va="center", fontsize=9)
    ax.text(-0.65, rows["targets"], f"targets y\n= window[1:{T + 1}]\nshape ({T},)", ha="right", va="center",
            fontsize=9)
    for t, token in enumerate(tokens):
        _box(ax, t, rows["window"], 0.8, 0.7, token, EXTRA_COLOUR if t == T else "white", fontsize=11)
        ax.text(t, rows["window"] + 0.55, str(t), ha="center", va="bottom", fontsize=7, color="gray")
    for t in range(T):
        _box(ax, t, rows["inputs"], 0.8, 0.7, tokens[t], INPUT_COLOUR, fontsize=11)
        _box(ax, t, rows["targets"], 0.8, 0.7, tokens[t + 1], TARGET_COLOUR, fontsize=11)
        _arrow(ax, (t, rows["inputs"] - 0.38), (t, rows["targets"] + 0.38), colour="tab:blue")
    ax.text(T + 0.05, rows["window"] - 0.55, "only a\ntarget", ha="center", va="top", fontsize=7, color="gray")
    ax.text(centre, -0.75, f"one forward pass: position t sees inputs 0…t (causal mask) and predicts target t;\n"
            f"all {T} positions are trained at once, loss = mean of {T} cross-entropies (teacher forcing)",
            ha="center", va="top", fontsize=8.5)
    ax.text(centre, 4.05, "each target is the token after its input: the window moved one place left",
            ha="center", va="bottom", fontsize=9.5)
    plt.close(fig)
    return fig


def plot_gradient_accumulation(n_micro: int = 4, micro_batch: int = 4, context_length: int = 64) -> Figure:
    """One optimizer step made of n micro-batches: each forward + backward adds into .grad (its loss divided by n),
    then clip, step and zero_grad, once, on a timeline."""
    n = _whole("n_micro", n_micro, 1, 8)
    b = _whole("micro_batch", micro_batch, 1, 4096)
    T = _whole("context_length", context_length, 1, 1_000_000)
    f_width, b_width, gap, pair_gap = 2.2, 2.0, 0.15, 0.55
    pair = f_width + gap + b_width
    tail = [("clip\ngrad norm", 1.6), ("optimizer\n.step()", 1.7), ("zero_grad()", 1.8)]
    tail_start = n * (pair + pair_gap) + 0.35
    total = tail_start + sum(w for _, w in tail) + gap * (len(tail) - 1)
    fig, ax = plt.subplots(figsize=(max(7.5, 0.5 * (total + 1.0)), 3.1))
    ax.set_xlim(-0.5, total + 0.5)
    ax.set_ylim(-1.3, 2.9)
    ax.set_axis_off()
    y = 1.0
    for k in range(n):
        left = k * (pair + pair_gap)
        sub = str(k + 1).translate(SUBSCRIPTS)
        _box(ax, left + f_width / 2, y, f_width, 0.9, f"forward\nmicro-batch {k + 1}",
             FORWARD_COLOUR, fontsize=7.5)
        _box(ax, left + f_width + gap + b_width / 2, y, b_width, 0.9, f"backward of\nloss{sub} / {n}",
             BACKWARD_COLOUR, fontsize=7.5)
        summed = "g₁" if k == 0 else ("g₁ + g₂" if k == 1 else f"g₁ + … + g{sub}")
        ax.text(left + pair / 2, y - 0.62, f".grad = ({summed}) / {n}", ha="center", va="top", fontsize=7.5)
    x = tail_start
    for i, (label, width) in enumerate(tail):
        _box(ax, x + width / 2, y, width, 0.9, label, STEP_COLOUR, fontsize=7.5)
        x += width + gap
    ax.text(tail_start + (x - gap - tail_start) / 2, y - 0.62, "once per step:\n.grad back to empty",
            ha="center", va="top", fontsize=7.5)
    mb_end = n * (pair + pair_gap) - pair_gap
    ax.annotate("", xy=(mb_end, 2.0), xytext=(0, 2.0),
                arrowprops=dict(arrowstyle="|-|", lw=0.9, color="gray", shrinkA=0, shrinkB=0, mutation_scale=4))
    ax.text(mb_end / 2, 2.15, f"{n} micro-batch{'es' if n > 1 else ''} of {b} windows × {T} tokens\n"
            f"= the gradient of one batch of {n * b} windows ({n * b * T:,} tokens)",
            ha="center", va="bottom", fontsize=8.5)
    ax.annotate("", xy=(total, -1.05), xytext=(0, -1.05),
                arrowprops=dict(arrowstyle="-|>", lw=1.0, color="black", shrinkA=0, shrinkB=0))
    ax.text(total, -0.92, "time", ha="right", va="bottom", fontsize=8)
    ax.text(0, -0.92, "one optimizer step", ha="left", va="bottom", fontsize=8, weight="bold")
    plt.close(fig)
    return fig


__all__ = ["plot_window_shift", "plot_gradient_accumulation"]
