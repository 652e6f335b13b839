"""Common mistakes in chapter 03's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

import re
from typing import Callable

import regex

GPT4 = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
        r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# --------------------------------------------------------------------------- pair_counts


def pairs_without_overlap(ids):
    """Steps two at a time, so (ids[1], ids[2]) is never counted."""
    counts = {}
    for pair in zip(ids[::2], ids[1::2]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def pairs_as_a_set(ids):
    """Records that a pair occurs, not how often."""
    return {pair: 1 for pair in zip(ids, ids[1:])}


def pairs_off_by_one(ids):
    """Stops one position early and misses the last pair."""
    counts = {}
    for i in range(len(ids) - 2):
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def pairs_wrap_around(ids):
    """Also pairs the last id with the first, as if the text were a ring."""
    counts = {}
    for i in range(len(ids)):
        pair = (ids[i], ids[(i + 1) % len(ids)])
        counts[pair] = counts.get(pair, 0) + 1
    return counts


# --------------------------------------------------------------------------- merge


def merge_drops_last(ids, pair, new_id):
    """Loops to len - 1 only, so a last id that is not in a pair is lost."""
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_first_only(ids, pair, new_id):
    """Replaces the first occurrence and stops."""
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)


def merge_right_to_left(ids, pair, new_id):
    """Scans from the right: [5, 5, 5] becomes [5, new] instead of [new, 5]."""
    out, i = [], len(ids) - 1
    while i >= 0:
        if i >= 1 and (ids[i - 1], ids[i]) == pair:
            out.append(new_id)
            i -= 2
        else:
            out.append(ids[i])
            i -= 1
    return out[::-1]


def merge_either_order(ids, pair, new_id):
    """Treats the pair as unordered, so (2, 1) is merged too."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) in (pair, pair[::-1]):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_in_place(ids, pair, new_id):
    """Edits the caller's list in place (and returns it)."""
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            ids[i:i + 2] = [new_id]
        i += 1
    return ids


# --------------------------------------------------------------------------- train_merges


def _counts(ids):
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_first_seen_tie(text_bytes, num_merges):
    """Breaks ties by the first pair met (max with key=counts.get), not by the smallest pair."""
    ids, merges = list(text_bytes), {}
    for k in range(num_merges):
        counts = _counts(ids)
        if not counts:
            break
        pair = max(counts, key=counts.get)
        merges[pair] = 256 + k
        ids = _merge(ids, pair, 256 + k)
    return merges


def train_counts_once(text_bytes, num_merges):
    """Counts pairs once and takes the top ones, never recounting after a merge."""
    counts = _counts(list(text_bytes))
    best = sorted(counts, key=lambda p: (-counts[p], p))[:num_merges]
    return {pair: 256 + k for k, pair in enumerate(best)}


def train_ids_from_zero(text_bytes, num_merges):
    """Numbers the new tokens 0, 1, 2, ..., clashing with the byte ids."""
    ids, merges = list(text_bytes), {}
    for k in range(num_merges):
        counts = _counts(ids)
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges[pair] = k
        ids = _merge(ids, pair, k)
    return merges


def train_no_early_stop(text_bytes, num_merges):
    """Assumes there is always a pair left: max() of an empty dict raises."""
    ids, merges = list(text_bytes), {}
    for k in range(num_merges):
        counts = _counts(ids)
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges[pair] = 256 + k
        ids = _merge(ids, pair, 256 + k)
    return merges


def train_largest_pair_on_ties(text_bytes, num_merges):
    """Breaks ties by the largest pair."""
    ids, merges = list(text_bytes), {}
    for k in range(num_merges):
        counts = _counts(ids)
        if not counts:
            break
        pair = max(counts, key=lambda p: (counts[p], p))
        merges[pair] = 256 + k
        ids = _merge(ids, pair, 256 + k)
    return merges


# --------------------------------------------------------------------------- encode_with_merges


def encode_with_ord(text, merges):
    """Uses ord() of each character instead of the UTF-8 bytes (wrong for anything beyond ASCII)."""
    ids = [ord(ch) for ch in text]
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = _merge(ids, pair, merges[pair])
    return ids


def encode_most_frequent_first(text, merges):
    """Merges the most frequent known pair of this text first, as in training, instead of the lowest rank."""
    ids = list(text.encode("utf-8"))
    while True:
        counts = {p: c for p, c in _counts(ids).items() if p in merges}
        if not counts:
            return ids
        pair = max(counts, key=counts.get)
        ids = _merge(ids, pair, merges[pair])


def encode_leftmost_first(text, merges):
    """Merges the leftmost known pair first, whatever its rank."""
    ids = list(text.encode("utf-8"))
    while True:
        for i in range(len(ids) - 1):
            if (ids[i], ids[i + 1]) in merges:
                ids = ids[:i] + [merges[ids[i], ids[i + 1]]] + ids[i + 2:]
                break
        else:
            return ids


def encode_in_dict_order(text, merges):
    """Replays the merges in the dict's order, trusting it to be the order they were learned."""
    ids = list(text.encode("utf-8"))
    for pair, new_id in merges.items():
        ids = _merge(ids, pair, new_id)
    return ids


def encode_one_round(text, merges):
    """Merges the lowest-rank pair once and stops."""
    ids = list(text.encode("utf-8"))
    if len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
        if pair in merges:
            ids = _merge(ids, pair, merges[pair])
    return ids


# --------------------------------------------------------------------------- decode_ids


def decode_each_token(ids, vocab):
    """Decodes every token on its own: a character split over two tokens turns into two U+FFFD."""
    for i in ids:
        if i not in vocab:
            raise ValueError(f"unknown token id {i}")
    return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)


def decode_ignoring_errors(ids, vocab):
    """errors='ignore' silently drops invalid bytes."""
    for i in ids:
        if i not in vocab:
            raise ValueError(f"unknown token id {i}")
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="ignore")


def decode_strict(ids, vocab):
    """Strict decoding crashes on the first invalid byte."""
    for i in ids:
        if i not in vocab:
            raise ValueError(f"unknown token id {i}")
    return b"".join(vocab[i] for i in ids).decode("utf-8")


def decode_latin1(ids, vocab):
    """Decodes as Latin-1: one character per byte, so Chinese and emoji come out as mojibake."""
    for i in ids:
        if i not in vocab:
            raise ValueError(f"unknown token id {i}")
    return b"".join(vocab[i] for i in ids).decode("latin-1")


def decode_key_error(ids, vocab):
    """Lets a bare KeyError escape for an unknown id."""
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def decode_skips_unknown(ids, vocab):
    """Silently skips ids it does not know."""
    return b"".join(vocab[i] for i in ids if i in vocab).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- regex_split


def split_on_whitespace(text, special_tokens=()):
    """str.split() throws the spaces away, so the pieces no longer add up to the text."""
    return text.split()


def split_with_gpt2_pattern(text, special_tokens=()):
    """GPT-2's pattern: long numbers stay whole and 'DON'T' splits differently."""
    pattern = "(" + "|".join(regex.escape(s) for s in special_tokens) + ")" if special_tokens else None
    parts = regex.split(pattern, text) if pattern else [text]
    out = []
    for k, part in enumerate(parts):
        if k % 2:
            out.append(part)
        elif part:
            out.extend(regex.findall(GPT2, part))
    return out


def split_with_re_module(text, special_tokens=()):
    """Python's re module does not know \\p{L}: compiling the pattern fails."""
    return re.findall(GPT4, text)


def split_ignores_special_tokens(text, special_tokens=()):
    """Runs the pattern over special tokens too: '<|endoftext|>' is cut into '<|', 'endoftext', '|>'."""
    return regex.findall(GPT4, text)


def split_drops_special_tokens(text, special_tokens=()):
    """Splits around the special tokens but forgets to keep them."""
    if not special_tokens:
        return regex.findall(GPT4, text)
    out = []
    for part in regex.split("|".join(regex.escape(s) for s in special_tokens), text):
        out.extend(regex.findall(GPT4, part))
    return out


# --------------------------------------------------------------------------- to_mergeable_ranks


def ranks_pair_as_two_bytes(merges):
    """Builds each token as bytes([a, b]): right only when both halves are single bytes."""
    ranks = {bytes([b]): b for b in range(256)}
    for (a, b), new_id in merges.items():
        ranks[bytes([a % 256, b % 256])] = new_id
    return ranks


def ranks_without_single_bytes(merges):
    """Forgets the 256 single bytes, which tiktoken needs as ranks 0..255."""
    vocab = {b: bytes([b]) for b in range(256)}
    ranks = {}
    for (a, b), new_id in sorted(merges.items(), key=lambda item: item[1]):
        vocab[new_id] = vocab[a] + vocab[b]
        ranks[vocab[new_id]] = new_id
    return ranks


def ranks_counted_from_zero(merges):
    """Ranks the merged tokens 0, 1, 2, ..., colliding with the single bytes."""
    vocab = {b: bytes([b]) for b in range(256)}
    ranks = {bytes([b]): b for b in range(256)}
    for k, ((a, b), new_id) in enumerate(sorted(merges.items(), key=lambda item: item[1])):
        vocab[new_id] = vocab[a] + vocab[b]
        ranks[vocab[new_id]] = k
    return ranks


def ranks_with_str_keys(merges):
    """Uses decoded strings as keys; tiktoken's ranks are keyed by bytes."""
    vocab = {b: bytes([b]) for b in range(256)}
    ranks = {bytes([b]).decode("latin-1"): b for b in range(256)}
    for (a, b), new_id in sorted(merges.items(), key=lambda item: item[1]):
        vocab[new_id] = vocab[a] + vocab[b]
        ranks[vocab[new_id].decode("utf-8", errors="replace")] = new_id
    return ranks



# --------------------------------------------------------------------------- RegexTokenizer (build the class)

import json  # noqa: E402

import regex  # noqa: E402
from collections import Counter  # noqa: E402

from llmcourse.tokenizers.basic import get_pair_counts, merge  # noqa: E402

from llmcourse.tokenizers.training import GPT4_PATTERN  # noqa: E402


class _Tokenizer:
    """A correct tokenizer, written on the package's pair counting and merging (not the solution's code); each
    subclass below breaks one thing."""

    def __init__(self, pattern=GPT4_PATTERN):
        self.pattern, self.compiled, self.special_tokens = pattern, regex.compile(pattern), {}
        self.load_merges({})

    def load_merges(self, merges):
        self.merges = dict(merges)
        self.vocab = {i: bytes([i]) for i in range(256)}
        for (a, b), new_id in sorted(self.merges.items(), key=lambda item: item[1]):
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]

    def train(self, text, vocab_size):
        chunks = [list(c.encode("utf-8")) for c in self.compiled.findall(text)]
        merges = {}
        while 256 + len(merges) < vocab_size:
            counts = Counter()
            for chunk in chunks:
                counts.update(get_pair_counts(chunk))
            if not counts:
                break
            best, new_id = counts.most_common(1)[0][0], 256 + len(merges)
            merges[best] = new_id
            chunks = [merge(chunk, best, new_id) for chunk in chunks]
        self.load_merges(merges)
        return self

    @staticmethod
    def _merge(ids, pair, new_id):
        return merge(ids, pair, new_id)

    def _encode_piece(self, piece):
        ids = list(piece.encode("utf-8"))
        while True:
            ranked = [(self.merges[p], p) for p in get_pair_counts(ids) if p in self.merges]
            if not ranked:
                return ids
            new_id, pair = min(ranked)
            ids = merge(ids, pair, new_id)

    def register_special_tokens(self, special_tokens):
        self.special_tokens.update(special_tokens)

    def encode(self, text, allowed_special="none"):
        specials = sorted(self.special_tokens, key=len, reverse=True) if allowed_special == "all" else []
        ids, rest = [], text
        while rest:
            hits = [(rest.find(s), s) for s in specials if s in rest]
            cut, special = min(hits) if hits else (len(rest), None)
            for piece in self.compiled.findall(rest[:cut]):
                ids += self._encode_piece(piece)
            if special is None:
                break
            ids.append(self.special_tokens[special])
            rest = rest[cut + len(special):]
        return ids

    def decode(self, ids):
        names = {i: s for s, i in self.special_tokens.items()}
        return b"".join(names[i].encode() if i in names else self.vocab[i] for i in ids).decode("utf-8", "replace")

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"pattern": self.pattern, "special_tokens": self.special_tokens,
                       "merges": sorted([a, b, i] for (a, b), i in self.merges.items())}, f)

    def load(self, path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        self.pattern, self.compiled = saved["pattern"], regex.compile(saved["pattern"])
        self.special_tokens = dict(saved["special_tokens"])
        self.load_merges({(a, b): i for a, b, i in saved["merges"]})
        return self


class TokenizerWithoutRegexSplit(_Tokenizer):
    """Merges across the regex pieces (encodes the whole text as one piece)."""

    def encode(self, text, allowed_special="none"):
        return self._encode_piece(text)


class TokenizerMergesInOnePass(_Tokenizer):
    """Applies each merge once, in order, over the whole piece: later merges cannot build on earlier ones' results
    made after them, and the lowest-id rule is ignored."""

    def _encode_piece(self, piece):
        ids = list(piece.encode("utf-8"))
        for pair, new_id in sorted(self.merges.items(), key=lambda item: -item[1]):
            ids = self._merge(ids, pair, new_id)
        return ids


class TokenizerStrictDecode(_Tokenizer):
    """Decodes strictly: broken UTF-8 raises instead of becoming U+FFFD."""

    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8")


class TokenizerIgnoresSpecialTokens(_Tokenizer):
    """Registers special tokens but never encodes them as their ids."""

    def encode(self, text, allowed_special="none"):
        return super().encode(text, allowed_special="none")


class TokenizerSavesNoSpecialTokens(_Tokenizer):
    """Forgets the special tokens when saving."""

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"pattern": self.pattern, "special_tokens": {},
                       "merges": [[a, b, i] for (a, b), i in self.merges.items()]}, f)

# --------------------------------------------------------------------------- bytes_per_token


def _bpe_ids(train_text, text, num_merges):
    """Byte-level BPE trained on train_text, then text encoded by replaying the merges in order."""
    def replace(ids, pair, new_id):
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    ids, merges = list(train_text.encode("utf-8")), []
    for step in range(num_merges):
        counts = {}
        for pair in zip(ids, ids[1:]):
            counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        ids = replace(ids, pair, 256 + step)
        merges.append(pair)
    ids = list(text.encode("utf-8"))
    for step, pair in enumerate(merges):
        ids = replace(ids, pair, 256 + step)
    return ids


def bpt_measured_on_the_training_text(train_text, test_text, num_merges):
    """Measures the ratio on the training text, not on the held-out text it was given."""
    return len(train_text.encode("utf-8")) / len(_bpe_ids(train_text, train_text, num_merges))


def bpt_characters_per_token(train_text, test_text, num_merges):
    """Divides the number of characters, not bytes, by the number of tokens."""
    return len(test_text) / len(_bpe_ids(train_text, test_text, num_merges))


def bpt_tokens_per_byte(train_text, test_text, num_merges):
    """Returns the inverse ratio: tokens per byte."""
    return len(_bpe_ids(train_text, test_text, num_merges)) / len(test_text.encode("utf-8"))


def bpt_one_merge_too_few(train_text, test_text, num_merges):
    """Trains num_merges - 1 merges (vocab_size = 255 + num_merges), an off-by-one in the vocabulary size."""
    return len(test_text.encode("utf-8")) / len(_bpe_ids(train_text, test_text, max(num_merges - 1, 0)))


# --------------------------------------------------------------------------- run_token_count


def run_count_ceil(n, k):
    """Guesses that each merge halves the run, rounding up: ceil(n / 2**k)."""
    return -(-n // 2 ** k)


def run_count_without_leftovers(n, k):
    """Counts only the copies of the longest token, n // 2**k, and forgets the shorter tokens left over."""
    return n // 2 ** k


def run_count_one_token_per_merge(n, k):
    """Assumes every merge saves exactly one token: n - k."""
    return n - k


def run_count_in_floats(n, k):
    """The right formula, but computed with float division, which cannot hold a huge n exactly."""
    return int(n / 2 ** k) + bin(int(n - int(n / 2 ** k) * 2 ** k)).count("1")


WRONG: dict[str, list[Callable]] = {
    "RegexTokenizer": [TokenizerWithoutRegexSplit, TokenizerMergesInOnePass, TokenizerStrictDecode,
                       TokenizerIgnoresSpecialTokens, TokenizerSavesNoSpecialTokens],
    "pair_counts": [pairs_without_overlap, pairs_as_a_set, pairs_off_by_one, pairs_wrap_around],
    "merge": [merge_drops_last, merge_first_only, merge_right_to_left, merge_either_order, merge_in_place],
    "train_merges": [train_first_seen_tie, train_counts_once, train_ids_from_zero, train_no_early_stop,
                     train_largest_pair_on_ties],
    "encode_with_merges": [encode_with_ord, encode_most_frequent_first, encode_leftmost_first, encode_in_dict_order,
                           encode_one_round],
    "decode_ids": [decode_each_token, decode_ignoring_errors, decode_strict, decode_latin1, decode_key_error,
                   decode_skips_unknown],
    "regex_split": [split_on_whitespace, split_with_gpt2_pattern, split_with_re_module, split_ignores_special_tokens,
                    split_drops_special_tokens],
    "to_mergeable_ranks": [ranks_pair_as_two_bytes, ranks_without_single_bytes, ranks_counted_from_zero,
                           ranks_with_str_keys],
    "bytes_per_token": [bpt_measured_on_the_training_text, bpt_characters_per_token, bpt_tokens_per_byte,
                        bpt_one_merge_too_few],
    "run_token_count": [run_count_ceil, run_count_without_leftovers, run_count_one_token_per_merge,
                        run_count_in_floats],
}
