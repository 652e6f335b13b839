"""Tests of chapter 03's graded checks (llmcourse.grading.chapters.ch03) and of its merge-stepper widget.

Every check must fail on a stub that raises NotImplementedError and pass on a
correct implementation written here, independently of the solutions notebook.
"""
from __future__ import annotations

import pytest
from wrong_solutions.ch03 import _Tokenizer as _Build03
import regex

from llmcourse.grading.chapters.ch03 import chapter
from llmcourse.grading.checks import run_checks
from llmcourse.tokenizers.basic import BasicTokenizer
from llmcourse.tokenizers.training import train_bpe
from llmcourse.tokenizers.widgets import merge_step_view, merge_stepper, show_token

GPT4 = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
        r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")


# --------------------------------------------------------------------------- correct implementations


def pair_counts(ids):
    counts = {}
    for i in range(len(ids) - 1):
        counts[ids[i], ids[i + 1]] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if ids[i:i + 2] == list(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_merges(text_bytes, num_merges):
    ids, merges = list(text_bytes), {}
    for k in range(num_merges):
        counts = pair_counts(ids)
        if not counts:
            break
        best = max(counts.values())
        pair = min(p for p, c in counts.items() if c == best)
        merges[pair] = 256 + k
        ids = merge(ids, pair, 256 + k)
    return merges


def encode_with_merges(text, merges):
    # replaying the merges in rank order is equivalent to "lowest-rank pair first"
    ids = list(text.encode("utf-8"))
    for pair, new_id in sorted(merges.items(), key=lambda item: item[1]):
        ids = merge(ids, pair, new_id)
    return ids


def decode_ids(ids, vocab):
    parts = []
    for i in ids:
        if i not in vocab:
            raise ValueError(f"unknown token id {i}")
        parts.append(vocab[i])
    return b"".join(parts).decode("utf-8", errors="replace")


def regex_split(text, special_tokens=()):
    if not special_tokens:
        return regex.findall(GPT4, text)
    pieces, start = [], 0
    specials = regex.compile("|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True)))
    for m in specials.finditer(text):
        pieces += regex.findall(GPT4, text[start:m.start()]) + [m.group()]
        start = m.end()
    return pieces + regex.findall(GPT4, text[start:])


def to_mergeable_ranks(merges):
    vocab = {b: bytes([b]) for b in range(256)}
    for (a, b), new_id in sorted(merges.items(), key=lambda item: item[1]):
        vocab[new_id] = vocab[a] + vocab[b]
    return {token: i for i, token in vocab.items()}


def bytes_per_token(train_text, test_text, num_merges):
    # the package's fast trainer on the whole text as one piece, then the merges replayed in order
    merges = train_bpe({train_text.encode("utf-8"): 1}, num_merges)
    ids = list(test_text.encode("utf-8"))
    for step, pair in enumerate(merges):
        ids = merge(ids, list(pair), 256 + step)
    return len(test_text.encode("utf-8")) / len(ids)


def run_token_count(n, k):
    # after k merges: n // 2**k copies of the 2**k-byte token, plus one token per 1-bit of the remainder
    copies, rest = divmod(n, 1 << k)
    return copies + sum(rest >> bit & 1 for bit in range(k))


CORRECT = {f.__name__: f for f in (pair_counts, merge, train_merges, encode_with_merges, decode_ids, regex_split,
                                   to_mergeable_ranks)}
CORRECT["RegexTokenizer"] = _Build03  # the class to build: a correct one written apart from the solution
CORRECT["bytes_per_token"] = bytes_per_token
CORRECT["run_token_count"] = run_token_count


def _stub(*args, **kwargs):
    raise NotImplementedError


# --------------------------------------------------------------------------- the checks


def test_chapter_registers_the_exercises():
    assert chapter.exercises == list(CORRECT)
    assert len(chapter.exercises) >= 5
    for exercise in chapter.exercises:
        # a warm-up function has 2-3 checks; the class the learner builds up to 6
        assert 2 <= sum(c.exercise == exercise for c in chapter.checks) <= (6 if exercise[0].isupper() else 3)
    assert all(c.hint for c in chapter.checks)


@pytest.mark.parametrize("check", chapter.checks, ids=lambda c: c.name)
def test_check_fails_on_a_stub(check):
    results = run_checks(chapter, {check.exercise: _stub}, check.exercise)
    result = next(r for r in results if r.name == check.name)
    assert not result.passed
    assert "not written yet" in result.message


@pytest.mark.parametrize("check", chapter.checks, ids=lambda c: c.name)
def test_check_passes_on_a_correct_implementation(check):
    results = run_checks(chapter, {check.exercise: CORRECT[check.exercise]}, check.exercise)
    result = next(r for r in results if r.name == check.name)
    assert result.passed, result.message


def test_each_exercise_is_graded_on_its_own():
    results = run_checks(chapter, CORRECT)
    assert all(r.passed for r in results), [r.message for r in results if not r.passed]


def test_calling_the_package_is_refused():
    from llmcourse import tokenizers

    results = run_checks(chapter, {"pair_counts": lambda ids: tokenizers.get_pair_counts(ids)}, "pair_counts")
    assert not any(r.passed for r in results)
    assert "asks you to write `pair_counts` yourself" in results[0].message
    results = run_checks(chapter, {"train_merges": lambda t, n: BasicTokenizer().train(t.decode(), 256 + n).merges},
                         "train_merges")
    assert not any(r.passed for r in results)


def test_checks_are_deterministic():
    for exercise, fn in CORRECT.items():
        first = [r.message for r in run_checks(chapter, {exercise: fn}, exercise)]
        assert first == [r.message for r in run_checks(chapter, {exercise: fn}, exercise)]


# --------------------------------------------------------------------------- the merge stepper


TEXT = "low lower lowest newer newest"


def test_step_zero_shows_raw_bytes():
    view = merge_step_view(TEXT, 0)
    assert view.startswith("step 0: no merges yet")
    assert f"{len(TEXT)} bytes -> {len(TEXT)} tokens" in view
    assert "vocabulary: 256 tokens" in view


def test_each_step_matches_the_tokenizer():
    steps = list(BasicTokenizer().train_steps(TEXT, 6))
    for k, step in enumerate(steps, start=1):
        view = merge_step_view(TEXT, k)
        a, b = step.pair
        assert view.startswith(f"step {k}: merge ({a}, {b})")
        assert f"new token {step.new_id} '{show_token(step.token)}'" in view
        assert f"(the pair occurred {step.count} times)" in view
        assert f"-> {len(step.ids)} tokens" in view
        assert f"vocabulary: {256 + k} tokens" in view
        table = view.split(" id   pair          count  token\n")[1].splitlines()
        assert len(table) == k   # the vocabulary grows by one token per merge


def test_view_of_a_text_that_runs_out_of_pairs():
    view = merge_step_view("aaa", 5)
    assert "(the text ran out of pairs after 2 merges)" in view
    assert "3 bytes -> 1 tokens" in view


def test_show_token_marks_spaces_and_partial_characters():
    assert show_token(b" the\n") == "␣the↵"
    assert show_token("叶".encode("utf-8")[:2]) == "<e5><8f>"
    with pytest.raises(ValueError):
        merge_step_view(TEXT, -1)


def test_merge_stepper_builds_a_widget():
    widget = merge_stepper(TEXT, max_step=4)
    assert widget.children[0].max == 4
