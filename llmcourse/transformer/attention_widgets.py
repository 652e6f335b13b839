"""Interactive explorers for chapters 04 and 05.

Each explorer is a thin ipywidgets wrapper around a plain function that
returns a Figure, so a notebook still runs (and is tested) without a browser:

* :func:`positional_encoding_view` — a position method's table and what it
  means for one position; :func:`positional_encoding_explorer` adds menus and sliders.
* :func:`attention_view` — one head's attention weights over a sentence and the
  weights of one chosen token; :func:`attention_explorer` adds menus.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from llmcourse.transformer.attention_plots import draw_attention
from llmcourse.transformer.positions import alibi_bias, apply_rope, rope_frequencies, sinusoidal_encoding

POSITION_KINDS = ("sinusoidal", "learned", "rope", "alibi")


def positional_encoding_view(kind: str = "sinusoidal", n_positions: int = 50, d_model: int = 128,
                             position: int = 10, base: float = 10000.0, n_heads: int = 8, seed: int = 0) -> Figure:
    """Left: the method's table over positions. Right: how position ``position`` relates to the others.

    * sinusoidal / learned: the table (n_positions, d_model), and the dot product
      of row ``position`` with every row (learned = an untrained random table);
    * rope: the rotation angle of each coordinate pair (mod 2*pi), and the score
      q·k of one fixed random q, k pair placed ``position`` apart vs. as offsets;
    * alibi: head 0's bias matrix, and the bias row of query ``position`` for every head.
    """
    if kind not in POSITION_KINDS:
        raise ValueError(f"kind must be one of {POSITION_KINDS}, got {kind!r}")
    position = int(min(max(position, 0), n_positions - 1))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.6))
    if kind in ("sinusoidal", "learned"):
        if kind == "sinusoidal":
            table = sinusoidal_encoding(n_positions, d_model, base)
        else:
            table = torch.randn(n_positions, d_model, generator=torch.Generator().manual_seed(seed)) * 0.5
        image = left.pcolormesh(table.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, shading="auto")
        left.invert_yaxis()
        left.set_xlabel("dimension")
        left.set_ylabel("position")
        right.plot(range(n_positions), (table @ table[position]).numpy(), marker=".")
        right.axvline(position, color="gray", ls="--", lw=1)
        right.set_xlabel("other position")
        right.set_ylabel(f"PE[{position}] · PE[other]")
    elif kind == "rope":
        cos, sin = rope_frequencies(d_model, n_positions, base)
        angles = torch.atan2(sin, cos)[:, : d_model // 2] % (2 * np.pi)
        image = left.pcolormesh(angles.numpy(), cmap="twilight", shading="auto")
        left.invert_yaxis()
        left.set_xlabel("coordinate pair i")
        left.set_ylabel("position")
        g = torch.Generator().manual_seed(seed)
        q, k = torch.randn(1, 1, 1, d_model, generator=g), torch.randn(1, 1, 1, d_model, generator=g)
        cos2, sin2 = rope_frequencies(d_model, n_positions + position + 1, base)
        offsets = range(n_positions)
        scores = [float((apply_rope(q, cos2, sin2, positions=position + m) *
                         apply_rope(k, cos2, sin2, positions=position)).sum()) for m in offsets]
        right.plot(list(offsets), scores, marker=".")
        right.set_xlabel(f"offset m (query at {position}+m, key at {position})")
        right.set_ylabel("q·k after RoPE")
    else:
        bias = alibi_bias(n_heads, n_positions)
        image = left.imshow(np.ma.masked_invalid(bias[0].numpy()), cmap="viridis")
        left.set_xlabel("key position")
        left.set_ylabel("query position")
        for h in range(n_heads):
            row = bias[h, position, : position + 1].numpy()
            right.plot(range(position + 1), row, label=f"head {h}")
        right.set_xlabel("key position")
        right.set_ylabel(f"bias for query {position}")
        right.legend(fontsize=6, ncol=2)
    fig.colorbar(image, ax=left)
    left.set_title(f"{kind}: table", fontsize=10)
    right.set_title(f"{kind}: seen from position {position}", fontsize=10)
    right.grid(alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig


def positional_encoding_explorer(kind: str = "sinusoidal", n_positions: int = 50, d_model: int = 128):
    """Menu of methods and sliders for size and position, redrawing :func:`positional_encoding_view`."""
    import ipywidgets as widgets

    from llmcourse.explorer import explorer

    return explorer(
        positional_encoding_view,
        kind=widgets.Dropdown(options=list(POSITION_KINDS), value=kind, description="method"),
        n_positions=widgets.IntSlider(value=n_positions, min=8, max=256, step=8, description="positions",
                                      continuous_update=False),
        d_model=widgets.IntSlider(value=d_model, min=8, max=256, step=8, description="d_model",
                                  continuous_update=False),
        position=widgets.IntSlider(value=10, min=0, max=255, description="position", continuous_update=False),
    )


def attention_view(sentence_tokens: Sequence[str], weights: Tensor, head: int = 0, token: int = 0) -> Figure:
    """Left: head ``head``'s weights (heads, seq, seq) over the sentence. Right: where token ``token`` looks."""
    w = weights.detach().float() if isinstance(weights, Tensor) else torch.as_tensor(weights, dtype=torch.float32)
    if w.dim() == 4:  # (batch, heads, seq, seq): take the first sequence
        w = w[0]
    if w.dim() == 2:
        w = w.unsqueeze(0)
    n_heads, seq, k_len = w.shape
    if k_len != len(sentence_tokens):
        raise ValueError(f"{len(sentence_tokens)} tokens but the weights cover {k_len} keys")
    if not (0 <= head < n_heads and 0 <= token < seq):
        raise ValueError(f"head must be in 0..{n_heads - 1} and token in 0..{seq - 1}, got {head} and {token}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.0), gridspec_kw={"width_ratios": [1.1, 1]})
    draw_attention(left, w[head], sentence_tokens, annotate=False)
    left.add_patch(plt.Rectangle((-0.5, token - 0.5), k_len, 1, fill=False, edgecolor="tab:red", lw=2))
    left.set_title(f"head {head}", fontsize=10)
    right.bar(range(k_len), w[head, token].numpy(), color="tab:blue")
    right.set_xticks(range(k_len), list(sentence_tokens), rotation=60, ha="right", fontsize=8)
    right.set_ylim(0, 1)
    right.set_ylabel("attention weight")
    right.set_title(f"where {sentence_tokens[token]!r} looks (head {head})", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


def attention_explorer(tokens: Sequence[str], weights: Tensor):
    """Menus for the head and the token, redrawing :func:`attention_view`."""
    import ipywidgets as widgets

    from llmcourse.explorer import explorer

    w = weights[0] if weights.dim() == 4 else weights
    n_heads = 1 if w.dim() == 2 else w.shape[0]

    def show(head: int, token: int) -> Figure:
        return attention_view(tokens, weights, head, token)

    return explorer(
        show,
        head=widgets.Dropdown(options=list(range(n_heads)), value=0, description="head"),
        token=widgets.Dropdown(options=[(f"{i}: {t}", i) for i, t in enumerate(tokens)], value=0,
                               description="token"),
    )


__all__ = ["POSITION_KINDS", "positional_encoding_view", "positional_encoding_explorer", "attention_view",
           "attention_explorer"]
