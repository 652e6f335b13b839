"""Conceptual diagrams for chapter 07: the GPT stack with its shapes, and the KV cache during generation.

Every function draws boxes and arrows (not data), labels each block with its real shape, and returns a closed
matplotlib ``Figure`` (show it as a cell's last line).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from llmcourse.models.gpt import GPTConfig
from llmcourse.transformer.attention_diagrams import ROLE_COLORS, canvas, check_at_most, check_sizes, draw_arrow, \
    draw_box, draw_matrix

LESSON_CONFIG = GPTConfig(vocab_size=100, context_length=32, d_model=64, n_layers=2, n_heads=4)


# --------------------------------------------------------------------------- (a) the GPT stack


def gpt_stack_diagram(config: GPTConfig | None = None, batch: int = 1, seq: int = 4) -> Figure:
    """A GPT from token ids to logits: embeddings + positions, n_layers pre-norm blocks, final LayerNorm, lm_head."""
    config = LESSON_CONFIG if config is None else config
    if not isinstance(config, GPTConfig):
        raise ValueError(f"config must be a GPTConfig, got {type(config).__name__}")
    check_sizes(batch=batch, seq=seq)
    if seq > config.context_length:
        raise ValueError(f"seq={seq} is longer than the context length {config.context_length}: the position "
                         f"table has no row for position {config.context_length}")
    c = config
    shown = [1, 2, c.n_layers] if c.n_layers > 3 else list(range(1, c.n_layers + 1))
    block_gap = 0.62
    fig, ax = canvas(10.0, 8.0)                         # the height is fitted to the drawing at the end
    mx = 5.0                                            # the main column
    hidden = f"(batch, seq, d_model) = ({batch}, {seq}, {c.d_model})"

    def shape_note(y: float, text: str) -> None:
        ax.text(mx + 0.15, y, text, ha="left", va="center", fontsize=8.5, color="0.25")

    draw_box(ax, mx, 0.35, 3.0, 0.45, f"token ids  (batch, seq) = ({batch}, {seq})", color=ROLE_COLORS["input"])
    emb_y = 1.25
    wte_x, wpe_x = mx - 1.75, mx + 1.75
    draw_box(ax, wte_x, emb_y, 3.1, 0.55, f"token embedding wte\n(vocab, d_model) = ({c.vocab_size}, {c.d_model})",
             color=ROLE_COLORS["embedding"], fontsize=8.5, linespacing=1.3)
    draw_box(ax, wpe_x, emb_y, 3.1, 0.55, f"position embedding wpe\n(context, d_model) = "
             f"({c.context_length}, {c.d_model})", color=ROLE_COLORS["embedding"], fontsize=8.5, linespacing=1.3)
    draw_arrow(ax, (mx - 0.6, 0.58), (wte_x, emb_y - 0.28))
    ax.text(wpe_x, emb_y - 0.33, f"rows 0 .. {seq - 1}: one per position", ha="center", va="top", fontsize=8,
            color="0.3")
    plus_y = 2.05
    ax.add_patch(plt.Circle((mx, plus_y), 0.15, facecolor="white", edgecolor="0.2", linewidth=1.3, zorder=3))
    ax.text(mx, plus_y, "+", ha="center", va="center", fontsize=12, fontweight="bold", zorder=4)
    draw_arrow(ax, (wte_x, emb_y + 0.28), (mx - 0.15, plus_y))
    draw_arrow(ax, (wpe_x, emb_y + 0.28), (mx + 0.15, plus_y))
    y = plus_y + 0.15
    rows = shown[:2] + ["dots"] + shown[2:] if c.n_layers > 3 else shown
    first = True
    for item in rows:
        y_next = y + block_gap
        if item == "dots":
            ax.text(mx, y + 0.27, f"... {c.n_layers - 3} more blocks ...", ha="center", va="center",
                    fontsize=9, color="0.3")
            y = y + 0.5
            continue
        draw_arrow(ax, (mx, y), (mx, y_next - 0.22))
        if first:
            shape_note((y + y_next - 0.22) / 2, hidden)
            first = False
        draw_box(ax, mx, y_next, 5.2, 0.42, f"block {item} of {c.n_layers}:  x + attn(LN(x)),  then  x + MLP(LN(x))",
                 color=ROLE_COLORS["attention"], fontsize=8.5)
        y = y_next + 0.21
    ln_y = y + 0.6
    draw_arrow(ax, (mx, y), (mx, ln_y - 0.2))
    shape_note((y + ln_y - 0.2) / 2, hidden)
    draw_box(ax, mx, ln_y, 2.4, 0.4, "final LayerNorm ln_f", color=ROLE_COLORS["norm"], fontsize=8.5)
    head_y = ln_y + 0.75
    draw_arrow(ax, (mx, ln_y + 0.2), (mx, head_y - 0.25))
    tied = " (tied to wte)" if c.tie_weights else ""
    draw_box(ax, mx, head_y, 3.6, 0.5, f"lm_head{tied}\nweight (vocab, d_model) = ({c.vocab_size}, {c.d_model})",
             color=ROLE_COLORS["head"], fontsize=8.5, linespacing=1.3)
    if c.tie_weights:
        draw_arrow(ax, (mx - 1.8, head_y), (wte_x - 1.5, emb_y + 0.1), ls="--", color="tab:purple",
                   style="<|-|>", rad=0.3)
        ax.text(0.12, (head_y + emb_y) / 2, "tied: one matrix\nreads tokens in\nand writes\nscores out", ha="left",
                va="center", fontsize=8, color="tab:purple", linespacing=1.25)
    logits_y = head_y + 0.8
    draw_arrow(ax, (mx, head_y + 0.25), (mx, logits_y - 0.22))
    draw_box(ax, mx, logits_y, 3.8, 0.44, f"logits  (batch, seq, vocab) = ({batch}, {seq}, {c.vocab_size})",
             color=ROLE_COLORS["output"], fontsize=8.5)
    ax.text(mx + 2.05, logits_y, "a next-token score\nat every position", ha="left", va="center", fontsize=8,
            color="0.3", linespacing=1.25)
    top = logits_y + 0.4
    fig.set_size_inches(10.0, top)
    ax.set_ylim(0, top)
    plt.close(fig)
    return fig


# --------------------------------------------------------------------------- (b) the KV cache


def kv_cache_diagram(prompt_len: int = 3, new_tokens: int = 3, head_dim: int = 4) -> Figure:
    """Generation with a KV cache: each step computes the new token's query, key and value and reads the rest."""
    check_sizes(prompt_len=prompt_len, new_tokens=new_tokens, head_dim=head_dim)
    check_at_most(5, new_tokens=new_tokens)
    check_at_most(8, head_dim=head_dim)
    check_at_most(10, total_length=prompt_len + new_tokens)
    cell = 0.17
    row_h = head_dim * cell + 0.55
    n_rows = 1 + new_tokens
    fig_h = 1.25 + n_rows * row_h + 0.45
    fig, ax = canvas(11.0, fig_h)
    new_color, cached = ROLE_COLORS["key"], "0.6"
    q_x, k_left, v_left, w_left, o_x = 2.25, 3.25, 5.45, 7.65, 10.2
    header_y = fig_h - 0.3
    for x, text in ((q_x, "queries computed\nthis step"), (k_left + 0.85, "keys (K cache)"),
                    (v_left + 0.85, "values (V cache)"), (w_left + 0.85, "weights: softmax\nof q K / sqrt(head_dim)"),
                    (o_x, "output")):
        ax.text(x, header_y, text, ha="center", va="top", fontsize=9, fontweight="bold", linespacing=1.25)
    for r in range(n_rows):
        t = prompt_len if r == 0 else prompt_len + r           # tokens in the cache after this step
        n_q = prompt_len if r == 0 else 1                      # queries computed at this step
        y = fig_h - 1.05 - r * row_h - head_dim * cell / 2
        label = f"prefill\ntokens 1-{prompt_len}" if r == 0 else f"step {r}\nnew token {t}"
        ax.text(0.15, y, label, ha="left", va="center", fontsize=9, linespacing=1.25)
        new_cols = range(t) if r == 0 else [t - 1]
        colors = [new_color if j in new_cols else cached for j in range(t)]
        draw_matrix(ax, q_x, y, head_dim, n_q, cell, ROLE_COLORS["query"])
        for left, name in ((k_left, "K"), (v_left, "V")):
            draw_matrix(ax, left + t * cell / 2, y, head_dim, t, cell, col_colors=colors, alpha=0.55)
            ax.text(left, y - head_dim * cell / 2 - 0.06, f"{name}: (t, head_dim) = ({t}, {head_dim})", ha="left",
                    va="top", fontsize=8)
        draw_matrix(ax, w_left + t * cell / 2, y, n_q, t, cell, ROLE_COLORS["scores"],
                    blank={(i, j) for i in range(n_q) for j in range(t) if r == 0 and j > i})  # causal: 0
        ax.text(w_left, y - n_q * cell / 2 - 0.06, f"(queries, t) = ({n_q}, {t})", ha="left", va="top", fontsize=8)
        draw_matrix(ax, o_x, y, head_dim, n_q, cell, ROLE_COLORS["output"])
        draw_arrow(ax, (w_left + t * cell + 0.1, y), (o_x - n_q * cell / 2 - 0.1, y))
    legend_y = 0.3
    draw_box(ax, 1.2, legend_y, 0.3, 0.22, color=new_color, alpha=0.55)
    ax.text(1.45, legend_y, "computed at this step", ha="left", va="center", fontsize=8.5)
    draw_box(ax, 3.55, legend_y, 0.3, 0.22, color=cached, alpha=0.55)
    ax.text(3.8, legend_y, "read from the cache (computed at an earlier step)", ha="left", va="center",
            fontsize=8.5)
    ax.text(7.9, legend_y, "the cache grows by one column per step", ha="left", va="center", fontsize=8.5,
            color="0.3")
    plt.close(fig)
    return fig


__all__ = ["gpt_stack_diagram", "kv_cache_diagram", "LESSON_CONFIG"]
