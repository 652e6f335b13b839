"""Chapter 03 benchmark: training byte-level BPE merges in pure Python vs Hugging Face ``tokenizers``.

Trains 4,096-token vocabularies (256 bytes + 3,840 merges) on 1 MB of English prose
and 1 MB of Python source code (both from ``llmcourse.tokenizers.corpora``) with:

* ``llmcourse``   -- :func:`llmcourse.tokenizers.training.train_bpe` (incremental, str words);
* ``plain heap``  -- :func:`plain_heap_train` below: the textbook incremental trainer
  (words as lists of ints, pair -> set of words, every changed pair pushed on a heap);
* ``HF``          -- ``tokenizers.trainers.BpeTrainer`` (Rust, may use both cores);
* ``naive``       -- :func:`llmcourse.tokenizers.training.train_bpe_naive`, which recounts
  every pair after every merge; it runs only the first ``NAIVE_MERGES`` merges (the full
  run takes minutes), and the table compares all Python trainers on that same smaller problem.

Every timing of a full training includes the whole job from the text: pre-tokenization
with the GPT-4 regex, counting the pre-tokens and learning the merges. HF splits with the same regex
(``Split`` + ``ByteLevel(use_regex=False)``); it is timed twice, given the text as one string
and given it in 10 KB chunks cut at line ends (which lets it pre-tokenize and count on both
cores; the cuts change a handful of pre-tokens), and the ratios are against the faster of the two.
Each number is the best of ``--repeats`` runs (default 3); the runs of the contenders
alternate, so they share the machine's conditions.

    .venv/bin/python benchmarks/bench_bpe_train.py            # the full benchmark (about 2 minutes)
    .venv/bin/python benchmarks/bench_bpe_train.py --quick    # a tiny run (seconds)
"""
from __future__ import annotations

import argparse
import datetime
import heapq
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmcourse.tokenizers.corpora import english_prose, source_code  # noqa: E402
from llmcourse.tokenizers.training import (GPT4_PATTERN, merge_ids, pretoken_counts,  # noqa: E402
                                           train_bpe, train_bpe_naive)

NAIVE_MERGES = 128


# --------------------------------------------------------------------------- the plain heap baseline


def plain_heap_train(word_counts: Mapping[bytes, int], num_merges: int) -> list[tuple[int, int]]:
    """A straightforward incremental trainer: what one writes first after the naive one.

    Words are lists of ints; ``where`` maps a pair to the set of words that contain it;
    after a merge every affected word is re-paired in full (old pairs out, new pairs in)
    and every pair whose count changed is pushed on the heap again (entries whose count
    is out of date are skipped when popped). Same tie-breaking as llmcourse.
    """
    words = [list(word) for word, count in word_counts.items() if count > 0]
    counts = [count for count in word_counts.values() if count > 0]
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, (ids, count) in enumerate(zip(words, counts)):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += count
            where[pair].add(i)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges and heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative_count or negative_count == 0:
            continue   # out of date
        new_id = 256 + len(merges)
        changed: set[tuple[int, int]] = set()
        for i in where.pop(pair):
            ids, count = words[i], counts[i]
            for old in zip(ids, ids[1:]):
                pair_counts[old] -= count
                changed.add(old)
            ids = words[i] = merge_ids(ids, pair, new_id)
            for new in zip(ids, ids[1:]):
                pair_counts[new] += count
                where[new].add(i)
                changed.add(new)
        del pair_counts[pair]
        changed.discard(pair)
        for p in changed:
            heapq.heappush(heap, (-pair_counts[p], p))
        merges.append(pair)
    return merges


# --------------------------------------------------------------------------- Hugging Face


def hf_train(texts: list[str], vocab_size: int):
    """Train HF's BpeTrainer on ``texts`` with the GPT-4 split and byte-level alphabet."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def line_chunks(text: str, size: int = 10_000) -> list[str]:
    """``text`` cut after a line end about every ``size`` characters (HF trains on chunks in parallel)."""
    chunks, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        chunks.append(text[start:end])
        start = end
    return chunks


# --------------------------------------------------------------------------- compression


def count_tokens(word_counts: Mapping[bytes, int], merges: list[tuple[int, int]]) -> int:
    """Tokens needed for the counted pre-tokens when the merges are applied in rank order."""
    rank = {chr(a) + chr(b): i for i, (a, b) in enumerate(merges)}
    total = 0
    for word, count in word_counts.items():
        s = word.decode("latin-1")
        while len(s) > 1:
            best = min(map(str.__add__, s, s[1:]), key=lambda p: rank.get(p, len(rank)))
            if best not in rank:
                break
            s = s.replace(best, chr(256 + rank[best]))
        total += len(s) * count
    return total


# --------------------------------------------------------------------------- timing


def best_of(jobs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall-clock time of each job over ``repeats`` rounds; the jobs alternate within a round."""
    best = {name: float("inf") for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_corpus(name: str, text: str, held_out: str, vocab_size: int, repeats: int,
                 naive_merges: int) -> list[str]:
    """Time the trainers on one corpus; return markdown table rows."""
    num_merges = vocab_size - 256
    counts = pretoken_counts(text)
    ours = train_bpe(counts, num_merges)
    assert plain_heap_train(counts, num_merges) == ours, "plain heap baseline disagrees"
    jobs = {
        "llmcourse": lambda: train_bpe(pretoken_counts(text), num_merges),
        "plain heap": lambda: plain_heap_train(pretoken_counts(text), num_merges),
        "HF": lambda: hf_train([text], vocab_size),
        "HF chunks": lambda: hf_train(line_chunks(text), vocab_size),
    }
    full = best_of(jobs, repeats)
    pretok = best_of({"pre-tokenize + count": lambda: pretoken_counts(text)}, repeats)

    few = ours[:naive_merges]
    assert train_bpe_naive(counts, naive_merges) == few, "naive trainer disagrees"
    small = best_of({
        "llmcourse": lambda: train_bpe(counts, naive_merges),
        "plain heap": lambda: plain_heap_train(counts, naive_merges),
        "naive": lambda: train_bpe_naive(counts, naive_merges),
    }, repeats)

    held = pretoken_counts(held_out)
    n_bytes = len(held_out.encode("utf-8"))
    ours_tokens = count_tokens(held, ours)
    hf_tokens = len(hf_train([text], vocab_size).encode(held_out).ids)

    hf = min(full["HF"], full["HF chunks"])   # the ratios are against HF's faster way
    rows = [
        f"| {name} | llmcourse `train_bpe` (pre-tokenize + count + {num_merges} merges) "
        f"| {full['llmcourse']:.3f} | {full['llmcourse'] / hf:.2f}× |",
        f"| {name} | plain heap baseline (same) | {full['plain heap']:.3f} | {full['plain heap'] / hf:.2f}× |",
        f"| {name} | HF `BpeTrainer` (same, Rust; the text as one string) | {full['HF']:.3f} "
        f"| {full['HF'] / hf:.2f}× |",
        f"| {name} | HF `BpeTrainer` (same; the text in 10 KB chunks cut at line ends) "
        f"| {full['HF chunks']:.3f} | {full['HF chunks'] / hf:.2f}× |",
        f"| {name} | of which llmcourse's pre-tokenize + count alone | {pretok['pre-tokenize + count']:.3f} "
        f"| {pretok['pre-tokenize + count'] / hf:.2f}× |",
        f"| {name} | llmcourse `train_bpe`, first {naive_merges} merges from the counts "
        f"| {small['llmcourse']:.3f} | — |",
        f"| {name} | plain heap, first {naive_merges} merges from the counts | {small['plain heap']:.3f} | — |",
        f"| {name} | naive recount, first {naive_merges} merges from the counts | {small['naive']:.3f} "
        f"| {small['naive'] / small['llmcourse']:.0f}× llmcourse |",
    ]
    compression = (f"| {name} | {len(held):,} distinct pre-tokens, {n_bytes:,} bytes "
                   f"| {n_bytes / ours_tokens:.3f} | {n_bytes / hf_tokens:.3f} "
                   f"| {ours_tokens / hf_tokens - 1:+.2%} |")
    return rows + [compression]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 KB corpora, 512 tokens, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    size, vocab, naive_merges = (50_000, 512, 32) if args.quick else (1_000_000, 4096, NAIVE_MERGES)
    repeats = args.repeats or (1 if args.quick else 3)
    held_size = size // 10

    import tokenizers
    print(f"# BPE training benchmark — {datetime.date.today()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} CPU cores, tokenizers {tokenizers.__version__}")
    print(f"corpora: {size:,} bytes each, vocabulary {vocab} (= 256 bytes + {vocab - 256} merges), "
          f"best of {repeats}\n")
    speed, compression = [], []
    for name, build in (("prose", english_prose), ("code", source_code)):
        text = build(size)
        held_out = build(size + held_size)[len(text):]   # the next bytes after the training text
        *rows, row = bench_corpus(name, text, held_out, vocab, repeats, naive_merges)
        speed += rows
        compression.append(row)
    print("| corpus | trainer (what is timed) | seconds | vs HF |")
    print("|---|---|---|---|")
    print("\n".join(speed))
    print(f"\nCompression of held-out text (the {held_size:,} bytes after each training text):\n")
    print("| corpus | held-out text | llmcourse bytes/token | HF bytes/token | llmcourse tokens vs HF |")
    print("|---|---|---|---|---|")
    print("\n".join(compression))


if __name__ == "__main__":
    main()
