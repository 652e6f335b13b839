"""Training byte-pair merges on counted pre-tokens (chapter 03).

Byte-level BPE starts from the 256 byte values as tokens 0..255 and learns merges:
merge ``i`` joins the most frequent adjacent pair of tokens ``(a, b)`` into a new
token ``256 + i``. Three steps turn a text into merges:

1. :func:`pretoken_counts` splits the text with a regex (:data:`GPT2_PATTERN`,
   :data:`GPT4_PATTERN`) into pre-tokens and counts them. Merges never cross a
   pre-token boundary, so a word that occurs 5,000 times is handled once, with weight 5,000.
2. :func:`train_bpe_naive` is the textbook trainer: after every merge it recounts
   every pair of every word. Easy to check, but each merge costs a pass over the corpus.
3. :func:`train_bpe` gives the same merges incrementally. A merge only changes
   the words that contain the merged pair, and in those words only the pairs next to it,
   so it updates just those counts and picks the next pair from a heap.

Both trainers break ties the same way: **the highest count wins, then the smallest
pair** (compare ``a``, then ``b``). Both merge pairs that occur only once (as
Hugging Face's ``BpeTrainer`` does) and stop early, with fewer merges, only when
every pre-token has become a single token.
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Mapping

import regex

# The pre-tokenizer of GPT-2 (OpenAI's encoder.py): contractions, optional space + letters,
# optional space + digits, optional space + other symbols, then whitespace.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# The pre-tokenizer of GPT-4 (tiktoken's cl100k_base): case-insensitive contractions,
# words with one leading non-letter, numbers of at most 3 digits, symbols with their
# newlines, and whitespace runs that leave the last space to the next word.
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")


def pretoken_counts(text: str, pattern: str = GPT4_PATTERN) -> Counter[bytes]:
    """Split ``text`` with ``pattern`` and count each pre-token's UTF-8 bytes."""
    counts = Counter(regex.findall(pattern, text))   # count the strings first: far fewer to encode
    return Counter({piece.encode("utf-8"): n for piece, n in counts.items()})


# --------------------------------------------------------------------------- the naive trainer


def count_pairs(words: list[list[int]], counts: list[int]) -> dict[tuple[int, int], int]:
    """How often each adjacent pair occurs, each word weighted by its count."""
    stats: dict[tuple[int, int], int] = {}
    for ids, count in zip(words, counts):
        for pair in zip(ids, ids[1:]):
            stats[pair] = stats.get(pair, 0) + count
    return stats


def merge_ids(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` (left to right) with ``new_id``."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe_naive(word_counts: Mapping[bytes, int], num_merges: int) -> list[tuple[int, int]]:
    """Learn up to ``num_merges`` merges, recounting every pair after every merge."""
    words = [list(word) for word, count in word_counts.items() if count > 0]
    counts = [count for count in word_counts.values() if count > 0]
    merges: list[tuple[int, int]] = []
    for step in range(num_merges):
        stats = count_pairs(words, counts)
        if not stats:
            break   # every word is a single token
        best = min(stats, key=lambda pair: (-stats[pair], pair))   # highest count, then smallest pair
        words = [merge_ids(ids, best, 256 + step) for ids in words]
        merges.append(best)
    return merges


# --------------------------------------------------------------------------- the incremental trainer
#
# The trick that makes it fast in pure Python: a word is a str with one character per
# token, chr(id). Token 104 ('h') next to 105 ('i') is the pair "hi", a 2-character
# string, and merging that pair everywhere in a word is one call to C code:
# word.replace("hi", chr(new_id)). Comparing two pair strings compares their ids,
# so "the smallest pair" means the same thing as for the tuples of the naive trainer.
#
# The state, all kept up to date after each merge:
#   words[i], counts[i]  the distinct pre-tokens (as such strings) and how often each occurs
#   pair_counts          pair -> its count in the corpus (exact)
#   where                pair -> the words it occurs in. Entries are only ever added: a word
#                        that has since lost the pair is found out (str.find) and skipped.
#   heap                 one (-count, pair) entry per live pair; an old pair's count only goes
#                        down, so its entry is refreshed only when it reaches the top.


def _words_as_strings(word_counts: Mapping[bytes, int]) -> tuple[list[str], list[int]]:
    """The words that have a pair, as strings of one character per byte, and their counts."""
    words, counts = [], []
    for word, count in word_counts.items():
        if count > 0 and len(word) > 1:
            words.append(word.decode("latin-1"))   # byte value b becomes chr(b)
            counts.append(count)
    return words, counts


def _index_pairs(words: list[str]) -> dict[str, list[int]]:
    """pair -> the index of the word of each of its occurrences (a word twice if the pair is there twice)."""
    where: dict[str, list[int]] = defaultdict(list)
    for i, word in enumerate(words):
        for pair in map(str.__add__, word, word[1:]):
            where[pair].append(i)
    return where


def _total(where: list[int], counts: list[int]) -> int:
    """A pair's count: the sum of the counts of the words in its occurrence list."""
    return sum(map(counts.__getitem__, where))


def _pop_best(heap: list[tuple[int, str]], pair_counts: dict[str, int]) -> str | None:
    """Pop the most frequent pair (the smallest on ties), or None when no pair is left.

    The heap holds (-count, pair) entries that may be stale: counts of old pairs only go
    down, so a stale entry is too high. When one reaches the top it goes back in with
    its current count (or leaves, when its count is 0); the first entry that is
    up to date is the true maximum.
    """
    while heap:
        negative_count, pair = heap[0]
        count = pair_counts.get(pair, 0)
        if count == -negative_count:
            heapq.heappop(heap)
            return pair
        if count > 0:
            heapq.heapreplace(heap, (-count, pair))
        else:
            heapq.heappop(heap)
    return None


def _merge_in_words(pair: str, new: str, words: list[str], counts: list[int],
                    pair_counts: dict[str, int], where: dict[str, list[int]]) -> dict[str, list[int]]:
    """Merge ``pair`` into the token ``new`` in every word that has it; update the pair counts.

    Only the pairs next to a merged occurrence change: when ``x a b y`` becomes
    ``x N y``, the pairs ``x a`` and ``b y`` lose the word's count and ``x N`` and ``N y``
    gain it. The old pairs are decremented here; the new pairs (those that contain ``new``)
    are returned with their occurrence lists, for :func:`_add_new_pairs`.
    """
    created: dict[str, list[int]] = defaultdict(list)
    for i in where.pop(pair):
        word = words[i]
        k = word.find(pair)
        if k < 0:
            continue   # the word lost this pair to an earlier merge: its index entry is stale
        merged = word.replace(pair, new)
        words[i] = merged
        n = len(merged)
        if n == len(word) - 1:
            # One occurrence, at k (the common case): fix its left and right neighbours.
            if k > 0:
                pair_counts[word[k - 1:k + 1]] -= counts[i]   # x a
                created[merged[k - 1:k + 1]].append(i)        # x N
            if k + 1 < n:
                pair_counts[word[k + 1:k + 3]] -= counts[i]   # b y
                created[merged[k:k + 2]].append(i)            # N y
        else:
            _recount_word(word, merged, new, counts[i], i, pair_counts, created)
    return created


def _recount_word(word: str, merged: str, new: str, count: int, i: int,
                  pair_counts: dict[str, int], created: dict[str, list[int]]) -> None:
    """Several occurrences in one word (rare): take out all its old pairs, put in all its new ones."""
    for old in map(str.__add__, word, word[1:]):
        pair_counts[old] -= count
    for pair in map(str.__add__, merged, merged[1:]):
        if new in pair:
            created[pair].append(i)
        else:
            pair_counts[pair] += count   # a pair the merge did not touch gets its count back


def _add_new_pairs(created: dict[str, list[int]], counts: list[int], pair_counts: dict[str, int],
                   where: dict[str, list[int]], heap: list[tuple[int, str]]) -> None:
    """Count the pairs a merge created, index them and push each on the heap once."""
    for pair, occurrences in created.items():
        count = _total(occurrences, counts)
        pair_counts[pair] = count
        where[pair] = occurrences
        heapq.heappush(heap, (-count, pair))


def train_bpe(word_counts: Mapping[bytes, int], num_merges: int,
              verbose: bool = False) -> list[tuple[int, int]]:
    """Learn up to ``num_merges`` merges from pre-token counts, updating pair counts incrementally.

    Returns the merges in order: merge ``i`` makes token ``256 + i`` from a pair of ids.
    Gives exactly the merges of :func:`train_bpe_naive` (same tie-breaking).
    """
    words, counts = _words_as_strings(word_counts)
    where = _index_pairs(words)
    pair_counts = {pair: _total(occurrences, counts) for pair, occurrences in where.items()}
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    token_bytes = [bytes([b]) for b in range(256)]   # only for verbose printing

    merges: list[tuple[int, int]] = []
    for step in range(num_merges):
        pair = _pop_best(heap, pair_counts)
        if pair is None:
            break   # every word is a single token
        a, b = ord(pair[0]), ord(pair[1])
        if verbose:
            token_bytes.append(token_bytes[a] + token_bytes[b])
            print(f"merge {step + 1}/{num_merges}: ({a}, {b}) -> {256 + step} "
                  f"{token_bytes[-1]!r} had {pair_counts[pair]} occurrences")
        created = _merge_in_words(pair, chr(256 + step), words, counts, pair_counts, where)
        del pair_counts[pair]
        _add_new_pairs(created, counts, pair_counts, where, heap)
        merges.append((a, b))
    return merges
