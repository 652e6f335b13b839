"""Generating text token by token, with and without the KV cache (chapter 07).

:func:`generate` works with any decoder that follows this small protocol (both
:class:`~llmcourse.models.gpt.GPT` and :class:`~llmcourse.models.llama.Llama` do):

* ``model(ids)`` returns logits (batch, seq, vocab) for ids (batch, seq);
* ``model(ids, past_kv=past, use_cache=True)`` returns ``(logits, present)``,
  where ``present`` holds every layer's keys and values so far;
* ``model.context_length`` and ``model.vocab_size`` are the limits.

Without the cache, every step feeds the whole sequence again: step t costs
attention over t tokens for *all* t positions. With the cache, the prompt is
fed once and then each step feeds only the newest token, whose query attends to
the stored keys and values. Both give the same tokens (the tests check this
token for token); the cache only removes repeated work.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn
from llmcourse.progress import tqdm

from llmcourse.models.sampling import check_sampling_params, sample_next


def check_ids(ids: Tensor, vocab_size: int, context_length: int | None = None) -> None:
    """Raise ``ValueError`` for a non-integer tensor, ids outside 0..vocab_size-1, or a too-long sequence."""
    if not isinstance(ids, Tensor) or ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"token ids must be an integer tensor, got "
                         f"{ids.dtype if isinstance(ids, Tensor) else type(ids).__name__}")
    if ids.dim() != 2:
        raise ValueError(f"token ids must have shape (batch, seq), got {tuple(ids.shape)}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        bad = int(ids.max()) if int(ids.max()) >= vocab_size else int(ids.min())
        raise ValueError(f"token id {bad} is outside the vocabulary: ids must be in 0..{vocab_size - 1} "
                         f"(vocab_size={vocab_size})")
    if context_length is not None and ids.shape[1] > context_length:
        raise ValueError(f"sequence of {ids.shape[1]} tokens is longer than the model's context length "
                         f"{context_length}; shorten it (e.g. keep the last {context_length} tokens)")


@torch.no_grad()
def generate(model: nn.Module, ids: Tensor | list[int], max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
             use_cache: bool = True, generator: torch.Generator | None = None,
             sliding_window: bool = False) -> Tensor:
    """Append up to ``max_new_tokens`` sampled tokens to ``ids`` (seq,) or (batch, seq) (a tensor or a list).

    Sampling: logits / temperature, then top-k, then top-p, then one draw
    (``top_k=1`` is greedy decoding). Once a row has produced ``eos_id`` it gets
    ``eos_id`` again at every later step (padding), and generation stops when
    every row has finished. Returns the prompt followed by the new tokens, with
    the shape of ``ids`` (1-D in, 1-D out).

    A model only sees ``context_length`` tokens. By default a longer request is
    an error; with ``sliding_window=True`` each new token is predicted from the
    last ``context_length`` tokens (the oldest fall out of view), so the text
    can grow without limit, as in nanoGPT's sampling loop.
    """
    check_sampling_params(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}")
    if isinstance(ids, (list, tuple)):  # a plain list of ids, e.g. tokenizer.encode(text)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in (x for row in ids for x in (
                row if isinstance(row, (list, tuple)) else [row]))):
            raise ValueError("token ids given as a list must be whole numbers (or lists of them, one per row)")
        device = next(model.parameters()).device if any(True for _ in model.parameters()) else None
        ids = torch.tensor(ids, dtype=torch.long, device=device)
    elif not isinstance(ids, Tensor):
        raise ValueError(f"ids must be a tensor or a list of token ids, got {type(ids).__name__}")
    one_dim = ids.dim() == 1
    ids = ids[None] if one_dim else ids
    check_ids(ids, model.vocab_size, None if sliding_window else model.context_length)
    if ids.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token (e.g. a start-of-text id)")
    if not sliding_window and ids.shape[1] + max_new_tokens > model.context_length:
        raise ValueError(f"prompt of {ids.shape[1]} tokens + max_new_tokens={max_new_tokens} exceeds the context "
                         f"length {model.context_length}: ask for at most {model.context_length - ids.shape[1]} "
                         f"new tokens")
    was_training = model.training
    model.eval()
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    past = None
    try:
        for _ in range(max_new_tokens):
            if ids.shape[1] > model.context_length:  # sliding window: the cache no longer fits, start afresh
                past = None
                logits = model(ids[:, -model.context_length:])
            elif use_cache:
                fresh = ids if past is None else ids[:, -1:]
                logits, past = model(fresh, past_kv=past, use_cache=True)
            else:
                logits = model(ids)
            token = sample_next(logits[:, -1], temperature, top_k, top_p, generator=generator)
            if eos_id is not None:
                token = torch.where(finished, torch.full_like(token, eos_id), token)
                finished |= token == eos_id
            ids = torch.cat([ids, token[:, None].to(ids.dtype)], dim=1)
            if eos_id is not None and bool(finished.all()):
                break
    finally:
        model.train(was_training)
    return ids[0] if one_dim else ids


def time_generation(model: nn.Module, prompt_len: int, new_tokens: int, use_cache: bool, repeats: int = 3,
                    seed: int = 0) -> float:
    """Seconds (best of ``repeats``) to greedily generate ``new_tokens`` after a random prompt."""
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, model.vocab_size, (1, prompt_len), generator=generator)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        generate(model, prompt, new_tokens, top_k=1, use_cache=use_cache)
        best = min(best, time.perf_counter() - start)
    return best


def kv_cache_speedup(model: nn.Module, lengths: list[int], prompt_len: int = 1, repeats: int = 3,
                     progress: bool = False) -> dict[str, Any]:
    """For each total length n: seconds to generate n - prompt_len tokens with and without the cache."""
    result: dict[str, list] = {"length": [], "no_cache_s": [], "cache_s": [], "speedup": []}
    for n in tqdm(lengths, desc="timing", disable=not progress):
        slow = time_generation(model, prompt_len, n - prompt_len, use_cache=False, repeats=repeats)
        fast = time_generation(model, prompt_len, n - prompt_len, use_cache=True, repeats=repeats)
        result["length"].append(n)
        result["no_cache_s"].append(slow)
        result["cache_s"].append(fast)
        result["speedup"].append(slow / fast)
    return result


__all__ = ["check_ids", "generate", "time_generation", "kv_cache_speedup"]
