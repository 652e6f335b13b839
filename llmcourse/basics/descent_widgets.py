"""Interactive explorer for chapter 02: what the learning rate does to gradient descent.

The explorer is a thin ipywidgets wrapper around a plain function that returns a
Figure, so a notebook still runs (and is tested) without a browser:

* :func:`learning_rate_view` — gradient descent on one surface with one learning
  rate: its path on the contour map, its loss per step, and the verdict
  (converged, too slow, diverged).
* :func:`learning_rate_explorer` — a log-scale learning-rate slider, a steps slider
  and a surface menu, redrawing :func:`learning_rate_view`.
"""
from __future__ import annotations

from matplotlib.figure import Figure

from llmcourse.basics.descent import SURFACES, get_surface, lr_sweep
from llmcourse.basics.descent_plots import plot_lr_sweep


def learning_rate_view(lr: float = 0.15, steps: int = 50, surface: str = "bowl") -> Figure:
    """Run gradient descent with ``lr`` for ``steps`` steps on ``surface`` and draw the result."""
    result = lr_sweep(surface, [lr], steps)[0]
    fig = plot_lr_sweep([result], surface)
    fig.suptitle(f"{get_surface(surface).name}: lr = {lr:g}, {steps} steps -> {result.verdict}", fontsize=11)
    fig.tight_layout()
    return fig


def learning_rate_explorer(lr: float = 0.15, steps: int = 50, surface: str = "bowl"):
    """Sliders for the learning rate (log scale) and the number of steps, and a surface menu; returns the widget."""
    import ipywidgets as widgets

    from llmcourse.explorer import explorer

    controls = dict(
        lr=widgets.FloatLogSlider(value=lr, base=10, min=-4, max=0, step=0.05, description="learning rate",
                                  continuous_update=False, readout_format=".3g"),
        steps=widgets.IntSlider(value=steps, min=1, max=500, step=1, description="steps", continuous_update=False),
        surface=widgets.Dropdown(options=list(SURFACES), value=surface, description="surface"),
    )
    return explorer(learning_rate_view, **controls)


__all__ = ["learning_rate_view", "learning_rate_explorer"]
