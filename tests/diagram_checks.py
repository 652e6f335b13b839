"""What every conceptual diagram promises, as helpers the diagram tests share."""
from __future__ import annotations

from itertools import combinations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text


def _renderer(fig: Figure):
    """The figure drawn by Agg, as it is saved into a notebook (a closed figure first gets an Agg canvas again)."""
    if not hasattr(fig.canvas, "get_renderer"):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def visible_texts(fig: Figure) -> list[Text]:
    """Every visible, non-empty text of the figure: titles, labels, annotations, legends, tick labels."""
    _renderer(fig)
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def all_text(fig: Figure) -> str:
    """The figure's texts joined by newlines, for asserting that a diagram names what it shows."""
    return "\n".join(t.get_text() for t in visible_texts(fig))


def overlapping_texts(fig: Figure, pad: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of texts whose drawn boxes overlap (shrunk by ``pad`` pixels so that touching is allowed)."""
    renderer = _renderer(fig)
    boxes = []
    for text in visible_texts(fig):
        box = text.get_window_extent(renderer)
        if box.width > 2 * pad and box.height > 2 * pad:
            boxes.append((text.get_text(), box.expanded(1, 1).padded(-pad)))
    return [(a, b) for (a, box_a), (b, box_b) in combinations(boxes, 2) if box_a.overlaps(box_b)]


def texts_outside(fig: Figure, pad: float = 1.0) -> list[str]:
    """Texts that stick out of the figure (cut off when the picture is saved)."""
    renderer = _renderer(fig)
    width, height = fig.canvas.get_width_height()
    out = []
    for text in visible_texts(fig):
        box = text.get_window_extent(renderer)
        if box.x0 < -pad or box.y0 < -pad or box.x1 > width + pad or box.y1 > height + pad:
            out.append(text.get_text())
    return out
