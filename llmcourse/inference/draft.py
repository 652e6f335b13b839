"""Chapter 11: a draft model for speculative decoding, a much smaller GPT trained briefly like the course GPT.

Speculative decoding (:mod:`llmcourse.inference.speculative`) needs a second model that guesses the course
GPT's next tokens cheaply. :func:`course_draft_gpt` builds one with the same tokenizer, the same documentation
and chapter 08's :class:`~llmcourse.pretraining.trainer.Trainer`: one layer instead of four, half the width,
1,000 short steps. It is cached as an artifact the way the course GPT is, so a second call loads it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from llmcourse.artifacts import Obtained, obtain
from llmcourse.config import fast_mode
from llmcourse.pretraining.checkpoint import load_checkpoint, save_checkpoint
from llmcourse.pretraining.course_model import (course_corpus, course_corpus_chars, course_gpt_recipe,
                                                course_train_config)
from llmcourse.pretraining.trainer import TrainConfig, Trainer, load_trained_model
from llmcourse.tokenizers.course_tokenizer import course_tokenizer

ARTIFACT = "course-draft-gpt.pt"


def draft_train_config(fast: bool | None = None, **overrides: Any) -> TrainConfig:
    """The draft's run: the course GPT's settings with 1 layer of width 64 (32 in fast mode) and fewer steps."""
    fast = fast_mode() if fast is None else fast
    settings: dict[str, Any] = dict(d_model=64, n_layers=1, n_heads=4, max_steps=1000, lr=6e-3, min_lr=6e-4,
                                    warmup_steps=30, eval_interval=0, eval_steps=10, seed=2024)
    if fast:
        settings.update(d_model=32, max_steps=60, warmup_steps=5, eval_steps=2)
    settings.update(overrides)
    return course_train_config(fast=fast, **settings)


def course_draft_gpt(config: TrainConfig | None = None, n_chars: int | None = None,
                     cache_dir: str | os.PathLike | None = None, rebuild: bool = False) -> Obtained[tuple]:
    """The draft GPT: loaded from the artifact cache, or trained on the course corpus and cached first.

    ``.value`` is ``(model, tokenizer, checkpoint)`` as for the course GPT
    (:func:`~llmcourse.pretraining.course_model.pretrain_course_gpt`); the tokenizer is the course tokenizer,
    so the draft's token ids are the target's.
    """
    config = draft_train_config() if config is None else config
    n_chars = course_corpus_chars() if n_chars is None else n_chars
    tokenizer_artifact = course_tokenizer(cache_dir=cache_dir)
    tokenizer = tokenizer_artifact.value

    def build(path: Path) -> None:
        train_ids, val_ids = course_corpus(tokenizer, n_chars)
        run = dataclasses.replace(config, checkpoint_path=str(path) + ".run")
        Trainer(run, train_ids, val_ids, tokenizer=tokenizer).fit()
        state = load_checkpoint(run.checkpoint_path, map_location="cpu")
        state.pop("format", None), state.pop("version", None)
        save_checkpoint(path, state)
        os.remove(run.checkpoint_path)

    recipe = {**course_gpt_recipe(tokenizer_artifact.sha256, config, n_chars), "role": "draft"}
    return obtain(ARTIFACT, recipe, build, load_trained_model, chapter="11", cache_dir=cache_dir, rebuild=rebuild)


__all__ = ["ARTIFACT", "course_draft_gpt", "draft_train_config"]
