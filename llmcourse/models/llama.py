"""A LLaMA-style decoder, weight-compatible with ``transformers``' LLaMA (chapter 07).

What changes from GPT-2 (chapter 06 and 04 built the parts):

* **RMSNorm** instead of LayerNorm: no mean subtraction, no bias;
* **RoPE** instead of a learned position table: queries and keys are rotated
  inside attention, so nothing is added to the embeddings;
* **SwiGLU** MLP: ``down(silu(gate(x)) * up(x))``, no biases anywhere;
* **GQA**: ``n_kv_heads`` key/value heads shared by groups of query heads
  (``n_kv_heads = 1`` is MQA, as in ChatGLM2 with one group);
* an untied output layer (``lm_head``).

ChatGLM2-style variations are configuration choices: ``fused_qkv`` computes q, k
and v with one matrix (``qkv_proj``), ``fused_gate_up`` computes the SwiGLU gate
and up projections with one matrix (``gate_up_proj``). Fusing changes how the
weights are stored, not what is computed: :func:`fuse` concatenates the
matrices of an unfused model and the result gives the same logits.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.transformer.attention import KVCache, MultiHeadAttention, merge_heads, repeat_kv, scaled_dot_product_attention, \
    split_heads
from llmcourse.transformer.feedforward import SwiGLU
from llmcourse.models.generation import check_ids
from llmcourse.transformer.norms import RMSNorm
from llmcourse.transformer.positions import apply_rope, rope_frequencies


@dataclass
class LlamaStyleConfig:
    """The shape of a LLaMA-style decoder (defaults: a toy model, not a real LLaMA)."""

    vocab_size: int = 1000
    context_length: int = 256
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = n_heads (MHA); 1 = MQA; in between = GQA
    d_hidden: int = 344  # SwiGLU width; LLaMA uses about 8/3 d_model, rounded up
    eps: float = 1e-6
    rope_base: float = 10000.0
    tie_weights: bool = False
    fused_qkv: bool = False  # ChatGLM2: one query_key_value matrix
    fused_gate_up: bool = False  # ChatGLM2: one dense_h_to_4h matrix giving [gate | up]

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LlamaStyleConfig.{name} must be a whole number >= 1, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"incompatible LlamaStyleConfig: d_model={self.d_model} is not divisible by "
                             f"n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"incompatible LlamaStyleConfig: n_heads={self.n_heads} is not divisible by "
                             f"n_kv_heads={self.n_kv_heads} (each key/value head serves a whole group of query heads)")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"incompatible LlamaStyleConfig: head_dim={self.d_model // self.n_heads} is odd, "
                             f"but RoPE rotates pairs of coordinates")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class FusedQKVAttention(MultiHeadAttention):
    """Causal self-attention whose q, k, v come from one matrix ``qkv_proj`` with outputs [q | k | v]."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, bias: bool = False):
        super().__init__(d_model, n_heads, n_kv_heads, bias=bias)
        del self.q_proj, self.k_proj, self.v_proj
        self.qkv_proj = nn.Linear(d_model, (n_heads + 2 * self.n_kv_heads) * self.head_dim, bias=bias)

    def forward(self, x: Tensor, is_causal: bool = True,  # type: ignore[override]
                rope: tuple[Tensor, Tensor] | None = None, past_kv: KVCache | None = None, use_cache: bool = False):
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split([q_size, kv_size, kv_size], dim=-1)
        q, k, v = split_heads(q, self.n_heads), split_heads(k, self.n_kv_heads), split_heads(v, self.n_kv_heads)
        past_len = 0 if past_kv is None else past_kv[0].shape[-2]
        if rope is not None:
            q = apply_rope(q, *rope, positions=past_len)
            k = apply_rope(k, *rope, positions=past_len)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], dim=-2), torch.cat([past_kv[1], v], dim=-2)
        out = scaled_dot_product_attention(q, repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep), is_causal=is_causal)
        out = self.o_proj(merge_heads(out))
        return (out, (k, v)) if (use_cache or past_kv is not None) else out


class FusedSwiGLU(nn.Module):
    """SwiGLU with one matrix ``gate_up_proj`` whose outputs are [gate | up]."""

    def __init__(self, d_model: int, d_hidden: int, bias: bool = False):
        super().__init__()
        self.gate_up_proj = nn.Linear(d_model, 2 * d_hidden, bias=bias)
        self.down_proj = nn.Linear(d_hidden, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class LlamaBlock(nn.Module):
    """x + attn(rmsnorm(x)) with RoPE and GQA, then x + swiglu(rmsnorm(x))."""

    def __init__(self, config: LlamaStyleConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.d_model, eps=config.eps)
        attention = FusedQKVAttention if config.fused_qkv else MultiHeadAttention
        self.self_attn = attention(config.d_model, config.n_heads, config.n_kv_heads, bias=False)
        self.post_attention_layernorm = RMSNorm(config.d_model, eps=config.eps)
        self.mlp = (FusedSwiGLU if config.fused_gate_up else SwiGLU)(config.d_model, config.d_hidden)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], past_kv: KVCache | None = None,
                use_cache: bool = False):
        out = self.self_attn(self.input_layernorm(x), is_causal=True, rope=rope, past_kv=past_kv,
                             use_cache=use_cache)
        present = None
        if use_cache or past_kv is not None:
            out, present = out
        x = x + out
        return x + self.mlp(self.post_attention_layernorm(x)), present


class Llama(nn.Module):
    """LLaMA-style decoder: ids (batch, seq) -> next-token logits (batch, seq, vocab)."""

    def __init__(self, config: LlamaStyleConfig):
        super().__init__()
        self.config = config
        self.vocab_size, self.context_length = config.vocab_size, config.context_length
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(LlamaBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, eps=config.eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        cos, sin = rope_frequencies(config.head_dim, config.context_length, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        if config.tie_weights:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, ids: Tensor, past_kv: list[KVCache] | None = None, use_cache: bool = False):
        """Logits (batch, seq, vocab); with a cache, ``(logits, present_kv)`` (one (k, v) per layer)."""
        past_len = 0 if past_kv is None else past_kv[0][0].shape[-2]
        check_ids(ids, self.vocab_size)
        if past_len + ids.shape[1] > self.context_length:
            raise ValueError(f"sequence of {past_len + ids.shape[1]} tokens is longer than the context length "
                             f"{self.context_length} (the RoPE tables end there); shorten it")
        if past_kv is not None and len(past_kv) != len(self.layers):
            raise ValueError(f"past_kv has {len(past_kv)} layers but the model has {len(self.layers)}")
        x = self.embed_tokens(ids)
        caching = use_cache or past_kv is not None
        present = []
        for i, layer in enumerate(self.layers):
            x, layer_present = layer(x, (self.rope_cos, self.rope_sin), None if past_kv is None else past_kv[i],
                                     use_cache=caching)
            present.append(layer_present)
        logits = self.lm_head(self.norm(x))
        return (logits, present) if caching else logits

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------------------- from transformers

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> "Llama":
        """A :class:`Llama` with the weights of a ``transformers`` ``LlamaForCausalLM``."""
        cfg = hf_model.config
        rope_base = getattr(cfg, "rope_theta", None)
        if rope_base is None:
            params = getattr(cfg, "rope_parameters", None) or {}
            if params.get("rope_type", "default") != "default":
                raise ValueError(f"only plain RoPE is supported, not rope_type={params.get('rope_type')!r}")
            rope_base = params.get("rope_theta", 10000.0)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        if head_dim * cfg.num_attention_heads != cfg.hidden_size:
            raise ValueError("head_dim * num_attention_heads != hidden_size is not supported")
        if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False) or cfg.hidden_act != "silu":
            raise ValueError("only the plain LLaMA layout is supported (no biases, SiLU gate)")
        config = LlamaStyleConfig(
            vocab_size=cfg.vocab_size, context_length=cfg.max_position_embeddings, d_model=cfg.hidden_size,
            n_layers=cfg.num_hidden_layers, n_heads=cfg.num_attention_heads, n_kv_heads=cfg.num_key_value_heads,
            d_hidden=cfg.intermediate_size, eps=cfg.rms_norm_eps, rope_base=float(rope_base),
            tie_weights=bool(getattr(cfg, "tie_word_embeddings", False)))
        model = cls(config)
        state = {key.removeprefix("model."): value for key, value in hf_model.state_dict().items()
                 if "rotary_emb" not in key}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not (config.tie_weights and k == "lm_head.weight")]:
            raise ValueError(f"weights do not match: missing {missing}, unexpected {unexpected}")
        return model.eval()


def fuse(model: Llama, qkv: bool = True, gate_up: bool = True) -> Llama:
    """The same model with q/k/v (``qkv``) and/or gate/up (``gate_up``) stored as one concatenated matrix."""
    config = replace(model.config, fused_qkv=model.config.fused_qkv or qkv,
                     fused_gate_up=model.config.fused_gate_up or gate_up)
    fused = Llama(config)
    state = dict(model.state_dict())
    for i, layer in enumerate(model.layers):
        prefix = f"layers.{i}."
        if qkv and not model.config.fused_qkv:
            parts = [state.pop(prefix + f"self_attn.{name}_proj.weight") for name in "qkv"]
            state[prefix + "self_attn.qkv_proj.weight"] = torch.cat(parts, dim=0)
        if gate_up and not model.config.fused_gate_up:
            parts = [state.pop(prefix + f"mlp.{name}_proj.weight") for name in ("gate", "up")]
            state[prefix + "mlp.gate_up_proj.weight"] = torch.cat(parts, dim=0)
    fused.load_state_dict(state)
    return fused.train(model.training)


__all__ = ["LlamaStyleConfig", "FusedQKVAttention", "FusedSwiGLU", "LlamaBlock", "Llama", "fuse"]
