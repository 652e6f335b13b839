"""Chapter 10: pictures of pipeline schedules, memory per device, communication volume, and a run in one process
against the same run in several.

Every function returns a matplotlib ``Figure`` that is already closed in pyplot,
so a notebook shows it exactly once when it is the cell's last expression.
"""
from __future__ import annotations

from collections.abc import Sequence

from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from llmcourse.pretraining.estimates import activation_bytes
from llmcourse.pretraining.plots import smooth
from llmcourse.parallel.communication import communication_table
from llmcourse.parallel.course_gpt import compare_runs
from llmcourse.parallel.memory import (
    GB,
    MODEL_SHAPES,
    model_memory,
    zero_memory_breakdown,
)
from llmcourse.parallel.schedule import (
    Op,
    bubble_share,
    gpipe_bubble,
    makespan,
    simulate,
)

_PARTS = ("parameters", "gradients", "optimizer_states", "activations")
_PART_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")


def plot_schedule(ops: Sequence[Op], title: str | None = None) -> Figure:
    """Gantt chart of a simulated step: one row per device, one colour per micro-batch.

    Forward passes are light with a label ``F<i>``, backward passes dark with ``B<i>``; idle time is grey.
    """
    if not ops:
        raise ValueError("plot_schedule needs at least one pass (an Op list from schedule.simulate).")
    n_stages = max(op.stage for op in ops) + 1
    n_micro = max(op.microbatch for op in ops) + 1
    total = makespan(ops)
    colors = plt.get_cmap("tab10" if n_micro <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(min(14.0, 2.0 + 0.45 * total), 0.6 + 0.55 * n_stages))
    for s in range(n_stages):
        ax.broken_barh([(0, total)], (s - 0.4, 0.8), facecolors="#e6e6e6")  # idle unless covered
    chunked = any(getattr(op, "chunk", 0) for op in ops)  # interleaved: later chunks are hatched
    for op in ops:
        color = colors(op.microbatch % colors.N)
        ax.broken_barh([(op.start, op.duration)], (op.stage - 0.4, 0.8), facecolors=color,
                       alpha=0.45 if op.kind == "F" else 1.0, edgecolor="white", linewidth=0.8,
                       hatch="///" if getattr(op, "chunk", 0) % 2 else None)
        if op.duration >= (0.3 if chunked else 0.6):
            ax.text(op.start + op.duration / 2, op.stage, f"{op.kind}{op.microbatch}", ha="center", va="center",
                    fontsize=8 if n_micro < 10 else 6, color="black" if op.kind == "F" else "white")
    ax.set_ylim(n_stages - 0.5, -0.5)
    ax.set_yticks(range(n_stages), [f"device {s}" for s in range(n_stages)])
    ax.set_xlim(0, total)
    ax.set_xlabel("time")
    share = bubble_share(ops)
    ax.set_title(f"{title + ': ' if title else ''}{n_stages} stages, {n_micro} micro-batches — "
                 f"bubble {share:.1%} of device time")
    ax.legend(handles=[Patch(facecolor="#999999", alpha=0.45, label="forward"),
                       Patch(facecolor="#999999", label="backward"),
                       Patch(facecolor="#e6e6e6", label="idle (bubble)")]
              + ([Patch(facecolor="white", edgecolor="#555555", hatch="///", label="odd-numbered chunk")]
                 if chunked else []),
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_bubble(n_stages: Sequence[int] = (2, 4, 8), max_microbatches: int = 32, schedule: str = "gpipe",
                forward_time: float = 1, backward_time: float = 2) -> Figure:
    """Measured bubble share (dots, from :func:`simulate`) against GPipe's formula (lines) as m grows."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ms = list(range(1, max_microbatches + 1))
    for p in n_stages:
        (line,) = ax.plot(ms, [gpipe_bubble(p, m) for m in ms], label=f"p = {p}: (p-1)/(m+p-1)")
        measured = [bubble_share(simulate(schedule, p, m, forward_time, backward_time)) for m in ms]
        ax.scatter(ms, measured, s=12, color=line.get_color(), zorder=3)
    ax.set_xlabel("micro-batches m")
    ax.set_ylabel("bubble share")
    ax.set_ylim(0, 1)
    ax.set_title(f"{schedule}: measured (dots) vs formula (lines)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def memory_configurations(model: str, world_size: int = 64, batch: int = 1, seq: int = 2048,
                          recompute: bool = True) -> dict[str, dict[str, float]]:
    """Bytes per device for ``model`` in fp32, mixed precision and ZeRO stages 1-3 (AdamW in every case)."""
    shape = MODEL_SHAPES[model]
    activations = activation_bytes(batch, seq, shape["d_model"], shape["n_layers"], shape["n_heads"], recompute=recompute)
    configs = {"fp32": model_memory(model, "fp32"), "mixed": model_memory(model, "mixed")}
    for stage in (1, 2, 3):
        configs[f"ZeRO-{stage}"] = zero_memory_breakdown(model, world_size, stage)
    return {name: {**parts, "activations": activations} for name, parts in configs.items()}


def plot_memory(models: Sequence[str] = ("7B", "70B"), world_size: int = 64, batch: int = 1, seq: int = 2048,
                recompute: bool = True, gpu_memory: float = 80 * GB) -> Figure:
    """Stacked bars of memory per device (parameters, gradients, optimizer states, activations) per model.

    fp32 and mixed precision keep everything on every device; ZeRO-1/2/3 split optimizer states,
    then gradients, then parameters over ``world_size`` devices. The dashed line is one GPU.
    """
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.9), squeeze=False)
    for ax, model in zip(axes[0], models):
        configs = memory_configurations(model, world_size, batch, seq, recompute)
        names = list(configs)
        bottom = [0.0] * len(names)
        for part, color in zip(_PARTS, _PART_COLORS):
            heights = [configs[name][part] / GB for name in names]
            ax.bar(names, heights, bottom=bottom, color=color, label=part.replace("_", " "))
            bottom = [b + h for b, h in zip(bottom, heights)]
        for x, total in enumerate(bottom):
            ax.text(x, total, f"{total:.0f}" if total >= 10 else f"{total:.1f}", ha="center", va="bottom",
                    fontsize=8)
        ax.axhline(gpu_memory / GB, color="black", linestyle="--", linewidth=1)
        ax.set_title(f"{model}, N = {world_size} devices")
        ax.set_ylabel("GB per device")
        ax.set_ylim(0, max(bottom) * 1.12)
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Memory per device (AdamW; activations for batch {batch} x {seq} tokens"
                 f"{', recomputed' if recompute else ''}; dashed: {gpu_memory / GB:.0f} GB GPU)", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_comm_volume(n_params: float = 7e9, world_sizes: Sequence[int] = (2, 4, 8, 16, 32, 64, 128),
                     bytes_per_value: float = 2) -> Figure:
    """Bytes sent + received per step: parameter server (per worker, at the server) vs ring all-reduce."""
    rows = communication_table(n_params, world_sizes, bytes_per_value)
    ns = [row["world_size"] for row in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(ns, [row["ps_server"] / GB for row in rows], "o-", label="parameter server: the server")
    ax.plot(ns, [row["ps_worker"] / GB for row in rows], "s--", label="parameter server: each worker")
    ax.plot(ns, [row["ring_worker"] / GB for row in rows], "^-", label="ring all-reduce: each worker")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("workers N")
    ax.set_ylabel("GB sent + received per step")
    ax.set_title(f"Gradient exchange for {n_params / 1e9:g}B values of {bytes_per_value:g} bytes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _series(history: Any, name: str) -> list:
    return list(history[name] if isinstance(history, dict) else getattr(history, name))


def plot_runs_compared(reference: Any, other: Any, labels: Sequence[str] = ("one process", "two processes"),
                       smoothing: float = 0.9) -> Figure:
    """Two runs of the same training, e.g. chapter 08's GPT in one process and in two.

    Left: each run's training loss (every step, faint, and smoothed) and validation loss against the step.
    Right: the gap |other - reference| of the training loss at each step, on a log scale, with the size of
    float32 rounding of the loss (about one unit in the last place: loss x 2**-23) for scale. ``reference`` and
    ``other``: ``History`` objects or their ``to_dict()`` (e.g. ``checkpoint["history"]``).
    """
    if len(labels) != 2:
        raise ValueError(f"labels must name the two runs, got {labels!r}")
    comparison = compare_runs(reference, other, agree_steps=1)
    n = comparison.steps
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.9))
    for history, label, colour, dash in ((reference, labels[0], "tab:blue", "-"),
                                         (other, labels[1], "tab:orange", "--")):
        steps, train = _series(history, "step")[:n], _series(history, "train_loss")[:n]
        left.plot(steps, train, color=colour, alpha=0.2, lw=0.8)
        left.plot(steps, smooth(train, smoothing) if smoothing > 0 else train, color=colour, lw=1.8, ls=dash,
                  label=f"{label}: train (smoothed)")
        val_steps = [s for s in _series(history, "val_step") if s <= steps[-1]]
        if val_steps:
            left.plot(val_steps, _series(history, "val_loss")[:len(val_steps)], "o", color=colour, ms=6,
                      mfc="none" if dash == "-" else colour, mew=1.5, label=f"{label}: validation")
    left.set_xlabel("step")
    left.set_ylabel("loss (nats / token)")
    left.set_title("Training and validation loss")
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="upper right")

    steps = _series(reference, "step")[:n]
    gaps = [max(g, 1e-9) for g in comparison.gaps]  # a gap of exactly 0 still shows, at the bottom
    right.semilogy(steps, gaps, color="tab:purple", lw=0.9, label=f"|{labels[1]} - {labels[0]}|")
    rounding = [abs(float(x)) * 2.0**-23 for x in _series(reference, "train_loss")[:n]]
    right.semilogy(steps, rounding, color="black", ls=":", lw=1.2, label="float32 rounding of the loss")
    right.set_ylim(1e-9, 1.0)
    right.set_xlabel("step")
    right.set_ylabel("|difference| of the training loss")
    right.set_title("Gap between the runs, step by step")
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plt.close(fig)
    return fig
