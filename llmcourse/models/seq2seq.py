"""The original encoder-decoder Transformer, and a small translation task to train it on (chapter 07).

Read top to bottom:

1. the task: numbers written as digits ("3 4 2") translated into English words
   ("three hundred and forty two"). The target is longer than the source, words
   reorder ("1 5" -> "fifteen" needs both digits at once), and the data is
   generated, so nothing is downloaded (:func:`number_to_words`,
   :func:`make_number_data`);
2. :class:`EncoderLayer`: self-attention over the whole source (no causal mask),
   then an MLP, each followed by add & LayerNorm (post-norm, as in the 2017
   paper; ``norm_first=True`` gives the pre-norm variant GPT uses);
3. :class:`DecoderLayer`: causal self-attention over the target so far,
   **cross-attention** whose queries come from the target and whose keys and
   values come from the encoder's output, then an MLP;
4. :class:`Seq2SeqTransformer`: embeddings scaled by sqrt(d_model) plus
   sinusoidal positions, N encoder layers, N decoder layers, an output layer;
5. training with teacher forcing (:func:`train_seq2seq`), greedy translation
   (:func:`translate`) and exact-match accuracy (:func:`accuracy`).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from llmcourse.progress import tqdm

from llmcourse.transformer.attention import MultiHeadAttention
from llmcourse.transformer.feedforward import FeedForward
from llmcourse.transformer.norms import LayerNorm
from llmcourse.transformer.positions import sinusoidal_encoding

# --------------------------------------------------------------------------- the task: digits -> words

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SOURCE_VOCAB = [PAD] + [str(d) for d in range(10)]
TARGET_VOCAB = [PAD, BOS, EOS] + _ONES + _TENS[2:] + ["hundred", "and"]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


def number_to_words(n: int) -> list[str]:
    """British-style English words for 0 <= n <= 999: 342 -> three hundred and forty two."""
    if not 0 <= n <= 999:
        raise ValueError(f"number_to_words covers 0..999, got {n}")
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
        if rest:
            words.append("and")
    if rest >= 20:
        words.append(_TENS[rest // 10])
        if rest % 10:
            words.append(_ONES[rest % 10])
    elif rest or not hundreds:
        words.append(_ONES[rest])
    return words


def source_digits(n: int) -> list[str]:
    """n as exactly three digits, with leading zeros: 15 -> ["0", "1", "5"] (each digit keeps its place)."""
    if not 0 <= n <= 999:
        raise ValueError(f"the number task covers 0..999, got {n}")
    return list(f"{n:03d}")


def encode_source(n: int) -> list[int]:
    """The three digits of n as source ids (no special tokens)."""
    return [SOURCE_VOCAB.index(d) for d in source_digits(n)]


def encode_target(n: int) -> list[int]:
    """<bos> words <eos> as target ids."""
    return [BOS_ID] + [TARGET_VOCAB.index(w) for w in number_to_words(n)] + [EOS_ID]


def decode_target(ids: list[int] | Tensor) -> list[str]:
    """Target ids -> words, dropping <bos> and stopping at <eos> or <pad>."""
    words = []
    for i in (ids.tolist() if isinstance(ids, Tensor) else ids):
        if i in (EOS_ID, PAD_ID):
            break
        if i != BOS_ID:
            words.append(TARGET_VOCAB[i])
    return words


def pad_batch(rows: list[list[int]]) -> Tensor:
    """Right-pad lists of ids with PAD_ID into a (batch, max_len) LongTensor."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows], dtype=torch.long)


@dataclass
class NumberData:
    """Train and test numbers (disjoint), and helpers to batch them."""

    train: list[int]
    test: list[int]

    @staticmethod
    def batch(numbers: list[int]) -> tuple[Tensor, Tensor]:
        """(source ids (batch, src_len), target ids (batch, tgt_len)), both right-padded."""
        return pad_batch([encode_source(n) for n in numbers]), pad_batch([encode_target(n) for n in numbers])


def make_number_data(test_fraction: float = 0.2, seed: int = 0) -> NumberData:
    """Split 0..999 at random into training and held-out numbers (the test numbers are never trained on)."""
    numbers = list(range(1000))
    random.Random(seed).shuffle(numbers)
    n_test = int(round(test_fraction * len(numbers)))
    return NumberData(train=sorted(numbers[n_test:]), test=sorted(numbers[:n_test]))


# --------------------------------------------------------------------------- the model


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int = len(SOURCE_VOCAB)
    tgt_vocab_size: int = len(TARGET_VOCAB)
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_hidden: int = 128
    max_len: int = 32
    dropout: float = 0.0
    norm_first: bool = False  # False: the 2017 paper's post-norm
    eps: float = 1e-5  # every LayerNorm's epsilon (PyTorch's and the 2017 paper's default)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"incompatible Seq2SeqConfig: d_model={self.d_model} is not divisible by "
                             f"n_heads={self.n_heads}")


class EncoderLayer(nn.Module):
    """Self-attention over the whole source, then an MLP; add & norm around each."""

    def __init__(self, d_model: int, n_heads: int, d_hidden: int, dropout: float = 0.0, norm_first: bool = False,
                 eps: float = 1e-5):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, bias=True, dropout=dropout)
        self.mlp = FeedForward(d_model, d_hidden, activation="relu", bias=True)
        self.norm1, self.norm2 = LayerNorm(d_model, eps), LayerNorm(d_model, eps)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor, src_mask: Tensor | None = None) -> Tensor:
        if self.norm_first:
            x = x + self.dropout(self.self_attn(self.norm1(x), mask=src_mask))
            return x + self.dropout(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.self_attn(x, mask=src_mask)))
        return self.norm2(x + self.dropout(self.mlp(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder's output, then an MLP; add & norm around each."""

    def __init__(self, d_model: int, n_heads: int, d_hidden: int, dropout: float = 0.0, norm_first: bool = False,
                 eps: float = 1e-5):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, bias=True, dropout=dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, bias=True, dropout=dropout)
        self.mlp = FeedForward(d_model, d_hidden, activation="relu", bias=True)
        self.norm1, self.norm2, self.norm3 = (LayerNorm(d_model, eps) for _ in range(3))
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor, memory: Tensor, src_mask: Tensor | None = None,
                return_weights: bool = False):
        """x (batch, tgt_len, d) attends causally to itself and fully to memory (batch, src_len, d)."""
        def cross(h: Tensor):
            return self.cross_attn(h, context=memory, mask=src_mask, return_weights=True)

        if self.norm_first:
            x = x + self.dropout(self.self_attn(self.norm1(x), is_causal=True))
            out, weights = cross(self.norm2(x))
            x = x + self.dropout(out)
            x = x + self.dropout(self.mlp(self.norm3(x)))
        else:
            x = self.norm1(x + self.dropout(self.self_attn(x, is_causal=True)))
            out, weights = cross(x)
            x = self.norm2(x + self.dropout(out))
            x = self.norm3(x + self.dropout(self.mlp(x)))
        return (x, weights) if return_weights else x


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer: (source ids, target ids so far) -> next-target-token logits."""

    def __init__(self, config: Seq2SeqConfig | None = None):
        super().__init__()
        config = config or Seq2SeqConfig()
        self.config = config
        self.src_embed = nn.Embedding(config.src_vocab_size, config.d_model)
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, config.d_model)
        self.register_buffer("positions", sinusoidal_encoding(config.max_len, config.d_model), persistent=False)
        args = (config.d_model, config.n_heads, config.d_hidden, config.dropout, config.norm_first, config.eps)
        self.encoder = nn.ModuleList(EncoderLayer(*args) for _ in range(config.n_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*args) for _ in range(config.n_layers))
        self.enc_norm = LayerNorm(config.d_model, config.eps) if config.norm_first else nn.Identity()
        self.dec_norm = LayerNorm(config.d_model, config.eps) if config.norm_first else nn.Identity()
        self.out = nn.Linear(config.d_model, config.tgt_vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    def _embed(self, table: nn.Embedding, ids: Tensor) -> Tensor:
        if ids.shape[1] > self.config.max_len:
            raise ValueError(f"sequence of {ids.shape[1]} tokens is longer than max_len={self.config.max_len}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= table.num_embeddings):
            raise ValueError(f"token ids must be in 0..{table.num_embeddings - 1}, got {int(ids.min())}.."
                             f"{int(ids.max())}")
        return self.dropout(table(ids) * math.sqrt(self.config.d_model) + self.positions[: ids.shape[1]])

    @staticmethod
    def source_mask(src: Tensor) -> Tensor:
        """(batch, 1, 1, src_len) bool, True on real tokens: nobody attends to padding."""
        return (src != PAD_ID)[:, None, None, :]

    def encode(self, src: Tensor) -> Tensor:
        x, mask = self._embed(self.src_embed, src), self.source_mask(src)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x)

    def decode(self, tgt: Tensor, memory: Tensor, src: Tensor, return_weights: bool = False):
        """Logits (batch, tgt_len, tgt_vocab); with return_weights also each layer's cross-attention weights."""
        x, mask = self._embed(self.tgt_embed, tgt), self.source_mask(src)
        weights = []
        for layer in self.decoder:
            x, w = layer(x, memory, mask, return_weights=True)
            weights.append(w)
        logits = self.out(self.dec_norm(x))
        return (logits, weights) if return_weights else logits

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        return self.decode(tgt, self.encode(src), src)


# --------------------------------------------------------------------------- training and translating


def seq2seq_loss(model: Seq2SeqTransformer, src: Tensor, tgt: Tensor) -> Tensor:
    """Teacher forcing: feed target[:-1], predict target[1:]; padding does not count."""
    logits = model(src, tgt[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=PAD_ID)


def train_seq2seq(model: Seq2SeqTransformer, data: NumberData, steps: int, batch_size: int = 64, lr: float = 1e-3,
                  warmup: int = 100, seed: int = 0, progress: bool = False) -> list[float]:
    """Adam, linear warmup then cosine decay to 0, on random batches of ``data.train``; returns the losses."""
    rng = random.Random(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    warmup = min(warmup, steps // 2)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="training", disable=not progress):
        src, tgt = NumberData.batch(rng.sample(data.train, min(batch_size, len(data.train))))
        loss = seq2seq_loss(model, src, tgt)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def translate(model: Seq2SeqTransformer, numbers: list[int], max_len: int = 8) -> list[list[str]]:
    """Greedy decoding for a batch of numbers: encode once, then add one target word at a time."""
    model.eval()
    src = pad_batch([encode_source(n) for n in numbers])
    memory = model.encode(src)
    tgt = torch.full((len(numbers), 1), BOS_ID, dtype=torch.long)
    for _ in range(max_len):
        next_id = model.decode(tgt, memory, src)[:, -1].argmax(-1)
        tgt = torch.cat([tgt, next_id[:, None]], dim=1)
        if bool((tgt == EOS_ID).any(dim=1).all()):
            break
    return [decode_target(row) for row in tgt]


def accuracy(model: Seq2SeqTransformer, numbers: list[int]) -> float:
    """Fraction of numbers translated exactly right."""
    got = translate(model, numbers)
    return sum(g == number_to_words(n) for g, n in zip(got, numbers)) / len(numbers)


@torch.no_grad()
def cross_attention(model: Seq2SeqTransformer, n: int, layer: int = -1) -> tuple[Tensor, list[str], list[str]]:
    """The cross-attention weights (heads, tgt_len, src_len) while the model translates n, with the labels.

    Rows are the target positions (each predicting the next word), columns the source digits.
    """
    words = translate(model, [n])[0]
    src = torch.tensor([encode_source(n)])
    tgt = torch.tensor([[BOS_ID] + [TARGET_VOCAB.index(w) for w in words]])
    _, weights = model.decode(tgt, model.encode(src), src, return_weights=True)
    return weights[layer][0], source_digits(n), ["<bos>"] + words


def parameter_counts(d_model: int, n_layers: int, d_hidden: int | None = None) -> dict[str, int]:
    """Weight matrices (biases and norms ignored) of an encoder-decoder and a decoder-only model of the same width.

    Per layer: self-attention 4 d^2, MLP 2 d d_hidden; the decoder's layers also
    have cross-attention (another 4 d^2).
    """
    d_hidden = 4 * d_model if d_hidden is None else d_hidden
    attn, mlp = 4 * d_model * d_model, 2 * d_model * d_hidden
    encoder_layer, decoder_layer, gpt_layer = attn + mlp, 2 * attn + mlp, attn + mlp
    return {"encoder-decoder (N + N layers)": n_layers * (encoder_layer + decoder_layer),
            "decoder-only (N layers)": n_layers * gpt_layer,
            "decoder-only (2N layers)": 2 * n_layers * gpt_layer}


__all__ = [
    "number_to_words", "source_digits", "encode_source", "encode_target", "decode_target", "pad_batch", "NumberData",
    "make_number_data", "SOURCE_VOCAB", "TARGET_VOCAB", "PAD_ID", "BOS_ID", "EOS_ID", "Seq2SeqConfig",
    "EncoderLayer", "DecoderLayer", "Seq2SeqTransformer", "seq2seq_loss", "train_seq2seq", "translate", "accuracy",
    "cross_attention", "parameter_counts",
]
