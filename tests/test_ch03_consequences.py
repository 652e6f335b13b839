"""llmcourse.tokenizers.consequences: what tokenization does to a model's view of text, checked against tiktoken."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcourse.tokenizers import consequences as C
from llmcourse.tokenizers.course_tokenizer import course_tokenizer, training_text
from llmcourse.tokenizers.tiktoken_bridge import cl100k_encoding


@pytest.fixture(scope="module")
def enc():
    return cl100k_encoding()


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    return course_tokenizer(cache_dir=tmp_path_factory.mktemp("cache")).value


@given(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_pieces_are_tiktokens_own_tokens(enc, text):
    got = C.pieces(enc, text)
    assert got == [enc.decode_single_token_bytes(i).decode() for i in enc.encode_ordinary(text)]
    assert "".join(got) == text


def test_a_word_with_its_space_is_one_token_whose_letters_the_model_never_sees(enc):
    assert C.pieces(enc, " strawberry") == [" strawberry"]
    assert C.pieces(enc, "strawberry") == ["str", "aw", "berry"]


def test_pieces_show_the_bytes_of_a_split_character(ours):
    assert "".join(C.pieces(ours, "naïve")) in {"naïve", "na\\xc3\\xafve"}
    assert all(p.startswith("\\x") for p in C.pieces(ours, "语"))  # a Chinese character the tokenizer never merged


def test_digits_are_grouped_from_the_left(enc, ours):
    assert C.place_value_groups(enc, 12345) == [("123", 2), ("45", 0)]
    assert C.place_value_groups(enc, 2345) == [("234", 1), ("5", 0)]  # the hundreds digit moved to another token
    for tokenizer in (enc, ours):
        for number in (0, 7, 10, 999, 1000, 123456789, 98765):
            groups = C.place_value_groups(tokenizer, number)
            assert "".join(p for p, _ in groups) == str(number) and groups[-1][1] == 0
            assert all(a[1] > b[1] for a, b in zip(groups, groups[1:]))
            assert all(len(p) <= 3 for p, _ in groups)  # GPT-4's pattern: at most three digits per pre-token


@pytest.mark.parametrize("bad", [-1, 1.5, "12", True])
def test_place_value_groups_wants_a_whole_number(enc, bad):
    with pytest.raises(ValueError, match="whole number"):
        C.place_value_groups(enc, bad)


def test_a_trailing_space_becomes_a_token_of_its_own(enc, ours):
    for tokenizer in (enc, ours):
        plain, spaced = C.with_trailing_space(tokenizer, "The function returns")
        assert spaced == plain + [" "] and plain[-1] == " returns"


def test_never_used_finds_merges_that_were_only_steps(ours):
    text = training_text()
    unused = C.never_used(ours, text)
    counts = C.token_counts(ours, text)
    assert unused and all(counts[i] == 0 for i in unused)
    used = set(counts)
    assert not used & set(unused) and len(used) + len(unused) == ours.vocab_size - len(ours.special_tokens)
    merges = [i for i in unused if i >= 256]
    assert merges  # tokens such as 'gument' exist only inside longer ones ('argument')
    for i in merges:  # each was a step: a later merge joins it with a neighbour
        assert any(i in pair and j > i for pair, j in ours.merges.items())


def test_never_used_with_tiktoken_needs_the_ids(enc):
    with pytest.raises(TypeError, match="pass the ids"):
        C.never_used(enc, "hello")
    assert C.never_used(enc, "hello hello", ids=[enc.encode("hello")[0], 0]) == [0]


def test_a_tokenizer_without_single_token_decoding_is_refused():
    class Plain:
        def encode(self, text):
            return [1]

    with pytest.raises(TypeError, match="decode a single token"):
        C.pieces(Plain(), "x")
    with pytest.raises(TypeError, match="expected a string"):
        C.pieces(cl100k_encoding(), b"bytes")


def test_a_typo_changes_few_character_tokens_but_all_bpe_ids(enc, ours):
    """Fact check: a character tokenizer does not ignore a typo (the ids change) but changes only the swapped letters;
    BPE can give the misspelt word ids it shares with nothing in the right spelling."""
    from llmcourse.tokenizers import CharTokenizer

    letters = CharTokenizer().train("the quick brown fox receives every letter: abcdefghijklmnopqrstuvwxyz")
    right, typo = letters.encode("receive"), letters.encode("recieve")
    assert right != typo and len(right) == len(typo) == 7
    assert [i for i, (a, b) in enumerate(zip(right, typo)) if a != b] == [3, 4]
    for tokenizer in (enc, ours):
        assert not set(tokenizer.encode_ordinary(" receive")) & set(tokenizer.encode_ordinary(" recieve"))
    assert len(enc.encode_ordinary(" recieved")) == 1 and enc.encode_ordinary(" recieved") != enc.encode_ordinary(" received")
