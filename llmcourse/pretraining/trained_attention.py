"""Where a trained GPT's heads look (chapter 08): attention maps and the weight each head gives to each distance.

Theory says what a model trained on an order-2 Markov source needs: the next letter depends only on the current
letter and the one before it, so some head must move the previous letter's information to the current position.
:func:`attention_maps` records every head's weights in one forward pass; :func:`attention_by_distance` averages
them by how far back each key is (0 = the token itself, 1 = the previous token ...), and
:func:`plot_attention_by_distance` draws that profile, one row per head.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn


def attention_maps(model: nn.Module, ids: Tensor) -> Tensor:
    """Every head's attention weights for ``ids`` (seq,) or (1, seq): shape (n_layers, n_heads, seq, seq).

    Works with the course's GPT (chapter 07): each block's ``attn`` is run once more on the input it received,
    with ``return_weights=True``. Row i of a map is how query i spreads its attention over keys 0..i.
    """
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"attention_maps takes one sequence of ids, shape (seq,) or (1, seq); got {tuple(ids.shape)}")
    blocks = getattr(model, "blocks", None)
    if blocks is None or not all(hasattr(b, "attn") for b in blocks):
        raise TypeError("attention_maps needs a model whose .blocks each have an .attn (the course's GPT)")
    inputs: list[Tensor] = []
    hooks = [b.attn.register_forward_hook(lambda module, args, output: inputs.append(args[0])) for b in blocks]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(ids)
            maps = [b.attn(x, is_causal=True, return_weights=True)[1][0] for b, x in zip(blocks, inputs)]
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return torch.stack(maps)


def attention_by_distance(maps: Tensor, max_distance: int = 8) -> Tensor:
    """The mean weight each head gives to the key ``d`` positions back, for d = 0..max_distance.

    ``maps``: (..., seq, seq) causal weights. Only queries with at least ``max_distance`` tokens before them are
    averaged, so every distance is available to each of them. Shape (..., max_distance + 1).
    """
    seq = maps.shape[-1]
    if maps.dim() < 2 or maps.shape[-2] != seq:
        raise ValueError(f"maps must end in two equal dimensions (queries, keys), got {tuple(maps.shape)}")
    if not 0 <= max_distance < seq:
        raise ValueError(f"max_distance must be between 0 and seq - 1 = {seq - 1}, got {max_distance}")
    queries = torch.arange(max_distance, seq)
    profile = [maps[..., queries, queries - d].mean(dim=-1) for d in range(max_distance + 1)]
    return torch.stack(profile, dim=-1)


def plot_attention_by_distance(profile: Tensor, title: str = "") -> Figure:
    """A heat map: one row per (layer, head), one column per distance back, the mean weight in each cell."""
    if profile.dim() != 3:
        raise ValueError(f"profile must have shape (n_layers, n_heads, distances), got {tuple(profile.shape)}")
    n_layers, n_heads, n_dist = profile.shape
    rows = profile.reshape(n_layers * n_heads, n_dist).numpy()
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * n_dist, 0.9 + 0.38 * len(rows)))
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (r, c), value in np.ndenumerate(rows):
        ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="white" if value > 0.6 else "black")
    ax.set_xticks(range(n_dist), [str(d) for d in range(n_dist)])
    ax.set_yticks(range(len(rows)), [f"layer {r // n_heads} head {r % n_heads}" for r in range(len(rows))], fontsize=8)
    ax.set_xlabel("distance back (0 = the token itself)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="mean weight")
    fig.tight_layout()
    plt.close(fig)
    return fig


__all__ = ["attention_by_distance", "attention_maps", "plot_attention_by_distance"]
