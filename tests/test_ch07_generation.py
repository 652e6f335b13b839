"""Chapter 07: sampling (temperature, greedy, top-k, top-p), beam search with a length penalty, and generate().

References: hand computation, transformers' TopKLogitsWarper / TopPLogitsWarper, brute force over every
sequence of a toy scorer."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from llmcourse.models import sampling as S
from llmcourse.models.generation import check_ids, generate
from llmcourse.models.gpt import GPT, GPTConfig


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- temperature

def test_softmax_with_temperature_by_hand():
    logits = torch.tensor([2.0, 1.0, 0.0])
    for t in [0.5, 1.0, 2.0]:
        e = [math.exp(v / t) for v in [2.0, 1.0, 0.0]]
        expected = torch.tensor([v / sum(e) for v in e])
        torch.testing.assert_close(S.softmax_with_temperature(logits, t), expected)


def test_temperature_sharpens_and_flattens():
    logits = _randn(50, seed=1) * 3
    h = [float(S.entropy(S.softmax_with_temperature(logits, t))) for t in [0.1, 0.5, 1.0, 2.0, 10.0]]
    assert h == sorted(h)
    assert h[-1] < math.log(50)
    assert float(S.softmax_with_temperature(logits, 0.01).max()) > 0.99
    torch.testing.assert_close(TemperatureLogitsWarper(0.7)(None, logits[None])[0], logits / 0.7)


# --------------------------------------------------------------------------- top-k / top-p

@pytest.mark.parametrize("k", [1, 3, 10, 100])
def test_top_k_matches_transformers(k):
    logits = _randn(4, 30, seed=k)
    expected = TopKLogitsWarper(top_k=k)(None, logits.clone())
    assert torch.equal(S.top_k_filter(logits, k), expected)


def test_top_k_by_hand():
    got = S.top_k_filter(torch.tensor([1.0, 5.0, 3.0, 2.0]), 2)
    inf = float("-inf")
    assert got.tolist() == [inf, 5.0, 3.0, inf]


@pytest.mark.parametrize("p", [0.05, 0.3, 0.6, 0.9, 0.99, 1.0])
def test_top_p_matches_transformers(p):
    logits = _randn(8, 40, seed=int(p * 100)) * 2
    expected = TopPLogitsWarper(top_p=p)(None, logits.clone())
    assert torch.equal(S.top_p_filter(logits, p), expected)


def test_top_p_by_hand():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    def kept(p):
        return torch.isfinite(S.top_p_filter(logits, p)).tolist()
    assert kept(0.4) == [True, False, False, False]
    assert kept(0.7) == [True, True, False, False]
    assert kept(0.9) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]


def test_sample_next_follows_the_distribution_and_the_filters():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0]).log_softmax(-1)
    g = torch.Generator().manual_seed(0)
    draws = S.sample_next(logits.expand(20000, 4), generator=g)
    freq = torch.bincount(draws, minlength=4).float() / 20000
    torch.testing.assert_close(freq, logits.softmax(-1), atol=0.015, rtol=0)
    assert set(S.sample_next(logits.expand(2000, 4), top_k=2, generator=g).tolist()) == {0, 1}
    assert torch.equal(S.sample_next(_randn(5, 9), top_k=1), _randn(5, 9).argmax(-1))
    a = S.sample_next(_randn(3, 9), generator=torch.Generator().manual_seed(5))
    b = S.sample_next(_randn(3, 9), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, words", [
    ({"temperature": 0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_k": 2.5}, "top_k"),
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_p": -0.1}, "top_p")])
def test_invalid_sampling_parameters_raise_clear_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        S.sample_next(torch.zeros(5), **kwargs)


# --------------------------------------------------------------------------- beam search

def _toy_scorer(vocab=4, seed=0):
    """Deterministic next-token logits that depend on the whole prefix (a hash of it)."""
    def step(ids):
        rows = []
        for row in ids.tolist():
            g = torch.Generator().manual_seed(hash(tuple(row)) % (2**31) + seed)
            rows.append(torch.randn(vocab, generator=g) * 2)
        return torch.stack(rows)
    return step


def _trap():
    """Greedy's first choice (A, p=0.6) is followed by a flat distribution; B (p=0.4) by a certain one."""
    table = {(): [0.6, 0.4, 0.0], (0,): [0.34, 0.33, 0.33], (1,): [0.0, 0.0, 1.0]}

    def step(ids):
        rows = [torch.tensor(table.get(tuple(r[1:]), [1 / 3] * 3)).clamp_min(1e-9).log() for r in ids.tolist()]
        return torch.stack(rows)
    return step


def test_length_penalty_is_gnmt():
    assert S.length_penalty(1, 1.0) == 1.0
    assert S.length_penalty(7, 0.6) == pytest.approx((12 / 6) ** 0.6)
    assert S.length_penalty(100, 0.0) == 1.0


def test_beam_search_beats_greedy_on_the_trap():
    step, prompt = _trap(), torch.tensor([9])
    greedy = S.greedy_decode(step, prompt, 2)
    beam, score = S.beam_search(step, prompt, num_beams=2, max_new_tokens=2)
    assert greedy.tolist() == [9, 0, 0] and beam.tolist() == [9, 1, 2]
    assert score == pytest.approx(math.log(0.4), abs=1e-6)
    assert S.sequence_log_prob(step, prompt, beam[1:]) > S.sequence_log_prob(step, prompt, greedy[1:])
    assert S.beam_search(step, prompt, num_beams=1, max_new_tokens=2)[0].tolist() == greedy.tolist()


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_search_equals_brute_force(alpha, seed):
    step, prompt, vocab, n = _toy_scorer(4, seed), torch.tensor([1, 2]), 4, 3
    best = S.brute_force_best(step, prompt, vocab, n, eos_id=3, alpha=alpha)
    ids, score = S.beam_search(step, prompt, num_beams=vocab ** n, max_new_tokens=n, eos_id=3, alpha=alpha)
    assert ids[2:].tolist() == best.tokens and score == pytest.approx(best.score)
    # and the brute force itself, by enumerating every sequence
    scores = {}
    for length in range(1, n + 1):
        for seq in itertools.product(range(vocab), repeat=length):
            if 3 in seq[:-1] or (length < n and seq[-1] != 3):
                continue
            scores[seq] = S.sequence_log_prob(step, prompt, torch.tensor(seq)) / S.length_penalty(length, alpha)
    assert list(max(scores, key=scores.get)) == best.tokens


def test_length_penalty_lets_longer_sequences_win():
    step = _toy_scorer(4, 7)
    lengths = [len(S.beam_search(step, torch.tensor([0]), 8, 5, eos_id=3, alpha=a, return_all=True)[0].tokens)
               for a in [0.0, 5.0]]
    assert lengths[0] <= lengths[1]


def test_beam_search_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_beams"):
        S.beam_search(_trap(), torch.tensor([0]), 0, 2)
    with pytest.raises(ValueError, match="length"):
        S.length_penalty(-1, 0.6)


# --------------------------------------------------------------------------- generate

class _Counter(torch.nn.Module):
    """A fake decoder that always predicts (last id + 1) mod vocab; supports the cache protocol."""

    vocab_size, context_length = 10, 16

    def forward(self, ids, past_kv=None, use_cache=False):
        logits = torch.nn.functional.one_hot((ids + 1) % 10, 10).float() * 10
        return (logits, [(torch.zeros(0), torch.zeros(0))]) if (use_cache or past_kv is not None) else logits


def test_generate_with_a_fake_model_and_eos():
    model = _Counter()
    assert generate(model, torch.tensor([3]), 4, top_k=1).tolist() == [3, 4, 5, 6, 7]
    out = generate(model, torch.tensor([[3], [6]]), 6, top_k=1, eos_id=7)
    assert out.tolist() == [[3, 4, 5, 6, 7], [6, 7, 7, 7, 7]]  # stops once every row has produced eos
    assert generate(model, torch.tensor([3]), 0).tolist() == [3]


def test_generate_rejects_bad_input():
    model = _Counter()
    with pytest.raises(ValueError, match="context length"):
        generate(model, torch.zeros(10, dtype=torch.long), 7)
    with pytest.raises(ValueError, match="context length"):
        generate(model, torch.zeros(17, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, torch.tensor([3, 10]), 2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, torch.tensor([-1]), 2)
    with pytest.raises(ValueError, match="integer"):
        generate(model, torch.tensor([1.0]), 2)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, torch.tensor([1]), 2, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, torch.tensor([1]), 2, top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.tensor([1]), -1)
    with pytest.raises(ValueError, match="shape"):
        check_ids(torch.zeros(1, 2, 3, dtype=torch.long), 10)


def test_temperature_widget_has_a_plain_function():
    from matplotlib.figure import Figure

    from llmcourse.models.widgets import temperature_explorer, temperature_view

    assert isinstance(temperature_view(torch.tensor([1.0, 0.0, -1.0]), 0.5, top_k=2), Figure)
    assert isinstance(temperature_view(temperature=2.0, top_p=0.8), Figure)
    with pytest.raises(ValueError, match="temperature"):
        temperature_view(temperature=0.0)
    assert temperature_explorer() is not None


def test_sliding_window_generation_keeps_only_the_last_context_tokens():
    """Past the context length, each token is predicted from the last context_length tokens (nanoGPT's crop)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=2)).eval()
    prompt = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="exceeds the context"):
        generate(model, prompt, 20, top_k=1)
    out = generate(model, prompt, 20, top_k=1, sliding_window=True)
    ids = prompt
    with torch.no_grad():
        for _ in range(20):
            nxt = model(ids[:, -8:])[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    assert torch.equal(out, ids)
    # within the context, the sliding window changes nothing
    assert torch.equal(generate(model, prompt, 5, top_k=1, sliding_window=True), generate(model, prompt, 5, top_k=1))
    # a prompt longer than the context is accepted and kept whole
    long_prompt = torch.arange(10)[None] % 11
    assert generate(model, long_prompt, 3, top_k=1, sliding_window=True).shape == (1, 13)
