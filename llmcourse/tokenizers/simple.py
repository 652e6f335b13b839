"""The two simplest tokenizers: one token per character, one token per word (chapter 03).

A tokenizer turns text into a list of integers (token ids) and back. Its
vocabulary is a two-way dictionary: ``stoi`` maps a token string to its id,
``itos`` maps an id back to the string.

* :class:`CharTokenizer` uses every distinct character of a training text as a
  token. The vocabulary is small (a few dozen ids for English, thousands for
  Chinese) and any text made of known characters round-trips exactly, but the
  sequences are long: one id per character.
* :class:`WordTokenizer` splits text into words and punctuation marks and keeps
  the ``max_vocab`` most frequent ones. Sequences are short, but the vocabulary
  explodes (every spelling, plural and name is a new word), rare words all
  become ``<unk>``, and the spacing of the original text is lost.

Byte-pair encoding (:mod:`llmcourse.tokenizers.basic`) sits between the two.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

import regex

UNK = "<unk>"


class UnknownTokenError(KeyError):
    """A character or word that is not in the vocabulary (a ``KeyError`` with a readable message)."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


def _check_ids(ids: Iterable[int], itos: dict[int, str]) -> list[int]:
    from llmcourse.tokenizers.basic import as_id_list

    ids = as_id_list(ids)
    for i in ids:
        if i not in itos:
            raise ValueError(f"token id {i!r} is not in the vocabulary (vocab_size={len(itos)}, "
                             f"valid ids are 0..{len(itos) - 1})")
    return ids


# --------------------------------------------------------------------------- characters


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters seen in training.

    ``unk``: if given (e.g. ``"<unk>"``), unknown characters encode to this token
    (id 0) instead of raising :class:`UnknownTokenError`.
    """

    def __init__(self, unk: str | None = None):
        self.unk = unk
        self.stoi: dict[str, int] = {}
        self.itos: dict[int, str] = {}

    def train(self, text: str) -> "CharTokenizer":
        """Build the vocabulary from the characters of ``text``; returns ``self``."""
        chars = sorted(set(text) - {self.unk})
        tokens = ([self.unk] if self.unk is not None else []) + chars
        self.stoi = {s: i for i, s in enumerate(tokens)}
        self.itos = {i: s for s, i in self.stoi.items()}
        return self

    @property
    def vocab_size(self) -> int:
        return len(self.stoi)

    def encode(self, text: str) -> list[int]:
        """Text -> one id per character."""
        stoi = self.stoi
        try:
            return [stoi[ch] for ch in text]
        except KeyError:
            pass
        if self.unk is not None:
            unk_id = stoi[self.unk]
            return [stoi.get(ch, unk_id) for ch in text]
        bad = next(ch for ch in text if ch not in stoi)
        raise UnknownTokenError(
            f"character {bad!r} (U+{ord(bad):04X}) is not in the vocabulary of {self.vocab_size} "
            "characters: train on a text that contains it, or use CharTokenizer(unk='<unk>')")

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text (the concatenation of their characters)."""
        return "".join(self.itos[i] for i in _check_ids(ids, self.itos))


# --------------------------------------------------------------------------- words

# A word is a run of letters, digits or underscores; every other visible character
# (punctuation, symbols, emoji) is a token of its own; whitespace is dropped.
WORD_PATTERN = r"\w+|[^\w\s]"
_NO_SPACE_BEFORE = set(".,;:!?%)]}")
_NO_SPACE_AFTER = set("([{")


class WordTokenizer:
    """One token per word or punctuation mark, with a capped vocabulary and an ``<unk>`` token.

    ``max_vocab``: keep at most this many tokens (``<unk>`` included), the most
    frequent ones (ties: alphabetical). ``lowercase``: fold case before splitting.
    Decoding is lossy: the original whitespace is not stored, so words are
    joined by single spaces (none before ``. , ; : ! ?`` and closing brackets).
    """

    def __init__(self, max_vocab: int | None = None, lowercase: bool = False):
        if max_vocab is not None and max_vocab < 1:
            raise ValueError(f"max_vocab must be at least 1 (room for {UNK}), got {max_vocab}")
        self.max_vocab = max_vocab
        self.lowercase = lowercase
        self.stoi: dict[str, int] = {UNK: 0}
        self.itos: dict[int, str] = {0: UNK}

    def split(self, text: str) -> list[str]:
        """Text -> words and punctuation marks (the pre-tokenization step of a word tokenizer)."""
        if self.lowercase:
            text = text.lower()
        return regex.findall(WORD_PATTERN, text)

    def train(self, text: str) -> "WordTokenizer":
        """Keep the most frequent words of ``text`` (up to ``max_vocab`` tokens); returns ``self``."""
        counts = Counter(self.split(text))
        counts.pop(UNK, None)
        words = sorted(counts, key=lambda w: (-counts[w], w))
        if self.max_vocab is not None:
            words = words[: self.max_vocab - 1]
        self.stoi = {UNK: 0, **{w: i + 1 for i, w in enumerate(words)}}
        self.itos = {i: w for w, i in self.stoi.items()}
        return self

    @property
    def vocab_size(self) -> int:
        return len(self.stoi)

    def encode(self, text: str) -> list[int]:
        """Text -> one id per word or punctuation mark; words outside the vocabulary become ``<unk>`` (0)."""
        return [self.stoi.get(w, 0) for w in self.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> words joined by spaces (the exact spacing of the original is lost)."""
        out: list[str] = []
        for word in (self.itos[i] for i in _check_ids(ids, self.itos)):
            if out and not (word[0] in _NO_SPACE_BEFORE or out[-1][-1] in _NO_SPACE_AFTER):
                out.append(" ")
            out.append(word)
        return "".join(out)
