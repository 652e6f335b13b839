"""Byte-level BPE with regex pre-tokenization and special tokens, the GPT-2/GPT-4 way (chapter 03).

:class:`~llmcourse.tokenizers.basic.BasicTokenizer` lets merges cross word
boundaries, so it wastes vocabulary on tokens like "e t" or "dog." and "dog!".
GPT-2 first cuts the text into *pre-tokens* with a regular expression (words
with their leading space, runs of digits, runs of punctuation, whitespace) and
runs BPE inside each pre-token only. That is the only difference in training;
encoding becomes:

1. split the text around the special tokens the caller allows (``<|endoftext|>``, ...);
2. split each ordinary part into pre-tokens with the pattern;
3. encode each pre-token on its own: start from its bytes and repeatedly merge
   the neighbouring pair with the lowest rank (the earliest merge learned),
   which is how tiktoken does it (:meth:`RegexTokenizer.bpe`). Pre-tokens repeat
   a lot (" the", " of"), so their encodings are kept in an LRU cache, and a
   pre-token that is itself a token is looked up directly.

Because every pre-token is encoded on its own, a text too large for memory can
be encoded piece by piece (:meth:`RegexTokenizer.encode_iterable`): the only
care needed is at the seams, where a word, a run of spaces or a special token
may continue in the next piece.

A saved tokenizer is one JSON file: format name and version, pattern, the ids
of the 256 single bytes, the merges in order and the special tokens.
"""
from __future__ import annotations

import functools
import json
import os
from collections import Counter
from pathlib import Path
from types import MappingProxyType
from typing import AbstractSet, Iterable, Iterator, Literal, Mapping, Sequence, Union

import regex

from llmcourse.files import atomic_write
from llmcourse.tokenizers.basic import as_id_list, replace_lone_surrogates
from llmcourse.tokenizers.training import GPT4_PATTERN, train_bpe

Pair = tuple[int, int]
AllowedSpecial = Union[Literal["none_raise", "all", "none"], AbstractSet[str]]

FORMAT_NAME = "llmcourse-regex-bpe"
FORMAT_VERSION = 1
CACHE_SIZE = 1 << 16   # pre-tokens whose encodings are remembered


def _merge(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` by ``new_id``, left to right (as in ``basic.merge``)."""
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class RegexTokenizer:
    """Byte-level BPE that runs inside the pre-tokens cut by ``pattern``.

    ``merges``: ``{(id_a, id_b): new_id}``; the new id is also the merge's rank
    (lower = learned earlier = applied first). ``byte_ids[b]``: the id of the
    single byte ``b`` (``b`` itself after :meth:`train`; cl100k orders them differently).
    ``special_tokens``: ``{"<|endoftext|>": id, ...}``.
    """

    def __init__(self, pattern: str = GPT4_PATTERN):
        self.pattern = pattern
        self._compiled = regex.compile(pattern)
        self.special_tokens: dict[str, int] = {}
        self._set_merges({}, tuple(range(256)))

    @classmethod
    def from_merges(cls, merges: Mapping[Pair, int] | Sequence[Pair], pattern: str = GPT4_PATTERN,
                    special_tokens: Mapping[str, int] | None = None,
                    byte_ids: Sequence[int] | None = None) -> "RegexTokenizer":
        """A tokenizer from known merges: a ``{pair: new_id}`` dict, or a list where merge i makes id 256 + i."""
        tok = cls(pattern)
        if not isinstance(merges, Mapping):
            merges = {tuple(pair): 256 + i for i, pair in enumerate(merges)}
        tok._set_merges(merges, tuple(range(256)) if byte_ids is None else tuple(byte_ids))
        if special_tokens:
            tok.register_special_tokens(special_tokens)
        return tok

    # ----------------------------------------------------------------------- vocabulary

    def _set_merges(self, merges: Mapping[Pair, int], byte_ids: tuple[int, ...]) -> None:
        """Install merges and byte ids, check that they make sense, and rebuild the vocabulary."""
        if len(byte_ids) != 256 or len(set(byte_ids)) != 256:
            raise ValueError("byte_ids must give 256 different ids, one for each byte value")
        vocab = {i: bytes([b]) for b, i in enumerate(byte_ids)}
        last = -1
        for (a, b), new_id in merges.items():
            if a not in vocab or b not in vocab:
                raise ValueError(f"merge ({a}, {b}) -> {new_id} uses an id that no earlier merge or byte created")
            if new_id in vocab or new_id <= last:
                raise ValueError(f"merge ({a}, {b}) -> {new_id}: new ids must be fresh and increase "
                                 "in the order the merges were learned")
            vocab[new_id] = vocab[a] + vocab[b]
            last = new_id
        clash = {s: i for s, i in self.special_tokens.items() if i in vocab}
        if clash:
            raise ValueError(f"special tokens {clash} use ids that the merges now give to ordinary tokens")
        self.merges = dict(merges)
        self.byte_ids = byte_ids
        self._vocab = vocab
        self._token_ids = {token: i for i, token in vocab.items()}
        # a fresh cache: the old one remembers encodings under the old merges
        self._encode_cached = functools.lru_cache(maxsize=CACHE_SIZE)(self._encode_pretoken)

    @property
    def vocab(self) -> Mapping[int, bytes]:
        """``{id: bytes}`` for the ordinary tokens (special tokens are in :attr:`special_tokens`), read-only."""
        return MappingProxyType(self._vocab)

    @property
    def vocab_size(self) -> int:
        """One more than the largest id, special tokens included (tiktoken's ``n_vocab``)."""
        return max([*self._vocab, *self.special_tokens.values()]) + 1

    def register_special_tokens(self, special_tokens: Mapping[str, int]) -> None:
        """Add special tokens, e.g. ``{"<|endoftext|>": 4096}``; their ids must be unused."""
        taken = {i: s for s, i in self.special_tokens.items()}
        for text, i in special_tokens.items():
            if not isinstance(text, str) or not text:
                raise ValueError(f"a special token must be a non-empty string, got {text!r}")
            if not isinstance(i, int) or i < 0:
                raise ValueError(f"special token {text!r}: id must be a non-negative int, got {i!r}")
            if i in self._vocab:
                raise ValueError(f"special token {text!r}: id {i} already belongs to the ordinary token "
                                 f"{self._vocab[i]!r}; use an id >= {len(self._vocab)}")
            if taken.get(i, text) != text:
                raise ValueError(f"special token {text!r}: id {i} already belongs to {taken[i]!r}")
            taken[i] = text
        self.special_tokens = {**self.special_tokens, **special_tokens}

    # ----------------------------------------------------------------------- training

    def train(self, text: str, vocab_size: int, verbose: bool = False) -> "RegexTokenizer":
        """Learn ``vocab_size - 256`` merges from the pre-tokens of ``text``; returns ``self``.

        Special tokens already registered are kept (their ids must stay above the new vocabulary). A pattern
        that leaves some character of ``text`` unmatched is a ``ValueError``, as in :meth:`pretokenize`.
        """
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be at least 256 (the single bytes), got {vocab_size}")
        counts = Counter(self.pretokenize(replace_lone_surrogates(text)))  # count the strings first: fewer to encode
        word_counts = Counter({piece.encode("utf-8"): n for piece, n in counts.items()})
        merges = train_bpe(word_counts, vocab_size - 256, verbose=verbose)
        self._set_merges({tuple(pair): 256 + i for i, pair in enumerate(merges)}, tuple(range(256)))
        return self

    # ----------------------------------------------------------------------- encoding

    def pretokenize(self, text: str) -> list[str]:
        """Cut ``text`` into pre-tokens with the pattern, e.g. ``"Hello world!"`` -> ``["Hello", " world", "!"]``.

        A pattern that leaves some character unmatched would silently drop it (tiktoken does): here that
        is a ``ValueError`` naming the character and its position.
        """
        pieces = self._compiled.findall(text)
        if sum(map(len, pieces)) != len(text):
            self._raise_uncovered(text)
        return pieces

    def _raise_uncovered(self, text: str, start: int = 0) -> None:
        at = start
        for found in self._compiled.finditer(text, start):
            if found.start() != at:
                break
            at = found.end()
        raise ValueError(f"the pre-tokenization pattern does not match every character: {text[at:at + 1]!r} at "
                         f"position {at} would be dropped. Use a pattern whose alternatives cover all text "
                         f"(e.g. end it with |\\s+|\\S), such as the GPT-2 or GPT-4 patterns")

    def bpe(self, data: bytes) -> list[int]:
        """Encode the bytes of one pre-token: repeatedly merge the neighbouring pair of lowest rank.

        The algorithm itself, without the cache and the shortcut of :meth:`encode_pretoken`.
        """
        ids = [self.byte_ids[b] for b in data]
        ranks = self.merges
        while len(ids) >= 2:
            # the pair learned earliest (lowest rank) is merged first
            pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, float("inf")))
            if pair not in ranks:
                break   # no neighbouring pair was ever merged: done
            ids = _merge(ids, pair, ranks[pair])
        return ids

    def _encode_pretoken(self, piece: str) -> tuple[int, ...]:
        data = piece.encode("utf-8")
        whole = self._token_ids.get(data)
        if whole is not None:
            # A shortcut tiktoken also takes: a pre-token that is itself a token (" the") needs no
            # merging. BPE would get there anyway: on a token's own bytes, the merges rebuild it.
            return (whole,)
        return tuple(self.bpe(data))

    def encode_pretoken(self, piece: str) -> list[int]:
        """Encode one pre-token (a string the pattern cut out) by merge rank; results are cached."""
        return list(self._encode_cached(piece))

    def clear_cache(self) -> None:
        """Forget the cached pre-token encodings (e.g. to time encoding from a cold start)."""
        self._encode_cached.cache_clear()

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` ignoring special tokens: ``"<|endoftext|>"`` is just 13 characters here."""
        ids: list[int] = []
        encode = self._encode_cached
        for piece in self.pretokenize(replace_lone_surrogates(text)):
            ids.extend(encode(piece))
        return ids

    def encode(self, text: str, allowed_special: AllowedSpecial = "none_raise") -> list[int]:
        """Encode ``text``, treating special-token strings as tiktoken does.

        ``allowed_special``: ``"none_raise"`` (default) raises ``ValueError`` if
        the text contains a special token; ``"all"`` encodes every special token
        as its id; ``"none"`` encodes them as ordinary text; a set of strings
        encodes those as ids and raises on any other special token in the text.
        """
        allowed = self._allowed_specials(allowed_special)
        text = replace_lone_surrogates(text)  # as tiktoken: a lone surrogate becomes U+FFFD
        if allowed_special != "none":
            disallowed = [s for s in self.special_tokens if s not in allowed]
            found = _special_regex(disallowed).search(text) if disallowed else None
            if found:
                raise ValueError(
                    f"the text contains the special token {found.group()!r} at position {found.start()}. "
                    "Pass allowed_special='all' (or a set containing it) to encode it as its special id, "
                    "or allowed_special='none' to encode it as ordinary text.")
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        # a capturing group makes regex.split keep the special tokens: odd positions are specials
        for k, part in enumerate(_special_regex(list(allowed), capture=True).split(text)):
            if k % 2:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def encode_iterable(self, texts: Iterable[str], allowed_special: AllowedSpecial = "none_raise") -> Iterator[int]:
        """Encode a stream of texts (the lines of an open file, chunks of any size) lazily, one id at a time.

        The ids are exactly those of ``encode("".join(texts))``, however the text is cut, while only about one
        piece is held in memory::

            with open("corpus.txt", encoding="utf-8") as f:
                ids = np.fromiter(tokenizer.encode_iterable(f), dtype=np.uint32)

        At each seam the last pre-token (" wor" may become " world") and any tail that could start a special
        token (``"<|endo"``) wait for the next piece; everything before them is encoded and yielded.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("encode_iterable wants an iterable of strings (e.g. an open text file); "
                            "to encode one string use encode(text)")
        self._allowed_specials(allowed_special)  # a bad argument fails here, before anything is read
        return self._encode_stream(texts, allowed_special)

    def _encode_stream(self, texts: Iterable[str], allowed_special: AllowedSpecial) -> Iterator[int]:
        watched = [] if allowed_special == "none" else list(self.special_tokens)
        buffer = ""
        for k, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"encode_iterable: item {k} is {type(text).__name__}, not str "
                                "(open files in text mode: open(path, encoding='utf-8'))")
            buffer += replace_lone_surrogates(text)
            ids, buffer = self._encode_settled(buffer, watched, allowed_special)
            yield from ids
        yield from self.encode(buffer, allowed_special)  # the end of the stream: nothing can change any more

    def _encode_settled(self, buffer: str, watched: list[str], allowed_special: AllowedSpecial) -> tuple[list[int], str]:
        """The ids of the part of ``buffer`` that more text cannot change, and the rest of ``buffer``."""
        limit = len(buffer)
        for special in watched:  # a tail that could grow into a special token ("<|endo") waits
            for k in range(min(len(special) - 1, len(buffer)), 0, -1):
                if buffer.endswith(special[:k]):
                    limit = min(limit, len(buffer) - k)
                    break
        head = buffer[:limit]
        settled = 0  # a special token is a hard boundary: the text before the last one is complete
        if watched:
            for found in _special_regex(watched).finditer(head):
                settled = found.end()
        ids = self.encode(head[:settled], allowed_special) if settled else []
        # Pre-tokens are cut from the whole buffer, not from a shorter prefix: at the end of a string the
        # pattern reads differently ("  0" is " ", " ", "0", but "  " alone is one pre-token). Every pre-token
        # but the last is followed by text and stays; the last (" wor" may become " world") waits.
        pieces = list(self._compiled.finditer(head, settled))
        if any(a.end() != b.start() for a, b in zip(pieces, pieces[1:])) or (pieces and pieces[0].start() != settled):
            self._raise_uncovered(head, settled)
        if len(pieces) < 2:
            return ids, buffer[settled:]
        encode = self._encode_cached
        for piece in pieces[:-1]:
            ids.extend(encode(piece.group()))
        return ids, buffer[pieces[-1].start():]

    def _allowed_specials(self, allowed_special: AllowedSpecial) -> set[str]:
        if allowed_special == "all":
            return set(self.special_tokens)
        if allowed_special in ("none", "none_raise"):
            return set()
        if isinstance(allowed_special, str) or not isinstance(allowed_special, AbstractSet):
            raise ValueError("allowed_special must be 'none_raise', 'all', 'none' or a set of special "
                             f"token strings, got {allowed_special!r}")
        unknown = set(allowed_special) - set(self.special_tokens)
        if unknown:
            raise ValueError(f"allowed_special names tokens that are not registered special tokens: "
                             f"{sorted(unknown)}; registered: {sorted(self.special_tokens)}")
        return set(allowed_special)

    # ----------------------------------------------------------------------- decoding

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids -> the concatenation of their bytes (special tokens as their UTF-8 text)."""
        vocab = self._vocab
        specials = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        out = []
        for i in as_id_list(ids):
            piece = vocab.get(i)
            if piece is None:
                piece = specials.get(i)
                if piece is None:
                    raise ValueError(f"token id {i!r} is not in the vocabulary (vocab_size={self.vocab_size}: "
                                     f"{len(vocab)} ordinary tokens and {len(specials)} special tokens)")
            out.append(piece)
        return b"".join(out)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Ids -> text. Byte sequences that are not valid UTF-8 become U+FFFD (``errors="replace"``)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # ----------------------------------------------------------------------- saving and loading

    def to_dict(self) -> dict:
        """The tokenizer as plain JSON data: format, pattern, byte ids, merges in order, special tokens."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "pattern": self.pattern,
            "byte_ids": list(self.byte_ids),
            "merges": [[a, b, i] for (a, b), i in self.merges.items()],
            "special_tokens": dict(self.special_tokens),
        }

    @classmethod
    def from_dict(cls, data: object) -> "RegexTokenizer":
        """Rebuild a tokenizer from :meth:`to_dict`'s data; data that is not such a tokenizer raises ``ValueError``."""
        try:
            return cls._from_dict(data)
        except (ValueError, TypeError, KeyError, regex.error) as e:
            raise ValueError(f"not a valid tokenizer: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer to a JSON file, atomically (a temporary file, then ``os.replace``)."""
        with atomic_write(Path(path), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RegexTokenizer":
        """Read a file written by :meth:`save`; a corrupt, truncated or foreign file raises ``ValueError``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not a tokenizer file: it is not UTF-8 text ({e})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not a valid tokenizer file: corrupt or truncated JSON ({e})") from None
        try:
            return cls._from_dict(data)
        except (ValueError, TypeError, KeyError, regex.error) as e:
            raise ValueError(f"{path} is not a valid tokenizer file: {e}") from None

    @classmethod
    def _from_dict(cls, data: object) -> "RegexTokenizer":
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ValueError(f"expected a JSON object with \"format\": \"{FORMAT_NAME}\"")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('version')!r}; this llmcourse reads version {FORMAT_VERSION}")
        missing = {"pattern", "byte_ids", "merges", "special_tokens"} - set(data)
        if missing:
            raise ValueError(f"missing fields {sorted(missing)}")
        pattern, byte_ids, merges, specials = (data[k] for k in ("pattern", "byte_ids", "merges", "special_tokens"))
        if not isinstance(pattern, str):
            raise ValueError("\"pattern\" must be a string")
        if not (isinstance(byte_ids, list) and all(type(i) is int for i in byte_ids)):
            raise ValueError("\"byte_ids\" must be a list of 256 ints")
        if not (isinstance(merges, list)
                and all(isinstance(m, list) and len(m) == 3 and all(type(i) is int for i in m) for m in merges)):
            raise ValueError("\"merges\" must be a list of [id_a, id_b, new_id] triples of ints")
        if not (isinstance(specials, dict) and all(type(i) is int for i in specials.values())):
            raise ValueError("\"special_tokens\" must map strings to ints")
        if len({(a, b) for a, b, _ in merges}) != len(merges):
            raise ValueError("the same pair is merged twice")
        return cls.from_merges({(a, b): i for a, b, i in merges}, pattern, specials, byte_ids)


@functools.lru_cache(maxsize=64)
def _special_regex_cached(specials: tuple[str, ...], capture: bool) -> regex.Pattern:
    alternatives = "|".join(regex.escape(s) for s in specials)
    return regex.compile(f"({alternatives})" if capture else alternatives)


def _special_regex(specials: list[str], capture: bool = False) -> regex.Pattern:
    """One pattern matching any of ``specials``, longest first so that no token hides a longer one."""
    return _special_regex_cached(tuple(sorted(specials, key=lambda s: (-len(s), s))), capture)
