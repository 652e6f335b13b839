"""Interactive explorer for chapter 07: how temperature, top-k and top-p reshape the next-token distribution.

:func:`temperature_view` is the plain function (returns a Figure, runs headless);
:func:`temperature_explorer` wraps it in ipywidgets sliders.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from llmcourse.models.sampling import entropy, filter_logits, softmax_with_temperature

EXAMPLE_WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "quickly", "purple"]
EXAMPLE_LOGITS = torch.tensor([3.2, 2.9, 2.1, 1.8, 1.2, 0.9, 0.4, 0.0, -0.8, -2.0])


def temperature_view(logits: Tensor | None = None, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, words: Sequence[str] | None = None) -> Figure:
    """Bars: softmax(logits) at T = 1 (grey outline) and after temperature, top-k and top-p (blue).

    The title gives the entropy of the filtered distribution and how many tokens remain possible.
    """
    logits = EXAMPLE_LOGITS if logits is None else torch.as_tensor(logits, dtype=torch.float32)
    words = (EXAMPLE_WORDS if logits is EXAMPLE_LOGITS else [str(i) for i in range(len(logits))]) \
        if words is None else list(words)
    base = softmax_with_temperature(logits, 1.0)
    probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
    x = np.arange(len(logits))
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.bar(x, probs.numpy(), color="tab:blue", label="after temperature / top-k / top-p")
    ax.bar(x, base.numpy(), fill=False, edgecolor="gray", linestyle="--", label="model (T = 1)")
    ax.set_xticks(x, words, rotation=45, ha="right")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    settings = f"T = {temperature:g}" + (f", top-k = {top_k}" if top_k else "")
    settings += f", top-p = {top_p:g}" if top_p else ""
    ax.set_title(f"{settings}: entropy {float(entropy(probs)):.2f} nats, {int((probs > 0).sum())} tokens possible",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def temperature_explorer(logits: Tensor | None = None, words: Sequence[str] | None = None):
    """Sliders for temperature, top-k and top-p over :func:`temperature_view`."""
    import ipywidgets as widgets

    from llmcourse.explorer import explorer

    n = len(EXAMPLE_LOGITS if logits is None else logits)

    def show(temperature: float, top_k: int, top_p: float) -> Figure:
        return temperature_view(logits, temperature, top_k if top_k < n else None, top_p if top_p < 1 else None,
                                words)

    return explorer(
        show,
        temperature=widgets.FloatLogSlider(value=1.0, base=10, min=-1.3, max=1, step=0.05, description="temperature",
                                           continuous_update=False),
        top_k=widgets.IntSlider(value=n, min=1, max=n, description="top-k", continuous_update=False),
        top_p=widgets.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p",
                                  continuous_update=False),
    )


__all__ = ["temperature_view", "temperature_explorer", "EXAMPLE_WORDS", "EXAMPLE_LOGITS"]
