"""Counting a Transformer's parameters and FLOPs, part by part (chapter 06).

Parameters (weights + biases), per part:

* ``embeddings``: token table (vocab x d) + learned position table (max_len x d, GPT) or none (RoPE);
* ``attention``: per layer W_q, W_o (d x d) and W_k, W_v (d x n_kv_heads*head_dim), + biases;
* ``ffn``: per layer 2 matrices d x d_hidden (ReLU/GELU) or 3 (SwiGLU), + biases;
  with experts: n_experts of them + a router (d x n_experts);
* ``norms``: 2 per layer + 1 final; LayerNorm has weight and bias (2d), RMSNorm weight only (d);
* ``head``: the output projection d x vocab, 0 when tied to the token embedding.

FLOPs per token of a forward pass (Kaplan et al. 2020, sec. 2.1; Hoffmann et al.
2022, app. F): 2 FLOPs (a multiply and an add) per weight used, plus the
attention scores and the weighted sum of values, 2 * seq_len * d each per layer.
Training costs about 3x the forward pass.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from llmcourse.transformer.block import check_block_config
from llmcourse.transformer.feedforward import llama_hidden_size

PARTS = ("embeddings", "attention", "ffn", "norms", "head")


@dataclass(frozen=True)
class BlockConfig:
    """The shape of one Transformer block (see :class:`~llmcourse.transformer.block.TransformerBlock`)."""

    d_model: int = 768
    n_heads: int = 12
    n_kv_heads: int | None = None
    d_hidden: int | None = None          # None: 4 * d_model, or LLaMA's rounding for SwiGLU
    norm: str = "layernorm"
    ffn: str = "gelu"
    bias: bool = True                    # attention and FFN projection biases
    n_experts: int = 1                   # > 1: a mixture of experts replaces the FFN
    top_k: int = 1

    def __post_init__(self):
        check_block_config(self.d_model, self.n_heads, self.n_kv_heads, self.norm, self.ffn)
        if self.n_experts < 1 or not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k={self.top_k} must be between 1 and n_experts={self.n_experts}")

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def hidden(self) -> int:
        if self.d_hidden is not None:
            return self.d_hidden
        return llama_hidden_size(self.d_model) if self.ffn == "swiglu" else 4 * self.d_model


@dataclass(frozen=True)
class ModelConfig(BlockConfig):
    """A decoder-only model: embeddings, ``n_layers`` blocks, a final norm and an output head."""

    name: str = "model"
    vocab_size: int = 50257
    n_layers: int = 12
    max_len: int = 1024
    positions: str = "learned"           # "learned" (a table of max_len x d) or "rope" (no parameters)
    tied_embeddings: bool = True
    source: str = ""

    def __post_init__(self):
        super().__post_init__()
        if self.positions not in ("learned", "rope"):
            raise ValueError(f"positions must be 'learned' or 'rope', got {self.positions!r}")
        if self.n_layers < 1 or self.vocab_size < 1:
            raise ValueError("n_layers and vocab_size must be >= 1")

    def with_(self, **changes) -> "ModelConfig":
        return replace(self, **changes)


def _block_parts(c: BlockConfig, active: bool = False) -> dict[str, int]:
    d, kv = c.d_model, c.kv_heads * c.head_dim
    attention = 2 * d * d + 2 * d * kv + ((2 * d + 2 * kv) if c.bias else 0)
    n_mats = 3 if c.ffn == "swiglu" else 2
    if c.n_experts > 1:  # MoE experts have no biases
        expert = n_mats * d * c.hidden
        ffn = (c.top_k if active else c.n_experts) * expert + d * c.n_experts
    else:
        ffn = n_mats * d * c.hidden + ((c.hidden * (n_mats - 1) + d) if c.bias else 0)
    norm = 2 * d if c.norm == "layernorm" else d
    return {"attention": attention, "ffn": ffn, "norms": 2 * norm, "one_norm": norm}


def count_parameters(config: BlockConfig, active: bool = False) -> dict[str, int]:
    """Parameters per part (``embeddings``, ``attention``, ``ffn``, ``norms``, ``head``) and ``total``.

    A :class:`BlockConfig` counts one block (embeddings and head are 0). With
    ``active=True`` a MoE counts only the top_k experts each token uses.
    """
    parts = _block_parts(config, active)
    if not isinstance(config, ModelConfig):
        counts = {"embeddings": 0, "attention": parts["attention"], "ffn": parts["ffn"], "norms": parts["norms"],
                  "head": 0}
    else:
        c, L = config, config.n_layers
        emb = c.vocab_size * c.d_model + (c.max_len * c.d_model if c.positions == "learned" else 0)
        counts = {"embeddings": emb, "attention": L * parts["attention"], "ffn": L * parts["ffn"],
                  "norms": L * parts["norms"] + parts["one_norm"],
                  "head": 0 if c.tied_embeddings else c.vocab_size * c.d_model}
    counts["total"] = sum(counts[p] for p in PARTS)
    return counts


def flops_per_token(config: BlockConfig, seq_len: int) -> dict[str, int]:
    """Forward-pass FLOPs per token at context length ``seq_len``, per part, and ``total``.

    ``attention``: 2 x the projection weights; ``attention_scores``: Q K^T and
    weights x V, 2 * seq_len * d_model each (per layer; no causal halving);
    ``ffn``: 2 x the FFN weights a token uses (top_k experts + router for a MoE);
    ``head``: 2 * d * vocab (even when tied, the matmul is done). Norms, softmax and
    embedding lookups are left out (a small fraction).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    parts = _block_parts(config, active=True)
    L = config.n_layers if isinstance(config, ModelConfig) else 1
    head = 2 * config.d_model * config.vocab_size if isinstance(config, ModelConfig) else 0
    flops = {"attention": 2 * L * parts["attention"], "attention_scores": L * 2 * 2 * seq_len * config.d_model,
             "ffn": 2 * L * parts["ffn"], "head": head}
    flops["total"] = sum(flops.values())
    return flops


def ffn_share(config: ModelConfig, exclude_embeddings: bool = False) -> float:
    """The FFN's share of the parameters (of all of them, or of those outside embeddings and head)."""
    counts = count_parameters(config)
    total = counts["total"] - (counts["embeddings"] + counts["head"] if exclude_embeddings else 0)
    return counts["ffn"] / total


def config_table(configs: dict[str, ModelConfig] | None = None) -> list[dict]:
    """One row per model: parameters per part, total, active, FFN share (all / without embeddings)."""
    rows = []
    for name, c in (REAL_CONFIGS if configs is None else configs).items():
        counts = count_parameters(c)
        rows.append({"model": name, **counts, "active": count_parameters(c, active=True)["total"],
                     "ffn_share": ffn_share(c), "ffn_share_no_emb": ffn_share(c, exclude_embeddings=True),
                     "source": c.source})
    return rows


REAL_CONFIGS: dict[str, ModelConfig] = {
    "GPT-2 small": ModelConfig(
        name="GPT-2 small", d_model=768, n_heads=12, ffn="gelu_tanh", vocab_size=50257, n_layers=12, max_len=1024,
        source="Radford et al. 2019; openai-community/gpt2 config.json (n_embd 768, n_layer 12, n_head 12)"),
    "GPT-3 175B": ModelConfig(
        name="GPT-3 175B", d_model=12288, n_heads=96, ffn="gelu", vocab_size=50257, n_layers=96, max_len=2048,
        source="Brown et al. 2020, Table 2.1 (d_model 12288, 96 layers, 96 heads, d_ff = 4 d_model, n_ctx 2048)"),
    "LLaMA-2 7B": ModelConfig(
        name="LLaMA-2 7B", d_model=4096, n_heads=32, d_hidden=11008, norm="rmsnorm", ffn="swiglu", bias=False,
        vocab_size=32000, n_layers=32, max_len=4096, positions="rope", tied_embeddings=False,
        source="Touvron et al. 2023 (Llama 2); meta-llama/Llama-2-7b-hf config.json"),
    "Mixtral 8x7B": ModelConfig(
        name="Mixtral 8x7B", d_model=4096, n_heads=32, n_kv_heads=8, d_hidden=14336, norm="rmsnorm", ffn="swiglu",
        bias=False, n_experts=8, top_k=2, vocab_size=32000, n_layers=32, max_len=32768, positions="rope",
        tied_embeddings=False, source="Jiang et al. 2024 (Mixtral of Experts); mistralai/Mixtral-8x7B-v0.1 config.json"),
}


def as_dict(config: BlockConfig) -> dict:
    return asdict(config)


__all__ = ["PARTS", "BlockConfig", "ModelConfig", "count_parameters", "flops_per_token", "ffn_share",
           "config_table", "REAL_CONFIGS", "as_dict"]
