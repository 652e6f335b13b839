"""Conceptual pictures of backpropagation for chapter 02: the two boxes of the sensitivity argument, and one layer's
backward pass as matrix products with their shapes. Every function returns a closed matplotlib ``Figure`` (show it
as a cell's last line).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

FORWARD = "#2b6cb0"     # values flowing forward
BACKWARD = "#c0392b"    # sensitivities flowing backward
GRADIENT = "#7b3fa0"    # weight and bias gradients
MAX_UNITS = 6           # units per box that still fit the picture
MAX_DIM = 10_000        # largest matrix size accepted (the blocks are drawn capped, their labels are exact)


def _check_count(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def blank_canvas(width: float, height: float) -> tuple[Figure, plt.Axes]:
    """A figure whose axes fill it, with data coordinates in inches (so sizes can be planned)."""
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_position([0, 0, 1, 1])
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    ax.set_xticks([])   # no tick labels hidden behind the picture
    ax.set_yticks([])
    return fig, ax


def _arrow(ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], color: str, rad: float = 0.0,
           lw: float = 1.3) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, color=color, lw=lw,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=0, shrinkB=0))


def draw_sensitivity_boxes(n_preceding: int = 2, n_current: int = 3) -> Figure:
    """Backpropagation with sensitivities: values p -> A(p) -> c -> e go forward, sensitivities dc and dp come back."""
    n_pre = _check_count("n_preceding", n_preceding, 1, MAX_UNITS)
    n_cur = _check_count("n_current", n_current, 1, MAX_UNITS)
    n = max(n_pre, n_cur)
    gap = 0.95
    top = 2.15 + n * gap         # y of the boxes' top edge above the formulas
    height = top + 0.75
    fig, ax = blank_canvas(11.0, height)

    def ys(count: int) -> list[float]:
        middle = top - 0.35 - n * gap / 2
        return [middle + (count - 1) * gap / 2 - k * gap for k in range(count)]

    box_bottom = top - 0.35 - n * gap - 0.2
    # the two boxes
    rounded = "round,pad=0.02,rounding_size=0.15"
    ax.add_patch(FancyBboxPatch((0.25, box_bottom), 3.85, top - box_bottom, boxstyle=rounded,
                                facecolor="#f4f7fb", edgecolor="#888888"))
    ax.add_patch(FancyBboxPatch((6.25, box_bottom), 4.5, top - box_bottom, boxstyle=rounded,
                                facecolor="#fbf6f0", edgecolor="#888888"))
    ax.text(2.17, top + 0.2, "preceding box: one layer", ha="center", va="center", fontsize=11, weight="bold")
    ax.text(8.5, top + 0.2, "current box: every later layer and the loss", ha="center", va="center", fontsize=11,
            weight="bold")

    # preceding box: p_i -> A(p_i)
    p_x, a_x, r = 0.95, 3.2, 0.24
    pre_y = ys(n_pre)
    for i, y in enumerate(pre_y, start=1):
        ax.add_patch(Circle((p_x, y), r, facecolor="white", edgecolor=FORWARD, lw=1.4))
        ax.text(p_x, y, f"$p_{i}$", ha="center", va="center", fontsize=11)
        ax.text(p_x, y - r - 0.05, rf"$\delta p_{i}$", ha="center", va="top", fontsize=10, color=BACKWARD)
        ax.add_patch(FancyBboxPatch((a_x - 0.42, y - 0.2), 0.84, 0.4, boxstyle="round,pad=0.02",
                                    facecolor="white", edgecolor=FORWARD, lw=1.4))
        ax.text(a_x, y, f"$A(p_{i})$", ha="center", va="center", fontsize=10)
        _arrow(ax, (p_x + r, y + 0.07), (a_x - 0.44, y + 0.07), FORWARD)
        _arrow(ax, (a_x - 0.44, y - 0.07), (p_x + r, y - 0.07), BACKWARD)
        ax.text((p_x + a_x) / 2 - 0.1, y + 0.12, "A", ha="center", va="bottom", fontsize=9, color=FORWARD)
        ax.text((p_x + a_x) / 2 - 0.1, y - 0.12, rf"$\times A'(p_{i})$", ha="center", va="top", fontsize=9,
                color=BACKWARD)

    # current box: c_j -> later layers -> e
    c_x, later_x, e_x = 6.85, 8.55, 10.15
    cur_y = ys(n_cur)
    later_h = max(n_cur * gap - 0.3, 0.8)
    later_mid = sum(cur_y) / n_cur
    ax.add_patch(FancyBboxPatch((later_x - 0.55, later_mid - later_h / 2), 1.1, later_h, boxstyle="round,pad=0.02",
                                facecolor="white", edgecolor="#666666", lw=1.2))
    ax.text(later_x, later_mid, "later\nlayers\n+ loss", ha="center", va="center", fontsize=9, linespacing=1.3)
    ax.add_patch(Circle((e_x, later_mid), r, facecolor="white", edgecolor=FORWARD, lw=1.4))
    ax.text(e_x, later_mid, "$e$", ha="center", va="center", fontsize=12)
    ax.text(e_x, later_mid - r - 0.05, "error", ha="center", va="top", fontsize=9)
    _arrow(ax, (later_x + 0.57, later_mid + 0.07), (e_x - r, later_mid + 0.07), FORWARD)
    _arrow(ax, (e_x - r, later_mid - 0.07), (later_x + 0.57, later_mid - 0.07), BACKWARD)
    for j, y in enumerate(cur_y, start=1):
        ax.add_patch(Circle((c_x, y), r, facecolor="white", edgecolor=FORWARD, lw=1.4))
        ax.text(c_x, y, f"$c_{j}$", ha="center", va="center", fontsize=11)
        _arrow(ax, (c_x + r, y + 0.07), (later_x - 0.57, y + 0.07), FORWARD)
        _arrow(ax, (later_x - 0.57, y - 0.07), (c_x + r, y - 0.07), BACKWARD)
        ax.text(c_x + r + 0.08, y - 0.12, rf"$\delta c_{j} = \partial e/\partial c_{j}$", ha="left", va="top",
                fontsize=9, color=BACKWARD)

    # every A(p_i) feeds every c_j through its weight w_ij; the sensitivities come back along the same weights
    for y_from in pre_y:
        for y_to in cur_y:
            _arrow(ax, (a_x + 0.44, y_from + 0.04), (c_x - r, y_to + 0.04), FORWARD, lw=1.0)
            _arrow(ax, (c_x - r, y_to - 0.04), (a_x + 0.44, y_from - 0.04), BACKWARD, rad=0.08, lw=0.8)
    ax.text((a_x + c_x) / 2, top + 0.2, r"each line: a weight $w_{ij}$, both ways", ha="center", va="center",
            fontsize=9, color="#444444")

    # the rules, in the lesson's notation
    ax.text(0.3, 1.25, r"forward (values):   $c_j = \sum_i\, A(p_i)\, w_{ij} + b_j$", ha="left", va="center",
            fontsize=11, color=FORWARD)
    ax.text(0.3, 0.75, r"backward (sensitivities):   $\delta c_j = \partial e/\partial c_j$,   "
            r"$\delta p_i = A'(p_i) \sum_j\, w_{ij}\, \delta c_j$", ha="left", va="center", fontsize=11,
            color=BACKWARD)
    ax.text(0.3, 0.27, r"and each weight's gradient:   $\partial e/\partial w_{ij} = A(p_i)\, \delta c_j$",
            ha="left", va="center", fontsize=11, color=GRADIENT)
    plt.close(fig)
    return fig


# ---------------------------------------------------------------------------------------------- one layer, as matrices

CELL = 0.2          # inches per matrix entry
MAX_CELLS = 7       # entries drawn per side at most (larger matrices are drawn at this size, labelled exactly)


def _block_size(rows: int, cols: int) -> tuple[float, float]:
    return min(cols, MAX_CELLS) * CELL, min(rows, MAX_CELLS) * CELL


def _draw_block(ax: plt.Axes, x: float, y_mid: float, rows: int, cols: int, color: str, fill: str) -> None:
    """A matrix as a grid of cells (capped at MAX_CELLS per side), left edge at x, centred on y_mid."""
    w, h = _block_size(rows, cols)
    y0 = y_mid - h / 2
    ax.add_patch(Rectangle((x, y0), w, h, facecolor=fill, edgecolor=color, lw=1.4))
    for k in range(1, min(cols, MAX_CELLS)):
        ax.plot([x + k * CELL] * 2, [y0, y0 + h], color=color, lw=0.4, alpha=0.6)
    for k in range(1, min(rows, MAX_CELLS)):
        ax.plot([x, x + w], [y0 + k * CELL] * 2, color=color, lw=0.4, alpha=0.6)
    if rows > MAX_CELLS or cols > MAX_CELLS:
        ax.text(x + w / 2, y_mid, "...", ha="center", va="center", fontsize=9, color=color,
                bbox=dict(boxstyle="round,pad=0.1", facecolor=fill, edgecolor="none"))


def _shape(*dims: int) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def draw_layer_backprop(batch: int = 4, n_in: int = 3, n_out: int = 2) -> Figure:
    """One layer Z = X W + b and its backward pass as matrix products, every block drawn with its shape."""
    batch = _check_count("batch", batch, 1, MAX_DIM)
    n_in = _check_count("n_in", n_in, 1, MAX_DIM)
    n_out = _check_count("n_out", n_out, 1, MAX_DIM)
    values, sens, grads = (FORWARD, "#e8f0fa"), (BACKWARD, "#fbeaea"), (GRADIENT, "#f3ebf8")
    # each row: (title, items); an item is a matrix (name, rows, cols, style) or an operator string
    rows = [
        ("forward", [("$X$", batch, n_in, values), "@", ("$W$", n_in, n_out, values), "+",
                     ("$b$", 1, n_out, values), "=", ("$Z$", batch, n_out, values)]),
        ("weight gradient", [(r"$\partial L/\partial W$", n_in, n_out, grads), "=", ("$X^T$", n_in, batch, values),
                             "@", (r"$\Delta$", batch, n_out, sens)]),
        ("bias gradient", [(r"$\partial L/\partial b$", 1, n_out, grads), "=", "sum over the batch of",
                           (r"$\Delta$", batch, n_out, sens)]),
        ("passed back", [(r"$\Delta_\mathrm{prev}$", batch, n_in, sens), "=", "(", (r"$\Delta$", batch, n_out, sens),
                         "@", ("$W^T$", n_out, n_in, values), ")", r"$\odot$",
                         (r"$A'(Z_\mathrm{prev})$", batch, n_in, values)]),
    ]
    row_heights = [max(_block_size(r, c)[1] for item in items if isinstance(item, tuple) for _, r, c, _ in [item])
                   for _, items in rows]
    label_room = 0.62            # name above and shape below each block
    footer = 0.95
    height = sum(h + label_room + 0.15 for h in row_heights) + footer + 0.2
    fig, ax = blank_canvas(10.0, height)
    renderer = fig.canvas.get_renderer()

    def width_of(text) -> float:
        return text.get_window_extent(renderer).width / fig.dpi

    y_top = height - 0.15
    widest = 0.0
    for (title, items), h in zip(rows, row_heights):
        y_mid = y_top - 0.32 - h / 2
        ax.text(0.15, y_mid, title, ha="left", va="center", fontsize=10, weight="bold")
        x = 1.75
        for item in items:
            if isinstance(item, str):
                t = ax.text(x, y_mid, item, ha="left", va="center", fontsize=11 if len(item) < 3 else 9)
                x += width_of(t) + 0.15
                continue
            name, r, c, (color, fill) = item
            w, own_h = _block_size(r, c)
            name_t = ax.text(0, y_mid + own_h / 2 + 0.06, name, ha="center", va="bottom", fontsize=10, color=color)
            vector = name in ("$b$", r"$\partial L/\partial b$")     # drawn as one row, shaped (n_out,)
            shape_t = ax.text(0, y_mid - own_h / 2 - 0.06, _shape(c) if vector else _shape(r, c),
                              ha="center", va="top", fontsize=8, color="#333333")
            span = max(w, width_of(name_t), width_of(shape_t))
            centre = x + span / 2
            name_t.set_x(centre)
            shape_t.set_x(centre)
            _draw_block(ax, centre - w / 2, y_mid, r, c, color, fill)
            x += span + 0.15
        widest = max(widest, x)
        y_top -= h + label_room + 0.15
    notes = [ax.text(0.15, 0.72, r"$X = A(Z_\mathrm{prev})$: the layer's input, the previous layer's activations;   "
                     r"$\Delta = \partial L/\partial Z$: the sensitivities coming back", ha="left", va="center",
                     fontsize=9),
             ax.text(0.15, 0.32, r"each gradient has the shape of what it is the gradient of;   "
                     r"$\odot$: elementwise;   $b$ is added to every row", ha="left", va="center", fontsize=9)]
    # the figure is as wide as its widest row or note (wide blocks grow it rather than being cut off)
    width = max(widest, *(0.15 + width_of(t) for t in notes)) + 0.2
    fig.set_size_inches(width, height)
    ax.set_xlim(0, width)
    plt.close(fig)
    return fig


__all__ = ["blank_canvas", "draw_sensitivity_boxes", "draw_layer_backprop"]
