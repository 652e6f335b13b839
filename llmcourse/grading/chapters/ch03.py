"""Graded checks of chapter 03, "Tokenization".

Seven exercises: the pieces of byte-pair encoding (counting pairs, merging,
training, encoding by merge rank, decoding), GPT-4's pre-tokenizer with special
tokens, and the export of merges to tiktoken's rank format. Each is checked on
hand-made and seeded inputs against an independent reference: the package's
tokenizers (:mod:`llmcourse.tokenizers`), Python's own ``bytes.decode`` and
tiktoken. Then the class to build, ``RegexTokenizer``, and two more:

* ``bytes_per_token``, an experiment: how much text one token holds after a
  number of merges, measured on held-out text. It is compared with the same
  measurement done here with plain loops, and with what BPE guarantees (exactly
  one byte per token without merges; on the training text itself, every merge
  removes at least one token);
* ``run_token_count``, a derivation: the number of tokens a run of n equal bytes
  becomes after k merges, as a formula. It is compared with training by brute
  force for small runs, and with a run-length simulation of the same training
  for runs far too long to build.

No check needs any other exercise's function. While the learner's code runs for
the first five exercises and for ``run_token_count``, the package's own BPE
functions are switched off, so calling them fails the check.
"""
from __future__ import annotations

import functools
import random
from contextlib import AbstractContextManager
from typing import Any, Mapping

import regex
import tiktoken

import llmcourse.tokenizers as _tokenizers
from llmcourse.grading.checks import Chapter, CheckFailed, call, call_method, expect, forbid
from llmcourse.tokenizers import basic, regex_bpe, training
from llmcourse.tokenizers import tiktoken_bridge as bridge
from llmcourse.tokenizers.basic import BasicTokenizer, get_pair_counts, merge
from llmcourse.tokenizers.corpora import chinese_sentences, english_prose
from llmcourse.tokenizers.regex_bpe import RegexTokenizer
from llmcourse.tokenizers.training import GPT4_PATTERN

chapter = Chapter("03", "Tokenization")

Namespace = Mapping[str, Any]

# The package's BPE code, which the first exercises ask the learner to write: (owner, attribute, as shown).
_PACKAGE_BPE = [
    (basic, "get_pair_counts", "get_pair_counts"), (basic, "merge", "merge"),
    (_tokenizers, "get_pair_counts", "get_pair_counts"), (_tokenizers, "merge", "merge"),
    (BasicTokenizer, "train_steps", "BasicTokenizer.train_steps"), (BasicTokenizer, "train", "BasicTokenizer.train"),
    (BasicTokenizer, "encode", "BasicTokenizer.encode"), (BasicTokenizer, "decode", "BasicTokenizer.decode"),
    (BasicTokenizer, "decode_bytes", "BasicTokenizer.decode_bytes"),
    (RegexTokenizer, "train", "RegexTokenizer.train"), (RegexTokenizer, "bpe", "RegexTokenizer.bpe"),
    (RegexTokenizer, "encode", "RegexTokenizer.encode"), (RegexTokenizer, "decode", "RegexTokenizer.decode"),
    (RegexTokenizer, "decode_bytes", "RegexTokenizer.decode_bytes"),
    (regex_bpe, "_merge", "regex_bpe._merge"),
    (training, "train_bpe", "train_bpe"), (training, "train_bpe_naive", "train_bpe_naive"),
    (training, "count_pairs", "training.count_pairs"), (training, "merge_ids", "training.merge_ids"),
]


def _without_package(exercise: str) -> AbstractContextManager[None]:
    """Forbid llmcourse's own BPE functions while the learner's code runs (however they are reached)."""
    return forbid(exercise, [(owner, attribute, f"llmcourse's {shown}") for owner, attribute, shown in _PACKAGE_BPE])


def _learner(ns: Namespace, name: str, *args: Any) -> Any:
    """Call the learner's function with the package's BPE code switched off."""
    with _without_package(name):
        return call(ns, name, *args)


def _random_ids(n: int, high: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(high) for _ in range(n)]


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + " ..."


# --------------------------------------------------------------------------- pair_counts


def _expect_counts(got: Any, ids: list[int], what: str) -> None:
    expected = get_pair_counts(ids)
    expect(isinstance(got, Mapping), f"{what} should return a dict {{(id_a, id_b): count}}, got {type(got).__name__}.")
    got = dict(got)
    bad_keys = [k for k in got if not (isinstance(k, tuple) and len(k) == 2)]
    expect(not bad_keys, f"{what}: keys should be pairs (tuples of two ids), got e.g. {bad_keys[:1]!r}.")
    for pair, count in expected.items():
        expect(got.get(pair, 0) == count, f"{what}: pair {pair} occurs {count} times, your dict says "
                                          f"{got.get(pair, 0)}.")
    extra = [p for p, c in got.items() if p not in expected and c]
    expect(not extra, f"{what}: {extra[:1]} is not a pair of neighbours, but your dict counts it.")


@chapter.check("pair_counts", points=1, hint="Look at every position i and count the pair (ids[i], ids[i + 1]); "
               "neighbouring pairs overlap, so [5, 5, 5] holds (5, 5) twice.")
def pair_counts_small(ns: Namespace) -> None:
    for ids in ([1, 2, 1, 2], [5, 5, 5], [104, 105, 32, 104, 105, 33]):
        _expect_counts(_learner(ns, "pair_counts", list(ids)), ids, f"pair_counts({ids})")


@chapter.check("pair_counts", points=1, hint="Mind the ends: the last pair is (ids[-2], ids[-1]), and a list "
               "with fewer than two ids has no pairs at all (an empty dict). Do not change the input list.")
def pair_counts_edges_and_random(ns: Namespace) -> None:
    for ids in ([], [7], [3, 4]):
        _expect_counts(_learner(ns, "pair_counts", list(ids)), ids, f"pair_counts({ids})")
    ids = _random_ids(400, 12, seed=1)
    given = list(ids)
    _expect_counts(_learner(ns, "pair_counts", given), ids, "pair_counts of 400 random ids")
    expect(given == ids, "pair_counts changed the list it was given; it should only read it.")
    ids = list("BPE counts pairs: 字节对".encode("utf-8"))
    _expect_counts(_learner(ns, "pair_counts", ids), ids, "pair_counts of the UTF-8 bytes of a sentence")


# --------------------------------------------------------------------------- merge


def _expect_merge(ns: Namespace, ids: list[int], pair: tuple[int, int], new_id: int) -> None:
    expected = merge(ids, pair, new_id)
    given = list(ids)
    got = _learner(ns, "merge", given, pair, new_id)
    what = f"merge({_short(ids, 60)}, {pair}, {new_id})"
    expect(isinstance(got, list), f"{what} should return a new list, got {type(got).__name__}.")
    expect(given == ids, f"{what} changed the list it was given; build and return a new list instead.")
    expect(got == expected, f"{what} returned {_short(got)}, expected {_short(expected)}.")


@chapter.check("merge", points=1, hint="Walk through the list; where ids[i] and ids[i + 1] are the pair, write "
               "new_id and jump two places, else copy ids[i] and move one place. Every occurrence is replaced.")
def merge_every_occurrence(ns: Namespace) -> None:
    _expect_merge(ns, [1, 2, 3, 1, 2], (1, 2), 99)
    _expect_merge(ns, [1, 2, 3], (4, 5), 256)
    ids = _random_ids(300, 6, seed=2)
    _expect_merge(ns, ids, (2, 3), 300)


@chapter.check("merge", points=1, hint="The pair is ordered: (1, 2) is not (2, 1). Do not lose the last id when it "
               "is not part of a pair, and handle a pair at the very end.")
def merge_ends_and_order(ns: Namespace) -> None:
    _expect_merge(ns, [2, 1, 2, 1], (1, 2), 256)
    _expect_merge(ns, [3, 1, 2], (1, 2), 256)
    _expect_merge(ns, [1, 2, 3], (1, 2), 256)
    _expect_merge(ns, [], (1, 2), 256)
    _expect_merge(ns, [9], (1, 2), 256)


@chapter.check("merge", points=1, hint="Overlapping occurrences: scan left to right and skip both ids of a merged "
               "pair, so [5, 5, 5] becomes [new, 5].")
def merge_overlapping(ns: Namespace) -> None:
    _expect_merge(ns, [5, 5, 5], (5, 5), 256)
    _expect_merge(ns, [5, 5, 5, 5, 5], (5, 5), 256)
    _expect_merge(ns, [7, 5, 5, 5, 7, 5, 5], (5, 5), 300)


# --------------------------------------------------------------------------- train_merges


def _reference_merges(text: bytes, num_merges: int) -> dict[tuple[int, int], int]:
    tok = BasicTokenizer()
    for _ in tok.train_steps(text.decode("utf-8"), num_merges):
        pass
    return dict(tok.merges)


def _expect_merges(ns: Namespace, text: bytes, num_merges: int, what: str) -> None:
    expected = _reference_merges(text, num_merges)
    got = _learner(ns, "train_merges", text, num_merges)
    expect(isinstance(got, Mapping), f"{what} should return a dict {{(id_a, id_b): new_id}}, "
                                     f"got {type(got).__name__}.")
    got_items, want_items = list(dict(got).items()), list(expected.items())
    for k, (g, w) in enumerate(zip(got_items, want_items)):
        expect(g == w, f"{what}: merge {k + 1} is {g[0]} -> {g[1]}, expected {w[0]} -> {w[1]}.")
    expect(len(got_items) == len(want_items), f"{what} learned {len(got_items)} merges, expected "
                                              f"{len(want_items)}.")


@chapter.check("train_merges", points=1, hint="Each round: count the pairs of the current ids, take the most "
               "frequent, give it id 256 + round, and replace it in the ids before counting again.")
def train_merges_tiny(ns: Namespace) -> None:
    _expect_merges(ns, b"aaabdaaabac", 3, "train_merges(b'aaabdaaabac', 3)")
    _expect_merges(ns, b"low lower lowest newer newest", 8, "train_merges(b'low lower lowest newer newest', 8)")


@chapter.check("train_merges", points=1, hint="Ties are common: among pairs with the highest count, take the "
               "smallest pair (compare the first id, then the second), not the first one you met.")
def train_merges_ties(ns: Namespace) -> None:
    _expect_merges(ns, b"xyab", 1, "train_merges(b'xyab', 1)")
    _expect_merges(ns, b"dcba dcba", 4, "train_merges(b'dcba dcba', 4)")


@chapter.check("train_merges", points=1, hint="When the ids have shrunk to one token there is no pair left: stop "
               "and return the merges learned so far. Non-ASCII text works the same way on its bytes.")
def train_merges_corpus_and_early_stop(ns: Namespace) -> None:
    _expect_merges(ns, b"aaaa", 10, "train_merges(b'aaaa', 10)")
    text = (english_prose(2_500) + "\n" + chinese_sentences()[:120]).encode("utf-8")
    _expect_merges(ns, text, 40, "train_merges on 2.5 kB of English and some Chinese, 40 merges")


# --------------------------------------------------------------------------- encode_with_merges


@functools.lru_cache(maxsize=1)
def _trained_basic() -> BasicTokenizer:
    return BasicTokenizer().train(english_prose(3_000) + chinese_sentences()[:60], 256 + 60)


def _expect_encoding(ns: Namespace, text: str, merges: dict[tuple[int, int], int], what: str) -> None:
    tok = BasicTokenizer()
    tok.merges = dict(merges)
    expected = tok.encode(text)
    got = _learner(ns, "encode_with_merges", text, dict(merges))
    expect(isinstance(got, list), f"{what} should return a list of ints, got {type(got).__name__}.")
    expect(got == expected, f"{what} returned {_short(got)}, expected {_short(expected)}.")


@chapter.check("encode_with_merges", points=1, hint="Start from the text's UTF-8 bytes, then repeatedly merge the "
               "neighbouring pair with the lowest new id (the merge learned first) until no pair is in `merges`.")
def encode_matches_trained_tokenizer(ns: Namespace) -> None:
    merges = _trained_basic().merges
    for text in ("The return value is None.", "def f(x):\n    return x", "a"):
        _expect_encoding(ns, text, merges, f"encode_with_merges({text!r}) with 60 merges trained on prose")


@chapter.check("encode_with_merges", points=1, hint="Apply merges by rank (lowest new id first), not by how often "
               "a pair occurs in this text and not by where it occurs. The dict may be in any order.")
def encode_by_rank(ns: Namespace) -> None:
    ranked = {(97, 98): 257, (98, 99): 256}   # listed out of rank order on purpose
    _expect_encoding(ns, "abc", ranked, "encode_with_merges('abc', {(97, 98): 257, (98, 99): 256})")
    _expect_encoding(ns, "ababc", ranked, "encode_with_merges('ababc', {(97, 98): 257, (98, 99): 256})")
    nested = {(104, 105): 256, (256, 33): 257, (257, 257): 258}
    _expect_encoding(ns, "hi!hi!hi", nested, "encode_with_merges('hi!hi!hi', {(104, 105): 256, (256, 33): 257, "
                                             "(257, 257): 258})")


@chapter.check("encode_with_merges", points=1, hint="Encode the text to UTF-8 bytes first (a Chinese character is 3 "
               "bytes, ord() is not a byte); an empty text gives an empty list.")
def encode_unicode_and_empty(ns: Namespace) -> None:
    merges = _trained_basic().merges
    for text in ("", "分词器 tokenizes 😀!", "字节对编码"):
        _expect_encoding(ns, text, merges, f"encode_with_merges({text!r})")


# --------------------------------------------------------------------------- decode_ids


def _byte_vocab(extra: Mapping[int, bytes] = {}) -> dict[int, bytes]:
    return {**{i: bytes([i]) for i in range(256)}, **extra}


def _expect_decoding(ns: Namespace, ids: list[int], vocab: Mapping[int, bytes], what: str) -> None:
    expected = b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
    got = _learner(ns, "decode_ids", list(ids), dict(vocab))
    expect(isinstance(got, str), f"{what} should return a str, got {type(got).__name__}.")
    expect(got == expected, f"{what} returned {got!r}, expected {expected!r}.")


@chapter.check("decode_ids", points=1, hint="Look up each id's bytes in `vocab`, join them, and decode the whole "
               "byte string as UTF-8 at the end.")
def decode_round_trip(ns: Namespace) -> None:
    tok = _trained_basic()
    for text in ("The value of x is None.", "分词器 and 😀"):
        ids = tok.encode(text)
        _expect_decoding(ns, ids, tok.vocab, f"decode_ids of the ids of {text!r}")
        got = _learner(ns, "decode_ids", ids, dict(tok.vocab))
        expect(got == text, f"decode_ids did not give back {text!r}: got {got!r}.")


@chapter.check("decode_ids", points=1, hint="A character may be split over two tokens: decode the joined bytes "
               "once, not each token on its own. Invalid UTF-8 must become '\\ufffd' (errors='replace'), "
               "not be dropped or crash.")
def decode_split_and_invalid(ns: Namespace) -> None:
    vocab = _byte_vocab({256: "中".encode("utf-8")[:2], 257: "中".encode("utf-8")[2:] + b"!"})
    _expect_decoding(ns, [256, 257], vocab, "decode_ids([256, 257]) where 256 and 257 each hold part of '中'")
    _expect_decoding(ns, [0xE4, 0xB8, 97], vocab, "decode_ids([0xE4, 0xB8, 97]) (a cut-off character, then 'a')")
    _expect_decoding(ns, [104, 0xFF, 105], vocab, "decode_ids([104, 0xFF, 105]) (0xFF is never valid UTF-8)")
    _expect_decoding(ns, [], vocab, "decode_ids([])")


@chapter.check("decode_ids", points=1, hint="An id that is not in `vocab` is a bug in the caller: raise a "
               "ValueError whose message names the id, instead of a bare KeyError or skipping it.")
def decode_unknown_id(ns: Namespace) -> None:
    vocab = _byte_vocab({256: b"ab"})
    for bad in (999, -1):
        try:
            got = _learner(ns, "decode_ids", [104, bad, 105], dict(vocab))
        except CheckFailed as exc:
            message = str(exc)
            if message.startswith("`decode_ids` raised ValueError: "):
                expect(str(bad) in message.removeprefix("`decode_ids` raised ValueError: "),
                       f"decode_ids([104, {bad}, 105]) raised a ValueError ({message.split(': ', 1)[1]}); the "
                       f"message should name the unknown id {bad}.")
                continue
            if message.startswith("`decode_ids` raised "):
                raise CheckFailed(f"decode_ids([104, {bad}, 105]) raised {message.split(' raised ', 1)[1]}; an "
                                  f"unknown id should raise a ValueError.") from None
            raise
        raise CheckFailed(f"decode_ids([104, {bad}, 105]) returned {got!r}; an unknown id should raise a "
                          "ValueError.")


# --------------------------------------------------------------------------- regex_split


def _reference_split(text: str, special_tokens: tuple[str, ...] = ()) -> list[str]:
    if not special_tokens:
        return regex.findall(GPT4_PATTERN, text)
    specials = sorted(special_tokens, key=lambda s: (-len(s), s))
    parts = regex.split("(" + "|".join(regex.escape(s) for s in specials) + ")", text)
    out: list[str] = []
    for k, part in enumerate(parts):
        if k % 2:
            out.append(part)
        elif part:
            out.extend(regex.findall(GPT4_PATTERN, part))
    return out


def _expect_split(ns: Namespace, text: str, special_tokens: tuple[str, ...] = ()) -> None:
    expected = _reference_split(text, special_tokens)
    args = (text, special_tokens) if special_tokens else (text,)
    got = call(ns, "regex_split", *args)
    what = f"regex_split({_short(text, 50)}" + (f", {special_tokens})" if special_tokens else ")")
    expect(isinstance(got, list) and all(isinstance(p, str) for p in got),
           f"{what} should return a list of str, got {_short(got)}.")
    expect("".join(got) == text, f"{what}: the pieces joined together are not the text; nothing may be dropped.")
    for k, (g, w) in enumerate(zip(got, expected)):
        expect(g == w, f"{what}: piece {k} is {g!r}, expected {w!r}.")
    expect(len(got) == len(expected), f"{what} gave {len(got)} pieces, expected {len(expected)}.")


@chapter.check("regex_split", points=1, hint="Use the third-party `regex` module (Python's `re` has no \\p{L}) "
               "with the GPT-4 pattern of the task, and return every match (findall).")
def regex_split_english(ns: Namespace) -> None:
    _expect_split(ns, "Hello world! It's 2024, isn't it?")
    _expect_split(ns, "def add(a, b):\n    return a + b\n")


@chapter.check("regex_split", points=1, hint="The GPT-4 pattern (not GPT-2's) keeps at most 3 digits together, "
               "matches contractions in any case, and leaves the last space of a run to the next word.")
def regex_split_gpt4_details(ns: Namespace) -> None:
    _expect_split(ns, "I DON'T have 1234567 apples.")
    _expect_split(ns, "a    b\n\n\nc \t d  ")
    _expect_split(ns, "分词器 splits 中文 and 😀😀 too")


@chapter.check("regex_split", points=1, hint="Cut the text around the special tokens first: each occurrence is "
               "one piece of its own; only the text between them goes through the pattern.")
def regex_split_special_tokens(ns: Namespace) -> None:
    _expect_split(ns, "Hello<|endoftext|> world", ("<|endoftext|>",))
    _expect_split(ns, "<|fim_prefix|>x = 1<|endoftext|><|endoftext|>y", ("<|endoftext|>", "<|fim_prefix|>"))
    _expect_split(ns, "no special token here", ("<|endoftext|>",))


# --------------------------------------------------------------------------- to_mergeable_ranks


@functools.lru_cache(maxsize=1)
def _trained_regex() -> RegexTokenizer:
    return RegexTokenizer().train(english_prose(6_000), 256 + 120)


_EXPORT = [(bridge, "to_tiktoken", "to_tiktoken"), (_tokenizers, "to_tiktoken", "to_tiktoken")]


def _learner_ranks(ns: Namespace, merges: Mapping[tuple[int, int], int]) -> dict[bytes, int]:
    exports = [(owner, attribute, f"llmcourse's {shown}") for owner, attribute, shown in _EXPORT]
    with forbid("to_mergeable_ranks", exports):
        got = call(ns, "to_mergeable_ranks", dict(merges))
    expect(isinstance(got, Mapping), f"to_mergeable_ranks should return a dict {{token bytes: rank}}, "
                                     f"got {type(got).__name__}.")
    bad = [k for k in got if not isinstance(k, bytes)]
    expect(not bad, f"the keys should be bytes, got e.g. {bad[:1]!r}.")
    return dict(got)


@chapter.check("to_mergeable_ranks", points=1, hint="Every single byte b is a token with rank b; each merge "
               "(a, b) -> new_id is the token vocab[a] + vocab[b] (the bytes, built up merge by merge) with rank new_id.")
def ranks_match_vocabulary(ns: Namespace) -> None:
    for merges in ({(104, 105): 256, (256, 33): 257}, _trained_regex().merges):
        expected = {token: i for i, token in RegexTokenizer.from_merges(merges).vocab.items()}
        got = _learner_ranks(ns, merges)
        missing = [b for b in range(256) if bytes([b]) not in got]
        expect(not missing, f"the single byte {bytes(missing[:1])!r} is missing: tiktoken needs all 256.")
        for token, rank in expected.items():
            expect(got.get(token) == rank, f"token {token!r} should have rank {rank}, got {got.get(token)!r}.")
        expect(len(got) == len(expected), f"{len(got)} ranks, expected {len(expected)} (256 bytes + "
                                          f"{len(merges)} merges).")


@chapter.check("to_mergeable_ranks", points=1, hint="tiktoken encodes by rank: with your ranks, an Encoding must "
               "give exactly the ids of llmcourse's RegexTokenizer for the same merges.")
def ranks_encode_like_llmcourse(ns: Namespace) -> None:
    tok = _trained_regex()
    got = _learner_ranks(ns, tok.merges)
    ids = list(got.values())
    usable = (all(type(i) is int and i >= 0 for i in ids) and len(set(ids)) == len(ids)
              and all(bytes([b]) in got for b in range(256)))
    expect(usable, "the ranks need all 256 single bytes and one distinct non-negative int per token.")
    encoding = tiktoken.Encoding(name="learner", pat_str=GPT4_PATTERN, mergeable_ranks=got, special_tokens={})
    for text in ("Return the value of the attribute, or None.", "分词 for 2025 😀"):
        want = tok.encode_ordinary(text)
        have = encoding.encode_ordinary(text)
        expect(have == want, f"tiktoken with your ranks encodes {text!r} as {_short(have)}; llmcourse gives "
                             f"{_short(want)}.")


# --------------------------------------------------------------------------- RegexTokenizer (build the class)

_TOKENIZER = "RegexTokenizer"
_TRAIN_TEXT = english_prose(6_000)
_TEXTS = ["Hello world!  It's 2024, isn't it?", "   leading spaces\nand\ttabs\n\n",
          "naïve café — 東京 🙂 emoji", "def f(x):\n    return x ** 2  # squares"]


def _learner_tokenizer(ns: Namespace):
    cls = ns.get(_TOKENIZER)
    if cls is RegexTokenizer or (isinstance(cls, type) and issubclass(cls, RegexTokenizer)):
        raise CheckFailed(f"`{_TOKENIZER}` is still llmcourse's tokenizer: write your own class in the exercise "
                          f"cell and run it.")
    return call(ns, _TOKENIZER)


def _method(tok, name: str, *args, **kwargs):
    return call_method(tok, _TOKENIZER, name, *args, **kwargs)

@functools.lru_cache(maxsize=1)
def _reference_tokenizer() -> RegexTokenizer:
    return RegexTokenizer().train(_TRAIN_TEXT, vocab_size=256 + 60)


def _with_reference_merges(ns: Namespace):
    tok = _learner_tokenizer(ns)
    _method(tok, "load_merges", dict(_reference_tokenizer().merges))
    return tok


@chapter.check(_TOKENIZER, points=1, hint="train(text, vocab_size) splits the text with the regex, counts pairs over all "
               "pre-tokens, and merges the most frequent pair into a new id (256, 257, ...) vocab_size - 256 times; "
               "store them in self.merges as {(a, b): new_id} and return self.")
def tokenizer_trains(ns: Namespace) -> None:
    tok = _learner_tokenizer(ns)
    returned = _method(tok, "train", _TRAIN_TEXT, 256 + 40)
    expect(returned is tok, "train(...) should return the tokenizer itself")
    merges = getattr(tok, "merges", None)
    expect(isinstance(merges, dict) and sorted(merges.values()) == list(range(256, 296)),
           "after train(text, 296), tok.merges should map 40 pairs to the new ids 256..295")
    ids = _method(tok, "encode", _TRAIN_TEXT)
    expect(len(ids) < 0.8 * len(_TRAIN_TEXT.encode("utf-8")), f"40 merges should shorten the training text by more "
           f"than a fifth: {len(_TRAIN_TEXT.encode('utf-8'))} bytes became {len(ids)} tokens")
    expect(_method(tok, "decode", ids) == _TRAIN_TEXT, "decode(encode(training text)) should give the text back")


@chapter.check(_TOKENIZER, points=2, hint="encode: split with the regex, then within each piece repeatedly merge the pair "
               "with the lowest merge id (the earliest merge) until no pair can be merged; pieces never merge with "
               "each other.")
def tokenizer_encodes_like_the_reference(ns: Namespace) -> None:
    tok = _with_reference_merges(ns)
    reference = _reference_tokenizer()
    for text in _TEXTS + [_TRAIN_TEXT[:500]]:
        expect(_method(tok, "encode", text) == reference.encode_ordinary(text),
               f"encode({text[:40]!r}) with the given merges differs from the reference tokenizer's ids")


@chapter.check(_TOKENIZER, points=1, hint="decode joins the bytes of every id (vocab: 256 single bytes, then each merge "
               "is the concatenation of its pair's bytes) and decodes UTF-8 with errors='replace'.")
def tokenizer_round_trips_any_unicode(ns: Namespace) -> None:
    tok = _with_reference_merges(ns)
    rng = random.Random(5)
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F), (0x300, 0x36F)]
    for _ in range(30):
        text = "".join(chr(rng.randint(*rng.choice(blocks))) if rng.random() > 0.15 else rng.choice(" \n\t")
                       for _ in range(rng.randint(1, 40)))
        expect(_method(tok, "decode", _method(tok, "encode", text)) == text,
               f"decode(encode(text)) should give the text back for {text!r}")
    expect(_method(tok, "decode", [0xE6, 0x9D]) == "\ufffd", "decode of half a character should give U+FFFD")


@chapter.check(_TOKENIZER, points=1, hint="register_special_tokens({'<|endoftext|>': 316}) adds ids outside the merges; "
               "encode(text, allowed_special='all') cuts the text at special tokens and gives each its one id; with "
               "the default allowed_special='none' they are ordinary text. decode turns them back into their text.")
def tokenizer_special_tokens(ns: Namespace) -> None:
    tok = _with_reference_merges(ns)
    _method(tok, "register_special_tokens", {"<|endoftext|>": 316})
    text = "one<|endoftext|>two <|endoftext|>"
    ids = _method(tok, "encode", text, allowed_special="all")
    expect(ids.count(316) == 2, f"encode(..., allowed_special='all') should give id 316 twice, got {ids}")
    expect(_method(tok, "decode", ids) == text, "decode should turn special ids back into their text")
    ordinary = _method(tok, "encode", text)
    expect(316 not in ordinary and ordinary == _reference_tokenizer().encode_ordinary(text),
           "with the default allowed_special='none', special tokens are encoded as ordinary text")


@chapter.check(_TOKENIZER, points=1, hint="save(path) writes the pattern, the merges in order and the special tokens "
               "(e.g. as JSON); load(path) reads them back into a tokenizer so that it encodes exactly the same.")
def tokenizer_saves_and_loads(ns: Namespace) -> None:
    import os
    import tempfile

    tok = _with_reference_merges(ns)
    _method(tok, "register_special_tokens", {"<|endoftext|>": 316})
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "tok.json")
        _method(tok, "save", path)
        expect(os.path.exists(path), "save(path) should write the file at path")
        fresh = _learner_tokenizer(ns)
        _method(fresh, "load", path)
    for text in _TEXTS + ["a<|endoftext|>b"]:
        expect(_method(fresh, "encode", text, allowed_special="all") == _method(tok, "encode", text,
                                                                                 allowed_special="all"),
               f"after load, encode({text[:30]!r}) should give the same ids as before save")


# --------------------------------------------------------------------------- bytes_per_token (an experiment)

_BPT_TRAIN = ("The cat sat on the mat. The cat ate the rat. A naïve cat sat on a café mat, and the rat ran "
              "to the barn. Then the cat and the rat sat at the gate, and that was that. " * 4
              + "北京的猫坐在垫子上。猫吃了老鼠。" * 3)
_BPT_TEST = "The rat sat on the cat's hat at the café. 猫坐在北京的垫子上, and that is that."


def _bpe_bytes_per_token(train_text: str, test_text: str, num_merges: int) -> float:
    """The experiment done here with plain loops: train on bytes, encode by replaying the merges in order."""
    def replace(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
        out: list[int] = []
        for token in ids:
            if out and out[-1] == pair[0] and token == pair[1] and not merged_last[0]:
                out[-1] = new_id
                merged_last[0] = True
            else:
                out.append(token)
                merged_last[0] = False
        return out

    merged_last = [False]
    ids, merges = list(train_text.encode("utf-8")), []
    for step in range(num_merges):
        counts: dict[tuple[int, int], int] = {}
        for pair in zip(ids, ids[1:]):
            counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        top = max(counts.values())
        pair = min(p for p, c in counts.items() if c == top)
        merged_last[0] = False
        ids = replace(ids, pair, 256 + step)
        merges.append(pair)
    test_ids = list(test_text.encode("utf-8"))
    for step, pair in enumerate(merges):
        merged_last[0] = False
        test_ids = replace(test_ids, pair, 256 + step)
    return len(test_text.encode("utf-8")) / len(test_ids)


def _merges(k: int) -> str:
    return f"{k} merge" if k == 1 else f"{k} merges"


def _learner_bpt(ns: Namespace, train_text: str, test_text: str, num_merges: int) -> float:
    got = call(ns, "bytes_per_token", train_text, test_text, num_merges)
    what = f"bytes_per_token(train, test, {num_merges})"
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        raise CheckFailed(f"{what} should return a number (a float), got {type(got).__name__}.")
    return float(got)


@chapter.check("bytes_per_token", points=1, hint="Train on train_text only (byte-level BPE without a regex split, "
               "ties to the smallest pair, as BasicTokenizer does, with vocab_size = 256 + num_merges), then encode "
               "test_text and divide its number of UTF-8 bytes (not characters) by its number of tokens.")
def bytes_per_token_matches_a_recount(ns: Namespace) -> None:
    for num_merges in (0, 8, 40):
        expected = _bpe_bytes_per_token(_BPT_TRAIN, _BPT_TEST, num_merges)
        got = _learner_bpt(ns, _BPT_TRAIN, _BPT_TEST, num_merges)
        expect(abs(got - expected) < 1e-9, f"bytes_per_token on a held-out sentence after {_merges(num_merges)} is "
               f"{got:.6g}, expected {expected:.6g}.")


@chapter.check("bytes_per_token", points=1, hint="With no merges every byte is its own token, whatever the text: "
               "exactly 1.0 bytes per token, also for Chinese (3 bytes a character). On its own training text each "
               "merge removes at least one token, so the ratio must grow with every merge.")
def bytes_per_token_follows_the_theory(ns: Namespace) -> None:
    chinese = "猫坐在垫子上。🙂 naïve"
    got = _learner_bpt(ns, _BPT_TRAIN, chinese, 0)
    expect(abs(got - 1.0) < 1e-12, f"with 0 merges every byte is one token, so bytes_per_token should be exactly "
           f"1.0 (here on {chinese!r}), got {got:.6g}.")
    text = "low lower lowest newer newest wider widest " * 6
    n = len(text.encode("utf-8"))
    previous = 1.0
    for k in (1, 4, 16, 48):
        got = _learner_bpt(ns, text, text, k)
        expect(got >= n / (n - k) - 1e-12, f"measured on its own training text of {n} bytes, {_merges(k)} leave at "
               f"most {n - k} tokens, so at least {n / (n - k):.4f} bytes per token; you report {got:.4f}.")
        expect(got > previous, f"on its own training text the ratio must grow with every merge: {got:.4f} after "
               f"{_merges(k)} is not above {previous:.4f}.")
        previous = got


# --------------------------------------------------------------------------- run_token_count (a derivation)


def _brute_force_run(n: int, k: int) -> int:
    """Train k merges on n equal bytes with a plain list, exactly as BPE does, and count what is left."""
    ids = [97] * n
    for step in range(k):
        counts: dict[tuple[int, int], int] = {}
        for pair in zip(ids, ids[1:]):
            counts[pair] = counts.get(pair, 0) + 1
        top = max(counts.values())
        pair = min(p for p, c in counts.items() if c == top)
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(256 + step)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
    return len(ids)


def _run_length_bpe(n: int, k: int) -> int:
    """The same training on runs [token, count] instead of single tokens, so that n may be astronomically large."""
    runs = [[97, n]]
    for step in range(k):
        counts: dict[tuple[int, int], int] = {}
        for token, count in runs:
            if count > 1:
                counts[(token, token)] = counts.get((token, token), 0) + count - 1
        for (a, _), (b, _) in zip(runs, runs[1:]):
            counts[(a, b)] = counts.get((a, b), 0) + 1
        top = max(counts.values())
        a, b = min(p for p, c in counts.items() if c == top)
        new, out = 256 + step, []
        for index, (token, count) in enumerate(runs):
            if a == b == token:
                out += [[new, count // 2], [token, count % 2]]
            elif a != b and token == a and index + 1 < len(runs) and runs[index + 1][0] == b:
                out += [[token, count - 1], [new, 1]]
                runs[index + 1] = [b, runs[index + 1][1] - 1]
            else:
                out.append([token, count])
        runs = []
        for token, count in out:  # drop empty runs and join neighbours of the same token
            if count and runs and runs[-1][0] == token:
                runs[-1][1] += count
            elif count:
                runs.append([token, count])
    return sum(count for _, count in runs)


def _learner_run_count(ns: Namespace, n: int, k: int) -> int:
    got = _learner(ns, "run_token_count", n, k)
    if isinstance(got, bool) or not isinstance(got, int):
        if isinstance(got, float) and got.is_integer() and got < 2 ** 53:
            return int(got)
        raise CheckFailed(f"run_token_count({n}, {k}) should return an int (a number of tokens), got "
                          f"{type(got).__name__} {got!r:.40}.")
    return got


@chapter.check("run_token_count", points=1, hint="Work a few runs by hand (n = 5, 6, 7, 12 with k = 1, 2, 3): "
               "write down which tokens exist after each merge and how many of each. The longest token doubles at "
               "every merge; look at what is left over next to the copies of it.")
def run_token_count_small_runs(ns: Namespace) -> None:
    for n in range(1, 41):
        for k in range(n.bit_length()):  # every k with 2**k <= n
            expected = _brute_force_run(n, k)
            got = _learner_run_count(ns, n, k)
            expect(got == expected, f"a run of {n} equal bytes after {_merges(k)} is {expected} tokens, "
                   f"your formula says {got}.")


@chapter.check("run_token_count", points=1, hint="The answer must come from a formula in n and k, in whole-number "
               "arithmetic: n can be far too large to build the text (2**60 bytes), and a float cannot hold such "
               "an n exactly. Think of what happens to the binary digits of n.")
def run_token_count_huge_runs(ns: Namespace) -> None:
    for n, k in [(2 ** 50, 50), (2 ** 60 + 12_345, 17), (3 ** 40, 1), (10 ** 18 + 7, 33), (2 ** 61 - 1, 59)]:
        expected = _run_length_bpe(n, k)
        got = _learner_run_count(ns, n, k)
        expect(got == expected, f"a run of n = {n} equal bytes after {_merges(k)} is {expected} tokens, your "
               f"function says {got}.")
