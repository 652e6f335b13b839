"""Block explorer (chapter 06): parameters and FLOPs per part for any configuration.

:func:`block_view` is the plain function (returns a Figure); :func:`block_explorer`
wraps it in sliders and menus.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from llmcourse.transformer.counting import PARTS, ModelConfig, count_parameters, flops_per_token
from llmcourse.transformer.block_plots import PART_COLORS


def block_view(d_model: int = 768, n_heads: int = 12, n_layers: int = 12, vocab_size: int = 50257,
               seq_len: int = 1024, ffn: str = "gelu", norm: str = "layernorm", d_hidden: int | None = None,
               n_kv_heads: int | None = None, n_experts: int = 1, top_k: int = 1, bias: bool = True,
               tied_embeddings: bool = True, positions: str = "learned") -> Figure:
    """Left: parameters per part (total and, for a MoE, active). Right: forward FLOPs per token per part."""
    config = ModelConfig(d_model=d_model, n_heads=n_heads, n_layers=n_layers, vocab_size=vocab_size,
                         max_len=max(seq_len, 1), ffn=ffn, norm=norm, d_hidden=d_hidden, n_kv_heads=n_kv_heads,
                         n_experts=n_experts, top_k=top_k, bias=bias, tied_embeddings=tied_embeddings,
                         positions=positions)
    params, active = count_parameters(config), count_parameters(config, active=True)
    flops = flops_per_token(config, seq_len)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    x = range(len(PARTS))
    left.bar(x, [params[p] / 1e6 for p in PARTS], color=[PART_COLORS[p] for p in PARTS], label="total")
    if n_experts > 1:
        left.bar(x, [active[p] / 1e6 for p in PARTS], color="none", edgecolor="black", hatch="//",
                 label="active per token")
        left.legend(fontsize=8)
    left.set_xticks(list(x), list(PARTS), rotation=20)
    left.set_ylabel("parameters (millions)")
    left.set_title(f"{params['total'] / 1e6:,.1f}M parameters ({active['total'] / 1e6:,.1f}M active)", fontsize=10)
    names = ["attention", "attention_scores", "ffn", "head"]
    right.bar(range(len(names)), [flops[n] / 1e9 for n in names], color=[PART_COLORS[n] for n in names])
    right.set_xticks(range(len(names)), names, rotation=20)
    right.set_ylabel("GFLOPs per token (forward)")
    right.set_title(f"{flops['total'] / 1e9:,.2f} GFLOPs/token at seq_len {seq_len}", fontsize=10)
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    plt.close(fig)
    return fig


def block_explorer(d_model: int = 768, n_heads: int = 12, n_layers: int = 12):
    """Sliders and menus redrawing :func:`block_view`; impossible combinations show the error message."""
    import ipywidgets as widgets

    from llmcourse.explorer import explorer

    def show(d_model, n_heads, n_layers, seq_len, ffn, norm, n_experts, top_k, vocab_size):
        try:
            return block_view(d_model, n_heads, n_layers, vocab_size, seq_len, ffn, norm,
                              n_experts=n_experts, top_k=top_k, bias=norm == "layernorm",
                              tied_embeddings=norm == "layernorm",
                              positions="learned" if norm == "layernorm" else "rope")
        except ValueError as error:
            return f"not a valid configuration: {error}"

    return explorer(
        show,
        d_model=widgets.IntSlider(value=d_model, min=64, max=8192, step=64, description="d_model",
                                  continuous_update=False),
        n_heads=widgets.IntSlider(value=n_heads, min=1, max=128, description="n_heads", continuous_update=False),
        n_layers=widgets.IntSlider(value=n_layers, min=1, max=128, description="n_layers", continuous_update=False),
        seq_len=widgets.IntSlider(value=1024, min=128, max=32768, step=128, description="seq_len",
                                  continuous_update=False),
        ffn=widgets.Dropdown(options=["gelu", "relu", "swiglu"], value="gelu", description="ffn"),
        norm=widgets.Dropdown(options=["layernorm", "rmsnorm"], value="layernorm", description="norm"),
        n_experts=widgets.IntSlider(value=1, min=1, max=64, description="experts", continuous_update=False),
        top_k=widgets.IntSlider(value=1, min=1, max=8, description="top_k", continuous_update=False),
        vocab_size=widgets.IntSlider(value=50257, min=1000, max=256000, step=1000, description="vocab",
                                     continuous_update=False),
    )


__all__ = ["block_view", "block_explorer"]
