"""Chapter 05's CNNs and LSTMs next to attention, against PyTorch: the written-out LSTM cell against nn.LSTM and
nn.LSTMCell, the causal convolution against nn.Conv1d with its padding trimmed, the receptive field against
autograd, the cost table against FlopCounterMode and the formulas; and the two tiny next-token models."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.transformer.recurrent_and_conv import (causal_conv1d, layer_costs, layers_to_reach, lstm_cell_step,
                                                      lstm_loop, measured_receptive_field, receptive_field)
from llmcourse.transformer.sequence_models import (CharLSTM, TinyAttentionLM, count_forward_passes, generate_greedy,
                                                   next_token_pairs, score_in_one_pass, train_next_token)

DT = torch.float64


@pytest.mark.parametrize("d_in,d,batch", [(3, 4, 2), (5, 5, 1), (2, 7, 3)])
def test_lstm_loop_matches_nn_lstm(d_in, d, batch):
    torch.manual_seed(d_in * 10 + d)
    lstm = nn.LSTM(d_in, d, batch_first=True).to(DT)
    x = torch.randn(batch, 6, d_in, dtype=DT)
    with torch.no_grad():
        expected, (h_n, c_n) = lstm(x)
        got, (h, c), steps = lstm_loop(x, lstm)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(h, h_n[0])
    torch.testing.assert_close(c, c_n[0])
    assert steps == 6


def test_lstm_cell_step_matches_lstm_cell_and_returns_gates_in_range():
    torch.manual_seed(0)
    cell = nn.LSTMCell(4, 3).to(DT)
    x, h, c = torch.randn(5, 4, dtype=DT), torch.randn(5, 3, dtype=DT), torch.randn(5, 3, dtype=DT)
    with torch.no_grad():
        h_ref, c_ref = cell(x, (h, c))
        h_new, c_new, gates = lstm_cell_step(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
                                             return_gates=True)
    torch.testing.assert_close(h_new, h_ref)
    torch.testing.assert_close(c_new, c_ref)
    for name in ("input", "forget", "output"):
        assert ((gates[name] > 0) & (gates[name] < 1)).all()
    assert ((gates["candidate"] > -1) & (gates["candidate"] < 1)).all()
    torch.testing.assert_close(c_new, gates["forget"] * c + gates["input"] * gates["candidate"])


def test_lstm_without_biases_matches_nn_lstm_without_biases():
    torch.manual_seed(1)
    lstm = nn.LSTM(3, 3, batch_first=True, bias=False).to(DT)
    x = torch.randn(2, 4, 3, dtype=DT)
    with torch.no_grad():
        torch.testing.assert_close(lstm_loop(x, lstm)[0], lstm(x)[0])


@pytest.mark.parametrize("k,dilation,c_in,c_out", [(1, 1, 2, 3), (3, 1, 4, 4), (2, 3, 3, 2), (5, 2, 2, 2)])
def test_causal_conv1d_matches_nn_conv1d_with_padding_trimmed(k, dilation, c_in, c_out):
    torch.manual_seed(k + dilation)
    conv = nn.Conv1d(c_in, c_out, k, dilation=dilation, padding=(k - 1) * dilation).to(DT)
    x = torch.randn(2, c_in, 9, dtype=DT)
    with torch.no_grad():
        expected = conv(x)[..., :9]                      # the padding added outputs on the right: cut them
        torch.testing.assert_close(causal_conv1d(x, conv.weight, conv.bias, dilation=dilation), expected)
        torch.testing.assert_close(causal_conv1d(x, conv.weight, None, dilation=dilation), expected - conv.bias[:, None])


def test_causal_conv1d_does_not_look_ahead_and_does_look_back():
    torch.manual_seed(2)
    w = torch.randn(3, 3, 3, dtype=DT)
    x = torch.randn(1, 3, 10, dtype=DT)
    changed = x.clone()
    changed[..., 6] += 5.0
    diff = (causal_conv1d(changed, w) - causal_conv1d(x, w)).abs().amax(dim=1)[0]
    assert torch.all(diff[:6] == 0)
    assert torch.all(diff[6:9] > 0)                      # positions 6, 7, 8 see position 6 (kernel 3)
    assert diff[9] == 0


@pytest.mark.parametrize("k,dilations", [(2, [1]), (3, [1, 1, 1]), (3, [1, 2, 4, 8]), (4, [1, 3])])
def test_receptive_field_formula_equals_autograd(k, dilations):
    assert measured_receptive_field(k, dilations, seq=48) == receptive_field(k, dilations)


def test_layers_to_reach():
    assert layers_to_reach(1, 3, dilated=False) == 0
    assert layers_to_reach(256, 3, dilated=False) == 128       # 1 + 2 L >= 256
    assert layers_to_reach(256, 3, dilated=True) == 8           # 1 + 2 (2^L - 1) >= 256 -> 2^L >= 128.5
    assert receptive_field(3, [2 ** i for i in range(8)]) >= 256 > receptive_field(3, [2 ** i for i in range(7)])


def test_layer_costs_count_what_the_formulas_say():
    rows = layer_costs(n=32, d=8, kernel_size=3)
    assert [r["multiply_adds"] for r in rows] == [r["formula_value"] for r in rows]
    assert [r["sequential_steps"] for r in rows] == [32, 1, 1, 1]
    assert [r["path_length"] for r in rows] == [31, 16, 5, 1]


def test_next_token_pairs_shift_by_one():
    ids = torch.arange(6)
    inputs, targets = next_token_pairs(ids)
    assert inputs.tolist() == [0, 1, 2, 3, 4] and targets.tolist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("model_class", [CharLSTM, TinyAttentionLM])
def test_both_models_learn_a_repeating_text_without_labels(model_class):
    text = torch.tensor([0, 1, 2, 3, 4] * 80)
    model = model_class(5, 16)
    losses = train_next_token(model, text, steps=60, context=8, batch=8, lr=1e-2)
    assert losses[0] > 1.0 and sum(losses[-5:]) / 5 < 0.2      # log 5 = 1.61 at the start


def test_attention_model_is_causal_and_lstm_too():
    torch.manual_seed(0)
    for model in (CharLSTM(7, 8), TinyAttentionLM(7, 8, n_heads=2, context=10)):
        ids = torch.randint(0, 7, (1, 10))
        changed = ids.clone()
        changed[0, 7] = (ids[0, 7] + 1) % 7
        with torch.no_grad():
            torch.testing.assert_close(model(changed)[:, :7], model(ids)[:, :7])


def test_one_pass_scores_every_position_but_generation_needs_one_pass_per_token():
    torch.manual_seed(0)
    model = TinyAttentionLM(11, 16, n_heads=2, context=16).eval()
    prompt = torch.randint(0, 11, (1, 4))
    ids, step_logits, passes = generate_greedy(model, prompt, n_new=8)
    assert passes == 8 and ids.shape == (1, 12)
    logits, one = score_in_one_pass(model, ids)
    assert one == 1
    torch.testing.assert_close(logits[:, 3:11], step_logits)  # the same predictions, now all at once
    assert count_forward_passes(model, lambda: model(ids)) == 1
