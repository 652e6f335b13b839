"""GPT: a decoder-only Transformer in one file, weight-compatible with GPT-2 (chapter 07).

Read top to bottom:

1. :class:`GPTConfig`: the handful of numbers that define the model;
2. :class:`Block`: pre-norm residual block, x + attn(ln_1(x)), then x + mlp(ln_2(x));
3. :class:`GPT`: token embedding + learned positions, n_layers blocks, a final
   LayerNorm and the output layer (tied to the token embedding, as in GPT-2);
4. :meth:`GPT.from_hf`: copy the weights of a ``transformers`` GPT-2 model.
   GPT-2 stores its projections in ``Conv1D`` layers whose weight is (in, out),
   the transpose of ``nn.Linear``'s (out, in), and fuses q, k, v into one
   ``c_attn`` projection that we split.

The forward pass takes token ids (batch, seq) and returns logits (batch, seq,
vocab). With ``use_cache=True`` (or a ``past_kv``) it also returns every layer's
keys and values, for :func:`llmcourse.models.generation.generate`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.transformer.attention import KVCache, MultiHeadAttention
from llmcourse.transformer.feedforward import FeedForward
from llmcourse.models.generation import check_ids
from llmcourse.transformer.norms import LayerNorm
from llmcourse.transformer.positions import LearnedPositions


class FusedLayerNorm(LayerNorm):
    """Chapter 06's :class:`~llmcourse.transformer.norms.LayerNorm` (same parameters, same formula) run by PyTorch's fused
    kernel, which is several times faster than the step-by-step version, notably in training. It prints as
    ``LayerNorm``: it is that layer."""

    def _get_name(self) -> str:
        return "LayerNorm"

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(f"LayerNorm({self.d_model}) got input with last dimension {x.shape[-1]}")
        return F.layer_norm(x, (self.d_model,), self.weight, self.bias, self.eps)


@dataclass
class GPTConfig:
    """The shape of a GPT. Defaults are GPT-2 small (124M parameters)."""

    vocab_size: int = 50257
    context_length: int = 1024
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    dropout: float = 0.0
    bias: bool = True
    eps: float = 1e-5
    activation: str = "gelu_tanh"  # GPT-2's "gelu_new"
    tie_weights: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a whole number >= 1, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"incompatible GPTConfig: d_model={self.d_model} is not divisible by "
                             f"n_heads={self.n_heads} (each head gets d_model / n_heads features)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")


class Block(nn.Module):
    """One pre-norm decoder block: causal self-attention and an MLP, each inside a residual connection."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = FusedLayerNorm(config.d_model, eps=config.eps, bias=config.bias)
        self.attn = MultiHeadAttention(config.d_model, config.n_heads, bias=config.bias, dropout=config.dropout)
        self.ln_2 = FusedLayerNorm(config.d_model, eps=config.eps, bias=config.bias)
        self.mlp = FeedForward(config.d_model, 4 * config.d_model, activation=config.activation, bias=config.bias,
                               dropout=config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, past_kv: KVCache | None = None, use_cache: bool = False):
        out = self.attn(self.ln_1(x), is_causal=True, past_kv=past_kv, use_cache=use_cache)
        present = None
        if use_cache or past_kv is not None:
            out, present = out
        x = x + self.resid_dropout(out)
        x = x + self.mlp(self.ln_2(x))
        return x, present


class GPT(nn.Module):
    """Decoder-only Transformer: ids (batch, seq) -> next-token logits (batch, seq, vocab)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.vocab_size, self.context_length = config.vocab_size, config.context_length
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = LearnedPositions(config.context_length, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = FusedLayerNorm(config.d_model, eps=config.eps, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight  # one matrix both reads and writes tokens

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: Tensor, past_kv: list[KVCache] | None = None, use_cache: bool = False):
        """Logits (batch, seq, vocab); with a cache, ``(logits, present_kv)`` (one (k, v) per layer)."""
        past_len = 0 if past_kv is None else past_kv[0][0].shape[-2]
        check_ids(ids, self.vocab_size)
        if past_len + ids.shape[1] > self.context_length:
            raise ValueError(f"sequence of {past_len + ids.shape[1]} tokens is longer than the context length "
                             f"{self.context_length} (GPT's learned position table has no row for position "
                             f"{self.context_length}); shorten it")
        if past_kv is not None and len(past_kv) != len(self.blocks):
            raise ValueError(f"past_kv has {len(past_kv)} layers but the model has {len(self.blocks)}")
        x = self.drop(self.wpe(self.wte(ids), offset=past_len))
        caching = use_cache or past_kv is not None
        present = []
        for i, block in enumerate(self.blocks):
            x, layer_present = block(x, None if past_kv is None else past_kv[i], use_cache=caching)
            present.append(layer_present)
        logits = self.lm_head(self.ln_f(x))
        return (logits, present) if caching else logits

    def hidden_states(self, ids: Tensor) -> Tensor:
        """The final LayerNorm's output (batch, seq, d_model): what ``lm_head`` turns into logits.

        Fine-tuning heads (a classifier, a reward model) read these vectors
        instead of the next-token logits.
        """
        check_ids(ids, self.vocab_size, self.context_length)
        x = self.drop(self.wpe(self.wte(ids)))
        for block in self.blocks:
            x, _ = block(x)
        return self.ln_f(x)

    def num_parameters(self, include_embeddings: bool = True) -> int:
        """Parameters counted once (the tied output matrix is the token embedding)."""
        total = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            total -= self.wte.weight.numel() + self.wpe.table.weight.numel()
        return total

    # ----------------------------------------------------------------------- from transformers

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> "GPT":
        """A GPT with the weights of a ``transformers`` ``GPT2LMHeadModel`` (or ``GPT2Model``)."""
        cfg = hf_model.config
        activations = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
        if cfg.activation_function not in activations:
            raise ValueError(f"GPT-2 activation {cfg.activation_function!r} is not supported; "
                             f"one of {sorted(activations)}")
        config = GPTConfig(vocab_size=cfg.vocab_size, context_length=cfg.n_positions, d_model=cfg.n_embd,
                           n_layers=cfg.n_layer, n_heads=cfg.n_head, eps=cfg.layer_norm_epsilon,
                           activation=activations[cfg.activation_function],
                           tie_weights=bool(getattr(cfg, "tie_word_embeddings", True)))
        model = cls(config)
        hf = getattr(hf_model, "transformer", hf_model)
        d = config.d_model
        with torch.no_grad():
            model.wte.weight.copy_(hf.wte.weight)
            model.wpe.table.weight.copy_(hf.wpe.weight)
            for block, hf_block in zip(model.blocks, hf.h):
                for ours, theirs in [(block.ln_1, hf_block.ln_1), (block.ln_2, hf_block.ln_2)]:
                    ours.weight.copy_(theirs.weight)
                    ours.bias.copy_(theirs.bias)
                # Conv1D keeps weight as (in, out): transpose for nn.Linear. c_attn's outputs are [q | k | v].
                w_qkv, b_qkv = hf_block.attn.c_attn.weight.t(), hf_block.attn.c_attn.bias
                for i, proj in enumerate([block.attn.q_proj, block.attn.k_proj, block.attn.v_proj]):
                    proj.weight.copy_(w_qkv[i * d:(i + 1) * d])
                    proj.bias.copy_(b_qkv[i * d:(i + 1) * d])
                pairs = [(block.attn.o_proj, hf_block.attn.c_proj), (block.mlp.up, hf_block.mlp.c_fc),
                         (block.mlp.down, hf_block.mlp.c_proj)]
                for ours, theirs in pairs:
                    ours.weight.copy_(theirs.weight.t())
                    ours.bias.copy_(theirs.bias)
            model.ln_f.weight.copy_(hf.ln_f.weight)
            model.ln_f.bias.copy_(hf.ln_f.bias)
            if not config.tie_weights:
                model.lm_head.weight.copy_(hf_model.lm_head.weight)
        return model.eval()

    def config_dict(self) -> dict:
        return asdict(self.config)


__all__ = ["GPTConfig", "FusedLayerNorm", "Block", "GPT"]
