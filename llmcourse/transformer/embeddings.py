"""Embeddings: from token ids to vectors (chapter 04).

An embedding layer is a table with one row per token of the vocabulary. Looking
a token up is the same as multiplying its one-hot vector by the table, which is
why only the rows of tokens that appear in a batch receive a gradient.

This module also trains a tiny word2vec (skip-gram) on a built-in corpus so the
lesson can show that words used in similar contexts end up with similar vectors:

* :func:`one_hot_embed`      one_hot(ids) @ weight, equal to ``weight[ids]``
* :func:`changed_rows`       which rows of a table a training step changed
* :func:`cosine_similarity`  the angle between vectors, as a number in [-1, 1]
* :func:`nearest_neighbours` the k most similar words to a word
* :func:`tiny_corpus`        a few hundred deterministic English sentences
* :class:`SkipGram`, :func:`train_skipgram`  word2vec with a full softmax
* :func:`project_2d`         PCA down to two dimensions, for a scatter plot
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --------------------------------------------------------------------------- lookup = one-hot x matrix


def one_hot_embed(ids: Tensor, weight: Tensor) -> Tensor:
    """Embed token ``ids`` (any shape) as ``one_hot(ids) @ weight``; ``weight`` is (vocab_size, dim).

    The result has shape ``ids.shape + (dim,)`` and equals ``weight[ids]``: each
    one-hot row has a single 1, so the product picks exactly one row of the table.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be a (vocab_size, dim) matrix, got shape {tuple(weight.shape)}")
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"ids must be an integer tensor, got dtype {ids.dtype}")
    vocab_size = weight.shape[0]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size - 1}] for a table of {vocab_size} rows; "
                         f"got ids from {int(ids.min())} to {int(ids.max())}")
    one_hot = F.one_hot(ids.long(), num_classes=vocab_size).to(weight.dtype)  # (..., vocab_size)
    return one_hot @ weight


def changed_rows(before: Tensor, after: Tensor, atol: float = 0.0) -> Tensor:
    """Indices of the rows that differ (by more than ``atol``) between two copies of an embedding table."""
    if before.shape != after.shape:
        raise ValueError(f"tables differ in shape: {tuple(before.shape)} vs {tuple(after.shape)}")
    return torch.nonzero((after - before).abs().amax(dim=1) > atol).flatten()


# --------------------------------------------------------------------------- similarity


def cosine_similarity(a: Tensor, b: Tensor, dim: int = -1, eps: float = 1e-8) -> Tensor:
    """cos(angle) = a·b / (|a| |b|) along ``dim`` (broadcasting like ``a * b``); 1 = same direction."""
    dot = (a * b).sum(dim=dim)
    norms = a.norm(dim=dim).clamp_min(eps) * b.norm(dim=dim).clamp_min(eps)
    return dot / norms


def nearest_neighbours(vectors: Tensor, index: int | str, k: int = 5,
                       words: Sequence[str] | None = None) -> list[tuple[str | int, float]]:
    """The ``k`` rows of ``vectors`` most cosine-similar to row ``index`` (itself excluded), best first.

    ``index`` may be a word when ``words`` (one per row) is given; the result then
    names words, otherwise row numbers. Each item is ``(word or row, cosine)``.
    """
    if isinstance(index, str):
        if words is None:
            raise ValueError("pass words= to look a word up by name")
        if index not in words:
            raise KeyError(f"{index!r} is not in the vocabulary")
        index = list(words).index(index)
    n = vectors.shape[0]
    if not 0 <= index < n:
        raise IndexError(f"row {index} is out of range for {n} vectors")
    sims = cosine_similarity(vectors, vectors[index].unsqueeze(0))
    sims[index] = -float("inf")  # never return the word itself
    top = torch.topk(sims, min(k, n - 1))
    names = list(words) if words is not None else list(range(n))
    return [(names[i], float(s)) for s, i in zip(top.values, top.indices.tolist())]


# --------------------------------------------------------------------------- a tiny corpus

# Word groups: words in one group are used in the same sentence templates, so
# skip-gram gives them similar vectors. Male and female words share the royal
# or people templates, and differ only by the pronoun that follows them.
ROYALS = {"king": "he", "queen": "she", "prince": "he", "princess": "she"}
PEOPLE = {"man": "he", "woman": "she", "boy": "he", "girl": "she"}
PETS = ("cat", "dog", "kitten", "puppy")
CAPITALS = {"paris": "france", "berlin": "germany", "rome": "italy",
            "madrid": "spain", "tokyo": "japan", "london": "england"}
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
COLOURS = ("red", "green", "blue", "yellow")

_ROYAL_TEMPLATES = (
    "the {w} rules the kingdom", "the {w} sits on the throne", "the {w} wears a golden crown",
    "the {w} lives in the royal palace", "the royal {w} greets the court", "{p} is the {w} of the land",
    "the {w} gives orders to the knights", "the crown belongs to the {w}",
)
_PEOPLE_TEMPLATES = (
    "the {w} walks to work", "the {w} reads a book at home", "the {w} eats bread for lunch",
    "the {w} talks to a friend", "{p} is a {w} from the village", "the {w} works in the office",
    "the young {w} runs in the street", "a {w} buys food at the market",
)
_PET_TEMPLATES = (
    "the {w} sleeps on the sofa", "the {w} chases a ball", "the {w} eats food from a bowl",
    "my pet {w} has soft fur", "the {w} wags its tail", "the little {w} plays in the garden",
    "we feed the {w} every morning", "the {w} is a cute pet",
)
_CITY_TEMPLATES = (
    "{c} is the capital of {n}", "we flew to {c} in {n}", "{c} is a big city in {n}",
    "the trains of {n} stop in {c}", "the people of {n} love {c}", "many tourists visit {c}",
)
_NUMBER_TEMPLATES = (
    "{a} plus {b} makes {s}", "i count {a} apples and {b} pears", "{a} is a small number",
    "she wrote the number {a}", "after {a} comes {b}",
)
_COLOUR_TEMPLATES = (
    "the car is painted {x}", "she likes the colour {x}", "a {x} flower grows in the field",
    "he wears a {x} shirt", "the wall is {x} and bright",
)


def tiny_corpus(n_sentences: int = 600, seed: int = 0) -> list[str]:
    """A deterministic English corpus of short lower-case sentences built from templates.

    Topics: royals (king, queen, prince, princess), people (man, woman, boy,
    girl), pets, capital cities and their countries, numbers and colours. With
    the same arguments it always returns the same sentences.
    """
    rng = random.Random(seed)
    makers = (
        lambda: _royal_or_person(rng, ROYALS, _ROYAL_TEMPLATES),
        lambda: _royal_or_person(rng, PEOPLE, _PEOPLE_TEMPLATES),
        lambda: rng.choice(_PET_TEMPLATES).format(w=rng.choice(PETS)),
        lambda: _city_sentence(rng),
        lambda: _number_sentence(rng),
        lambda: rng.choice(_COLOUR_TEMPLATES).format(x=rng.choice(COLOURS)),
    )
    return [makers[i % len(makers)]() for i in range(n_sentences)]


def _royal_or_person(rng: random.Random, group: dict[str, str], templates: Sequence[str]) -> str:
    word = rng.choice(sorted(group))
    return rng.choice(templates).format(w=word, p=group[word])


def _city_sentence(rng: random.Random) -> str:
    city = rng.choice(sorted(CAPITALS))
    return rng.choice(_CITY_TEMPLATES).format(c=city, n=CAPITALS[city])


def _number_sentence(rng: random.Random) -> str:
    i = rng.randrange(len(NUMBERS) - 1)
    j = rng.randrange(len(NUMBERS))
    return rng.choice(_NUMBER_TEMPLATES).format(a=NUMBERS[i], b=NUMBERS[i + 1] if rng.random() < 0.5 else NUMBERS[j],
                                               s=NUMBERS[min(i + j + 1, len(NUMBERS) - 1)])


def tokenize(sentences: Sequence[str]) -> list[list[str]]:
    """Split each sentence into lower-case words on whitespace (all the tiny corpus needs)."""
    return [s.lower().split() for s in sentences]


# --------------------------------------------------------------------------- skip-gram word2vec


def skipgram_pairs(sentences: Sequence[Sequence[int]], window: int) -> Tensor:
    """All (center, context) id pairs with the context at most ``window`` words away, inside each sentence."""
    pairs = [(s[i], s[j]) for s in sentences for i in range(len(s))
             for j in range(max(0, i - window), min(len(s), i + window + 1)) if j != i]
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


class SkipGram(nn.Module):
    """word2vec's skip-gram: predict each context word from the center word's vector.

    ``center`` holds the word vectors we keep (vocab_size, dim); ``context`` is a
    second table used only to score every vocabulary word as a possible
    neighbour. This version normalises over the whole (small) vocabulary with a
    softmax; word2vec's negative sampling is a cheaper approximation of the same
    objective for large vocabularies.
    """

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.center = nn.Embedding(vocab_size, dim)
        self.context = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.center.weight, std=dim ** -0.5)
        nn.init.normal_(self.context.weight, std=dim ** -0.5)

    def forward(self, center_ids: Tensor) -> Tensor:
        """Logits (batch, vocab_size): how likely each word is to appear near each center word."""
        return self.center(center_ids) @ self.context.weight.T

    @property
    def vectors(self) -> Tensor:
        """The learned word vectors (vocab_size, dim), detached."""
        return self.center.weight.detach()


@dataclass
class WordVectors:
    """A trained skip-gram model together with its vocabulary."""

    model: SkipGram
    words: list[str]

    @property
    def vectors(self) -> Tensor:
        return self.model.vectors

    def __getitem__(self, word: str) -> Tensor:
        return self.vectors[self.words.index(word)]

    def neighbours(self, word: str, k: int = 5) -> list[tuple[str, float]]:
        return nearest_neighbours(self.vectors, word, k, self.words)  # type: ignore[return-value]


def train_skipgram(corpus_tokens: Sequence[Sequence[str]], dim: int = 16, window: int = 2, epochs: int = 30,
                   seed: int = 0, lr: float = 0.01, batch_size: int = 256) -> tuple[WordVectors, list[float]]:
    """Train skip-gram on tokenized sentences; return (word vectors, mean loss of each epoch).

    The vocabulary is the sorted set of words, so the same corpus and seed give
    the same vectors. Training uses Adam and shuffles the pairs each epoch.
    """
    if dim < 1 or window < 1 or epochs < 1:
        raise ValueError(f"dim, window and epochs must be positive, got {dim}, {window}, {epochs}")
    words = sorted({w for sentence in corpus_tokens for w in sentence})
    if len(words) < 2:
        raise ValueError("the corpus needs at least two different words")
    word_to_id = {w: i for i, w in enumerate(words)}
    pairs = skipgram_pairs([[word_to_id[w] for w in s] for s in corpus_tokens], window)

    generator = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the model's initial weights
    model = SkipGram(len(words), dim)
    torch.random.set_rng_state(torch_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(pairs), generator=generator)
        total = 0.0
        for start in range(0, len(pairs), batch_size):
            batch = pairs[order[start:start + batch_size]]
            loss = F.cross_entropy(model(batch[:, 0]), batch[:, 1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        losses.append(total / len(pairs))
    return WordVectors(model, words), losses


# --------------------------------------------------------------------------- 2-D projection


def project_2d(vectors: Tensor) -> Tensor:
    """Project rows onto their two principal directions (PCA through an SVD); returns (n, 2).

    Each axis's sign is fixed so that its largest coordinate is positive, making
    the picture repeatable (an SVD may flip the sign of a direction).
    """
    if vectors.dim() != 2 or vectors.shape[1] < 2:
        raise ValueError(f"need an (n, dim >= 2) matrix, got shape {tuple(vectors.shape)}")
    centered = vectors - vectors.mean(dim=0, keepdim=True)
    u, s, _ = torch.linalg.svd(centered, full_matrices=False)
    points = u[:, :2] * s[:2]
    signs = torch.sign(points.gather(0, points.abs().argmax(dim=0, keepdim=True)))
    return points * torch.where(signs == 0, torch.ones_like(signs), signs)


__all__ = [
    "one_hot_embed", "changed_rows", "cosine_similarity", "nearest_neighbours",
    "tiny_corpus", "tokenize", "skipgram_pairs", "SkipGram", "WordVectors", "train_skipgram", "project_2d",
]
