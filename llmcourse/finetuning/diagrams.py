"""Conceptual pictures for chapter 09. Every function returns a closed matplotlib ``Figure`` (show it as a cell's
last line)."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

DATA_COLOUR, MODEL_COLOUR, STEP_COLOUR = "#e8e8e8", "#cfe3f7", "#d9f2d0"
FROZEN_COLOUR, TRAINABLE_COLOUR = "#d9d9d9", "#fde3c8"


def _whole(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or a ValueError that names the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _box(ax: Axes, x: float, y: float, width: float, height: float, text: str, colour: str,
         fontsize: float = 8.5) -> None:
    """A rounded box centred on (x, y) with ``text`` in its middle."""
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.06",
                                facecolor=colour, edgecolor="black", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], colour: str = "black",
           bend: float = 0.0) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, color=colour, lw=1.2,
                                 connectionstyle=f"arc3,rad={bend}", shrinkA=0, shrinkB=0))


def plot_training_pipeline(ranked_answers: int = 4) -> Figure:
    """From plain text to a chat model: pretraining, SFT, then preferences, either RLHF (reward model + PPO) or DPO."""
    K = _whole("ranked_answers", ranked_answers, 2, 9)
    fig, ax = plt.subplots(figsize=(12, 5.6))
    ax.set_xlim(0, 13)
    ax.set_ylim(-0.15, 6.1)
    ax.set_axis_off()
    ax.add_patch(FancyBboxPatch((5.75, 3.95), 5.45, 1.85, boxstyle="round,pad=0.05", facecolor="#fff4e0",
                                edgecolor="tab:orange", linestyle="--"))
    ax.text(5.85, 5.62, "RLHF with PPO", ha="left", va="center", fontsize=9, color="tab:orange", weight="bold")
    # data, top row and middle
    _box(ax, 1.3, 5.2, 2.2, 0.8, "plain text\n(terabytes)", DATA_COLOUR)
    _box(ax, 4.0, 5.2, 2.3, 0.8, "question -> answer\ndemonstrations", DATA_COLOUR)
    _box(ax, 7.1, 2.85, 3.1, 0.8, f"K = {K} answers per prompt, ranked:\n"
         f"K(K-1)/2 = {K * (K - 1) // 2} pairs (better, worse)", DATA_COLOUR)
    # models and steps
    _box(ax, 1.3, 2.85, 2.2, 0.8, "base model", MODEL_COLOUR)
    _box(ax, 4.0, 2.85, 2.2, 0.8, "SFT model", MODEL_COLOUR)
    _box(ax, 7.1, 4.75, 2.2, 0.85, "reward model\n(SFT + score head)", STEP_COLOUR)
    _box(ax, 9.75, 4.75, 2.35, 1.2, "PPO: the policy writes,\nthe reward model scores,\na KL penalty keeps it\n"
         "near the SFT model", STEP_COLOUR, fontsize=8)
    _box(ax, 7.1, 0.95, 3.1, 0.85, "DPO: one loss on the pairs,\nno reward model, no sampling", STEP_COLOUR)
    _box(ax, 11.9, 2.85, 1.8, 0.8, "chat model", MODEL_COLOUR)
    # arrows, each label in free space beside its arrow
    _arrow(ax, (1.3, 4.75), (1.3, 3.3))
    ax.text(1.42, 4.02, "pretraining", ha="left", va="center", fontsize=8)
    _arrow(ax, (4.0, 4.75), (4.0, 3.3))
    ax.text(4.12, 4.02, "SFT", ha="left", va="center", fontsize=8)
    _arrow(ax, (2.45, 2.85), (2.85, 2.85))
    _arrow(ax, (7.1, 3.3), (7.1, 4.27))
    ax.text(7.22, 3.72, "pairwise loss", ha="left", va="center", fontsize=8)
    _arrow(ax, (7.1, 2.4), (7.1, 1.43), colour="tab:green")
    ax.text(7.22, 1.9, "the same pairs", ha="left", va="center", fontsize=8, color="tab:green")
    _arrow(ax, (8.25, 4.75), (8.52, 4.75))
    _arrow(ax, (5.15, 3.05), (5.93, 4.5))
    ax.text(5.62, 3.62, "copies", ha="left", va="center", fontsize=8)
    _arrow(ax, (4.6, 2.4), (5.5, 1.05), colour="tab:green")
    ax.text(4.85, 1.4, "policy and\nreference", ha="right", va="center", fontsize=7.5, color="tab:green")
    _arrow(ax, (10.6, 4.1), (11.55, 3.3))
    _arrow(ax, (8.7, 0.95), (11.55, 2.4), colour="tab:green")
    ax.text(0.25, 0.1, "grey: data    blue: models    green: training with preferences    "
            "orange frame: RLHF    green arrows: DPO", ha="left", va="center", fontsize=7.5, color="dimgray")
    plt.close(fig)
    return fig


def plot_lora(in_features: int = 64, out_features: int = 64, r: int = 8, alpha: float = 16.0) -> Figure:
    """A LoRA layer: the frozen W (out, in) beside the trainable B (out, r) and A (r, in), x through both paths,
    the two outputs summed; with the parameter counts out·in and r·(in + out)."""
    n_in = _whole("in_features", in_features, 1, 1_000_000)
    n_out = _whole("out_features", out_features, 1, 1_000_000)
    r = _whole("r", r, 1, 1_000_000)
    if r > min(n_in, n_out):
        raise ValueError(f"the rank r = {r} is above min(in_features, out_features) = {min(n_in, n_out)}: "
                         f"B A could not have that rank, and it would have more numbers than W")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a number > 0 (the update is scaled by alpha / r), got {alpha!r}")
    fig, ax = plt.subplots(figsize=(10, 5.4))
    ax.set_xlim(0, 12.5)
    ax.set_ylim(-1.5, 6.3)
    ax.set_axis_off()
    big = max(n_in, n_out)
    size = lambda n: max(0.14, 1.6 * n / big)  # drawn side length, so that the shapes compare

    def matrix(x_left: float, y_mid: float, rows: int, cols: int, colour: str) -> tuple[float, float, float, float]:
        w, h = size(cols), size(rows)
        ax.add_patch(Rectangle((x_left, y_mid - h / 2), w, h, facecolor=colour, edgecolor="black", lw=0.9))
        return x_left, x_left + w, y_mid - h / 2, y_mid + h / 2

    top, low = 4.0, 1.1
    _box(ax, 0.9, 2.55, 1.2, 0.9, f"x\n(…, {n_in})", "white", fontsize=9)
    # frozen path
    w_left, w_right, w_bottom, w_top = matrix(3.9, top, n_out, n_in, FROZEN_COLOUR)
    ax.text((w_left + w_right) / 2, w_top + 0.12, f"W  (out, in) = ({n_out}, {n_in})\nfrozen: {n_out * n_in:,} numbers",
            ha="center", va="bottom", fontsize=8.5)
    _arrow(ax, (1.5, 2.8), (w_left - 0.05, top))
    # trainable path: A squeezes to r numbers, B expands again
    a_left, a_right, a_bottom, a_top = matrix(2.9, low, r, n_in, TRAINABLE_COLOUR)
    b_left, b_right, b_bottom, b_top = matrix(max(a_right + 1.6, 5.5), low, n_out, r, TRAINABLE_COLOUR)
    ax.text((a_left + a_right) / 2, min(a_bottom, b_bottom) - 0.12, f"A  (r, in) = ({r}, {n_in})\n"
            f"trainable, random start", ha="center", va="top", fontsize=8.5)
    ax.text((b_left + b_right) / 2 + 0.6, min(a_bottom, b_bottom) - 0.12, f"B  (out, r) = ({n_out}, {r})\n"
            f"trainable, starts at 0", ha="center", va="top", fontsize=8.5)
    _arrow(ax, (1.5, 2.3), (a_left - 0.05, low))
    _arrow(ax, (a_right + 0.05, low), (b_left - 0.05, low))
    ax.text((a_right + b_left) / 2, low + 0.12, f"x Aᵀ\n(…, {r})", ha="center", va="bottom", fontsize=8)
    # the sum
    plus_x, plus_y = 8.6, 2.55
    ax.add_patch(Circle((plus_x, plus_y), 0.3, facecolor="white", edgecolor="black", lw=1.0))
    ax.text(plus_x, plus_y, "+", ha="center", va="center", fontsize=14)
    _arrow(ax, (w_right + 0.05, top), (plus_x - 0.2, plus_y + 0.25))
    ax.text((w_right + plus_x) / 2 + 0.35, top - 0.05, f"x Wᵀ  (…, {n_out})", ha="left", va="bottom", fontsize=8)
    _arrow(ax, (b_right + 0.05, low), (plus_x - 0.2, plus_y - 0.25))
    ax.text((b_right + plus_x) / 2 + 0.35, low + 0.05, f"× α/r = {alpha / r:g}", ha="left", va="top", fontsize=8)
    _arrow(ax, (plus_x + 0.32, plus_y), (10.0, plus_y))
    ax.text(10.05, plus_y, f"h  (…, {n_out})", ha="left", va="center", fontsize=9)
    ax.text(6.25, 5.95, f"LoRA layer: h = x Wᵀ + (α/r) · x Aᵀ Bᵀ,  in = {n_in}, out = {n_out}, r = {r}, α = {alpha:g}",
            ha="center", va="bottom", fontsize=10)
    lora_numbers = r * (n_in + n_out)
    ax.text(6.25, -1.35, f"trainable: r·(in + out) = {r}·({n_in} + {n_out}) = {lora_numbers:,} numbers   vs   "
            f"full fine-tuning: out·in = {n_out}·{n_in} = {n_out * n_in:,}  ({lora_numbers / (n_out * n_in):.1%})",
            ha="center", va="bottom", fontsize=9)
    plt.close(fig)
    return fig


__all__ = ["plot_training_pipeline", "plot_lora"]
