"""Conceptual pictures for chapter 03: how a byte-level regex BPE tokenizer encodes a text, and one BPE merge step.
Every function returns a closed matplotlib ``Figure`` (show it as a cell's last line).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.text import Text

from llmcourse.tokenizers.basic import get_pair_counts, merge
from llmcourse.tokenizers.regex_bpe import RegexTokenizer
from llmcourse.tokenizers.widgets import show_token

MAX_PIPELINE_BYTES = 32     # longer texts do not fit one readable row
MAX_MERGE_TOKENS = 160      # the merge step wraps its rows, up to this many tokens
MONO = "DejaVu Sans Mono"
COLORS = {"text": ("#f2f2f2", "#777777"), "pretoken": ("#fdf3e1", "#b07a1e"), "byte": ("#eef4fb", "#3c6e9f"),
          "token": ("#e6f4ea", "#2e7d4f"), "id": ("#ffffff", "#555555"), "pair": ("#fde2c8", "#d9822b"),
          "new": ("#d7f0dd", "#2e7d4f")}


class _Canvas:
    """A figure whose axes fill it, in inches, which can measure its own texts and grow to fit them."""

    def __init__(self, width: float, height: float):
        self.fig, self.ax = plt.subplots(figsize=(width, height))
        self.ax.set_position([0, 0, 1, 1])
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(0, height)
        self.ax.set_axis_off()
        self.ax.set_xticks([])   # no tick labels hidden behind the picture
        self.ax.set_yticks([])
        self.renderer = self.fig.canvas.get_renderer()
        self.height = height

    def text(self, x: float, y: float, s: str, **kw) -> Text:
        return self.ax.text(x, y, s, **kw)

    def width(self, s: str, **kw) -> float:
        t = self.ax.text(0, 0, s, **kw)
        w = t.get_window_extent(self.renderer).width / self.fig.dpi
        t.remove()
        return w

    def box(self, x: float, y: float, w: float, h: float, kind: str, lw: float = 1.0) -> None:
        face, edge = COLORS[kind]
        self.ax.add_patch(FancyBboxPatch((x + 0.02, y - h / 2), w - 0.04, h, boxstyle="round,pad=0,rounding_size=0.05",
                                         facecolor=face, edgecolor=edge, lw=lw))

    def arrow(self, start: tuple[float, float], end: tuple[float, float], color: str = "#999999") -> None:
        self.ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=8, color=color, lw=0.8,
                                          shrinkA=0, shrinkB=0))

    def finish(self, width: float) -> Figure:
        self.fig.set_size_inches(width, self.height)
        self.ax.set_xlim(0, width)
        plt.close(self.fig)
        return self.fig


def _shown(text: str) -> str:
    return show_token(text.encode("utf-8"))


def draw_encoding_pipeline(tokenizer: RegexTokenizer, text: str = "Hello world, 2024!") -> Figure:
    """Encoding with byte-level regex BPE: text -> pre-tokens (regex split) -> UTF-8 bytes -> merged tokens -> ids."""
    if not isinstance(tokenizer, RegexTokenizer):
        raise ValueError(f"tokenizer must be a llmcourse RegexTokenizer, got {type(tokenizer).__name__}")
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    n_bytes = len(text.encode("utf-8"))
    if n_bytes > MAX_PIPELINE_BYTES:
        raise ValueError(f"text is {n_bytes} UTF-8 bytes; at most {MAX_PIPELINE_BYTES} fit the picture: "
                         "pass a shorter text")
    pieces = tokenizer.pretokenize(text)
    vocab = tokenizer.vocab
    encoded = [tokenizer.encode_pretoken(piece) for piece in pieces]
    n_tokens = sum(len(ids) for ids in encoded)

    rows = ["text", "pre-tokens\n(regex split)", "UTF-8 bytes", "tokens\n(merges applied)", "ids"]
    pitch, box_h, top = 0.78, 0.34, 0.75
    height = top + pitch * (len(rows) - 1) + 0.55
    c = _Canvas(12.0, height)
    row_y = [height - top - k * pitch for k in range(len(rows))]
    byte_font = dict(fontsize=8, family=MONO)
    token_font = dict(fontsize=9, family=MONO)
    left = 0.2 + max(c.width(r, fontsize=9, weight="bold") for r in rows) + 0.25

    # one column per token: wide enough for its bytes, its label and its id
    x = left
    group_spans = []
    for piece, ids in zip(pieces, encoded):
        start = x
        for i in ids:
            data = vocab[i]
            w = max(0.34 * len(data), c.width(show_token(data), **token_font) + 0.14,
                    c.width(str(i), **byte_font) + 0.14)
            each = w / len(data)
            for k, b in enumerate(data):
                c.box(x + k * each, row_y[2], each, box_h, "byte")
                c.text(x + (k + 0.5) * each, row_y[2], str(b), ha="center", va="center", **byte_font)
            c.box(x, row_y[3], w, box_h, "token", lw=1.3)
            c.text(x + w / 2, row_y[3], show_token(data), ha="center", va="center", **token_font)
            c.box(x, row_y[4], w, box_h, "id")
            c.text(x + w / 2, row_y[4], str(i), ha="center", va="center", **byte_font)
            for upper, lower in ((2, 3), (3, 4)):
                c.arrow((x + w / 2, row_y[upper] - box_h / 2 - 0.02), (x + w / 2, row_y[lower] + box_h / 2 + 0.02))
            x += w + 0.04
        end = x - 0.04
        pretoken_w = max(end - start, c.width(_shown(piece), **token_font) + 0.14)
        if pretoken_w > end - start:        # a pre-token label wider than its bytes: widen the column
            x += pretoken_w - (end - start)
        group_spans.append((start, start + pretoken_w))
        c.box(start, row_y[1], pretoken_w, box_h, "pretoken", lw=1.3)
        c.text(start + pretoken_w / 2, row_y[1], _shown(piece), ha="center", va="center", **token_font)
        middle = start + pretoken_w / 2
        c.arrow((middle, row_y[0] - box_h / 2 - 0.02), (middle, row_y[1] + box_h / 2 + 0.02))
        c.arrow((middle, row_y[1] - box_h / 2 - 0.02), (middle, row_y[2] + box_h / 2 + 0.02))
        x += 0.2
    right = max(x - 0.2, left + c.width(_shown(text), **token_font) + 0.3)
    c.box(left, row_y[0], right - left, box_h, "text", lw=1.3)
    c.text((left + right) / 2, row_y[0], _shown(text), ha="center", va="center", **token_font)
    for label, y in zip(rows, row_y):
        c.text(0.2, y, label, ha="left", va="center", fontsize=9, weight="bold", linespacing=1.1)
    title = (f"{len(text)} characters -> {len(pieces)} pre-tokens -> {n_bytes} bytes -> {n_tokens} tokens"
             f"   (vocabulary of {tokenizer.vocab_size:,}; merges never cross a pre-token)")
    width = max(right, 0.2 + c.width(title, fontsize=10)) + 0.25
    c.text(0.2, height - 0.3, title, ha="left", va="center", fontsize=10)
    return c.finish(width)


# ------------------------------------------------------------------------------------------------- one merge step

def _label(i: int, vocab: Mapping[int, bytes] | None) -> str:
    if vocab is not None and i in vocab:
        return show_token(vocab[i])
    if i < 256:
        return show_token(bytes([i]))
    return f"#{i}"


def draw_merge_step(ids: Sequence[int] | str = "the cat sat on the mat", pair: tuple[int, int] | None = None,
                    new_id: int | None = None, vocab: Mapping[int, bytes] | None = None,
                    line_width: float = 10.0) -> Figure:
    """One BPE merge: the most frequent pair (or ``pair``) highlighted, and the new token replacing each occurrence.

    ``ids``: token ids, or a text (its UTF-8 bytes). ``new_id``: the id of the new token (default: the first free id,
    at least 256). ``vocab``: ``{id: bytes}`` to label ids above 255. Long sequences wrap at ``line_width`` inches.
    """
    if isinstance(ids, str):
        ids = list(ids.encode("utf-8"))
    try:
        ids = [int(i) for i in ids]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ids must be a text or a sequence of whole numbers, got {ids!r}") from exc
    if len(ids) < 2:
        raise ValueError(f"a merge needs at least 2 tokens, got {len(ids)}")
    if len(ids) > MAX_MERGE_TOKENS:
        raise ValueError(f"{len(ids)} tokens do not fit the picture (at most {MAX_MERGE_TOKENS}): pass fewer")
    if min(ids) < 0:
        raise ValueError(f"token ids cannot be negative, got {min(ids)}")
    counts = get_pair_counts(ids)
    if pair is None:
        pair = min(counts, key=lambda p: (-counts[p], p))     # highest count, then the smallest pair
    pair = tuple(int(p) for p in pair)
    if len(pair) != 2 or pair not in counts:
        raise ValueError(f"the pair {pair} does not occur in the ids: pick two neighbouring ids")
    if new_id is None:
        new_id = max(256, max(ids) + 1, max(vocab, default=-1) + 1 if vocab is not None else 0)
    if new_id in ids or new_id in pair:
        raise ValueError(f"new_id {new_id} is already used by the ids; the new token needs a fresh id")
    if vocab is not None and new_id in vocab:
        raise ValueError(f"new_id {new_id} is already in the vocabulary; the new token needs a fresh id")
    if not 0.5 <= line_width <= 40:
        raise ValueError(f"line_width must be between 0.5 and 40 inches, got {line_width}")
    after = merge(ids, pair, new_id)
    new_label = _label(pair[0], vocab) + _label(pair[1], vocab) if (vocab is not None or max(pair) < 256) \
        else f"#{new_id}"

    # units: either one untouched token or a merged pair, in order (merge() replaces left to right)
    units: list[tuple[list[int], bool]] = []
    k = 0
    while k < len(ids):
        if k + 1 < len(ids) and (ids[k], ids[k + 1]) == pair:
            units.append(([ids[k], ids[k + 1]], True))
            k += 2
        else:
            units.append(([ids[k]], False))
            k += 1
    assert [new_id if merged else toks[0] for toks, merged in units] == after

    font = dict(fontsize=9, family=MONO)
    probe = _Canvas(1.0, 1.0)
    token_w = {i: max(0.3, probe.width(_label(i, vocab), **font) + 0.12) for i in set(ids)}
    new_w = probe.width(new_label, **font) + 0.12
    plt.close(probe.fig)
    widths = [max(sum(token_w[t] for t in toks), new_w if merged else 0.0) for toks, merged in units]
    # wrap into lines of at most line_width inches
    lines, current, used = [], [], 0.0
    for unit, w in zip(units, widths):
        if current and used + w > line_width:
            lines.append(current)
            current, used = [], 0.0
        current.append((unit, w))
        used += w + 0.03
    lines.append(current)

    box_h, pair_gap, line_gap, top = 0.32, 0.72, 0.42, 1.05
    height = top + len(lines) * (pair_gap + box_h) + (len(lines) - 1) * line_gap + 0.15
    c = _Canvas(12.0, height)
    left = 0.2 + max(c.width(s, fontsize=9, weight="bold") for s in ("before", "after")) + 0.2
    y = height - top
    right = left
    for line in lines:
        c.text(0.2, y, "before", ha="left", va="center", fontsize=9, weight="bold")
        c.text(0.2, y - pair_gap, "after", ha="left", va="center", fontsize=9, weight="bold")
        x = left
        for (toks, merged), w in line:
            scale = w / sum(token_w[t] for t in toks)
            tx = x
            for t in toks:
                tw = token_w[t] * scale
                c.box(tx, y, tw, box_h, "pair" if merged else "byte", lw=1.3 if merged else 1.0)
                c.text(tx + tw / 2, y, _label(t, vocab), ha="center", va="center", **font)
                tx += tw
            if merged:
                c.box(x, y - pair_gap, w, box_h, "new", lw=1.5)
                c.text(x + w / 2, y - pair_gap, new_label, ha="center", va="center", weight="bold", **font)
                c.arrow((x + w / 2, y - box_h / 2 - 0.02), (x + w / 2, y - pair_gap + box_h / 2 + 0.02),
                        color=COLORS["pair"][1])
            else:
                c.box(x, y - pair_gap, w, box_h, "byte")
                c.text(x + w / 2, y - pair_gap, _label(toks[0], vocab), ha="center", va="center", **font)
            x += w + 0.03
        right = max(right, x)
        y -= pair_gap + box_h + line_gap
    a, b = pair
    title = (f"most frequent pair ({a}, {b}) = '{_label(a, vocab)}' + '{_label(b, vocab)}', {counts[pair]} times"
             if pair == min(counts, key=lambda p: (-counts[p], p)) else
             f"pair ({a}, {b}) = '{_label(a, vocab)}' + '{_label(b, vocab)}', {counts[pair]} times")
    title += f"  ->  new token {new_id} '{new_label}'"
    subtitle = f"length {len(ids)} -> {len(after)} tokens: one shorter for each of the {len(ids) - len(after)} merges"
    c.text(0.2, height - 0.3, title, ha="left", va="center", fontsize=10, weight="bold")
    c.text(0.2, height - 0.62, subtitle, ha="left", va="center", fontsize=9)
    width = max(right, 0.2 + c.width(title, fontsize=10, weight="bold"), 0.2 + c.width(subtitle, fontsize=9)) + 0.25
    return c.finish(width)


__all__ = ["draw_encoding_pipeline", "draw_merge_step"]
