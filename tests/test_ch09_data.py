"""Chapter 09's generated data: deterministic, internally consistent, fully covered by the tokenizer."""
from __future__ import annotations

import re

import pytest

from llmcourse.finetuning import instructions as I


def test_prompt_layout():
    assert I.format_prompt("23+20") == "Q: 23+20\nA:"
    assert I.format_example("23+20", "43") == "Q: 23+20\nA: 43" + I.END_OF_ANSWER
    assert I.format_example("x", "y").startswith(I.format_prompt("x"))
    with pytest.raises(ValueError, match="end-of-answer"):
        I.format_example("q", "a" + I.END_OF_ANSWER)
    with pytest.raises(TypeError, match="string"):
        I.format_prompt(42)


def test_data_is_deterministic_and_seeded():
    assert I.make_world(seed=3) == I.make_world(seed=3)
    assert I.make_world(seed=3) != I.make_world(seed=4)
    assert I.arithmetic_pairs(20, seed=1) == I.arithmetic_pairs(20, seed=1)
    assert I.pretraining_text(seed=2) == I.pretraining_text(seed=2)
    assert I.preference_pairs(9, seed=5) == I.preference_pairs(9, seed=5)


def test_world_and_fact_pairs_agree():
    world = I.make_world(5, seed=7)
    assert len({p.name for p in world}) == 5
    pairs = I.fact_pairs(world)
    assert len(pairs) == 15
    for person in world:
        assert (f"Where does {person.name} live?", person.town) in pairs
        assert (f"What pet does {person.name} have?", person.pet) in pairs
    with pytest.raises(ValueError, match="n_people"):
        I.make_world(0)


def test_arithmetic_pairs_are_correct_and_distinct():
    pairs = I.arithmetic_pairs(300, seed=0, max_operand=30)
    assert len(set(pairs)) == 300
    for question, answer in pairs:
        a, b = map(int, question.split("+"))
        assert 0 <= a <= 30 and 0 <= b <= 30 and int(answer) == a + b
    assert len(I.arithmetic_pairs(16, max_operand=3)) == 16
    with pytest.raises(ValueError, match="distinct sums"):
        I.arithmetic_pairs(17, max_operand=3)


def test_pretraining_text_states_every_fact_and_no_question():
    world = I.make_world(4, seed=1)
    text = I.pretraining_text(world, n_sums=30, seed=1)
    assert "?" not in text and "Q:" not in text
    for person in world:
        for value in (person.town, person.colour, person.pet):
            assert re.search(rf"{person.name}\b[^.]*\b{value}\b|\b{value}\b[^.]*\b{person.name}\b", text)
    sums = re.findall(r"(\d+)\+(\d+)=(\d+)\.", text)
    assert len(sums) == 30 and all(int(a) + int(b) == int(c) for a, b, c in sums)


def test_preference_pairs_prefer_the_truth():
    facts = dict(I.fact_pairs())
    pairs = I.preference_pairs(60, seed=2)
    kinds = set()
    for pair in pairs:
        assert pair.chosen != pair.rejected
        if "+" in pair.question:
            a, b = map(int, pair.question.split("+"))
            assert int(pair.chosen) == a + b and int(pair.rejected) != a + b
            kinds.add("sum")
        else:
            assert facts[pair.question] == pair.chosen
            kinds.add("rude" if pair.rejected in I.RUDE_ANSWERS else "fact")
    assert kinds == {"sum", "fact", "rude"}


def test_classification_sets_are_labelled_correctly_and_balanced():
    examples = I.sum_check_examples(40, seed=3)
    for text, label in examples:
        a, b, c = map(int, re.fullmatch(r"(\d+)\+(\d+)=(\d+)", text).groups())
        assert label == int(a + b == c)
    assert sum(label for _, label in examples) == 20
    reviews = I.review_examples(30, seed=3)
    assert sum(label for _, label in reviews) == 15
    for text, label in reviews:
        words = set(re.findall(r"\w+", text))
        assert bool(words & set(I.POSITIVE_WORDS)) == bool(label)
        assert bool(words & set(I.NEGATIVE_WORDS)) != bool(label)


def test_tokenizer_covers_every_text():
    tok = I.make_tokenizer()
    texts = [I.pretraining_text(), *(I.format_example(q, a) for q, a in I.fact_pairs() + I.arithmetic_pairs(50))]
    texts += [I.format_example(p.question, p.chosen) + I.format_example(p.question, p.rejected)
              for p in I.preference_pairs(30)]
    texts += [t for t, _ in I.sum_check_examples(20) + I.review_examples(40)]
    for text in texts:
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(I.END_OF_ANSWER)) == 1
    assert tok.vocab_size == len(set(I.ALPHABET))
