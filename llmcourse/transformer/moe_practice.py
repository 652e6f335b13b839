"""Mixture of experts in practice (chapter 06): shared experts, expert capacity, and what trained experts learn.

Three things that real MoE layers add to :mod:`llmcourse.transformer.moe`:

* **shared experts** (DeepSeekMoE, Dai et al. 2024): ``n_shared`` feed-forward networks that every token goes
  through, next to the routed ones, so the routed experts need not each relearn what all tokens need;
* **capacity** (GShard, Switch Transformer): an expert processes at most
  ``capacity = floor(capacity_factor * n_tokens * top_k / n_experts)`` tokens of a batch, so that every expert's
  work fits a fixed-size buffer. Assignments are served first choices first (all tokens' first choice in token
  order, then all second choices, ...); what does not fit is *dropped*: that expert adds nothing for the token,
  and a token whose every choice is dropped leaves the layer as zero, so in a block only the residual carries it;
* **specialisation**: a small MoE language model trained on the course's tokens of Python's documentation, and
  the tools to see which tokens each expert takes (:func:`token_kind`, :func:`routing_table`,
  :func:`mutual_information_bits`).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.transformer.attention import MultiHeadAttention
from llmcourse.transformer.feedforward import FFNS, make_ffn
from llmcourse.transformer.moe import MoE

# --------------------------------------------------------------------------- shared experts


class SharedExpertMoE(nn.Module):
    """``n_shared`` always-on experts plus a routed :class:`~llmcourse.transformer.moe.MoE`: forward -> (out, aux).

    ``out = sum_s shared_s(x) + routed(x)``; ``aux`` is the routed part's balancing loss.
    """

    def __init__(self, d_model: int, d_hidden: int, n_routed: int, top_k: int, n_shared: int = 1,
                 ffn: str = "swiglu"):
        super().__init__()
        if ffn not in FFNS:
            raise ValueError(f"unknown ffn {ffn!r}: choose one of {FFNS}")
        if n_shared < 0:
            raise ValueError(f"n_shared must be >= 0, got {n_shared}")
        self.shared = nn.ModuleList(make_ffn(ffn, d_model, d_hidden, bias=False) for _ in range(n_shared))
        self.routed = MoE(d_model, d_hidden, n_routed, top_k, ffn=ffn)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, aux = self.routed(x)
        for expert in self.shared:
            out = out + expert(x)
        return out, aux


def shared_moe_parameter_counts(d_model: int, d_hidden: int, n_routed: int, top_k: int, n_shared: int,
                                ffn: str = "swiglu") -> dict:
    """Parameters of one shared-expert MoE layer: ``total`` and ``active`` per token (router included)."""
    per_expert = (3 if ffn == "swiglu" else 2) * d_model * d_hidden
    router = d_model * n_routed
    return {"per_expert": per_expert, "router": router, "total": (n_routed + n_shared) * per_expert + router,
            "active": (top_k + n_shared) * per_expert + router}


# --------------------------------------------------------------------------- capacity and dropped tokens


def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """floor(capacity_factor * n_tokens * top_k / n_experts): the most tokens one expert takes from a batch."""
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor must be > 0, got {capacity_factor}")
    return int(math.floor(capacity_factor * n_tokens * top_k / n_experts + 1e-9))


def capacity_keep(indices: Tensor, n_experts: int, capacity_factor: float) -> Tensor:
    """(n_tokens, top_k) chosen experts -> (n_tokens, top_k) bool: which assignments fit their expert's capacity.

    Served in slot order, then token order: every token's first choice before any second choice. An expert keeps
    the first :func:`expert_capacity` assignments it is served and drops the rest.
    """
    n_tokens, top_k = indices.shape
    capacity = expert_capacity(n_tokens, n_experts, top_k, capacity_factor)
    queue = F.one_hot(indices.T.reshape(-1), n_experts)        # slot-major: (top_k * n_tokens, n_experts)
    place = (queue.cumsum(dim=0) * queue).sum(dim=-1)          # 1-based place in its expert's queue
    return (place <= capacity).reshape(top_k, n_tokens).T


def dropped_fraction(indices: Tensor, n_experts: int, capacity_factor: float) -> dict:
    """Shares of the assignments and of the tokens that are dropped (a token counts when ALL its choices are)."""
    keep = capacity_keep(indices, n_experts, capacity_factor)
    return {"assignments": float((~keep).float().mean()), "tokens": float((~keep.any(dim=-1)).float().mean()),
            "capacity": expert_capacity(indices.shape[0], n_experts, indices.shape[1], capacity_factor)}


def moe_with_capacity(moe: MoE, x: Tensor, capacity_factor: float | None) -> tuple[Tensor, Tensor]:
    """``moe``'s output when each expert takes at most its capacity; ``capacity_factor=None``: no limit.

    Returns ``(output, keep)``, ``keep`` the (tokens, top_k) mask of :func:`capacity_keep`. A dropped assignment
    adds nothing (the kept weights are not renormalised), as in GShard and the Switch Transformer.
    """
    flat = x.reshape(-1, x.shape[-1])
    weights, indices, _ = moe.router(flat)
    if capacity_factor is None:
        keep = torch.ones_like(indices, dtype=torch.bool)
    else:
        keep = capacity_keep(indices, moe.n_experts, capacity_factor)
    out = torch.zeros_like(flat)
    for e, expert in enumerate(moe.experts):
        token, slot = torch.where((indices == e) & keep)
        if token.numel():
            out = out.index_add(0, token, expert(flat[token]) * weights[token, slot, None])
    return out.reshape(x.shape), keep


# --------------------------------------------------------------------------- a tiny MoE language model


class TinyMoELM(nn.Module):
    """Token and position embeddings, one pre-norm block whose FFN is a (shared-expert) MoE, a final norm, a head.

    ``forward(ids) -> (logits, aux_loss)``; :meth:`routes` gives each position's chosen experts.
    """

    def __init__(self, vocab_size: int, d_model: int = 64, n_heads: int = 4, context: int = 64, d_hidden: int = 128,
                 n_experts: int = 8, top_k: int = 2, n_shared: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.norm1, self.norm2, self.final_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.moe = SharedExpertMoE(d_model, d_hidden, n_experts, top_k, n_shared=n_shared)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def _router_input(self, ids: Tensor) -> Tensor:
        x = self.embed(ids) + self.pos(torch.arange(ids.shape[-1], device=ids.device))
        x = x + self.attn(self.norm1(x), is_causal=True)
        return x

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        x = self._router_input(ids)
        out, aux = self.moe(self.norm2(x))
        return self.head(self.final_norm(x + out)), aux

    @torch.no_grad()
    def routes(self, ids: Tensor) -> Tensor:
        """(batch, seq) ids -> (batch, seq, top_k) chosen experts, first choice first."""
        h = self.norm2(self._router_input(ids))
        return self.moe.routed.router(h)[1]


def train_tiny_moe_lm(ids: Tensor, vocab_size: int, steps: int = 300, batch: int = 32, context: int = 64,
                      lr: float = 3e-3, aux_weight: float = 0.01, seed: int = 0,
                      on_step: Callable[[int, float], None] | None = None, **model_kwargs) -> tuple[TinyMoELM, list]:
    """Train a :class:`TinyMoELM` on random windows of ``ids`` (next-token loss + aux_weight * balancing loss).

    Returns ``(model in eval mode, language-modelling losses per step)``.
    """
    torch.manual_seed(seed)
    model = TinyMoELM(vocab_size, context=context, **model_kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed + 1)
    losses = []
    for step in range(steps):
        start = torch.randint(0, len(ids) - context - 1, (batch,), generator=generator)
        window = torch.stack([ids[s:s + context + 1] for s in start.tolist()])
        logits, aux = model(window[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), window[:, 1:].reshape(-1))
        opt.zero_grad()
        (loss + aux_weight * aux).backward()
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
    return model.eval(), losses


def first_choices(model: TinyMoELM, ids: Tensor, context: int = 64) -> Tensor:
    """Each token's first-choice expert, reading ``ids`` in consecutive windows of ``context`` tokens."""
    n = len(ids) // context * context
    return model.routes(ids[:n].reshape(-1, context))[..., 0].reshape(-1)


# --------------------------------------------------------------------------- what the experts take

KINDS = ("spaces & punctuation", "digits", "frequent words", "other words", "word pieces", "code names")


def token_kind(piece: str, frequent: set[str] = frozenset()) -> str:
    """One of :data:`KINDS` for a token's text.

    ``code names``: anything with ``_`` or a lower-then-upper letter pair (``snake_case``, ``camelCase``);
    ``frequent words``: a whole word (leading space) in ``frequent``; ``word pieces``: letters without a leading
    space (the middle or end of a word or identifier).
    """
    core = piece.strip()
    if not any(ch.isalnum() for ch in core):
        return "spaces & punctuation"
    if core.isdigit():
        return "digits"
    if "_" in core or re.search(r"[a-z][A-Z]", core):
        return "code names"
    if piece.startswith(" ") and core.isalpha():
        return "frequent words" if piece in frequent else "other words"
    return "word pieces"


def module_documentation(folder: str, n_chars: int = 40_000) -> str:
    """Up to ``n_chars`` of the docstrings of the standard library's ``folder`` (e.g. ``"email"``): one topic."""
    import ast
    import sysconfig
    from pathlib import Path

    from llmcourse.tokenizers.corpora import _docstrings, _read_source, _stdlib_files

    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in _stdlib_files():
        if path.relative_to(root).parts[0] != folder:
            continue
        source = _read_source(path)
        try:
            docs = list(_docstrings(ast.parse(source))) if source else []
        except (SyntaxError, ValueError):
            continue
        for doc in docs:
            parts.append(doc)
            size += len(doc) + 2
        if size >= n_chars:
            break
    return "\n\n".join(parts)[:n_chars]


def frequent_words(pieces: Sequence[str], n: int = 30) -> set[str]:
    """The ``n`` most common whole-word tokens (leading space, letters only) among ``pieces``."""
    words = Counter(p for p in pieces if p.startswith(" ") and p[1:].isalpha())
    return {w for w, _ in words.most_common(n)}


def routing_table(experts: Sequence[int], labels: Sequence[str], n_experts: int,
                  categories: Sequence[str] | None = None) -> tuple[list[str], Tensor]:
    """(categories, counts): counts[c, e] = how many tokens of category c went to expert e."""
    categories = list(categories) if categories is not None else sorted(set(labels))
    row = {c: i for i, c in enumerate(categories)}
    counts = torch.zeros(len(categories), n_experts, dtype=torch.long)
    for e, label in zip(experts, labels):
        counts[row[label], int(e)] += 1
    return categories, counts


def mutual_information_bits(counts: Tensor) -> float:
    """I(category; expert) in bits from a (categories, experts) table of counts."""
    p = counts.double() / counts.sum()
    outer = p.sum(dim=1, keepdim=True) * p.sum(dim=0, keepdim=True)
    nz = p > 0
    return float((p[nz] * torch.log2(p[nz] / outer[nz])).sum())


def top_tokens(experts: Sequence[int], pieces: Sequence[str], expert: int, n: int = 8) -> list[tuple[str, int]]:
    """The ``n`` tokens that ``expert`` takes most often (as first choice), with their counts."""
    return Counter(p for e, p in zip(experts, pieces) if int(e) == expert).most_common(n)


__all__ = ["SharedExpertMoE", "shared_moe_parameter_counts", "expert_capacity", "capacity_keep", "dropped_fraction",
           "moe_with_capacity", "TinyMoELM", "train_tiny_moe_lm", "first_choices", "KINDS", "token_kind",
           "module_documentation", "frequent_words", "routing_table", "mutual_information_bits", "top_tokens"]
