"""Training data for a language model: windows, batches, epochs and corpora (chapter 08).

A language model learns from one long sequence of token ids. Training cuts it into
**windows** of ``context_length + 1`` tokens: the first ``context_length`` are the
input, the last ``context_length`` (the same tokens moved one place to the left)
are the targets, so every position learns to predict the token after it.

The words of a training loop:

* **batch** -- ``batch_size`` windows stacked into two ``(batch_size, context_length)`` tensors;
* **iteration** (or step) -- one batch: forward, loss, backward, one optimizer update;
* **epoch** -- one pass over every window of the data set, in a new shuffled order each time.

Two ways to get batches:

* :class:`TokenWindows` + :func:`make_loader`: a fixed list of windows, shuffled
  each epoch by a seeded sampler (the order of epoch e is a pure function of
  ``(seed, e)``, so a resumed run can find its place again);
* :func:`random_batch`: nanoGPT's way -- every batch picks random start positions
  anywhere in the data; there are no epochs.

Corpora: :func:`real_text_corpus` is offline English (Python's own documentation);
:func:`fetch_corpus` downloads an optional public corpus (Tiny Shakespeare) once into
a cache folder and checks its SHA-256 checksum on download and on every load.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from llmcourse.artifacts import file_sha256
from llmcourse.tokenizers.simple import CharTokenizer


def _as_ids(ids, what: str = "ids") -> Tensor:
    """A 1-D int64 tensor from a list, tensor or NumPy array of token ids."""
    try:
        tensor = torch.as_tensor(ids)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{what} must be a 1-D sequence of token ids (a list or tensor of ints), "
                        f"got {type(ids).__name__}") from None
    if tensor.dim() != 1:
        raise ValueError(f"{what} must be 1-D (one long sequence of token ids), got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{what} must hold integer token ids, got dtype {tensor.dtype}")
    return tensor.long()


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


# --------------------------------------------------------------------------- windows


class TokenWindows(Dataset):
    """(input, target) windows cut from one long sequence; ``target`` is ``input`` shifted by one.

    Window i starts at ``i * stride``: input = ``ids[s : s + T]``, target =
    ``ids[s + 1 : s + T + 1]`` with ``T = context_length``. The default stride is
    ``context_length``: windows side by side, every token a target once. A smaller
    stride gives overlapping windows (more, but correlated, examples).
    """

    def __init__(self, ids, context_length: int, stride: int | None = None):
        self.ids = _as_ids(ids)
        self.context_length = _positive_int(context_length, "context_length")
        self.stride = _positive_int(context_length if stride is None else stride, "stride")
        if len(self.ids) < self.context_length + 1:
            raise ValueError(f"a corpus of {len(self.ids)} tokens is too short for windows of context_length="
                             f"{self.context_length}: it needs at least context_length + 1 = "
                             f"{self.context_length + 1} tokens (the inputs plus one more target)")

    def __len__(self) -> int:
        return (len(self.ids) - self.context_length - 1) // self.stride + 1

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"window {i} is out of range for {n} windows")
        start = (i % n) * self.stride
        chunk = self.ids[start:start + self.context_length + 1]
        return chunk[:-1], chunk[1:]

    def __repr__(self) -> str:
        return (f"TokenWindows({len(self.ids)} tokens, context_length={self.context_length}, "
                f"stride={self.stride}: {len(self)} windows)")


def split_ids(ids, val_fraction: float = 0.1) -> tuple[Tensor, Tensor]:
    """Split a token sequence into (train, validation): the last ``val_fraction`` of it is validation.

    The split is contiguous, not shuffled: windows of the two parts never share
    tokens, so the validation loss measures text the model has not seen.
    """
    ids = _as_ids(ids)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (e.g. 0.1), got {val_fraction}")
    n_val = round(len(ids) * val_fraction)
    if n_val < 1 or n_val >= len(ids):
        raise ValueError(f"val_fraction={val_fraction} of {len(ids)} tokens leaves an empty part; "
                         "use a longer corpus or another fraction")
    return ids[:-n_val], ids[-n_val:]


# --------------------------------------------------------------------------- batches and epochs


class EpochSampler(Sampler[int]):
    """Indices 0..n-1, shuffled with a generator seeded by ``(seed, epoch)``.

    Each pass (``iter``) uses the current epoch and then moves to the next one, so
    every epoch has a new order; :meth:`set_epoch` jumps to any epoch, which makes
    the order of epoch e reproducible on its own (what resuming a run needs).
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        """The index order of epoch ``epoch``."""
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)
        self.epoch += 1
        return iter(order)

    def __len__(self) -> int:
        return self.n


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                drop_last: bool = True) -> DataLoader:
    """A DataLoader that yields (inputs, targets) batches of shape (batch_size, context_length).

    One pass over the loader is one **epoch**; each batch it yields is one
    **iteration**. With ``shuffle=True`` every epoch visits the windows in a new
    order that depends only on ``seed`` and the epoch number (see
    :class:`EpochSampler`). ``drop_last=True`` skips a final, smaller batch, so
    every step sees the same number of tokens.
    """
    batch_size = _positive_int(batch_size, "batch_size")
    n = len(dataset)
    if drop_last and n < batch_size:
        raise ValueError(f"the data set has only {n} windows, fewer than batch_size={batch_size}, so with "
                         "drop_last=True there would be no batch at all; use a smaller batch or more data")
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(n, shuffle, seed), drop_last=drop_last)


def random_batch(ids, batch_size: int, context_length: int,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """A batch of windows at random start positions (nanoGPT's ``get_batch``).

    Returns ``(x, y)`` of shape ``(batch_size, context_length)`` with
    ``y[b] = ids[s_b + 1 : s_b + 1 + context_length]`` for ``x[b] = ids[s_b : s_b + context_length]``.
    """
    ids = _as_ids(ids)
    batch_size = _positive_int(batch_size, "batch_size")
    context_length = _positive_int(context_length, "context_length")
    if len(ids) < context_length + 1:
        raise ValueError(f"a corpus of {len(ids)} tokens is too short for context_length={context_length}: "
                         f"it needs at least {context_length + 1} tokens")
    starts = torch.randint(len(ids) - context_length, (batch_size,), generator=generator)
    offsets = torch.arange(context_length)
    x = ids[starts[:, None] + offsets]
    y = ids[starts[:, None] + offsets + 1]
    return x, y


# --------------------------------------------------------------------------- offline text


def real_text_corpus(n_chars: int = 1_000_000) -> str:
    """About ``n_chars`` characters of English prose from Python's own documentation (no download).

    The text is :func:`llmcourse.tokenizers.corpora.english_prose` cut to at most
    ``n_chars`` characters (about 2.2 million are available).
    """
    from llmcourse.tokenizers.corpora import english_prose

    n_chars = _positive_int(n_chars, "n_chars")
    return english_prose(n_chars)[:n_chars]


def char_tokenize(text: str) -> tuple[CharTokenizer, Tensor]:
    """A character-level tokenizer trained on ``text`` and the text's ids (a 1-D int64 tensor)."""
    if not isinstance(text, str) or not text:
        raise ValueError("char_tokenize needs a non-empty string")
    tokenizer = CharTokenizer().train(text)
    return tokenizer, torch.tensor(tokenizer.encode(text), dtype=torch.long)


# --------------------------------------------------------------------------- files and downloads


class CorpusError(RuntimeError):
    """A corpus could not be downloaded, or a file is not the one expected."""


@dataclass(frozen=True)
class CorpusSource:
    """Where a public corpus lives and how to recognise it."""

    url: str
    filename: str
    size: int | None            # bytes
    sha256: str | None          # None: trust on first use (the first download's checksum is recorded)
    description: str = ""


CORPORA: dict[str, CorpusSource] = {
    "tiny_shakespeare": CorpusSource(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/"
            "data/tinyshakespeare/input.txt",
        filename="tiny_shakespeare.txt",
        size=1_115_394,
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        description="40,000 lines from Shakespeare's plays, collected by Andrej Karpathy for char-rnn (about 1 MB)",
    ),
}


def default_cache_dir() -> Path:
    """The download folder: ``$LLMCOURSE_CACHE`` if set, else ``~/.cache/llmcourse``."""
    return Path(os.environ.get("LLMCOURSE_CACHE") or Path.home() / ".cache" / "llmcourse")


sha256_of = file_sha256  # the SHA-256 checksum of a file, as 64 hexadecimal digits


def _expected_sha256(source: CorpusSource, path: Path) -> str | None:
    if source.sha256 is not None:
        return source.sha256
    record = path.with_name(path.name + ".sha256")
    return record.read_text().strip() if record.exists() else None


def _verify(path: Path, source: CorpusSource, name: str) -> None:
    expected = _expected_sha256(source, path)
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        raise CorpusError(f"{path} has {size:,} bytes, but the {name!r} corpus has {source.size:,}. The file is "
                          f"incomplete or a different file: delete it and call fetch_corpus({name!r}) again, or "
                          f"download {source.url} yourself and save it at that path.")
    if expected is not None and sha256_of(path) != expected:
        raise CorpusError(f"{path} does not have the SHA-256 checksum of the {name!r} corpus ({expected}); it "
                          f"was changed or damaged. Delete it and call fetch_corpus({name!r}) again, or download "
                          f"{source.url} yourself and save it at that path.")


def fetch_corpus(name: str, cache_dir: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """The path of public corpus ``name`` (see :data:`CORPORA`), downloaded once into the cache.

    The file is checked against its size and SHA-256 checksum after the download
    and every time it is fetched from the cache. Entries without a published
    checksum are trusted on first use: the first download's checksum is saved
    next to the file (``<file>.sha256``) and later loads must match it. Without a
    network, download the file yourself and put it at the path the error names.
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(CORPORA))}")
    source = CORPORA[name]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / source.filename
    if path.exists():
        _verify(path, source, name)
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=source.filename + ".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(source.url, timeout=timeout) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise CorpusError(f"could not download the {name!r} corpus from {source.url} ({reason}). "
                                  f"Without a network, download that file on another machine and save it as "
                                  f"{path}; fetch_corpus will check it and use it.") from None
        _verify(tmp, source, name)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if source.sha256 is None:
        path.with_name(path.name + ".sha256").write_text(sha256_of(path) + "\n")
    return path


def load_corpus(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """The text of public corpus ``name``: :func:`fetch_corpus` then :func:`load_text_file`."""
    return load_text_file(fetch_corpus(name, cache_dir))


def load_text_file(path: str | os.PathLike, sha256: str | None = None) -> str:
    """Read a UTF-8 text file, optionally checking its SHA-256 checksum first.

    A file that is not valid UTF-8 raises a ValueError that names the byte offset
    of the first bad byte.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no text file at {path}")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise CorpusError(f"{path} does not have the expected SHA-256 checksum {sha256}: it is a different or "
                          "damaged file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.start + 4]
        raise ValueError(f"{path} is not valid UTF-8 text: byte {exc.start} ({bad!r}...) cannot be decoded "
                         f"({exc.reason}). Convert the file to UTF-8 first.") from None


__all__ = [
    "TokenWindows", "split_ids", "EpochSampler", "make_loader", "random_batch",
    "real_text_corpus", "char_tokenize",
    "CorpusError", "CorpusSource", "CORPORA", "default_cache_dir", "sha256_of", "fetch_corpus", "load_corpus",
    "load_text_file",
]
