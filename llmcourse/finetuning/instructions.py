"""The three kinds of training data, generated for a small made-up world (chapter 09).

A language model meets three kinds of text in its life:

1. **plain text** (no labels), for pretraining: :func:`pretraining_text`, sentences
   such as ``"Mira lives in Vell."`` and ``"12+5=17."``;
2. **question -> answer pairs**, for supervised fine-tuning (SFT):
   :func:`fact_pairs` (``"Where does Mira live?" -> "Vell"``) and
   :func:`arithmetic_pairs` (``"23+20" -> "43"``);
3. **preference pairs** (a prompt, a better and a worse answer), for alignment:
   :func:`preference_pairs`.

Plus two small classification sets (:func:`sum_check_examples`,
:func:`review_examples`) for a classifier head. Everything is generated from a
seed, so it needs no download and is the same on every machine.

SFT shows the model a fixed layout, :data:`PROMPT_TEMPLATE` followed by the
answer and :data:`END_OF_ANSWER`; :func:`format_prompt` and
:func:`format_example` write it. :func:`make_tokenizer` gives a character-level
tokenizer that covers every text of this module.
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass

from llmcourse.tokenizers.simple import CharTokenizer

# --------------------------------------------------------------------------- the prompt layout

# The prompt ends at "A:" and the answer starts with its space: a BPE tokenizer joins a space to the word after it
# (" Tarn" is one token), so a prompt that ended in the space would not be a prefix of the example's tokens.
PROMPT_TEMPLATE = "Q: {question}\nA:"
END_OF_ANSWER = "|"  # one character, so one token: the model learns to stop by predicting it

# Every character the data of this module may use (the tokenizer's vocabulary).
ALPHABET = string.ascii_letters + string.digits + " .,?!'+-=:\n" + END_OF_ANSWER


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if END_OF_ANSWER in value:
        raise ValueError(f"{what} {value!r} contains the end-of-answer marker {END_OF_ANSWER!r}, "
                         "which would end the answer early; remove it")
    return value


def format_prompt(question: str) -> str:
    """The text the model sees before it answers: ``"Q: <question>\\nA:"``."""
    return PROMPT_TEMPLATE.format(question=_check_text(question, "question"))


def format_example(question: str, answer: str) -> str:
    """A whole training example: the prompt, a space, the answer, then :data:`END_OF_ANSWER`."""
    return format_prompt(question) + " " + _check_text(answer, "answer") + END_OF_ANSWER


# --------------------------------------------------------------------------- a small made-up world

NAMES = ["Mira", "Tobin", "Orla", "Pim", "Kesta", "Bram", "Ilse", "Nuno", "Wren", "Fitz", "Jora", "Dov"]
TOWNS = ["Vell", "Quorn", "Dunmere", "Brisk", "Umber", "Tessel"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]
PETS = ["cat", "dog", "owl", "frog", "goat", "fox"]


@dataclass(frozen=True)
class Person:
    """One inhabitant of the made-up world."""

    name: str
    town: str
    colour: str
    pet: str


def make_world(n_people: int = 8, seed: int = 0) -> list[Person]:
    """``n_people`` inhabitants (1..12), each with a town, a favourite colour and a pet, drawn from ``seed``."""
    if isinstance(n_people, bool) or not isinstance(n_people, int) or not 1 <= n_people <= len(NAMES):
        raise ValueError(f"n_people must be a whole number from 1 to {len(NAMES)}, got {n_people!r}")
    rng = random.Random(seed)
    names = rng.sample(NAMES, n_people)
    return [Person(name, rng.choice(TOWNS), rng.choice(COLOURS), rng.choice(PETS)) for name in names]


WORLD = make_world()

# Questions about a person, and the attribute that answers each.
QUESTIONS = {
    "town": "Where does {name} live?",
    "colour": "What colour does {name} like?",
    "pet": "What pet does {name} have?",
}
# Ways to state the same fact in plain text (the pretraining corpus).
SENTENCES = {
    "town": ["{name} lives in {town}.", "The home of {name} is {town}.", "In {town} lives {name}."],
    "colour": ["{name} likes {colour}.", "The colour {name} likes is {colour}.", "{name} loves {colour} things."],
    "pet": ["{name} has a {pet}.", "The pet of {name} is a {pet}.", "A {pet} lives with {name}."],
}


def fact_pairs(world: list[Person] | None = None) -> list[tuple[str, str]]:
    """Every (question, answer) about the world: where each person lives, the colour they like, their pet."""
    world = WORLD if world is None else world
    return [(QUESTIONS[attribute].format(name=p.name), getattr(p, attribute))
            for p in world for attribute in QUESTIONS]


# --------------------------------------------------------------------------- arithmetic


def arithmetic_pairs(n: int, seed: int = 0, max_operand: int = 50) -> list[tuple[str, str]]:
    """``n`` distinct sums ``("23+20", "43")`` with operands from 0 to ``max_operand``."""
    possible = (max_operand + 1) ** 2
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= possible:
        raise ValueError(f"n must be a whole number from 0 to {possible} (the number of distinct sums with "
                         f"operands 0..{max_operand}), got {n!r}")
    rng = random.Random(seed)
    chosen = rng.sample(range(possible), n)
    pairs = []
    for index in chosen:
        a, b = divmod(index, max_operand + 1)
        pairs.append((f"{a}+{b}", str(a + b)))
    return pairs


# --------------------------------------------------------------------------- plain text for pretraining


def pretraining_text(world: list[Person] | None = None, n_sums: int = 200, repeats: int = 3, seed: int = 0,
                     max_operand: int = 50) -> str:
    """Unlabelled text about the world: every fact stated in several ways, plus ``n_sums`` lines ``"a+b=c."``.

    There are no questions and no answers here, only statements, the kind of
    text a base model is pretrained on. The sentences are shuffled and joined
    by spaces, with a newline every few sentences.
    """
    world = WORLD if world is None else world
    rng = random.Random(seed)
    sentences = []
    for _ in range(repeats):
        for p in world:
            for attribute, forms in SENTENCES.items():
                sentences.append(rng.choice(forms).format(name=p.name, **{attribute: getattr(p, attribute)}))
    sentences += [f"{q}={a}." for q, a in arithmetic_pairs(n_sums, seed=seed + 1, max_operand=max_operand)]
    rng.shuffle(sentences)
    lines = [" ".join(sentences[i:i + 4]) for i in range(0, len(sentences), 4)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- preference pairs


@dataclass(frozen=True)
class PreferencePair:
    """A question with a better (``chosen``) and a worse (``rejected``) answer."""

    question: str
    chosen: str
    rejected: str


RUDE_ANSWERS = ["Not telling.", "Ask someone else.", "Who cares?", "Figure it out."]


def preference_pairs(n: int, seed: int = 0, world: list[Person] | None = None,
                     max_operand: int = 50) -> list[PreferencePair]:
    """``n`` preference pairs of three kinds, in turn:

    * a sum: the right total is chosen, a total off by 1 to 3 is rejected;
    * a fact: the true answer is chosen, another value of the same kind is rejected;
    * manners: the true answer is chosen, a rude non-answer is rejected.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    world = WORLD if world is None else world
    rng = random.Random(seed)
    values = {"town": TOWNS, "colour": COLOURS, "pet": PETS}
    pairs = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
            wrong = a + b + rng.choice([-3, -2, -1, 1, 2, 3])
            wrong = wrong if wrong >= 0 else a + b + 1
            pairs.append(PreferencePair(f"{a}+{b}", str(a + b), str(wrong)))
        else:
            person = rng.choice(world)
            attribute = rng.choice(list(QUESTIONS))
            question, answer = QUESTIONS[attribute].format(name=person.name), getattr(person, attribute)
            if kind == 1:
                rejected = rng.choice([v for v in values[attribute] if v != answer])
            else:
                rejected = rng.choice(RUDE_ANSWERS)
            pairs.append(PreferencePair(question, answer, rejected))
    return pairs


# --------------------------------------------------------------------------- classification sets


def sum_check_examples(n: int, seed: int = 0, max_operand: int = 50) -> list[tuple[str, int]]:
    """``n`` statements ``"12+5=17"`` labelled 1 (correct) or 0 (wrong by 1 to 5), half of each."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        correct = i % 2 == 0
        total = a + b if correct else a + b + rng.choice([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5])
        if total < 0:
            total = a + b + 1
        examples.append((f"{a}+{b}={total}", int(correct)))
    rng.shuffle(examples)
    return examples


POSITIVE_WORDS = ["lovely", "great", "warm", "fresh", "tasty", "bright"]
NEGATIVE_WORDS = ["awful", "cold", "rude", "dull", "stale", "noisy"]
REVIEW_THINGS = ["bread", "inn", "market", "soup", "boat", "music"]
REVIEW_FORMS = ["The {thing} in {town} was {word}.", "{name} said the {thing} was {word}.",
                "What a {word} {thing}!"]


def review_examples(n: int, seed: int = 0, world: list[Person] | None = None) -> list[tuple[str, int]]:
    """``n`` short reviews labelled 1 (positive) or 0 (negative), alternating, then shuffled."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    world = WORLD if world is None else world
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        positive = i % 2 == 0
        word = rng.choice(POSITIVE_WORDS if positive else NEGATIVE_WORDS)
        form = rng.choice(REVIEW_FORMS)
        examples.append((form.format(thing=rng.choice(REVIEW_THINGS), town=rng.choice(TOWNS),
                                     name=rng.choice(world).name, word=word), int(positive)))
    rng.shuffle(examples)
    return examples


# --------------------------------------------------------------------------- a tokenizer for all of it


def make_tokenizer() -> CharTokenizer:
    """A character-level tokenizer whose vocabulary is :data:`ALPHABET` (every character used here)."""
    return CharTokenizer().train(ALPHABET)


__all__ = ["PROMPT_TEMPLATE", "END_OF_ANSWER", "ALPHABET", "format_prompt", "format_example", "Person",
           "make_world", "WORLD", "fact_pairs", "arithmetic_pairs", "pretraining_text", "PreferencePair",
           "preference_pairs", "sum_check_examples", "review_examples", "make_tokenizer"]
