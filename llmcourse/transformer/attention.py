"""Attention: scores, scaling, masks, heads, and the KV cache (chapter 05).

Read top to bottom:

1. one query at a time (:func:`attend_one`): score every key, softmax, mix the values;
2. all queries at once (:func:`scaled_dot_product_attention`):
   softmax(Q K^T / sqrt(d_k) + bias, masked) V;
3. the causal mask (:func:`causal_mask`): a token may look at itself and the past;
4. heads (:func:`split_heads`, :func:`merge_heads`): one big projection, sliced;
5. :class:`MultiHeadAttention`: MHA (n_kv_heads = n_heads), GQA (fewer key/value
   heads, each shared by a group of query heads) and MQA (n_kv_heads = 1), with
   optional RoPE, causal masking, a KV cache and cross-attention (``context=``);
6. converting weights: from ``nn.MultiheadAttention`` and from MHA to GQA;
7. the KV cache's size per token for real models (:data:`MODEL_SHAPES`).

Shapes: (batch, heads, seq, head_dim) for per-head tensors and (batch, seq,
d_model) for a layer's input and output. Masks are boolean with True = "may
attend", like ``torch.nn.functional.scaled_dot_product_attention``'s
``attn_mask`` (and the opposite of ``nn.MultiheadAttention``'s bool masks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.basics.activations import softmax
from llmcourse.transformer.positions import apply_rope

KVCache = tuple[Tensor, Tensor]  # (keys, values), each (batch, n_kv_heads, past_len, head_dim)

# --------------------------------------------------------------------------- one query, step by step


def attend_one(query: Tensor, keys: Tensor, values: Tensor, scale: bool = True) -> tuple[Tensor, Tensor]:
    """Attention for a single query (d_k,) over n keys (n, d_k) and values (n, d_v): (weights (n,), output (d_v,)).

    Step 1: a score per key, the dot product query·key_j (divided by sqrt(d_k)).
    Step 2: softmax turns the scores into weights that are positive and sum to 1.
    Step 3: the output is the weighted sum of the value vectors.
    """
    if query.dim() != 1 or keys.dim() != 2 or values.dim() != 2:
        raise ValueError(f"expected query (d_k,), keys (n, d_k), values (n, d_v); got {tuple(query.shape)}, "
                         f"{tuple(keys.shape)}, {tuple(values.shape)}")
    if keys.shape[1] != query.shape[0]:
        raise ValueError(f"query has d_k={query.shape[0]} but keys have d_k={keys.shape[1]}")
    if keys.shape[0] != values.shape[0]:
        raise ValueError(f"{keys.shape[0]} keys but {values.shape[0]} values: need one value per key")
    scores = torch.stack([torch.dot(query, key) for key in keys])
    if scale:
        scores = scores / math.sqrt(query.shape[0])
    weights = softmax(scores, dim=0)
    output = sum(w * v for w, v in zip(weights, values))
    return weights, output


# --------------------------------------------------------------------------- all queries at once


def attention_scores(q: Tensor, k: Tensor, scale: bool = True) -> Tensor:
    """Q K^T (optionally / sqrt(d_k)): every query's dot product with every key, shape (..., q_len, k_len)."""
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"query head_dim {q.shape[-1]} does not match key head_dim {k.shape[-1]}: "
                         f"q·k needs vectors of the same length")
    scores = q @ k.transpose(-2, -1)
    return scores / math.sqrt(q.shape[-1]) if scale else scores


def causal_mask(seq_len: int, k_len: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """Bool (seq_len, k_len) matrix, True where query i may attend to key j: j <= i (lower triangle).

    With ``k_len > seq_len`` (new queries after a KV cache) the queries are the
    last ``seq_len`` positions, so query i sits at position k_len - seq_len + i.
    """
    k_len = seq_len if k_len is None else k_len
    query_pos = torch.arange(k_len - seq_len, k_len, device=device)[:, None]
    key_pos = torch.arange(k_len, device=device)[None, :]
    return key_pos <= query_pos


def _check_broadcast(name: str, t: Tensor, target: tuple[int, ...]) -> None:
    try:
        ok = torch.broadcast_shapes(t.shape, target) == torch.Size(target)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to the attention scores' shape "
                         f"{target} = (batch, heads, q_len, k_len)")


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                                 is_causal: bool = False, bias: Tensor | None = None,
                                 return_weights: bool = False, scale: float | None = None,
                                 dropout: float = 0.0, training: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d_k) + bias) V with q (..., q_len, d_k), k (..., k_len, d_k), v (..., k_len, d_v).

    ``mask``: bool, True = may attend (or a float tensor that is added to the
    scores, as torch does); must broadcast to (..., q_len, k_len).
    ``is_causal``: also hide the future (see :func:`causal_mask`; torch aligns the
    triangle to the top-left when q_len != k_len, we align it to the bottom-right).
    ``bias``: added to the scores (e.g. ALiBi). A query that may attend to
    nothing gets all-zero weights and a zero output, as in torch.
    Returns the output, or (output, weights) with ``return_weights=True``.
    """
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(f"q, k, v must have the same number of dimensions (>= 2), got shapes {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.dim() == 4 and k.shape[1] != q.shape[1]:
        raise ValueError(f"query has {q.shape[1]} heads but key/value have {k.shape[1]}; for grouped-query "
                         f"attention repeat the key/value heads first with repeat_kv(k, n_heads // n_kv_heads)")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{k.shape[-2]} keys but {v.shape[-2]} values: need one value per key")
    scores = attention_scores(q, k, scale=False) * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    target = tuple(scores.shape)
    if bias is not None:
        _check_broadcast("bias", bias, target)
        scores = scores + bias
    if mask is not None:
        _check_broadcast("mask", mask, target)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    if is_causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], device=q.device), float("-inf"))
    no_key = scores.amax(dim=-1, keepdim=True) == float("-inf")  # rows where every key is hidden
    weights = torch.softmax(scores.masked_fill(no_key, 0.0), dim=-1).masked_fill(no_key, 0.0)
    if dropout > 0.0 and training:
        weights = F.dropout(weights, p=dropout)
    out = weights @ v
    return (out, weights) if return_weights else out


def _fused_attention(q: Tensor, k: Tensor, v: Tensor, is_causal: bool, dropout: float) -> Tensor:
    """:func:`scaled_dot_product_attention` without a mask or weights, by ``F.scaled_dot_product_attention``.

    torch's ``is_causal`` aligns the triangle top-left; ours is bottom-right (new
    queries after a KV cache are the last positions), so q_len < k_len gets an
    explicit mask, and a single new query needs none.
    """
    q_len, k_len = q.shape[-2], k.shape[-2]
    if not is_causal or q_len == 1:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    if q_len == k_len:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(q_len, k_len, device=q.device),
                                          dropout_p=dropout)


# --------------------------------------------------------------------------- heads


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(batch, seq, n_heads * head_dim) -> (batch, n_heads, seq, head_dim): head h gets slice h of the features."""
    batch, seq, d = x.shape
    if d % n_heads:
        raise ValueError(f"feature size {d} is not divisible by n_heads={n_heads}")
    return x.view(batch, seq, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(batch, heads, seq, head_dim) -> (batch, seq, heads * head_dim): concatenate the heads' outputs."""
    batch, heads, seq, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, seq, heads * head_dim)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(batch, n_kv_heads, seq, head_dim) -> (batch, n_kv_heads * n_rep, seq, head_dim).

    Each key/value head is repeated for the n_rep query heads of its group:
    query head h uses key/value head h // n_rep.
    """
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


# --------------------------------------------------------------------------- the module


class MultiHeadAttention(nn.Module):
    """Multi-head attention with n_heads query heads and n_kv_heads key/value heads.

    * MHA: ``n_kv_heads = n_heads`` (the default), every head has its own keys and values;
    * GQA: ``1 < n_kv_heads < n_heads``, groups of n_heads // n_kv_heads query heads share one;
    * MQA: ``n_kv_heads = 1``, all query heads share a single key/value head.

    Separate projections ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` (named as in
    LLaMA). Call ``forward(x)`` for self-attention or ``forward(x, context)`` for
    cross-attention (keys and values from ``context``).
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None = None, bias: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_heads < 1 or n_kv_heads < 1:
            raise ValueError(f"n_heads and n_kv_heads must be >= 1, got {n_heads} and {n_kv_heads}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}: "
                             f"each head needs head_dim = d_model / n_heads features")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}: "
                             f"each key/value head must serve a whole group of query heads")
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.n_rep = n_heads // n_kv_heads  # query heads per key/value head
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)

    def _project(self, x: Tensor, source: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries from ``x``, keys and values from ``source``.

        While training self-attention, the three matrices are applied as one
        stacked matrix: one large matrix product is faster than three small ones,
        and the result is the same. Wrapped projections (e.g. LoRA) and inference
        take the plain path.
        """
        projections = (self.q_proj, self.k_proj, self.v_proj)
        plain = all(type(p) is nn.Linear for p in projections)
        biases = [p.bias for p in projections] if plain else []
        if plain and source is x and torch.is_grad_enabled() and len({b is None for b in biases}) == 1:
            weight = torch.cat([p.weight for p in projections])
            bias = None if biases[0] is None else torch.cat(biases)
            sizes = [p.out_features for p in projections]
            q, k, v = F.linear(x, weight, bias).split(sizes, dim=-1)
            return q, k, v
        return self.q_proj(x), self.k_proj(source), self.v_proj(source)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None,
                is_causal: bool = False, rope: tuple[Tensor, Tensor] | None = None,
                past_kv: KVCache | None = None, use_cache: bool = False,
                return_weights: bool = False):
        """x (batch, seq, d_model) -> out (batch, seq, d_model).

        ``context``: keys/values come from this (batch, ctx_len, d_model) instead of x.
        ``mask``: bool, True = may attend, broadcastable to (batch, n_heads, seq, k_len).
        ``rope``: (cos, sin) tables from :func:`~llmcourse.transformer.positions.rope_frequencies`;
        positions continue after ``past_kv``, whose keys are already rotated.
        ``past_kv``/``use_cache``: keys and values of earlier tokens; when given or
        asked for, ``present_kv`` (all keys and values so far) is returned too.

        Returns ``out``, then ``present_kv`` if caching, then the attention
        weights (batch, n_heads, seq, k_len) if ``return_weights``.
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (batch, seq, d_model={self.d_model}), got {tuple(x.shape)}")
        source = x if context is None else context
        if context is not None and (rope is not None or is_causal):
            raise ValueError("cross-attention (context=...) takes neither rope nor is_causal: "
                             "queries and keys come from different sequences")
        q, k, v = self._project(x, source)
        q = split_heads(q, self.n_heads)        # (batch, n_heads, seq, head_dim)
        k = split_heads(k, self.n_kv_heads)     # (batch, n_kv_heads, k_len, head_dim)
        v = split_heads(v, self.n_kv_heads)
        past_len = 0 if past_kv is None else past_kv[0].shape[-2]
        if rope is not None:
            cos, sin = rope
            q = apply_rope(q, cos, sin, positions=past_len)
            k = apply_rope(k, cos, sin, positions=past_len)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=-2)
            v = torch.cat([past_kv[1], v], dim=-2)
        present_kv = (k, v)
        weights = None
        if return_weights or mask is not None:
            out, weights = scaled_dot_product_attention(
                q, repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep), mask=mask, is_causal=is_causal,
                return_weights=True, dropout=self.dropout, training=self.training)
        else:  # the same computation in PyTorch's fused kernel (no weights matrix kept for us to return)
            out = _fused_attention(q, repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep), is_causal,
                                   self.dropout if self.training else 0.0)
        out = self.o_proj(merge_heads(out))
        results: tuple = (out,)
        if use_cache or past_kv is not None:
            results += (present_kv,)
        if return_weights:
            results += (weights,)
        return results[0] if len(results) == 1 else results


class CrossAttention(MultiHeadAttention):
    """Queries from one sequence (e.g. the decoder), keys and values from another (e.g. the encoder's output)."""

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None,  # type: ignore[override]
                return_weights: bool = False):
        """x (batch, seq, d_model) attends over context (batch, ctx_len, d_model)."""
        if context is None:
            raise ValueError("CrossAttention needs a context to attend to")
        return super().forward(x, context=context, mask=mask, return_weights=return_weights)


# --------------------------------------------------------------------------- converting weights


def load_from_torch_mha(torch_mha: nn.MultiheadAttention) -> MultiHeadAttention:
    """A :class:`MultiHeadAttention` with the same weights as ``torch_mha`` (its in_proj split into q, k, v)."""
    if not torch_mha._qkv_same_embed_dim or torch_mha.bias_k is not None or torch_mha.add_zero_attn:
        raise ValueError("only nn.MultiheadAttention with kdim = vdim = embed_dim, no add_bias_kv and no "
                         "add_zero_attn can be converted")
    d, h = torch_mha.embed_dim, torch_mha.num_heads
    has_bias = torch_mha.in_proj_bias is not None
    mha = MultiHeadAttention(d, h, bias=has_bias, dropout=torch_mha.dropout)
    mha = mha.to(device=torch_mha.in_proj_weight.device, dtype=torch_mha.in_proj_weight.dtype)
    with torch.no_grad():
        for i, proj in enumerate((mha.q_proj, mha.k_proj, mha.v_proj)):  # in_proj stacks [W_q; W_k; W_v]
            proj.weight.copy_(torch_mha.in_proj_weight[i * d:(i + 1) * d])
            if has_bias:
                proj.bias.copy_(torch_mha.in_proj_bias[i * d:(i + 1) * d])
        mha.o_proj.weight.copy_(torch_mha.out_proj.weight)
        if has_bias:
            mha.o_proj.bias.copy_(torch_mha.out_proj.bias)
    return mha


def mha_to_gqa(module: MultiHeadAttention, n_kv_heads: int) -> MultiHeadAttention:
    """A GQA copy of ``module`` with ``n_kv_heads`` key/value heads (the GQA paper's "uptraining" start).

    Query and output projections are copied; the key (and value) projection of
    each new head is the mean of the projections of the heads in its group.
    With n_kv_heads equal to the current count nothing changes.
    """
    if module.n_kv_heads % n_kv_heads:
        raise ValueError(f"the module's {module.n_kv_heads} key/value heads cannot be split into "
                         f"{n_kv_heads} equal groups")
    has_bias = module.q_proj.bias is not None
    weight = module.q_proj.weight
    gqa = MultiHeadAttention(module.d_model, module.n_heads, n_kv_heads, bias=has_bias, dropout=module.dropout)
    gqa = gqa.to(device=weight.device, dtype=weight.dtype)
    group = module.n_kv_heads // n_kv_heads
    with torch.no_grad():
        gqa.q_proj.load_state_dict(module.q_proj.state_dict())
        gqa.o_proj.load_state_dict(module.o_proj.state_dict())
        for old, new in ((module.k_proj, gqa.k_proj), (module.v_proj, gqa.v_proj)):
            # rows of the weight are (head, head_dim) flattened: average the heads of each group
            w = old.weight.view(n_kv_heads, group, module.head_dim, module.d_model).mean(dim=1)
            new.weight.copy_(w.reshape(n_kv_heads * module.head_dim, module.d_model))
            if has_bias:
                new.bias.copy_(old.bias.view(n_kv_heads, group, module.head_dim).mean(dim=1).flatten())
    return gqa


# --------------------------------------------------------------------------- why divide by sqrt(d_k)


def dot_product_spread(d_k_values: list[int] | tuple[int, ...], n_keys: int = 16, n_samples: int = 2000,
                       seed: int = 0) -> dict[str, list[float]]:
    """For unit-variance random q and k: the variance of q·k with and without / sqrt(d_k), and how peaked softmax gets.

    Returns lists, one entry per d_k: ``var_raw`` (about d_k), ``var_scaled``
    (about 1), ``max_weight_raw`` and ``max_weight_scaled`` (the mean largest
    softmax weight over ``n_keys`` keys; near 1 means softmax has saturated).
    """
    generator = torch.Generator().manual_seed(seed)
    result: dict[str, list[float]] = {"d_k": [], "var_raw": [], "var_scaled": [],
                                      "max_weight_raw": [], "max_weight_scaled": []}
    for d_k in d_k_values:
        q = torch.randn(n_samples, 1, d_k, generator=generator)
        k = torch.randn(n_samples, n_keys, d_k, generator=generator)
        raw = (q @ k.transpose(-2, -1)).squeeze(1)  # (n_samples, n_keys)
        scaled = raw / math.sqrt(d_k)
        result["d_k"].append(d_k)
        result["var_raw"].append(raw.var().item())
        result["var_scaled"].append(scaled.var().item())
        result["max_weight_raw"].append(torch.softmax(raw, -1).amax(-1).mean().item())
        result["max_weight_scaled"].append(torch.softmax(scaled, -1).amax(-1).mean().item())
    return result


# --------------------------------------------------------------------------- KV-cache size


def kv_cache_bytes_per_token(n_layers: int, n_kv_heads: int, head_dim: int, bytes_per_value: int = 2) -> int:
    """Bytes the KV cache grows by per token: 2 (a key and a value) x layers x kv heads x head_dim x bytes."""
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_value


@dataclass(frozen=True)
class ModelShape:
    """The attention shape of a published model, with where the numbers come from."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    source: str

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kind(self) -> str:
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else "GQA"

    def kv_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        return kv_cache_bytes_per_token(self.n_layers, self.n_kv_heads, self.head_dim, bytes_per_value)


MODEL_SHAPES: dict[str, ModelShape] = {
    "GPT-2 small": ModelShape(12, 12, 12, 768, "Radford et al. 2019; openai-community/gpt2 config.json"),
    "GPT-2 XL": ModelShape(48, 25, 25, 1600, "Radford et al. 2019; openai-community/gpt2-xl config.json"),
    "LLaMA-2 7B": ModelShape(32, 32, 32, 4096, "Touvron et al. 2023 (Llama 2); meta-llama/Llama-2-7b-hf config.json"),
    "LLaMA-2 13B": ModelShape(40, 40, 40, 5120, "Touvron et al. 2023 (Llama 2); meta-llama/Llama-2-13b-hf config.json"),
    "LLaMA-2 70B": ModelShape(80, 64, 8, 8192, "Touvron et al. 2023 (Llama 2); meta-llama/Llama-2-70b-hf config.json"),
    "Mistral 7B": ModelShape(32, 32, 8, 4096, "Jiang et al. 2023 (Mistral 7B), Table 1"),
    "LLaMA-3 8B": ModelShape(32, 32, 8, 4096, "meta-llama/Meta-Llama-3-8B config.json"),
    "Falcon 7B": ModelShape(32, 71, 1, 4544, "tiiuae/falcon-7b config.json (multi_query)"),
    "ChatGLM2-6B": ModelShape(28, 32, 2, 4096, "THUDM/chatglm2-6b config.json (multi_query_group_num = 2)"),
}


def kv_cache_table(context_len: int = 4096, bytes_per_value: int = 2,
                   shapes: dict[str, ModelShape] | None = None) -> list[dict]:
    """One row per model: kind, kv heads, bytes per token and GiB for one sequence of ``context_len`` tokens."""
    rows = []
    for name, shape in (MODEL_SHAPES if shapes is None else shapes).items():
        per_token = shape.kv_bytes_per_token(bytes_per_value)
        rows.append({"model": name, "kind": shape.kind, "n_layers": shape.n_layers, "n_heads": shape.n_heads,
                     "n_kv_heads": shape.n_kv_heads, "head_dim": shape.head_dim, "bytes_per_token": per_token,
                     "gib_at_context": per_token * context_len / 2**30, "context_len": context_len})
    return rows


__all__ = [
    "attend_one", "attention_scores", "causal_mask", "scaled_dot_product_attention",
    "split_heads", "merge_heads", "repeat_kv", "MultiHeadAttention", "CrossAttention",
    "load_from_torch_mha", "mha_to_gqa", "dot_product_spread",
    "kv_cache_bytes_per_token", "ModelShape", "MODEL_SHAPES", "kv_cache_table", "KVCache",
]
