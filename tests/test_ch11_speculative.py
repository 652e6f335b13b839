"""Speculative decoding against independent references: the target's own greedy decoding, transformers'
assisted generation on GPT-2 models with the same weights, exact enumeration of the emitted distribution,
and a seeded chi-square test of whole sampled runs on a small vocabulary."""
import itertools
import math

import pytest
import torch
import transformers

from llmcourse.inference import speculative as spec
from llmcourse.models.gpt import GPT

VOCAB = 40


def _chi_square_pvalue(observed, expected):
    """Pearson's statistic and its upper tail under chi-square with len - 1 degrees of freedom."""
    obs, exp = torch.tensor(observed, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64)
    stat = ((obs - exp) ** 2 / exp).sum()
    return float(torch.special.gammaincc(torch.tensor((len(obs) - 1) / 2, dtype=torch.float64), stat / 2))


def _hf(n_layer, n_embd, seed):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=n_layer, n_head=4, n_embd=n_embd, vocab_size=VOCAB, n_positions=64,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def models():
    hf_target, hf_draft = _hf(3, 32, 0), _hf(1, 16, 1)
    return hf_target, hf_draft, GPT.from_hf(hf_target).eval(), GPT.from_hf(hf_draft).eval()


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_speculative_equals_the_targets_greedy_decoding(models, k):
    _, _, target, draft = models
    prompt = torch.tensor([[3, 17, 5, 9]])
    plain = spec.greedy_decode(target, prompt, 30)
    fast, stats = spec.speculative_greedy(target, draft, prompt, 30, k=k)
    assert torch.equal(fast, plain)
    assert fast.shape == (1, 34)
    assert stats.target_calls <= 30 and 0 <= stats.accepted <= stats.drafted


def test_greedy_speculative_equals_transformers_assisted_generation(models):
    hf_target, hf_draft, target, draft = models
    prompt = torch.tensor([[3, 17, 5, 9]])
    with torch.no_grad():
        hf_plain = hf_target.generate(prompt, max_new_tokens=25, do_sample=False, min_new_tokens=25)
        hf_assisted = hf_target.generate(prompt, max_new_tokens=25, do_sample=False, min_new_tokens=25,
                                         assistant_model=hf_draft)
    ours, _ = spec.speculative_greedy(target, draft, prompt, 25, k=4)
    assert torch.equal(hf_assisted, hf_plain)
    assert torch.equal(ours, hf_assisted)


def test_the_draft_being_the_target_accepts_everything(models):
    _, _, target, _ = models
    prompt = torch.tensor([[1, 2, 3]])
    out, stats = spec.speculative_greedy(target, target, prompt, 20, k=4)
    assert torch.equal(out, spec.greedy_decode(target, prompt, 20))
    assert stats.acceptance_rate == 1.0 and stats.target_calls == 4  # 5 tokens per call: 4 drafts + 1


def test_one_step_distribution_is_p_by_hand():
    p = torch.tensor([0.5, 0.2, 0.2, 0.1])
    q = torch.tensor([0.25, 0.5, 0.0, 0.25])
    assert torch.allclose(spec.accept_probability(p, q), torch.tensor([1.0, 0.4, 1.0, 0.4]))
    # p - q = [0.25, -0.3, 0.2, -0.15] -> residual [0.25, 0, 0.2, 0] / 0.45
    assert torch.allclose(spec.residual_distribution(p, q), torch.tensor([5 / 9, 0, 4 / 9, 0]))
    assert torch.allclose(spec.one_step_distribution(p, q), p)


def test_one_step_distribution_is_p_for_random_pairs():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        p = torch.softmax(3 * torch.randn(6, generator=g, dtype=torch.float64), -1)
        q = torch.softmax(3 * torch.randn(6, generator=g, dtype=torch.float64), -1)
        assert torch.allclose(spec.one_step_distribution(p, q), p, atol=1e-12)
    p = torch.tensor([0.3, 0.7], dtype=torch.float64)
    assert torch.allclose(spec.one_step_distribution(p, p), p)  # nothing rejected


def test_without_the_residual_the_distribution_is_wrong():
    """The check above can fail: resampling from p instead of the residual skews the output."""
    p = torch.tensor([0.5, 0.2, 0.2, 0.1])
    q = torch.tensor([0.25, 0.5, 0.0, 0.25])
    accepted = q * spec.accept_probability(p, q)
    wrong = accepted + (1 - accepted.sum()) * p
    assert not torch.allclose(wrong, p, atol=1e-3)


class _Table(torch.nn.Module):
    """A tiny 'model' over a 3-token vocabulary whose next-token logits depend on the last token only."""

    def __init__(self, logits):
        super().__init__()
        self.table = logits

    def forward(self, ids):
        return self.table[ids]


def test_sampled_speculative_keeps_the_targets_distribution_chi_square():
    """Three new tokens on a 3-token vocabulary: 27 outcomes, their exact target probabilities enumerated;
    20,000 seeded speculative runs against them. A correct sampler fails with probability 1e-4."""
    torch.manual_seed(0)
    t_logits, d_logits = 1.5 * torch.randn(3, 3), 1.5 * torch.randn(3, 3)
    target, draft = _Table(t_logits), _Table(d_logits)
    pt = torch.softmax(t_logits.double(), -1)
    exact = {}
    for seq in itertools.product(range(3), repeat=3):
        prob, last = 1.0, 0
        for x in seq:
            prob *= float(pt[last, x])
            last = x
        exact[seq] = prob
    g = torch.Generator().manual_seed(1)
    n = 20000
    counts = dict.fromkeys(exact, 0)
    accepted = drafted = 0
    for _ in range(n):
        out, st = spec.speculative_sample(target, draft, torch.tensor([[0]]), 3, k=2, generator=g)
        counts[tuple(out[0, 1:].tolist())] += 1
        accepted, drafted = accepted + st.accepted, drafted + st.drafted
    obs = [counts[s] for s in exact]
    exp = [n * exact[s] for s in exact]
    pvalue = _chi_square_pvalue(obs, exp)
    assert pvalue > 1e-4
    assert 0 < accepted < drafted
    # the same test notices a sampler that draws from the draft model alone
    bad = dict.fromkeys(exact, 0)
    for _ in range(n // 4):
        ids = torch.tensor([[0]])
        for _ in range(3):
            ids = torch.cat([ids, torch.multinomial(torch.softmax(d_logits[ids[0, -1]], -1), 1,
                                                    generator=g).view(1, 1)], 1)
        bad[tuple(ids[0, 1:].tolist())] += 1
    bad_p = _chi_square_pvalue([bad[s] for s in exact], [n // 4 * exact[s] for s in exact])
    assert bad_p < 1e-4


def test_chi_square_tail_by_hand():
    # two degrees of freedom: the upper tail is exp(-x / 2) exactly
    assert abs(_chi_square_pvalue([12, 8, 10], [10, 10, 10]) - math.exp(-0.4)) < 1e-12
