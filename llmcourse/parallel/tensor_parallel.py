"""Chapter 10: tensor parallelism (Megatron-LM style), split layers across ranks.

One big matrix product is shared out among ``world`` ranks.

* **Column parallel** ``Y = X A``: cut ``A`` by columns, ``A = [A_1, ..., A_w]``.
  Rank ``r`` computes ``Y_r = X A_r``, a slice of Y's features; an elementwise
  function (GeLU) can follow on each slice without any communication.
* **Row parallel** ``Z = Y B``: cut ``B`` by rows, matching Y's slices. Rank ``r``
  computes ``Y_r B_r``, a full-size *partial sum*; ``Z = sum_r Y_r B_r`` needs one
  ``all_reduce``.

An MLP ``GeLU(X A) B`` and an attention layer (heads split across ranks: each rank
has its heads' columns of W_q, W_k, W_v and the matching rows of W_o) therefore
need one all-reduce in the forward pass and one in the backward pass. They hide
in two autograd functions, named *f* and *g* in the Megatron-LM paper:

* ``f`` = :func:`copy_to_tensor_parallel`: identity forward, all-reduce backward
  (each rank's slice contributes part of the input's gradient);
* ``g`` = :func:`reduce_from_tensor_parallel`: all-reduce forward, identity backward
  (every rank then continues with the same full output).

Layers are built from an unsplit layer with ``from_dense(layer, rank, world)`` so a
test can compare them with the original, forward and backward. With ``world = 1``
(or no process group) ``f`` and ``g`` do nothing, so a single process can run
the ranks' shards one after another and add the partial sums by hand.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from llmcourse.transformer.attention import MultiHeadAttention, merge_heads, repeat_kv, scaled_dot_product_attention, split_heads
from llmcourse.transformer.feedforward import FeedForward, activation_fn

# --------------------------------------------------------------------------- f and g


def _group_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _all_reduce(x: Tensor) -> Tensor:
    x = x.clone()
    if _group_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


class _CopyToTensorParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return _all_reduce(grad)


class _ReduceFromTensorParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return _all_reduce(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad


def copy_to_tensor_parallel(x: Tensor) -> Tensor:
    """*f*: pass ``x`` on unchanged; in backward, sum the ranks' input gradients (all-reduce)."""
    return _CopyToTensorParallel.apply(x)


def reduce_from_tensor_parallel(x: Tensor) -> Tensor:
    """*g*: sum the ranks' partial results (all-reduce); in backward, pass the gradient on unchanged."""
    return _ReduceFromTensorParallel.apply(x)


# --------------------------------------------------------------------------- checks


def _check_rank(rank: int, world: int) -> None:
    for name, value in (("rank", rank), ("world", world)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be a whole number, got {value!r}")
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need world >= 1 and 0 <= rank < world, got rank={rank}, world={world}")


def _check_divides(size: int, world: int, what: str) -> int:
    if size % world:
        raise ValueError(f"{what} = {size} cannot be split evenly over {world} ranks; tensor parallelism needs "
                         f"it to be a multiple of the number of ranks")
    return size // world


def _linear_init(weight: Tensor, bias: Tensor | None, fan_in: int) -> None:
    # nn.Linear's initialization, with the fan-in of the *unsplit* layer
    bound = 1 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)
    if bias is not None:
        nn.init.uniform_(bias, -bound, bound)


# --------------------------------------------------------------------------- linear layers


class ColumnParallelLinear(nn.Module):
    """This rank's slice of ``nn.Linear(in_features, out_features)``: ``out_features / world`` output features.

    Input: the full ``x`` (same on every rank). Output: this rank's slice of the features.
    """

    def __init__(self, in_features: int, out_features: int, world: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.world = in_features, out_features, world
        local = _check_divides(out_features, world, "out_features")
        self.weight = nn.Parameter(torch.empty(local, in_features))
        self.bias = nn.Parameter(torch.empty(local)) if bias else None
        _linear_init(self.weight, self.bias, in_features)

    @classmethod
    def from_dense(cls, layer: nn.Linear, rank: int, world: int) -> "ColumnParallelLinear":
        """Rank ``rank``'s share of ``layer``: rows ``rank*k:(rank+1)*k`` of its (out, in) weight, k = out / world."""
        _check_rank(rank, world)
        module = cls(layer.in_features, layer.out_features, world, bias=layer.bias is not None)
        k = module.weight.shape[0]
        with torch.no_grad():
            module.weight.copy_(layer.weight[rank * k:(rank + 1) * k])
            if layer.bias is not None:
                module.bias.copy_(layer.bias[rank * k:(rank + 1) * k])
        return module.to(layer.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(copy_to_tensor_parallel(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features} / world={self.world}"


class RowParallelLinear(nn.Module):
    """This rank's slice of ``nn.Linear(in_features, out_features)``: ``in_features / world`` input features.

    Input: this rank's slice of the features (what a :class:`ColumnParallelLinear` produced). Output: the full
    result, the same on every rank, after one all-reduce of the partial sums. The bias is added once, after it.
    """

    def __init__(self, in_features: int, out_features: int, world: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.world = in_features, out_features, world
        local = _check_divides(in_features, world, "in_features")
        self.weight = nn.Parameter(torch.empty(out_features, local))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        _linear_init(self.weight, self.bias, in_features)

    @classmethod
    def from_dense(cls, layer: nn.Linear, rank: int, world: int) -> "RowParallelLinear":
        """Rank ``rank``'s share of ``layer``: columns ``rank*k:(rank+1)*k`` of its (out, in) weight, k = in / world."""
        _check_rank(rank, world)
        module = cls(layer.in_features, layer.out_features, world, bias=layer.bias is not None)
        k = module.weight.shape[1]
        with torch.no_grad():
            module.weight.copy_(layer.weight[:, rank * k:(rank + 1) * k])
            if layer.bias is not None:
                module.bias.copy_(layer.bias)
        return module.to(layer.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        out = reduce_from_tensor_parallel(F.linear(x, self.weight))
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features} / world={self.world}, out_features={self.out_features}"


# --------------------------------------------------------------------------- MLP and attention


class ParallelMLP(nn.Module):
    """``down(act(up(x)))`` with ``up`` column-parallel and ``down`` row-parallel: one all-reduce each way."""

    def __init__(self, d_model: int, d_hidden: int, world: int, activation: str = "gelu", bias: bool = True):
        super().__init__()
        self.activation = activation
        self.act = activation_fn(activation)
        self.up = ColumnParallelLinear(d_model, d_hidden, world, bias=bias)
        self.down = RowParallelLinear(d_hidden, d_model, world, bias=bias)

    @classmethod
    def from_dense(cls, mlp: FeedForward, rank: int, world: int) -> "ParallelMLP":
        """Rank ``rank``'s share of a :class:`~llmcourse.transformer.feedforward.FeedForward` (dropout is not carried over)."""
        _check_rank(rank, world)
        module = cls(mlp.up.in_features, mlp.up.out_features, world, activation=mlp.activation,
                     bias=mlp.up.bias is not None)
        module.up = ColumnParallelLinear.from_dense(mlp.up, rank, world)
        module.down = RowParallelLinear.from_dense(mlp.down, rank, world)
        return module

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.up(x)))  # the GeLU acts on this rank's slice only


class ParallelSelfAttention(nn.Module):
    """Self-attention with the heads shared out: ``n_heads / world`` query heads (and ``n_kv_heads / world``
    key/value heads) per rank.

    One fused column-parallel projection makes this rank's q, k, v (one *f*); after attention, a row-parallel
    output projection adds the ranks' contributions (one *g*).
    """

    def __init__(self, d_model: int, n_heads: int, world: int, n_kv_heads: int | None = None, bias: bool = False):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"need d_model divisible by n_heads and n_heads by n_kv_heads, got d_model={d_model}, "
                             f"n_heads={n_heads}, n_kv_heads={n_kv_heads}")
        self.d_model, self.n_heads, self.n_kv_heads, self.world = d_model, n_heads, n_kv_heads, world
        self.head_dim = d_model // n_heads
        self.local_heads = _check_divides(n_heads, world, "n_heads")
        self.local_kv_heads = _check_divides(n_kv_heads, world, "n_kv_heads")
        q_width, kv_width = self.local_heads * self.head_dim, self.local_kv_heads * self.head_dim
        self.split_sizes = [q_width, kv_width, kv_width]
        # this rank's q, k and v columns, stacked: (q_width + 2 kv_width) outputs
        self.qkv = ColumnParallelLinear(d_model, world * sum(self.split_sizes), world, bias=bias)
        self.o_proj = RowParallelLinear(n_heads * self.head_dim, d_model, world, bias=bias)

    @classmethod
    def from_dense(cls, attn: MultiHeadAttention, rank: int, world: int) -> "ParallelSelfAttention":
        """Rank ``rank``'s heads of a :class:`~llmcourse.transformer.attention.MultiHeadAttention`."""
        _check_rank(rank, world)
        bias = attn.q_proj.bias is not None
        module = cls(attn.d_model, attn.n_heads, world, n_kv_heads=attn.n_kv_heads, bias=bias)
        q = ColumnParallelLinear.from_dense(attn.q_proj, rank, world)  # this rank's heads are contiguous rows
        k = ColumnParallelLinear.from_dense(attn.k_proj, rank, world)
        v = ColumnParallelLinear.from_dense(attn.v_proj, rank, world)
        with torch.no_grad():
            module.qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
            if bias:
                module.qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
        module.o_proj = RowParallelLinear.from_dense(attn.o_proj, rank, world)
        return module.to(attn.q_proj.weight.device)

    def forward(self, x: Tensor, is_causal: bool = False) -> Tensor:
        """x (batch, seq, d_model), the same on every rank -> (batch, seq, d_model), the same on every rank."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (batch, seq, d_model={self.d_model}), got {tuple(x.shape)}")
        q, k, v = self.qkv(x).split(self.split_sizes, dim=-1)
        q = split_heads(q, self.local_heads)  # (batch, local_heads, seq, head_dim)
        k = repeat_kv(split_heads(k, self.local_kv_heads), self.n_heads // self.n_kv_heads)
        v = repeat_kv(split_heads(v, self.local_kv_heads), self.n_heads // self.n_kv_heads)
        out = scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        return self.o_proj(merge_heads(out))
