"""The merge stepper of chapter 03: byte-pair encoding, one merge at a time.

* :func:`merge_step_view` -- a plain-text report of the state after ``step``
  merges of :class:`~llmcourse.tokenizers.basic.BasicTokenizer` on ``text``: the
  merge just made, how often its pair occurred, the new token, the text cut
  into tokens, and every token learned so far (the growing vocabulary).
* :func:`merge_stepper` -- a slider over the steps that redraws that report.

The view is a plain ``str``, so it can be printed, compared in tests and shown
in a notebook without a browser.
"""
from __future__ import annotations

from llmcourse.tokenizers.basic import BasicTokenizer, MergeStep

_SHOWN = {" ": "␣", "\n": "↵", "\t": "⇥"}


def show_token(token: bytes) -> str:
    """A token's bytes as readable text: spaces as ␣, newlines as ↵; bytes that are not UTF-8 as ``<e4>``."""
    try:
        text = token.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<{b:02x}>" for b in token)
    return "".join(_SHOWN.get(ch, ch) for ch in text)


def _steps(text: str, step: int) -> list[MergeStep]:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return list(BasicTokenizer().train_steps(text, step))


def merge_step_view(text: str, step: int, max_tokens: int = 80) -> str:
    """The state of BPE training on ``text`` after ``step`` merges, as a text report.

    Step 0 is the raw UTF-8 bytes. If the text runs out of pairs before ``step``
    merges, the report shows the last merge that happened and says so.
    ``max_tokens``: how many tokens of the text to print (the rest is elided).
    """
    steps = _steps(text, step)
    n_bytes = len(text.encode("utf-8"))
    ids = list(steps[-1].ids) if steps else list(text.encode("utf-8"))
    vocab = steps[-1].vocab if steps else {i: bytes([i]) for i in range(256)}
    lines = []
    if not steps:
        lines.append(f"step 0: no merges yet -- the text is its {n_bytes} UTF-8 bytes, vocabulary of 256 single bytes")
    else:
        last = steps[-1]
        a, b = last.pair
        lines.append(f"step {len(steps)}: merge ({a}, {b}) = '{show_token(vocab[a])}' + '{show_token(vocab[b])}'"
                     f" -> new token {last.new_id} '{show_token(last.token)}'  (the pair occurred {last.count} times)")
        if len(steps) < step:
            lines.append(f"(the text ran out of pairs after {len(steps)} merges)")
    lines.append(f"length: {n_bytes} bytes -> {len(ids)} tokens   vocabulary: {len(vocab)} tokens "
                 f"(256 bytes + {len(steps)} merged)")
    shown = " | ".join(show_token(vocab[i]) for i in ids[:max_tokens])
    if len(ids) > max_tokens:
        shown += f" | ... ({len(ids) - max_tokens} more)"
    lines.append("text as tokens: " + shown)
    if steps:
        lines.append("")
        lines.append(" id   pair          count  token")
        for s in steps:
            lines.append(f"{s.new_id:>4}  ({s.pair[0]:>3}, {s.pair[1]:>3})  {s.count:>6}  '{show_token(s.token)}'")
    return "\n".join(lines)


def merge_stepper(text: str, max_step: int = 30, step: int = 1):
    """A slider over the merges of :func:`merge_step_view`; returns the ipywidgets container."""
    import ipywidgets as widgets

    from llmcourse.explorer import explorer

    slider = widgets.IntSlider(value=step, min=0, max=max_step, description="merges", continuous_update=False)

    return explorer(lambda step: merge_step_view(text, step), step=slider)


__all__ = ["merge_step_view", "merge_stepper", "show_token"]
