"""Chapter 08's counting models and evaluation helpers, against independent references: counts by
collections.Counter, probabilities that sum to 1, F.cross_entropy, and brute-force loops over positions."""
from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F

from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.pretraining.evaluation import (bits_per_byte, choice_log_likelihood, choice_log_likelihoods,
                                              multiple_choice_accuracy, multiple_choice_items, token_nlls)
from llmcourse.pretraining.ngram import NGramModel, fit_interpolation
from llmcourse.pretraining.synthetic import default_source


def _ids(n=400, V=7, seed=0):
    return torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(seed))


def test_addk_ngram_equals_counter_table():
    ids, V, k = _ids(), 7, 0.3
    seq = ids.tolist()
    for n in (1, 2, 3):
        model = NGramModel(V, n=n, k=k).fit(ids)
        grams = Counter(tuple(seq[i:i + n]) for i in range(len(seq) - n + 1))
        contexts = Counter(tuple(seq[i:i + n - 1]) for i in range(len(seq) - n + 1))
        for history in ([3, 1], [0, 6], [5, 5]):
            c = tuple(history[len(history) - (n - 1):]) if n > 1 else ()
            want = torch.tensor([(grams[c + (w,)] + k) / (contexts[c] + k * V) for w in range(V)], dtype=torch.float64)
            torch.testing.assert_close(model.next_token_probs(history), want)


def test_token_probs_match_the_full_distributions_and_sum_to_one():
    ids, V = _ids(), 7
    model = NGramModel(V, n=3, k=0.1, weights=[0.2, 0.3, 0.5]).fit(ids)
    test = _ids(60, seed=1)
    probs = model.token_probs(test)
    rows = torch.stack([model.next_token_probs(test[:t]) for t in range(1, len(test))])
    torch.testing.assert_close(rows.sum(1), torch.ones(len(test) - 1, dtype=torch.float64))
    torch.testing.assert_close(probs, rows.gather(1, test[1:, None])[:, 0])
    # perplexity = exp(mean NLL) = exp of torch's cross-entropy on the same probabilities
    ce = F.cross_entropy(rows.log(), test[1:])
    assert math.isclose(model.loss(test), float(ce), rel_tol=1e-10)


def test_trigram_reaches_the_markov_floor_and_interpolation_helps():
    source = default_source()
    train, val = source.sample(100_000, seed=0), source.sample(20_000, seed=1)
    true = float(-source.token_log_probs(val)[2:].mean())
    tri = float(NGramModel(12, n=3, k=0.01).fit(train).token_nlls(val)[2:].mean())
    bi = float(NGramModel(12, n=2, k=0.01).fit(train).token_nlls(val)[2:].mean())
    assert abs(tri - true) < 0.01 and bi > source.conditional_entropy(1) - 0.02
    model = NGramModel(12, n=4, k=1.0).fit(train[:-5000])
    weights = fit_interpolation(model, train[-5000:])
    assert math.isclose(sum(weights), 1.0) and len(weights) == 4


def _tiny(seed=0, T=8, V=11):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, context_length=T, d_model=16, n_layers=1, n_heads=2)).eval()


def test_token_nlls_equal_brute_force_contexts():
    model, T = _tiny(), 8
    ids = _ids(37, V=11, seed=2)
    for stride in (1, 3, 8):
        got = token_nlls(model, ids, T, stride=stride, batch_size=4)
        # independent: token t+1 is predicted from the window that first scores it; rebuild that window
        want, scored = torch.empty(len(ids) - 1, dtype=torch.float64), 0
        start = 0
        while scored < len(ids) - 1:
            end = min(start + T, len(ids) - 1)
            with torch.no_grad():
                logp = model(ids[None, start:end])[0].double().log_softmax(-1)
            for t in range(scored, end):
                want[t] = -logp[t - start, ids[t + 1]]
            scored, start = end, start + stride
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    short = ids[:T + 1]
    with torch.no_grad():
        whole = F.cross_entropy(model(short[None, :-1])[0], short[1:])
    assert math.isclose(float(token_nlls(model, short, T).mean()), float(whole), rel_tol=1e-5)


def test_choice_log_likelihoods_and_accuracy():
    model = _tiny()
    context, choices = _ids(5, V=11, seed=3), [_ids(3, V=11, seed=s) for s in (4, 5)]
    batched = choice_log_likelihoods(model, context, choices)
    for value, choice in zip(batched, choices):
        whole = torch.cat([context, choice])
        total = 0.0
        for t in range(len(choice)):   # one prefix pass per continuation token
            with torch.no_grad():
                logits = model(whole[None, :len(context) + t])[0, -1].double()
            total += float(logits.log_softmax(-1)[choice[t]])
        assert math.isclose(float(value), total, rel_tol=1e-5)
        assert math.isclose(choice_log_likelihood(model, context, choice), total, rel_tol=1e-5)
    items = multiple_choice_items(_ids(500, V=11, seed=6), n_items=20, context_tokens=6, choice_tokens=3)
    assert all(len(item["choices"]) == 4 and 0 <= item["answer"] < 4 for item in items)
    oracle = lambda ctx, cs, lookup={id(i["context"]): i for i in items}: [  # noqa: E731
        float(torch.equal(c, lookup[id(ctx)]["choices"][lookup[id(ctx)]["answer"]])) for c in cs]
    assert multiple_choice_accuracy(oracle, items) == 1.0
    assert multiple_choice_accuracy(lambda ctx, cs: [0.0] * len(cs), items) == 0.0   # ties count as wrong


def test_bits_per_byte():
    assert math.isclose(bits_per_byte(100 * math.log(2), 100), 1.0)
    assert math.isclose(bits_per_byte(8 * math.log(256), 8), 8.0)
