"""Explorers that show everywhere (every chapter's widgets use this).

An explorer is a row of ipywidgets controls over a plain function that returns what to show: a matplotlib
``Figure`` or a string. In a running notebook it is a live widget; its saved output also holds the first picture
(``image/png``) or text, so GitHub, nbviewer and an untrusted notebook show something useful instead of
``interactive(children=...)``. The plain function is what the tests call.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Callable

import ipywidgets as widgets
from IPython.display import display
from matplotlib.figure import Figure


def show_result(result: Any) -> None:
    """Display what a view function returned: a Figure as a picture, a string as text (None shows nothing)."""
    if isinstance(result, str):
        print(result)
    elif result is not None:
        display(result)


def figure_png(fig: Figure) -> str:
    """The figure as a base64-encoded PNG, the form notebook outputs store."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class Explorer(widgets.interactive):
    """``ipywidgets.interactive`` over ``view(**controls) -> Figure | str``, displayed with a static copy."""

    def __init__(self, view: Callable[..., Any], **controls: Any):
        self.view = view
        super().__init__(lambda **values: show_result(view(**values)), **controls)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        bundle = dict(super()._repr_mimebundle_(**kwargs))
        result = self.view(**self.kwargs)
        names = ", ".join(str(getattr(c, "description", "") or "") for c in self.kwargs_widgets)
        bundle["text/plain"] = f"[explorer with controls: {names}; run the notebook to use them]"
        if isinstance(result, Figure):
            bundle["image/png"] = figure_png(result)
        elif isinstance(result, str):
            bundle["text/plain"] = result
            bundle["image/png"] = figure_png(text_figure(result))
        return bundle


def text_figure(text: str) -> Figure:
    """A text view drawn as a picture (monospace), for viewers that show pictures rather than plain text."""
    lines = text.splitlines() or [""]
    fig = Figure(figsize=(0.1 + 0.075 * max(len(line) for line in lines), 0.2 + 0.18 * len(lines)))
    fig.text(0.01, 0.99, text, family="monospace", fontsize=9, va="top", ha="left")
    return fig


def explorer(view: Callable[..., Any], **controls: Any) -> Explorer:
    """A live explorer over ``view``; each keyword is a control (a widget or an ``interact`` abbreviation)."""
    return Explorer(view, **controls)


__all__ = ["Explorer", "explorer", "figure_png", "show_result", "text_figure"]
