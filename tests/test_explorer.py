"""Explorers and progress bars that show everywhere (llmcourse.explorer, llmcourse.progress)."""
import base64

import ipywidgets as widgets
import matplotlib.pyplot as plt

from llmcourse.explorer import Explorer, explorer, figure_png
from llmcourse.progress import _FinalState

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def line_view(slope: float = 1.0):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, slope])
    plt.close(fig)
    return fig


def test_a_figure_explorer_is_a_live_widget_with_a_picture_of_its_current_view():
    ex = explorer(line_view, slope=widgets.FloatSlider(value=2.0, min=0, max=5, description="slope"))
    assert isinstance(ex, widgets.interactive) and isinstance(ex, Explorer)
    bundle = ex._repr_mimebundle_()
    assert WIDGET_VIEW in bundle
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    assert "slope" in bundle["text/plain"] and "interactive(" not in bundle["text/plain"]
    ex.kwargs_widgets[0].value = 4.0  # moving the slider changes the saved picture too
    ex.update()
    assert ex._repr_mimebundle_()["image/png"] != bundle["image/png"]


def test_a_text_explorer_saves_its_text():
    ex = explorer(lambda n: "x" * n, n=widgets.IntSlider(value=3, min=0, max=9))
    bundle = ex._repr_mimebundle_()
    assert bundle["text/plain"] == "xxx"
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")  # the text, drawn, for static viewers


def test_figure_png_is_base64_png():
    assert base64.b64decode(figure_png(line_view())).startswith(b"\x89PNG")


def test_a_closed_bar_saves_how_far_it_got():
    bar = widgets.HBox()
    bundle = _FinalState(bar, "training: 600/600 done")._repr_mimebundle_()
    assert bundle == {"text/plain": "training: 600/600 done"}  # no widget left for a static viewer to miss
