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


# ----------------------------------------------------------------------------- the KV-cached path


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_cached_speculative_greedy_equals_the_uncached_path_and_plain_greedy(models, k):
    _, _, target, draft = models
    prompt = torch.tensor([[3, 17, 5, 9]])
    slow, slow_stats = spec.speculative_greedy(target, draft, prompt, 40, k=k)
    fast, fast_stats = spec.speculative_greedy(target, draft, prompt, 40, k=k, use_cache=True)
    assert torch.equal(fast, slow)
    assert torch.equal(fast, spec.greedy_decode(target, prompt, 40))
    assert fast_stats == slow_stats  # the same rounds, the same accepted tokens


def test_cached_greedy_decode_equals_uncached_and_transformers(models):
    hf_target, _, target, _ = models
    prompt = torch.tensor([[3, 17, 5, 9]])
    cached = spec.greedy_decode(target, prompt, 30, use_cache=True)
    assert torch.equal(cached, spec.greedy_decode(target, prompt, 30))
    with torch.no_grad():
        hf = hf_target.generate(prompt, max_new_tokens=30, do_sample=False, min_new_tokens=30)
    assert torch.equal(cached, hf)


def test_cached_speculative_equals_transformers_assisted_generation(models):
    hf_target, hf_draft, target, draft = models
    prompt = torch.tensor([[8, 1, 30, 2, 2]])
    with torch.no_grad():
        hf_assisted = hf_target.generate(prompt, max_new_tokens=35, do_sample=False, min_new_tokens=35,
                                         assistant_model=hf_draft)
    ours, _ = spec.speculative_greedy(target, draft, prompt, 35, k=3, use_cache=True)
    assert torch.equal(ours, hf_assisted)


def test_rolled_back_cache_gives_the_logits_of_a_fresh_forward_pass(models):
    """Feed 10 tokens, cut the cache back to 6, feed 3 others: the logits equal one uncached pass over 9."""
    _, _, target, _ = models
    a = torch.tensor([[3, 17, 5, 9, 1, 2, 30, 31, 4, 4]])
    b = torch.tensor([[7, 8, 11]])
    cached = spec._CachedModel(target)
    cached.logits(a, 1)
    assert cached.length == 10
    cached.roll_back(6)
    assert cached.length == 6
    both = torch.cat([a[:, :6], b], dim=1)
    got = cached.logits(both, 3)
    with torch.no_grad():
        want = target(both)[0, -3:]
    assert torch.allclose(got, want, atol=1e-5)
    # without the roll-back the stale keys of tokens 6..9 would still be attended to
    stale = spec._CachedModel(target)
    stale.logits(a, 1)
    with torch.no_grad():
        wrong, _ = target(b, past_kv=stale.past, use_cache=True)
    assert not torch.allclose(wrong[0], want, atol=1e-3)


def test_cached_path_feeds_the_target_only_new_tokens(models, monkeypatch):
    """Each target pass after the first sees the newest accepted token and the k guesses, nothing older."""
    _, _, target, draft = models
    seen = []
    original = target.forward

    def spy(ids, *args, **kwargs):
        seen.append(ids.shape[1])
        return original(ids, *args, **kwargs)

    monkeypatch.setattr(target, "forward", spy)
    _, stats = spec.speculative_greedy(target, draft, torch.tensor([[3, 17, 5, 9]]), 21, k=4, use_cache=True)
    assert seen[0] == 4 + 4 and len(seen) == stats.target_calls
    assert all(n <= 4 + 1 for n in seen[1:])


def test_cached_draft_equal_to_the_target_accepts_everything(models):
    _, _, target, _ = models
    prompt = torch.tensor([[1, 2, 3]])
    out, stats = spec.speculative_greedy(target, target, prompt, 20, k=4, use_cache=True)
    assert torch.equal(out, spec.greedy_decode(target, prompt, 20))
    assert stats.acceptance_rate == 1.0 and stats.target_calls == 4


def test_cached_path_reaches_the_context_length(models):
    _, _, target, draft = models  # context 64: a 4-token prompt and 60 new tokens fill it exactly
    prompt = torch.tensor([[3, 17, 5, 9]])
    out, _ = spec.speculative_greedy(target, draft, prompt, 60, k=5, use_cache=True)
    assert out.shape == (1, 64) and torch.equal(out, spec.greedy_decode(target, prompt, 60, use_cache=True))


def test_cached_speculative_sample_draws_the_same_tokens_as_uncached(models):
    _, _, target, draft = models
    prompt = torch.tensor([[3, 17, 5, 9]])
    for seed in range(4):
        slow, s1 = spec.speculative_sample(target, draft, prompt, 30, k=3,
                                           generator=torch.Generator().manual_seed(seed))
        fast, s2 = spec.speculative_sample(target, draft, prompt, 30, k=3, use_cache=True,
                                           generator=torch.Generator().manual_seed(seed))
        assert torch.equal(fast, slow) and s1 == s2


def test_measure_speedup_counts_what_it_ran(models):
    _, _, target, draft = models
    prompts = [torch.tensor([[3, 17, 5, 9]]), torch.tensor([[1, 2]])]
    result = spec.measure_speedup(target, draft, prompts, 12, [1, 3], repeats=1)
    assert result["equal"] and result["k"] == [1, 3]
    for i, k in enumerate([1, 3]):
        stats = [spec.speculative_greedy(target, draft, p, 12, k=k)[1] for p in prompts]
        assert result["target_calls"][i] == sum(s.target_calls for s in stats)
        assert result["acceptance"][i] == sum(s.accepted for s in stats) / sum(s.drafted for s in stats)
        assert result["tokens_per_call"][i] == 24 / result["target_calls"][i]
        assert result["speedup"][i] == result["plain_seconds"] / result["seconds"][i] > 0
    spec.plot_speedup(result)


def test_bad_input_is_a_clear_error(models):
    _, _, target, draft = models
    with pytest.raises(ValueError, match="k .* >= 1"):
        spec.speculative_greedy(target, draft, torch.tensor([[1, 2]]), 5, k=0, use_cache=True)
    with pytest.raises(ValueError, match=r"shape \(1, seq\)"):
        spec.speculative_greedy(target, draft, torch.tensor([[1, 2], [3, 4]]), 5)
    with pytest.raises(ValueError, match="temperature"):
        spec.speculative_sample(target, draft, torch.tensor([[1, 2]]), 5, temperature=0.0)
    with pytest.raises(ValueError, match="ks"):
        spec.measure_speedup(target, draft, [torch.tensor([[1, 2]])], 5, [])


# ----------------------------------------------------------------------------- the draft model


def test_course_draft_gpt_is_distilled_from_the_course_gpt(tmp_path):
    from llmcourse.inference import draft as D
    from llmcourse.pretraining import course_model as CM
    from llmcourse.tokenizers.course_tokenizer import VOCAB_SIZE

    tiny = CM.course_train_config(fast=True, context_length=32, d_model=32, n_layers=2, n_heads=2, batch_size=8,
                                  max_steps=20, warmup_steps=2, eval_interval=10, eval_steps=2)
    teacher = CM.pretrain_course_gpt(tiny, n_chars=60_000, cache_dir=tmp_path)
    target, tokenizer, _ = teacher.value
    config = D.draft_train_config(fast=True, context_length=32, d_model=16, batch_size=8, max_steps=30,
                                  warmup_steps=2)
    first = D.course_draft_gpt(config, n_prompts=64, teacher=teacher, cache_dir=tmp_path)
    assert first.built and first.chapter == "11"
    model, its_tokenizer, checkpoint = first.value
    assert its_tokenizer.merges == tokenizer.merges and model.vocab_size == VOCAB_SIZE
    assert checkpoint["step"] == 30 and model.config.n_layers == 1 and model.config.d_model == 16
    history = checkpoint["history"]
    assert history["train_loss"][-1] < history["train_loss"][0] - 1.0  # it learned something
    assert not list(tmp_path.rglob("*.run"))
    again = D.course_draft_gpt(config, n_prompts=64, teacher=teacher, cache_dir=tmp_path)
    assert not again.built and again.path == first.path
    for p, q in zip(again.value[0].parameters(), model.parameters()):
        assert torch.equal(p, q)
    assert D.course_draft_gpt(config, n_prompts=65, teacher=teacher, cache_dir=tmp_path).path != first.path
    # it drafts for the target with the same vocabulary; the tokens stay the target's
    prompt = torch.tensor([tokenizer.encode("The value")])
    out, stats = spec.speculative_greedy(target, model, prompt, 20, k=3, use_cache=True)
    assert torch.equal(out, spec.greedy_decode(target, prompt, 20))


def test_teacher_continuations_are_the_teachers_greedy_text(models):
    from llmcourse.inference import draft as D

    _, _, target, _ = models
    ids = torch.randint(0, VOCAB, (500,), generator=torch.Generator().manual_seed(0))
    seqs = D.teacher_continuations(target, ids, 5, 20, seed=3, batch_size=2)
    assert seqs.shape == (5, 20)
    for row in seqs:
        prompt = row[None, :D.PROMPT_TOKENS]
        assert any(torch.equal(prompt[0], ids[s:s + D.PROMPT_TOKENS]) for s in range(len(ids) - 7))
        assert torch.equal(row[None], spec.greedy_decode(target, prompt, 20 - D.PROMPT_TOKENS))
    with pytest.raises(ValueError, match="length"):
        D.teacher_continuations(target, ids, 5, 65)


def test_draft_settings():
    from llmcourse.inference import draft as D
    from llmcourse.pretraining.course_model import course_train_config

    full, target = D.draft_train_config(fast=False), course_train_config(fast=False)
    assert full.n_layers == 1 and full.d_model * 2 == target.d_model and full.context_length == target.context_length
    assert D.draft_train_config(fast=True).max_steps < full.max_steps


def test_predicted_speedup_and_pass_costs(models):
    _, _, target, draft = models
    assert spec.predicted_speedup(3.0, 2, 1.0, 1.0, 0.0) == 3.0     # free draft, verify as cheap as one token
    assert spec.predicted_speedup(1.0, 1, 1.0, 1.0, 1.0) == 0.5     # nothing accepted: twice the work
    assert abs(spec.predicted_speedup(2.5, 4, 2.0, 3.0, 0.5) - 2.5 * 2.0 / 5.0) < 1e-12
    target_s, draft_s = spec.pass_costs(target, draft, 5, repeats=3)
    assert sorted(target_s) == [1, 2, 3, 4, 5] and all(0 < t < 1 for t in target_s.values()) and 0 < draft_s < 1
