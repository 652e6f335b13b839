"""The course's own tokenizer (chapter 03): the one the course's GPT reads and writes in the later chapters.

A byte-level BPE with GPT-4's pre-tokenizer, trained on the first million characters of Python's documentation
(the offline English corpus chapter 08 pretrains on): 256 byte tokens, 3,839 merges and ``<|endoftext|>``, 4,096
ids in all. Training takes a second; :func:`course_tokenizer` trains it once and afterwards loads it from the
artifact cache (:mod:`llmcourse.artifacts`), checking its checksum, so every chapter uses exactly the same merges.
"""
from __future__ import annotations

import os
from pathlib import Path

from llmcourse.artifacts import Obtained, obtain, text_sha256
from llmcourse.tokenizers.corpora import english_prose
from llmcourse.tokenizers.regex_bpe import RegexTokenizer
from llmcourse.tokenizers.training import GPT4_PATTERN

N_CHARS = 1_000_000          # characters of Python's documentation it is trained on
VOCAB_SIZE = 4096            # ids in all, <|endoftext|> included
END_OF_TEXT = "<|endoftext|>"
ARTIFACT = "tokenizer.json"


def training_text() -> str:
    """The text the course's tokenizer is trained on: the first N_CHARS characters of Python's documentation."""
    return english_prose(N_CHARS)[:N_CHARS]  # what chapter 08's real_text_corpus(N_CHARS) gives too


def course_tokenizer_recipe(text: str | None = None) -> dict:
    """Every setting that decides the course's tokenizer, including a checksum of its training text."""
    text = training_text() if text is None else text
    return {"kind": "regex-bpe", "pattern": GPT4_PATTERN, "vocab_size": VOCAB_SIZE,
            "special_tokens": {END_OF_TEXT: VOCAB_SIZE - 1}, "corpus": "python-docs", "n_chars": N_CHARS,
            "corpus_sha256": text_sha256(text)}


def train_course_tokenizer(text: str | None = None) -> RegexTokenizer:
    """Train the course's tokenizer from scratch (what :func:`course_tokenizer` does when nothing is cached)."""
    text = training_text() if text is None else text
    tokenizer = RegexTokenizer(GPT4_PATTERN).train(text, vocab_size=VOCAB_SIZE - 1)
    tokenizer.register_special_tokens({END_OF_TEXT: VOCAB_SIZE - 1})
    return tokenizer


def course_tokenizer(cache_dir: str | os.PathLike | None = None, rebuild: bool = False) -> Obtained[RegexTokenizer]:
    """The course's tokenizer, loaded from the artifact cache or trained and cached first.

    ``print`` the result to see which happened; ``.value`` is the :class:`RegexTokenizer`.
    """
    text = training_text()

    def build(path: Path) -> None:
        train_course_tokenizer(text).save(path)

    return obtain(ARTIFACT, course_tokenizer_recipe(text), build, RegexTokenizer.load, chapter="03",
                  cache_dir=cache_dir, rebuild=rebuild)


__all__ = ["ARTIFACT", "END_OF_TEXT", "N_CHARS", "VOCAB_SIZE", "course_tokenizer", "course_tokenizer_recipe",
           "train_course_tokenizer", "training_text"]
