"""Pictures of a pretraining run: loss curves, live while training (chapter 08).

* :func:`plot_loss_curves`: training loss (raw and smoothed) and validation loss
  against the step, with an optional horizontal line at the *entropy limit*: the
  lowest loss any model can reach on the data (known exactly for a synthetic
  Markov source). Returns a closed Figure, so a notebook shows it once.
* :class:`LiveLossPlot`: a training callback that redraws that figure in place
  every few steps in Jupyter, and does nothing when there is no notebook to draw in.
"""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def smooth(values: Sequence[float], alpha: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing): s_t = alpha s_{t-1} + (1-alpha) x_t."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    out, s = [], 0.0
    for t, x in enumerate(values, start=1):
        s = alpha * s + (1.0 - alpha) * float(x)
        out.append(s / (1.0 - alpha**t))
    return out


def plot_loss_curves(history: Any, entropy: float | None = None, title: str | None = None,
                     smoothing: float = 0.9, log_y: bool = False) -> Figure:
    """Training and validation loss (nats per token) against the step.

    ``history``: a :class:`~llmcourse.pretraining.trainer.History` (or anything with
    ``step``, ``train_loss``, ``val_step``, ``val_loss`` lists). ``entropy``: draw
    the entropy limit as a dashed line. Returns a closed Figure.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, train = list(history.step), list(history.train_loss)
    if steps:
        ax.plot(steps, train, color="tab:blue", alpha=0.25, lw=1, label="train (each step)")
        if smoothing > 0 and len(train) > 1:
            ax.plot(steps, smooth(train, smoothing), color="tab:blue", lw=2, label="train (smoothed)")
    if len(history.val_step):
        ax.plot(list(history.val_step), list(history.val_loss), "o-", color="tab:orange", lw=2, ms=4,
                label="validation")
    if entropy is not None:
        ax.axhline(entropy, color="black", ls="--", lw=1, label=f"entropy limit {entropy:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title or "Pretraining loss")
    ax.grid(alpha=0.3)
    if steps or entropy is not None:
        ax.legend(loc="upper right")
    fig.tight_layout()
    plt.close(fig)
    return fig


def _notebook_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class LiveLossPlot:
    """A :class:`~llmcourse.pretraining.trainer.Trainer` callback: redraw the loss curves every ``every`` steps.

    In Jupyter the picture updates in place (one output, through a display
    handle); elsewhere (a script, a test) it draws nothing. ``figure`` holds
    the latest drawing either way after :meth:`on_end`.
    """

    def __init__(self, entropy: float | None = None, every: int = 25, title: str | None = None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a whole number >= 1, got {every!r}")
        self.entropy, self.every, self.title = entropy, every, title
        self.live = _notebook_kernel()
        self.figure: Figure | None = None
        self._handle = None
        self.draws = 0

    def draw(self, history: Any) -> Figure:
        """Draw now (and show it, in a notebook)."""
        self.figure = plot_loss_curves(history, entropy=self.entropy, title=self.title)
        self.draws += 1
        if self.live:
            from IPython.display import display

            if self._handle is None:
                self._handle = display(self.figure, display_id=True)
            else:
                self._handle.update(self.figure)
        return self.figure

    def __call__(self, history: Any) -> None:
        if self.live and len(history) and len(history) % self.every == 0:
            self.draw(history)

    def on_end(self, history: Any) -> None:
        """Called once when training stops: the final picture."""
        self.draw(history)


__all__ = ["smooth", "plot_loss_curves", "LiveLossPlot"]
