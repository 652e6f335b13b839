"""Conceptual pictures for chapter 10: where the model, the batch and the communication sit on the devices.
Every function returns a closed matplotlib ``Figure`` (show it as a cell's last line). The pipeline's timing is
``plots.plot_schedule``; these are the layouts."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

DEVICE_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
LIGHT = {"tab:blue": "#d6e6f5", "tab:orange": "#fde3c8", "tab:green": "#d9f2d0", "tab:purple": "#e6dcf0"}
COMM_COLOUR = "#fff2b3"
SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _devices(n_devices: object) -> int:
    if isinstance(n_devices, bool) or not isinstance(n_devices, int) or not 2 <= n_devices <= 4:
        raise ValueError(f"n_devices must be 2, 3 or 4 (the picture draws each device), got {n_devices!r}")
    return n_devices


def _whole(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    return value


def _box(ax: Axes, x: float, y: float, width: float, height: float, text: str, colour: str,
         fontsize: float = 8.5, edgecolor: str = "black", linestyle: str = "-") -> None:
    """A rounded box centred on (x, y) with ``text`` in its middle."""
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.04",
                                facecolor=colour, edgecolor=edgecolor, linewidth=0.9, linestyle=linestyle))
    if text:
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], colour: str = "black",
           both: bool = False, bend: float = 0.0) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="<|-|>" if both else "-|>", mutation_scale=10, color=colour,
                                 lw=1.1, connectionstyle=f"arc3,rad={bend}", shrinkA=0, shrinkB=0))


def _sub(i: int) -> str:
    return str(i).translate(SUBSCRIPTS)


def plot_data_parallel(n_devices: int = 2, batch: int = 8) -> Figure:
    """Data parallelism: every device a full copy of the model, its own shard of the batch, gradients all-reduced."""
    n = _devices(n_devices)
    batch = _whole("batch", batch)
    if batch % n:
        raise ValueError(f"a batch of {batch} cannot be shared out evenly over {n} devices: use a batch that is a "
                         f"multiple of {n} (unequal shards would weigh some examples more than others)")
    if batch > 32:
        raise ValueError(f"batch must be at most 32 so that every example can be drawn, got {batch}")
    shard = batch // n
    col, gap = 3.3, 0.35
    width = n * col + (n - 1) * gap
    fig, ax = plt.subplots(figsize=(max(7.0, 0.78 * (width + 0.6)), 5.4))
    ax.set_xlim(-0.3 - max(0.0, (7.0 / 0.78 - width - 0.6) / 2), width + 0.3 + max(0.0, (7.0 / 0.78 - width - 0.6) / 2))
    ax.set_ylim(-0.45, 6.75)
    ax.set_axis_off()
    # the global batch, coloured by the device that gets each example
    cell = min(0.42, (width - 0.4) / batch)
    left = width / 2 - batch * cell / 2
    for i in range(batch):
        colour = DEVICE_COLOURS[i // shard]
        ax.add_patch(Rectangle((left + i * cell, 5.95), cell * 0.9, 0.36, facecolor=LIGHT[colour], edgecolor=colour))
    ax.text(width / 2, 6.42, f"one batch of {batch} examples, cut into {n} shards of {shard}", ha="center",
            va="bottom", fontsize=9.5)
    for d in range(n):
        x0 = d * (col + gap)
        cx = x0 + col / 2
        colour = DEVICE_COLOURS[d]
        ax.add_patch(FancyBboxPatch((x0, 1.75), col, 3.75, boxstyle="round,pad=0.04", facecolor="white",
                                    edgecolor=colour, linewidth=1.6))
        ax.text(cx, 5.25, f"device {d}", ha="center", va="center", fontsize=10, weight="bold", color=colour)
        _arrow(ax, (left + (d * shard + shard / 2) * cell, 5.9), (cx, 5.5), colour=colour)
        _box(ax, cx, 4.5, col - 0.5, 0.7, "full copy of the model\n(every layer, every weight)", "#eeeeee")
        _box(ax, cx, 3.55, col - 0.5, 0.7, f"shard {d}: examples {d * shard}–{(d + 1) * shard - 1}\n"
             f"({shard} of the {batch})", LIGHT[colour])
        _box(ax, cx, 2.5, col - 0.5, 0.85, f"forward + backward\non its shard only:\ngradient g{_sub(d)}", "white",
             fontsize=8)
        _arrow(ax, (cx, 1.95), (cx, 1.2), colour="black", both=True)
    terms = " + ".join(f"g{_sub(d)}" for d in range(n))
    _box(ax, width / 2, 0.78, width - 0.2, 0.75, f"all-reduce: every device receives g = ({terms}) / {n},\n"
         f"the gradient of the whole batch", COMM_COLOUR, fontsize=9)
    ax.text(width / 2, 0.18, "then every copy takes the same optimizer step with g, so the copies stay identical",
            ha="center", va="top", fontsize=8.5)
    plt.close(fig)
    return fig


def plot_tensor_parallel(n_devices: int = 2, d_model: int = 8, d_hidden: int = 32, tokens: int = 4) -> Figure:
    """Tensor parallelism of the MLP Z = GeLU(X A) B: A split by columns, B by rows, one all-reduce of the partial
    outputs."""
    n = _devices(n_devices)
    d_model, d_hidden, tokens = _whole("d_model", d_model), _whole("d_hidden", d_hidden), _whole("tokens", tokens)
    if d_hidden % n:
        raise ValueError(f"d_hidden = {d_hidden} cannot be split evenly over {n} devices: each device needs the "
                         f"same number of A's columns (B's rows); use a multiple of {n}")
    part = d_hidden // n
    row_h = 1.25
    height = n * row_h
    fig, ax = plt.subplots(figsize=(13, 1.7 + 1.05 * n))
    ax.set_xlim(-1.2, 15.4)
    ax.set_ylim(-0.75, height + 1.05)
    ax.set_axis_off()
    columns = {"X": 1.05, "A": 3.55, "gelu": 5.85, "B": 8.2, "partial": 10.45}
    headers = {"X": "input, the same\non every device", "A": "column-parallel:\nA split by columns",
               "gelu": "GeLU on its own\ncolumns: no talk", "B": "row-parallel:\nB split by rows",
               "partial": "partial output\n(full size)"}
    for key, text in headers.items():
        ax.text(columns[key], height + 0.25, text, ha="center", va="bottom", fontsize=8.5, color="dimgray")
    for d in range(n):
        y = height - (d + 0.5) * row_h
        colour = DEVICE_COLOURS[d]
        ax.add_patch(FancyBboxPatch((0.0, y - 0.48), 11.65, 0.96, boxstyle="round,pad=0.03", facecolor="none",
                                    edgecolor=colour, linewidth=1.3, linestyle="--"))
        cols = f"{d * part}:{(d + 1) * part}"
        _box(ax, columns["X"], y, 1.7, 0.66, f"X\n({tokens}, {d_model})", "white")
        _box(ax, columns["A"], y, 2.1, 0.66, f"A[:, {cols}]\n({d_model}, {part})", LIGHT[colour])
        _box(ax, columns["gelu"], y, 1.95, 0.66, f"GeLU(X A{_sub(d)})\n({tokens}, {part})", "white")
        _box(ax, columns["B"], y, 2.1, 0.66, f"B[{cols}, :]\n({part}, {d_model})", LIGHT[colour])
        _box(ax, columns["partial"], y, 1.75, 0.66, f"Z{_sub(d)}\n({tokens}, {d_model})", "white")
        for a, b, wa, wb in [("X", "A", 1.7, 2.1), ("A", "gelu", 2.1, 1.95), ("gelu", "B", 1.95, 2.1),
                             ("B", "partial", 2.1, 1.75)]:
            _arrow(ax, (columns[a] + wa / 2 + 0.06, y), (columns[b] - wb / 2 - 0.06, y))
        _arrow(ax, (columns["partial"] + 0.94, y), (12.15, y))
        ax.text(-0.12, y, f"device\n{d}", ha="right", va="center", fontsize=9, color=colour, weight="bold")
    _box(ax, 12.75, height / 2, 1.05, height - 0.35, "all-\nreduce\n(sum)", COMM_COLOUR, fontsize=9)
    _arrow(ax, (13.32, height / 2), (13.8, height / 2))
    terms = " + ".join(f"Z{_sub(d)}" for d in range(n))
    ax.text(13.85, height / 2, f"Z\n({tokens}, {d_model})\non every\ndevice", ha="left", va="center", fontsize=8.5)
    ax.text(7.6, -0.2, f"Z = GeLU(X A) B = {terms}: each device holds 1/{n} of A and of B "
            f"({d_model}×{part} + {part}×{d_model} numbers), one all-reduce per MLP", ha="center", va="top",
            fontsize=9)
    plt.close(fig)
    return fig


def plot_pipeline_layout(n_devices: int = 4, n_layers: int = 8, n_microbatches: int = 4) -> Figure:
    """Pipeline parallelism: consecutive layers form one stage per device; micro-batches flow forward through the
    stages and their gradients flow back."""
    n = _devices(n_devices)
    n_layers, m = _whole("n_layers", n_layers), _whole("n_microbatches", n_microbatches)
    if n_layers < n:
        raise ValueError(f"cannot cut {n_layers} layers into {n} stages: every device needs at least one layer")
    if n_layers > 16 or m > 8:
        raise ValueError(f"at most 16 layers and 8 micro-batches fit the picture, got {n_layers} and {m}")
    base, extra = divmod(n_layers, n)  # as pipeline.split_into_stages: earlier stages take any extra layer
    sizes = [base + (1 if s < extra else 0) for s in range(n)]
    starts = [sum(sizes[:s]) for s in range(n)]
    layer_h = 0.42
    stack_h = max(sizes) * layer_h
    col, gap, queue = 2.2, 1.05, 2.3
    width = queue + n * col + (n - 1) * gap + 1.6
    fig, ax = plt.subplots(figsize=(max(8.0, 0.72 * width), 2.9 + 0.42 * max(sizes)))
    ax.set_xlim(-0.2, width)
    top = stack_h + 1.6
    ax.set_ylim(-1.75, top + 0.55)
    ax.set_axis_off()
    mid = 0.35 + stack_h / 2
    # micro-batches waiting to enter stage 0
    cell = min(0.42, 1.8 / m)
    for k in range(m):
        x = queue - 0.35 - (k + 1) * cell
        ax.add_patch(Rectangle((x, mid - 0.2), cell * 0.85, 0.4, facecolor="#eeeeee", edgecolor="black", lw=0.8))
    ax.text(queue - 0.35 - m * cell / 2, mid + 0.35, f"{m} micro-\nbatch{'es' if m > 1 else ''}", ha="center", va="bottom", fontsize=8)
    _arrow(ax, (queue - 0.3, mid), (queue, mid))
    for s in range(n):
        x0 = queue + s * (col + gap)
        cx = x0 + col / 2
        colour = DEVICE_COLOURS[s]
        ax.add_patch(FancyBboxPatch((x0, 0.0), col, stack_h + 0.75, boxstyle="round,pad=0.04", facecolor="white",
                                    edgecolor=colour, linewidth=1.6))
        ax.text(cx, stack_h + 0.42, f"device {s}: stage {s}", ha="center", va="center", fontsize=8.5, weight="bold",
                color=colour)
        for i in range(sizes[s]):
            y = stack_h + 0.1 - (i + 1) * layer_h + 0.03
            ax.add_patch(Rectangle((x0 + 0.2, y), col - 0.4, layer_h - 0.08, facecolor=LIGHT[colour],
                                   edgecolor=colour, lw=0.8))
            ax.text(cx, y + (layer_h - 0.08) / 2, f"layer {starts[s] + i}", ha="center", va="center", fontsize=7.5)
        if s < n - 1:
            right, nxt = x0 + col + 0.08, x0 + col + gap - 0.08
            _arrow(ax, (right, mid + 0.22), (nxt, mid + 0.22), colour="tab:blue")
            _arrow(ax, (nxt, mid - 0.22), (right, mid - 0.22), colour="tab:red")
    last = queue + (n - 1) * (col + gap) + col
    _arrow(ax, (last + 0.1, mid), (last + 0.45, mid))
    ax.text(last + 0.5, mid, "loss", ha="left", va="center", fontsize=9)
    ax.text(queue + col + gap / 2, -0.22, "→ activations (forward)", ha="right", va="top", fontsize=8,
            color="tab:blue")
    ax.text(queue + col + gap / 2 + 0.2, -0.22, "← their gradients (backward)", ha="left", va="top", fontsize=8,
            color="tab:red")
    kinds = " or ".join(map(str, sorted(set(sizes), reverse=True)))
    ax.text(width / 2, top - 0.3, f"{n_layers} layers cut into {n} stages of {kinds} consecutive layers:\n"
            f"each device keeps only its stage's weights, gradients and optimizer state",
            ha="center", va="bottom", fontsize=8.5)
    flow = (f"a device passes micro-batch k on and starts micro-batch k + 1, so with {m} micro-batches\n"
            f"all {n} stages work at the same time" if m > 1 else
            "with one micro-batch (no splitting) a stage waits while the others work:\nonly one device is busy at a time")
    ax.text(width / 2, -0.95, flow + " (when each one works: plots.plot_schedule)",
            ha="center", va="top", fontsize=8)
    plt.close(fig)
    return fig


__all__ = ["plot_data_parallel", "plot_tensor_parallel", "plot_pipeline_layout"]
