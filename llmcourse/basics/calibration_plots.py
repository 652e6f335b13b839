"""Reliability diagrams for chapter 02's calibration section.

:func:`plot_reliability` draws one panel per classifier: a bar per confidence bin
at the height of the bin's accuracy, the bin's mean confidence as a red tick, and
the diagonal where a calibrated classifier's bars would end. The figure is closed
in pyplot, so a notebook shows it once when it is the cell's last expression.
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from llmcourse.basics.calibration import CalibrationResult, expected_calibration_error, reliability_bins


def plot_reliability(models: Mapping[str, CalibrationResult | tuple[Tensor, Tensor]], n_bins: int = 10) -> Figure:
    """One reliability diagram per entry; an entry is a :class:`CalibrationResult` or ``(probs, labels)``.

    Each panel has ``n_bins`` bars (empty bins have height 0) and its ECE in the title.
    """
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.8), squeeze=False)
    for ax, (name, model) in zip(axes[0], models.items()):
        probs, labels = (model.probs, model.labels) if isinstance(model, CalibrationResult) else model
        bins = reliability_bins(probs, labels, n_bins)
        edges = bins.edges.numpy()
        centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        accuracy = np.nan_to_num(bins.accuracy.numpy())
        confidence = bins.confidence.numpy()
        share = bins.counts.numpy() / max(int(bins.counts.sum()), 1)
        ax.bar(centres, accuracy, width=width * 0.9, color="tab:blue", alpha=0.75, edgecolor="k", lw=0.5,
               label="accuracy in the bin")
        filled = bins.counts.numpy() > 0
        ax.scatter(centres[filled], confidence[filled], marker="_", s=250, color="crimson", lw=2,
                   label="mean confidence", zorder=4)
        for c, s in zip(centres[filled], share[filled]):
            ax.text(c, 0.02, f"{s:.0%}", ha="center", va="bottom", fontsize=6, rotation=90, color="white")
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="calibrated")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (largest probability)")
        ax.set_title(f"{name}\nECE {expected_calibration_error(probs, labels, n_bins):.3f}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


__all__ = ["plot_reliability"]
