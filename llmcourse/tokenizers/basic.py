"""Byte-pair encoding from scratch, on raw bytes (chapter 03).

Start from the UTF-8 bytes of a text: 256 possible tokens, so any text can be
encoded, in any language, with no unknown token. Then repeat:

1. count every pair of neighbouring tokens (:func:`get_pair_counts`);
2. take the most frequent pair and give it a new id, 256, 257, ...;
3. replace the pair by the new id everywhere in the text (:func:`merge`).

Each round is one *merge*; the list of merges, in order, is the tokenizer.
Encoding a new text replays the merges in the order they were learned (lowest
id first), and decoding just concatenates each token's bytes.

:class:`BasicTokenizer` runs on the whole text at once, without splitting it
into words first, so its tokens can span word boundaries (in "the tree", "e t" can become one
token). :mod:`llmcourse.tokenizers.regex_bpe` fixes that the way GPT-2 and GPT-4 do.
This version recounts all pairs after every merge: clear, and fine for a few
kilobytes of text; :mod:`llmcourse.tokenizers.training` does the same much faster.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

Pair = tuple[int, int]


def get_pair_counts(ids: Iterable[int]) -> dict[Pair, int]:
    """Count how often each pair of neighbouring ids occurs, e.g. ``[1, 2, 1, 2]`` -> ``{(1, 2): 2, (2, 1): 1}``.

    Pairs overlap: ``[5, 5, 5]`` holds ``(5, 5)`` twice. Keys come in order of first appearance.
    """
    ids = list(ids)
    counts: dict[Pair, int] = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Iterable[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, scanning left to right.

    ``merge([5, 5, 5], (5, 5), 256) == [256, 5]``: an occurrence that overlaps one
    already merged is skipped.
    """
    ids = list(ids)
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


@dataclass(frozen=True)
class MergeStep:
    """One round of training, as :meth:`BasicTokenizer.train_steps` yields it."""

    index: int                # 0 for the first merge
    pair: Pair                # the two ids that were merged
    count: int                # how often the pair occurred before the merge
    new_id: int               # the id of the new token, 256 + index
    token: bytes              # the new token's bytes
    vocab: dict[int, bytes]   # a copy of the vocabulary after this merge
    ids: tuple[int, ...]      # the training text, as ids, after this merge


def as_id_list(ids: Iterable[int]) -> list[int]:
    """Token ids as a list of Python ints: a list, a 1-D tensor or NumPy array (``decode(model_output)``)."""
    if hasattr(ids, "tolist") and hasattr(ids, "ndim"):  # a torch tensor or a NumPy array
        if ids.ndim > 1:
            raise ValueError(f"decode takes one sequence of ids, got an array of shape {tuple(ids.shape)}; "
                             f"decode each row (e.g. ids[0])")
        ids = ids.tolist()
        ids = ids if isinstance(ids, list) else [ids]
    ids = list(ids)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"token ids must be whole numbers, got {i!r} ({type(i).__name__})")
    return ids


def replace_lone_surrogates(text: str) -> str:
    """``text`` with every lone surrogate (``"\\ud800"``, not encodable as UTF-8) replaced by U+FFFD, as
    tiktoken does before encoding; other text is returned as it is."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _check_ids(ids: Iterable[int], vocab: dict[int, bytes]) -> list[int]:
    ids = as_id_list(ids)
    for i in ids:
        if i not in vocab:
            raise ValueError(f"token id {i!r} is not in the vocabulary (vocab_size={len(vocab)}, "
                             f"valid ids are 0..{len(vocab) - 1})")
    return ids


class BasicTokenizer:
    """Byte-level BPE on the raw text (no pre-tokenization).

    ``merges``: ``{(id_a, id_b): new_id}`` in the order they were learned.
    ``vocab``: ``{id: bytes}``, the 256 single bytes followed by one token per merge.
    """

    def __init__(self) -> None:
        self.merges: dict[Pair, int] = {}
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def train_steps(self, text: str, num_merges: int) -> Iterator[MergeStep]:
        """Learn ``num_merges`` merges from ``text`` one at a time, yielding a :class:`MergeStep` after each.

        The tokenizer is updated as the generator runs (it starts from scratch).
        The most frequent pair wins; on a tie, the smallest pair (compare the
        first id, then the second), as in :mod:`llmcourse.tokenizers.training`.
        Training stops early if the text shrinks to a single token.
        """
        if num_merges < 0:
            raise ValueError(f"num_merges must be >= 0, got {num_merges}")
        self.merges = {}
        self.vocab = {i: bytes([i]) for i in range(256)}
        ids = list(text.encode("utf-8"))
        for index in range(num_merges):
            counts = get_pair_counts(ids)
            if not counts:
                break
            pair = min(counts, key=lambda p: (-counts[p], p))   # highest count, then smallest pair
            new_id = 256 + index
            ids = merge(ids, pair, new_id)
            self.merges[pair] = new_id
            self.vocab[new_id] = self.vocab[pair[0]] + self.vocab[pair[1]]
            yield MergeStep(index, pair, counts[pair], new_id, self.vocab[new_id], dict(self.vocab), tuple(ids))

    def train(self, text: str, vocab_size: int, verbose: bool = False) -> "BasicTokenizer":
        """Learn ``vocab_size - 256`` merges from ``text``; returns ``self``."""
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be at least 256 (the single bytes), got {vocab_size}")
        for step in self.train_steps(text, vocab_size - 256):
            if verbose:
                print(f"merge {step.index + 1}/{vocab_size - 256}: {step.pair} -> {step.new_id} "
                      f"{step.token!r} ({step.count} occurrences)")
        return self

    def encode(self, text: str) -> list[int]:
        """Text -> ids: its UTF-8 bytes, then the learned merges, earliest (lowest id) first. A lone surrogate
        becomes U+FFFD first, as in tiktoken."""
        ids = list(replace_lone_surrogates(text).encode("utf-8"))
        while len(ids) >= 2:
            pair = min(get_pair_counts(ids), key=lambda p: self.merges.get(p, float("inf")))
            if pair not in self.merges:
                break  # no pair left that training ever merged
            ids = merge(ids, pair, self.merges[pair])
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids -> the concatenation of their bytes."""
        return b"".join(self.vocab[i] for i in _check_ids(ids, self.vocab))

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Ids -> text. A byte sequence that is not valid UTF-8 becomes U+FFFD (with ``errors="replace"``)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)
