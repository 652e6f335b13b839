"""Chapter 11: a draft model for speculative decoding, a much smaller GPT trained to imitate the course GPT.

Speculative decoding (:mod:`llmcourse.inference.speculative`) needs a second model that guesses the course
GPT's next tokens cheaply. :func:`course_draft_gpt` builds one with the same tokenizer and chapter 08's
:class:`~llmcourse.pretraining.trainer.Trainer`: one layer instead of four, half the width. It learns from
the course GPT itself (distillation): :func:`teacher_continuations` takes short prompts from the course
corpus and lets the course GPT continue each greedily, and the draft is trained on those sequences, so it
learns to guess what the target will say rather than what the documentation says. The draft is cached as
an artifact the way the course GPT is, so a second call loads it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from llmcourse.artifacts import Obtained, obtain
from llmcourse.config import fast_mode
from llmcourse.models.generation import generate
from llmcourse.pretraining.checkpoint import load_checkpoint, save_checkpoint
from llmcourse.pretraining.course_model import (course_base_model, course_corpus, course_corpus_chars,
                                                course_gpt_recipe, course_train_config)
from llmcourse.pretraining.trainer import TrainConfig, Trainer, load_trained_model

ARTIFACT = "course-draft-gpt.pt"
PROMPT_TOKENS = 8


def draft_train_config(fast: bool | None = None, **overrides: Any) -> TrainConfig:
    """The draft's run: the course GPT's settings with 1 layer of width 64 (32 in fast mode) and fewer steps."""
    fast = fast_mode() if fast is None else fast
    settings: dict[str, Any] = dict(d_model=64, n_layers=1, n_heads=4, max_steps=600, lr=6e-3, min_lr=6e-4,
                                    warmup_steps=30, eval_interval=0, eval_steps=10, seed=2024)
    if fast:
        settings.update(d_model=32, max_steps=40, warmup_steps=5, eval_steps=2)
    settings.update(overrides)
    return course_train_config(fast=fast, **settings)


@torch.no_grad()
def teacher_continuations(teacher: nn.Module, ids: Tensor, n_prompts: int, length: int, seed: int = 0,
                          batch_size: int = 256) -> Tensor:
    """(n_prompts, length) sequences: a random ``PROMPT_TOKENS``-token stretch of ``ids``, continued greedily
    by ``teacher`` (with its KV cache, ``batch_size`` prompts at a time) up to ``length`` tokens."""
    if not PROMPT_TOKENS < length <= teacher.context_length:
        raise ValueError(f"length must be in {PROMPT_TOKENS + 1}..{teacher.context_length} (the teacher's "
                         f"context), got {length}")
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be at least 1, got {n_prompts}")
    starts = torch.randint(0, len(ids) - PROMPT_TOKENS, (n_prompts,), generator=torch.Generator().manual_seed(seed))
    prompts = torch.stack([ids[s:s + PROMPT_TOKENS] for s in starts.tolist()])
    return torch.cat([generate(teacher, prompts[i:i + batch_size], length - PROMPT_TOKENS, top_k=1)
                      for i in range(0, n_prompts, batch_size)])


def course_draft_gpt(config: TrainConfig | None = None, n_prompts: int | None = None,
                     teacher: Obtained | None = None, cache_dir: str | os.PathLike | None = None,
                     rebuild: bool = False) -> Obtained[tuple]:
    """The draft GPT: loaded from the artifact cache, or distilled from the course GPT and cached first.

    ``teacher`` is the course GPT's artifact (:func:`~llmcourse.pretraining.course_model.course_base_model`
    by default); ``n_prompts`` training sequences (2,048; 128 in fast mode) are its greedy continuations of
    prompts from the training part of the corpus. ``.value`` is ``(model, tokenizer, checkpoint)`` as for the
    course GPT; the tokenizer is the course tokenizer, so the draft's token ids are the target's.
    """
    config = draft_train_config() if config is None else config
    n_prompts = (128 if fast_mode() else 2048) if n_prompts is None else n_prompts
    teacher = course_base_model(cache_dir=cache_dir) if teacher is None else teacher
    target, tokenizer, _ = teacher.value

    def build(path: Path) -> None:
        train_ids, _ = course_corpus(tokenizer, course_corpus_chars())
        seqs = teacher_continuations(target, train_ids, n_prompts, config.context_length, seed=config.seed)
        run = dataclasses.replace(config, checkpoint_path=str(path) + ".run")
        Trainer(run, [(s[:-1], s[1:]) for s in seqs], tokenizer=tokenizer).fit()
        state = load_checkpoint(run.checkpoint_path, map_location="cpu")
        state.pop("format", None), state.pop("version", None)
        save_checkpoint(path, state)
        os.remove(run.checkpoint_path)

    recipe = {**course_gpt_recipe("", config, course_corpus_chars()), "teacher_sha256": teacher.sha256,
              "n_prompts": n_prompts, "prompt_tokens": PROMPT_TOKENS}
    recipe.pop("tokenizer_sha256")
    return obtain(ARTIFACT, recipe, build, load_trained_model, chapter="11", cache_dir=cache_dir, rebuild=rebuild)


__all__ = ["ARTIFACT", "PROMPT_TOKENS", "course_draft_gpt", "draft_train_config", "teacher_continuations"]
