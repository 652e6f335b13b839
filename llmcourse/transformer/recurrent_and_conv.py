"""CNNs and LSTMs next to attention: an LSTM's gates, a causal convolution, and what each layer costs (chapter 05).

Read top to bottom:

1. :func:`lstm_cell_step`: one step of an LSTM, its input, forget and output gates and its cell state written
   out (PyTorch's weight layout, so ``nn.LSTM``'s weights load straight in); :func:`lstm_loop` runs it over a
   sequence, one position after the other, and counts the steps that had to wait for the previous one;
2. :func:`causal_conv1d`: a 1-D convolution that only looks back (left padding), written as a sum of shifted
   copies of the input; :func:`receptive_field` and :func:`measured_receptive_field` say how far back a stack of
   them sees;
3. :func:`layer_costs`: multiply-adds per layer (measured with ``torch.utils.flop_counter``), sequential steps and
   the longest path between two tokens, for an LSTM, causal CNNs and self-attention.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

# --------------------------------------------------------------------------- the LSTM cell


def lstm_cell_step(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                   b_hh: Tensor | None = None, return_gates: bool = False):
    """One LSTM step: (x (..., d_in), h (..., d), c (..., d)) -> (h_new, c_new), optionally with the gates.

    ``w_ih`` (4d, d_in) and ``w_hh`` (4d, d) stack the four blocks in PyTorch's order: input gate i, forget gate
    f, candidate g, output gate o (``nn.LSTM``'s ``weight_ih_l0`` and ``weight_hh_l0``).

    * i = sigmoid(x W_ii + h W_hi + b_i): how much of the candidate to write;
    * f = sigmoid(x W_if + h W_hf + b_f): how much of the old cell state to keep;
    * g = tanh(x W_ig + h W_hg + b_g): the candidate content;
    * o = sigmoid(x W_io + h W_ho + b_o): how much of the cell state to show;
    * c_new = f * c + i * g and h_new = o * tanh(c_new).
    """
    pre = x @ w_ih.T + h @ w_hh.T
    if b_ih is not None:
        pre = pre + b_ih
    if b_hh is not None:
        pre = pre + b_hh
    i, f, g, o = pre.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + i * g
    h_new = o * torch.tanh(c_new)
    if return_gates:
        return h_new, c_new, {"input": i, "forget": f, "candidate": g, "output": o}
    return h_new, c_new


def lstm_loop(x: Tensor, lstm: nn.LSTM) -> tuple[Tensor, tuple[Tensor, Tensor], int]:
    """Run the first layer of ``lstm`` (batch_first) over x (batch, seq, d_in) with :func:`lstm_cell_step`.

    Returns (outputs (batch, seq, d), (h, c) each (batch, d), the number of sequential steps): step t needs the
    h and c of step t - 1, so the loop cannot run its positions at the same time.
    """
    batch, seq, _ = x.shape
    d = lstm.hidden_size
    h = x.new_zeros(batch, d)
    c = x.new_zeros(batch, d)
    weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, getattr(lstm, "bias_ih_l0", None),
               getattr(lstm, "bias_hh_l0", None))
    outputs, steps = [], 0
    for t in range(seq):
        h, c = lstm_cell_step(x[:, t], h, c, *weights)
        outputs.append(h)
        steps += 1
    return torch.stack(outputs, dim=1), (h, c), steps


# --------------------------------------------------------------------------- the causal convolution


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, dilation: int = 1) -> Tensor:
    """A causal 1-D convolution: x (batch, c_in, seq), weight (c_out, c_in, k) -> (batch, c_out, seq).

    Output t sees inputs t - (k-1)*dilation, ..., t - dilation, t and nothing later: tap j of the kernel
    multiplies the input shifted right by (k - 1 - j) * dilation steps, with zeros coming in on the left (the
    "left padding"). The same numbers as ``nn.Conv1d(padding=(k-1)*dilation)`` with its last outputs cut off.
    """
    batch, _, seq = x.shape
    k = weight.shape[-1]
    out = x.new_zeros(batch, weight.shape[0], seq)
    for j in range(k):
        shift = (k - 1 - j) * dilation
        if shift >= seq:
            continue
        shifted = F.pad(x, (shift, 0))[..., :seq]          # input at t - shift, zeros before the start
        out = out + torch.einsum("oi,bis->bos", weight[..., j], shifted)
    if bias is not None:
        out = out + bias[:, None]
    return out


def receptive_field(kernel_size: int, dilations: Sequence[int]) -> int:
    """How many input positions the last output of a stack of causal convolutions sees: 1 + sum (k-1) * d."""
    return 1 + sum((kernel_size - 1) * d for d in dilations)


def measured_receptive_field(kernel_size: int, dilations: Sequence[int], channels: int = 4, seq: int = 64,
                             seed: int = 0) -> int:
    """The receptive field found by autograd: how many inputs the last output of a causal conv stack depends on.

    Builds one random causal convolution per dilation (with a tanh between layers), and counts the input
    positions whose gradient of the last output is not zero.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, seq, generator=g, requires_grad=True)
    y = x
    for d in dilations:
        w = torch.randn(channels, channels, kernel_size, generator=g)
        y = torch.tanh(causal_conv1d(y, w, dilation=d))
    (grad,) = torch.autograd.grad(y[0, :, -1].sum(), x)
    return int((grad[0].abs().sum(dim=0) > 0).sum())


def layers_to_reach(n: int, kernel_size: int, dilated: bool) -> int:
    """The fewest causal conv layers whose receptive field covers n positions (dilations 1, 2, 4, ... if dilated)."""
    layers = 0
    while receptive_field(kernel_size, [2 ** i if dilated else 1 for i in range(layers)]) < n:
        layers += 1
    return layers


# --------------------------------------------------------------------------- the cost table


def _multiply_adds(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


@torch.no_grad()
def layer_costs(n: int = 256, d: int = 64, kernel_size: int = 3, seed: int = 0) -> list[dict]:
    """One row per layer type, for a sequence of n tokens of width d.

    * ``multiply_adds``: counted with ``FlopCounterMode`` while the layer runs (``formula`` gives the count);
    * ``sequential_steps``: how many steps of one layer must wait for the step before (counted by the loops);
    * ``path_length``: the fewest steps (recurrence steps, or layers) between the first and the last token, from
      the receptive field.
    """
    from llmcourse.transformer.attention import scaled_dot_product_attention

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, d, generator=g)
    lstm = nn.LSTM(d, d, batch_first=True)
    conv_w = torch.randn(d, d, kernel_size, generator=g) / math.sqrt(d * kernel_size)
    w_q, w_k, w_v, w_o = (torch.randn(d, d, generator=g) / math.sqrt(d) for _ in range(4))

    steps = {}

    def run_lstm():
        steps["lstm"] = lstm_loop(x, lstm)[2]

    def run_conv():
        causal_conv1d(x.transpose(1, 2), conv_w)
        steps["conv"] = 1

    def run_attention():
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        scaled_dot_product_attention(q, k, v, is_causal=True) @ w_o
        steps["attention"] = 1

    rows = [
        dict(layer="LSTM", multiply_adds=_multiply_adds(run_lstm), formula="8 n d^2", formula_value=8 * n * d * d,
             sequential_steps=None, path_length=n - 1, path_unit="recurrence steps"),
        dict(layer=f"causal CNN, k = {kernel_size}", multiply_adds=_multiply_adds(run_conv), formula="k n d^2",
             formula_value=kernel_size * n * d * d, sequential_steps=None,
             path_length=layers_to_reach(n, kernel_size, dilated=False), path_unit="layers"),
        dict(layer=f"causal CNN, k = {kernel_size}, dilations 1, 2, 4, ...", multiply_adds=None,
             formula="k n d^2", formula_value=kernel_size * n * d * d, sequential_steps=1,
             path_length=layers_to_reach(n, kernel_size, dilated=True), path_unit="layers"),
        dict(layer="self-attention", multiply_adds=_multiply_adds(run_attention), formula="4 n d^2 + 2 n^2 d",
             formula_value=4 * n * d * d + 2 * n * n * d, sequential_steps=None, path_length=1, path_unit="layer"),
    ]
    rows[0]["sequential_steps"] = steps["lstm"]
    rows[1]["sequential_steps"] = steps["conv"]
    rows[2]["multiply_adds"] = rows[1]["multiply_adds"]  # a dilation changes which inputs, not how many
    rows[3]["sequential_steps"] = steps["attention"]
    return rows


__all__ = ["lstm_cell_step", "lstm_loop", "causal_conv1d", "receptive_field", "measured_receptive_field",
           "layers_to_reach", "layer_costs"]
