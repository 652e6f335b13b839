"""What tokenization does to a model's view of text (chapter 03): spelling, digits, trailing spaces, unused tokens.

A language model never sees characters, only token ids. Each function shows one consequence, with any tokenizer
that encodes text to ids: the course's :class:`~llmcourse.tokenizers.regex_bpe.RegexTokenizer` or tiktoken's
``cl100k_base``.

* :func:`pieces` - the strings the ids stand for. ``" strawberry"`` is one id in cl100k: to count its r's, a
  model must have learned the spelling of that id, because the letters are not in its input;
* :func:`place_value_groups` - GPT-4's pattern cuts digits into groups of three **from the left**, so ``12345`` is
  ``123|45`` but ``2345`` is ``234|5``: the same digit position lands in different tokens, which makes column
  arithmetic hard to learn;
* :func:`with_trailing_space` - a prompt that ends in a space ends in a token that training text rarely has there
  (the space usually belongs to the next word, ``" world"``);
* :func:`never_used` - ids that never occur when the tokenizer encodes a text: merges that were only steps towards
  longer tokens. A model trained on such text never learns their embeddings (the "glitch token" problem).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable


def token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The bytes one id stands for, with a RegexTokenizer or a tiktoken Encoding."""
    if hasattr(tokenizer, "decode_single_token_bytes"):  # tiktoken
        return tokenizer.decode_single_token_bytes(token_id)
    if hasattr(tokenizer, "decode_bytes"):  # the course's tokenizers
        return tokenizer.decode_bytes([token_id])
    raise TypeError(f"{type(tokenizer).__name__} has no way to decode a single token; use a RegexTokenizer or a "
                    f"tiktoken Encoding")


def _encode(tokenizer: Any, text: str) -> list[int]:
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    return list(tokenizer.encode_ordinary(text) if hasattr(tokenizer, "encode_ordinary") else tokenizer.encode(text))


def pieces(tokenizer: Any, text: str) -> list[str]:
    """The text as the model receives it: one string per token (a byte that is part of a character shows as ``\\xe4``)."""
    return [token_bytes(tokenizer, i).decode("utf-8", errors="backslashreplace") for i in _encode(tokenizer, text)]


def place_value_groups(tokenizer: Any, number: int) -> list[tuple[str, int]]:
    """The tokens of a whole number's digits, each with the power of ten of its last digit.

    ``12345`` in cl100k -> ``[("123", 2), ("45", 0)]``: the token "123" ends at the hundreds.
    """
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValueError(f"place_value_groups takes a whole number >= 0, got {number!r}")
    groups, digits_left = [], len(str(number))
    for piece in pieces(tokenizer, str(number)):
        digits_left -= len(piece)
        groups.append((piece, digits_left))
    return groups


def with_trailing_space(tokenizer: Any, text: str) -> tuple[list[str], list[str]]:
    """The pieces of ``text`` and of ``text + " "``: the second usually ends in a lone space token."""
    return pieces(tokenizer, text), pieces(tokenizer, text + " ")


def token_counts(tokenizer: Any, text: str) -> Counter:
    """How often each id occurs when ``text`` is encoded."""
    return Counter(_encode(tokenizer, text))


def never_used(tokenizer: Any, text: str, ids: Iterable[int] | None = None) -> list[int]:
    """The ids (by default every ordinary id of a RegexTokenizer) that never occur in the encoding of ``text``."""
    if ids is None:
        if not hasattr(tokenizer, "merges"):
            raise TypeError("pass the ids to look at (e.g. range(enc.n_vocab)) for a tokenizer without merges")
        ids = sorted(set(tokenizer.byte_ids) | set(tokenizer.merges.values()))
    counts = token_counts(tokenizer, text)
    return [i for i in ids if counts[i] == 0]


__all__ = ["never_used", "pieces", "place_value_groups", "token_bytes", "token_counts", "with_trailing_space"]
