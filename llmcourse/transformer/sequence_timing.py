"""Why Transformers train faster than RNNs: sequential steps vs one parallel call (chapter 05).

An RNN must finish position t before it can start position t+1, because the
hidden state h_t = tanh(x_t W + h_{t-1} U + b) needs h_{t-1}. Attention computes
every position's output in a few big matrix products, with no such chain.
:func:`time_rnn_vs_attention` measures both over the same sequence as it grows.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn


def rnn_loop(x: Tensor, w_in: Tensor, w_hidden: Tensor, b: Tensor) -> Tensor:
    """A plain RNN over x (seq, d): one step per position, each waiting for the previous hidden state."""
    h = torch.zeros(w_hidden.shape[0], dtype=x.dtype)
    outputs = []
    for x_t in x:  # sequential: step t needs h from step t-1
        h = torch.tanh(x_t @ w_in + h @ w_hidden + b)
        outputs.append(h)
    return torch.stack(outputs)


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def time_rnn_vs_attention(lengths: Sequence[int] = (16, 64, 256, 1024), d_model: int = 64, seed: int = 0,
                          repeats: int = 3) -> dict[str, list]:
    """Best-of-``repeats`` seconds per sequence length for three ways to process one sequence.

    * ``rnn_loop``: :func:`rnn_loop`, a Python loop over positions;
    * ``torch_rnn``: ``nn.RNN`` (the same recurrence, looped inside C++);
    * ``attention``: the q/k/v projections plus one causal scaled-dot-product attention call.

    Timings depend on the machine; the shape of the curves is the lesson.
    """
    generator = torch.Generator().manual_seed(seed)
    scale = d_model ** -0.5
    w_in, w_hidden, w_q, w_k, w_v = (torch.randn(d_model, d_model, generator=generator) * scale for _ in range(5))
    b = torch.zeros(d_model)
    rnn = nn.RNN(d_model, d_model, batch_first=True)
    result: dict[str, list] = {"lengths": list(lengths), "d_model": [d_model] * len(lengths),
                               "rnn_loop": [], "torch_rnn": [], "attention": []}
    for n in lengths:
        x = torch.randn(n, d_model, generator=generator)
        xb = x.unsqueeze(0)

        def attention() -> Tensor:
            q, k, v = ((xb @ w).unsqueeze(1) for w in (w_q, w_k, w_v))  # each (1, 1, n, d): one head
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        result["rnn_loop"].append(_best_time(lambda: rnn_loop(x, w_in, w_hidden, b), repeats))
        result["torch_rnn"].append(_best_time(lambda: rnn(xb), repeats))
        result["attention"].append(_best_time(attention, repeats))
    return result


def plot_rnn_vs_attention(result: dict[str, list]) -> Figure:
    """Seconds against sequence length (log-log) for each method in ``result``."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    labels = {"rnn_loop": "RNN, loop over positions", "torch_rnn": "nn.RNN (loop in C++)",
              "attention": "attention, one call"}
    for key, label in labels.items():
        if key in result:
            ax.plot(result["lengths"], result[key], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length")
    ax.set_ylabel("seconds (best of runs)")
    ax.set_title("processing one sequence")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


__all__ = ["rnn_loop", "time_rnn_vs_attention", "plot_rnn_vs_attention"]
