"""The course's GPT: chapter 07's model, pretrained on Python's documentation with chapter 03's tokenizer (chapter 08).

The course builds one model as it goes. Chapter 03 leaves its tokenizer in the artifact cache
(:func:`~llmcourse.tokenizers.course_tokenizer.course_tokenizer`); :func:`pretrain_course_gpt` encodes the same
documentation with it, token by token, trains the GPT with the :class:`~llmcourse.pretraining.trainer.Trainer`
and leaves the checkpoint as the next artifact. Its recipe holds the tokenizer's checksum, so a changed tokenizer
means a new model. Chapter 09 fine-tunes this checkpoint (:func:`course_base_model`) and chapter 10 trains the
same configuration (:func:`course_train_config`) in two processes.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from llmcourse.artifacts import Obtained, obtain
from llmcourse.config import fast_mode
from llmcourse.models.generation import generate
from llmcourse.pretraining.checkpoint import load_checkpoint, save_checkpoint
from llmcourse.pretraining.data import split_ids
from llmcourse.pretraining.trainer import TrainConfig, Trainer, load_trained_model
from llmcourse.tokenizers.course_tokenizer import N_CHARS, course_tokenizer, training_text

ARTIFACT = "course-gpt.pt"
VAL_FRACTION = 0.1
SAMPLE_PROMPT = "The"


def sample_text(model: torch.nn.Module, tokenizer: Any, prompt: str = SAMPLE_PROMPT, n_tokens: int = 60,
                temperature: float = 0.8, top_k: int = 50, seed: int = 0) -> str:
    """``n_tokens`` sampled after ``prompt`` (seeded, so the same weights give the same text), decoded."""
    was_training = model.training
    model.eval()
    ids = torch.tensor(tokenizer.encode(prompt))
    out = generate(model, ids, n_tokens, temperature=temperature, top_k=top_k,
                   generator=torch.Generator().manual_seed(seed), sliding_window=True)
    model.train(was_training)
    return tokenizer.decode(out.tolist())


def sample_steps(config: TrainConfig) -> list[int]:
    """The steps after which the course's run writes a sample: early, a third of the way, and at the end."""
    return sorted({max(1, config.max_steps // 10), max(1, config.max_steps // 3), config.max_steps})


def course_train_config(fast: bool | None = None, **overrides: Any) -> TrainConfig:
    """The settings of the course's pretraining run (smaller and shorter in fast mode); ``overrides`` change any field."""
    fast = fast_mode() if fast is None else fast
    settings: dict[str, Any] = dict(context_length=64, d_model=128, n_layers=4, n_heads=4, batch_size=16,
                                    max_steps=1000, lr=2e-3, min_lr=2e-4, warmup_steps=50, eval_interval=250,
                                    eval_steps=20, progress=False, seed=1337)
    if fast:
        settings.update(d_model=64, n_layers=2, max_steps=60, warmup_steps=10, eval_interval=30, eval_steps=4)
    settings.update(overrides)
    return TrainConfig(**settings)


def course_corpus_chars(fast: bool | None = None) -> int:
    """How many characters of the documentation the run trains on: all the tokenizer saw, a fifth in fast mode."""
    return N_CHARS // 5 if (fast_mode() if fast is None else fast) else N_CHARS


def course_corpus(tokenizer: Any, n_chars: int) -> tuple[Tensor, Tensor]:
    """(training ids, validation ids): the first ``n_chars`` of the tokenizer's training text, the last tenth held out."""
    text = training_text()[:n_chars]
    return split_ids(torch.tensor(tokenizer.encode(text, allowed_special="none")), VAL_FRACTION)


def course_gpt_recipe(tokenizer_sha256: str, config: TrainConfig, n_chars: int) -> dict:
    """Everything the course's GPT depends on: the tokenizer (by checksum), the corpus and every training setting."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("checkpoint_path", "progress")}
    settings["betas"] = list(settings["betas"])
    return {"tokenizer_sha256": tokenizer_sha256, "corpus": "python-docs", "n_chars": n_chars,
            "val_fraction": VAL_FRACTION, "train": settings}


def pretrain_course_gpt(config: TrainConfig | None = None, n_chars: int | None = None,
                        cache_dir: str | os.PathLike | None = None, rebuild: bool = False,
                        callbacks: tuple = (), on_sample: Callable[[int, str], Any] | None = None) -> Obtained[tuple]:
    """The course's pretrained GPT: loaded from the artifact cache, or trained and cached first.

    ``.value`` is ``(model, tokenizer, checkpoint)`` as :func:`~llmcourse.pretraining.trainer.load_trained_model`
    gives them; ``print`` the result to see whether it was trained now or loaded. While training, the model writes
    a sample (:func:`sample_text`) at each of :func:`sample_steps`; ``on_sample(step, text)`` sees each one as it
    forms, and the checkpoint keeps them all under ``"samples"`` (a list of ``[step, text]``), so a run loaded from
    the cache can show them too.
    """
    config = course_train_config() if config is None else config
    n_chars = course_corpus_chars() if n_chars is None else n_chars
    tokenizer_artifact = course_tokenizer(cache_dir=cache_dir)
    tokenizer = tokenizer_artifact.value

    def build(path: Path) -> None:
        train_ids, val_ids = course_corpus(tokenizer, n_chars)
        run = dataclasses.replace(config, checkpoint_path=str(path) + ".run")
        trainer = Trainer(run, train_ids, val_ids, tokenizer=tokenizer, callbacks=list(callbacks))
        samples: list[list] = []
        wanted = set(sample_steps(config))

        def write_sample(history) -> None:
            if history.step[-1] in wanted:
                samples.append([history.step[-1], sample_text(trainer.unwrapped_model, tokenizer)])
                if on_sample is not None:
                    on_sample(*samples[-1])

        trainer.callbacks.append(write_sample)
        trainer.fit()
        state = load_checkpoint(run.checkpoint_path, map_location="cpu")
        state.pop("format", None), state.pop("version", None)
        save_checkpoint(path, {**state, "samples": samples})
        os.remove(run.checkpoint_path)

    return obtain(ARTIFACT, course_gpt_recipe(tokenizer_artifact.sha256, config, n_chars), build, load_trained_model,
                  chapter="08", cache_dir=cache_dir, rebuild=rebuild)


def course_base_model(config: TrainConfig | None = None, n_chars: int | None = None,
                      cache_dir: str | os.PathLike | None = None) -> Obtained[tuple]:
    """What chapter 09 starts from: chapter 08's checkpoint (trained first if the cache does not hold it)."""
    return pretrain_course_gpt(config, n_chars, cache_dir=cache_dir)


__all__ = ["ARTIFACT", "course_base_model", "course_corpus", "course_corpus_chars", "course_gpt_recipe",
           "course_train_config", "pretrain_course_gpt", "sample_steps", "sample_text"]
