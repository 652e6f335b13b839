"""Draw a computation graph of :class:`~llmcourse.basics.autograd.Value` nodes with matplotlib alone (chapter 02).

Each Value is a box showing its label, ``data`` and ``grad``; each operation is
a small circle between the Values it reads and the Value it makes. Columns
run left to right by topological depth: inputs on the left, the root (usually
the loss) on the right, so the backward pass reads right to left.
"""
from __future__ import annotations

from collections import defaultdict

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from llmcourse.basics.autograd import Value, topological_order

OP_SYMBOLS = {"+": "+", "-": "−", "*": "×", "/": "÷", "neg": "−x"}
VALUE_STYLE = dict(boxstyle="round,pad=0.35", facecolor="#eef4fb", edgecolor="#3c6e9f")
LEAF_STYLE = dict(boxstyle="round,pad=0.35", facecolor="#fdf3e1", edgecolor="#b07a1e")
OP_STYLE = dict(boxstyle="circle,pad=0.3", facecolor="white", edgecolor="#555555")


def _columns(order: list[Value]) -> dict[Value, int]:
    """Column of each Value: ``2 × depth``, where depth is the longest path from any input.

    Inputs and constants sit one step left of the first operation that reads
    them (rather than all at the far left), which keeps arrows short. The op
    circle of a node sits in the column just before it.
    """
    depth: dict[Value, int] = {}
    for node in order:
        depth[node] = 1 + max((depth[p] for p in node.parents), default=-1)
    readers: dict[Value, list[Value]] = defaultdict(list)
    for node in order:
        for parent in node.parents:
            readers[parent].append(node)
    for node in order:
        if not node.parents and readers[node]:
            depth[node] = min(depth[r] for r in readers[node]) - 1
    return {node: 2 * d for node, d in depth.items()}


def _value_text(node: Value, show_grad: bool) -> str:
    lines = [node.label] if node.label else []
    lines.append(f"data {node.data:.4g}")
    if show_grad:
        lines.append(f"grad {node.grad:.4g}")
    return "\n".join(lines)


def _op_text(node: Value) -> str:
    if node.op == "**":
        return f"**{node.exponent:g}"
    return OP_SYMBOLS.get(node.op, node.op)


def draw_graph(root: Value, show_grad: bool = True, title: str | None = None) -> Figure:
    """Draw every Value ``root`` depends on, the operations between them and arrows along the forward pass.

    Returns the matplotlib Figure (closed in pyplot, so a notebook shows it once).
    Every Value's text has gid ``"value"`` and every operation's gid ``"op"``.
    """
    order = topological_order(root)
    column = _columns(order)
    # drawing items: ("value", node) in the node's column, ("op", node) one column to its left
    items = [("value", node) for node in order] + [("op", node) for node in order if node.parents]
    col_of = {item: column[item[1]] - (1 if item[0] == "op" else 0) for item in items}
    rank = {node: i for i, node in enumerate(order)}

    edges: list[tuple[tuple[str, Value], tuple[str, Value]]] = []
    for node in order:
        if node.parents:
            edges.append((("op", node), ("value", node)))
            edges.extend((("value", parent), ("op", node)) for parent in node.parents)
    before: dict = defaultdict(list)
    after: dict = defaultdict(list)
    for src, dst in edges:
        after[src].append(dst)
        before[dst].append(src)

    # rows: start in topological order, then sweep right-to-left and left-to-right,
    # placing each item near the mean row of its neighbours (fewer crossing arrows)
    by_column: dict[int, list] = defaultdict(list)
    for item in items:
        by_column[col_of[item]].append(item)
    y: dict = {}

    def place(cols: list[int], neighbours: dict) -> None:
        for c in cols:
            members = by_column[c]
            # higher rows first (row 0 is drawn at the top, with the largest y)
            key = {m: (-(sum(y[n] for n in neighbours[m]) / len(neighbours[m]) if neighbours[m] else y[m]),
                       rank[m[1]]) for m in members}
            members.sort(key=lambda m: key[m])
            for i, m in enumerate(members):
                y[m] = (len(members) - 1) / 2.0 - i

    cols = sorted(by_column)
    for c in cols:
        by_column[c].sort(key=lambda m: rank[m[1]])
        for i, m in enumerate(by_column[c]):
            y[m] = (len(by_column[c]) - 1) / 2.0 - i
    for _ in range(4):
        place(cols[::-1], after)
        place(cols, before)

    n_cols = max(cols) - min(cols) + 1
    n_rows = max(len(members) for members in by_column.values())
    fig, ax = plt.subplots(figsize=(max(3.0, 1.25 * n_cols + 1.0), max(1.8, 0.95 * n_rows + 0.6)))
    texts = {}
    for item in items:
        kind, node = item
        xy = (col_of[item], y[item])
        if kind == "value":
            style = LEAF_STYLE if not node.parents else VALUE_STYLE
            texts[item] = ax.text(*xy, _value_text(node, show_grad), ha="center", va="center", fontsize=8,
                                  bbox=style, zorder=3, gid="value")
        else:
            texts[item] = ax.text(*xy, _op_text(node), ha="center", va="center", fontsize=9,
                                  bbox=OP_STYLE, zorder=3, gid="op")
    for src, dst in edges:
        # patchA/patchB clip the arrow at the edges of the two boxes; zorder above the
        # texts so the boxes are laid out (they are, when drawn) before the arrow is clipped
        ax.add_patch(FancyArrowPatch((col_of[src], y[src]), (col_of[dst], y[dst]), arrowstyle="-|>",
                                     mutation_scale=9, color="#777777", lw=0.9, zorder=4,
                                     patchA=texts[src].get_bbox_patch(), patchB=texts[dst].get_bbox_patch()))
    ax.set_xlim(min(cols) - 0.6, max(cols) + 0.6)
    ax.set_ylim(-n_rows / 2.0, n_rows / 2.0)
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


__all__ = ["draw_graph"]
