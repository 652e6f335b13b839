"""Position information: sinusoidal, learned, rotary (RoPE) and ALiBi (chapter 04).

Attention by itself treats its input as a bag of vectors: shuffle the tokens and
each output is shuffled the same way. Four ways to tell the model where each
token sits:

* **sinusoidal** (the original Transformer): a fixed table of sines and cosines
  added to the token embeddings. Nothing in it is learned. ``PE(pos + k)`` is a
  fixed rotation of ``PE(pos)`` (:func:`relative_shift_matrix`).
* **learned** (GPT-2, BERT): a trainable table with one row per position,
  also added to the embeddings; it has no row past ``max_len``.
* **RoPE** (LLaMA, Mistral): rotate each pair of query/key coordinates by an
  angle proportional to the position, inside attention. The rotation keeps
  lengths, and ``q·k`` then depends only on the distance between the two tokens.
* **ALiBi** (BLOOM): add ``-slope * distance`` to the attention scores, with one
  slope per head; nothing is added to the embeddings.

Conventions: a position table has shape (n_positions, d_model), one row per
position; RoPE acts on x of shape (batch, heads, seq, head_dim).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# --------------------------------------------------------------------------- sinusoidal


def sinusoidal_frequencies(d_model: int, base: float = 10000.0) -> Tensor:
    """The d_model/2 fixed angular frequencies w_i = base^(-2i/d_model), i = 0 .. d_model/2 - 1.

    Wavelengths 2*pi/w_i grow geometrically from 2*pi to almost 2*pi*base.
    """
    if d_model <= 0 or d_model % 2:
        raise ValueError(f"d_model must be a positive even number (sin/cos pairs), got {d_model}")
    return base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)


def sinusoidal_encoding(n_positions: int, d_model: int, base: float = 10000.0) -> Tensor:
    """The fixed table PE (n_positions, d_model): PE[pos, 2i] = sin(pos*w_i), PE[pos, 2i+1] = cos(pos*w_i)."""
    if n_positions < 0:
        raise ValueError(f"n_positions must be >= 0, got {n_positions}")
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] * sinusoidal_frequencies(d_model, base)
    pe = torch.empty(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.float()


def relative_shift_matrix(k: int | float, d_model: int, base: float = 10000.0) -> Tensor:
    """The fixed (d_model, d_model) matrix M_k with PE(pos + k) = PE(pos) @ M_k for every pos.

    Row-vector convention, as in the table: ``sinusoidal_encoding(n, d)[pos] @ M_k``.
    M_k is block diagonal; the 2x2 block of pair i is the rotation by angle k*w_i::

        [[ cos(k w_i), -sin(k w_i)],
         [ sin(k w_i),  cos(k w_i)]]

    (it follows from sin(a+b) = sin a cos b + cos a sin b and cos(a+b) = cos a cos b - sin a sin b).
    M_k does not depend on pos: a shift by k is the same linear map everywhere.
    For column vectors use the transpose, PE(pos + k) = M_k.T @ PE(pos).
    """
    angles = k * sinusoidal_frequencies(d_model, base)
    cos, sin = torch.cos(angles), torch.sin(angles)
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    even = torch.arange(0, d_model, 2)
    m[even, even] = cos
    m[even, even + 1] = -sin
    m[even + 1, even] = sin
    m[even + 1, even + 1] = cos
    return m.float()


# --------------------------------------------------------------------------- learned


class LearnedPositions(nn.Module):
    """A trainable position table (max_len, d_model), added to token embeddings (GPT-2, BERT).

    ``forward(x)`` returns ``x + table[offset : offset + seq]`` for x of shape
    (batch, seq, d_model). The table has no row beyond ``max_len - 1``, so longer
    sequences raise a ``ValueError``: unlike sines, a learned table cannot extend.
    """

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.max_len = max_len
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=0.02)  # GPT-2's initialisation

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        seq_len = x.shape[-2]
        if offset < 0 or offset + seq_len > self.max_len:
            raise ValueError(
                f"sequence needs positions {offset}..{offset + seq_len - 1} but the learned position table has "
                f"only max_len={self.max_len} rows (positions 0..{self.max_len - 1}); it cannot go further")
        positions = torch.arange(offset, offset + seq_len, device=x.device)
        return x + self.table(positions)


# --------------------------------------------------------------------------- RoPE


def rope_frequencies(head_dim: int, max_len: int, base: float = 10000.0,
                     dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """RoPE's (cos, sin) tables, each (max_len, head_dim), in the "rotate_half" layout.

    Pair i rotates by angle pos * theta_i with theta_i = base^(-2i/head_dim),
    i = 0 .. head_dim/2 - 1. Column j and column j + head_dim/2 hold the same
    angle, as in LLaMA's code: ``cos[pos] = [cos(pos*theta), cos(pos*theta)]``.
    """
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even number (pairs of coordinates), got {head_dim}")
    work = torch.float64 if dtype == torch.float64 else torch.float32  # float32 exactly as LLaMA's code does it
    theta = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=work) / head_dim))
    angles = torch.arange(max_len, dtype=work)[:, None] * theta  # (max_len, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90-degree turn of each pair (j, j+half)."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, positions: Tensor | int | None = None,
               interleaved: bool = False) -> Tensor:
    """Rotate queries or keys ``x`` (batch, heads, seq, head_dim) by their positions.

    ``positions``: None means 0..seq-1; an int means offset..offset+seq-1 (after
    a KV cache); a tensor (seq,) or (batch, seq) gives each token's position.

    Two conventions pair the coordinates differently; both rotate every pair by
    pos * theta_i, so they are the same method up to a fixed reordering of the
    head dimensions (and of the projection weights that produce them):

    * ``interleaved=False`` (LLaMA in ``transformers``, the default): pair i is
      coordinates (i, i + head_dim/2); ``x*cos + rotate_half(x)*sin``.
    * ``interleaved=True`` (the RoFormer paper, Meta's original LLaMA code): pair
      i is coordinates (2i, 2i+1).
    """
    if x.dim() != 4:
        raise ValueError(f"apply_rope expects x of shape (batch, heads, seq, head_dim), got {tuple(x.shape)}")
    seq_len, head_dim = x.shape[-2], x.shape[-1]
    if cos.shape != sin.shape or cos.dim() != 2 or cos.shape[-1] != head_dim:
        raise ValueError(f"cos and sin must both be (max_len, head_dim={head_dim}) tables, "
                         f"got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if positions is None or isinstance(positions, int):
        start = positions or 0
        positions = torch.arange(start, start + seq_len, device=x.device)
    if positions.shape[-1] != seq_len:
        raise ValueError(f"positions has {positions.shape[-1]} entries per sequence but x has seq={seq_len}")
    if positions.numel() and (int(positions.max()) >= cos.shape[0] or int(positions.min()) < 0):
        raise ValueError(f"position {int(positions.max())} is past the RoPE table, which covers positions "
                         f"0..{cos.shape[0] - 1}; build it with rope_frequencies(head_dim, max_len > "
                         f"{int(positions.max())})")
    cos, sin = cos[positions], sin[positions]  # (seq, head_dim) or (batch, seq, head_dim)
    if cos.dim() == 3:  # one row of positions per batch element: broadcast over heads
        cos, sin = cos[:, None], sin[:, None]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if not interleaved:
        return x * cos + rotate_half(x) * sin
    half = head_dim // 2
    cos = cos[..., :half].repeat_interleave(2, dim=-1)  # angles in the order theta_0, theta_0, theta_1, ...
    sin = sin[..., :half].repeat_interleave(2, dim=-1)
    pairs = x.unflatten(-1, (half, 2))
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (a, b) -> (-b, a) per pair
    return x * cos + turned * sin


# --------------------------------------------------------------------------- ALiBi


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi's per-head slopes: the geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8) for n heads.

    For 8 heads that is 1/2, 1/4, ..., 1/256. When n is not a power of two, the
    ALiBi paper (and BLOOM) take the slopes of the nearest smaller power of two,
    p, then fill the remaining n - p heads with every other slope of 2p heads.
    """
    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    p = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = power_of_two_slopes(p)
    if p < n_heads:
        slopes += power_of_two_slopes(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(n_heads: int, seq_len: int, causal: bool = True) -> Tensor:
    """The (n_heads, seq_len, seq_len) bias added to attention scores: -slope_h * (i - j).

    Query i attending to key j at distance i - j pays a penalty growing linearly
    with the distance. With ``causal=True`` the future (j > i) is -inf, so the
    result already includes the causal mask; with ``causal=False`` the penalty is
    symmetric, -slope_h * |i - j|.
    """
    distance = (torch.arange(seq_len)[:, None] - torch.arange(seq_len)[None, :]).float()  # i - j
    bias = -alibi_slopes(n_heads)[:, None, None] * distance.abs()
    if causal:
        bias = bias.masked_fill(distance < 0, float("-inf"))
    return bias


__all__ = [
    "sinusoidal_frequencies", "sinusoidal_encoding", "relative_shift_matrix", "LearnedPositions",
    "rope_frequencies", "rotate_half", "apply_rope", "alibi_slopes", "alibi_bias",
]
