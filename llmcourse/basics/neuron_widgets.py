"""Interactive explorers for chapter 01.

Each explorer is a thin ipywidgets wrapper around a plain function that
returns a Figure, so a notebook still runs (and is tested) without a browser:

* :func:`neuron_view` — what one neuron with two inputs computes everywhere on
  the leaf/flower plane, for given weights, bias and activation.
* :func:`neuron_explorer` — sliders for ``w1``, ``w2``, ``b`` and a menu of
  activations, redrawing :func:`neuron_view`.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

from llmcourse.basics.activations import ACTIVATIONS
from llmcourse.basics.neurons import leaf_flower_data, neuron
from llmcourse.basics.neuron_plots import scatter_leaf_flower

EXPLORER_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "gelu", "silu")


def neuron_view(w1: float, w2: float, b: float, activation: str = "sigmoid",
                X: Tensor | None = None, y: Tensor | None = None, resolution: int = 120) -> Figure:
    """Heat map of ``activation(w1 * greenness + w2 * volume + b)`` over the plane, with the data on top.

    Without ``X``, ``y`` it draws the chapter's leaf/flower data. The white line
    is where the weighted sum ``z`` is 0: the neuron's "decision line".
    """
    if X is None or y is None:
        X, y = leaf_flower_data(100)
    w = torch.tensor([float(w1), float(w2)])
    lo = X.min(dim=0).values - 0.2
    hi = X.max(dim=0).values + 0.2
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], resolution), torch.linspace(lo[1], hi[1], resolution),
                            indexing="xy")
    grid = torch.stack([gx, gy], dim=-1)
    out = neuron(grid, w, float(b), activation)
    z = neuron(grid, w, float(b))

    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    image = ax.pcolormesh(gx.numpy(), gy.numpy(), out.numpy(), shading="auto", cmap="viridis")
    fig.colorbar(image, ax=ax, label="neuron output")
    if z.min() < 0 < z.max():
        ax.contour(gx.numpy(), gy.numpy(), z.numpy(), levels=[0.0], colors="white", linewidths=1.5)
    scatter_leaf_flower(ax, X, y)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{activation}({w1:+.2f}·greenness {w2:+.2f}·volume {b:+.2f})", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


def neuron_explorer(w1: float = 3.0, w2: float = -1.0, b: float = 0.0, activation: str = "sigmoid"):
    """Sliders and a menu that redraw :func:`neuron_view`; returns the ipywidgets container."""
    import ipywidgets as widgets

    from llmcourse.explorer import explorer

    X, y = leaf_flower_data(100)

    def show(w1: float, w2: float, b: float, activation: str) -> Figure:
        return neuron_view(w1, w2, b, activation, X, y)

    slider = dict(min=-5.0, max=5.0, step=0.1, continuous_update=False)
    controls = dict(
        w1=widgets.FloatSlider(value=w1, description="w1 (green)", **slider),
        w2=widgets.FloatSlider(value=w2, description="w2 (volume)", **slider),
        b=widgets.FloatSlider(value=b, description="bias b", **slider),
        activation=widgets.Dropdown(options=[a for a in EXPLORER_ACTIVATIONS if a in ACTIVATIONS],
                                    value=activation, description="activation"),
    )
    return explorer(show, **controls)


__all__ = ["neuron_view", "neuron_explorer"]
