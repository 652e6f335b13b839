"""The course's one model: chapter 03's tokenizer -> chapter 08's pretrained GPT -> chapter 09's base model, each
handed on through the artifact cache (run here at a tiny size in a private cache folder)."""
from __future__ import annotations

import pytest
import torch

from llmcourse.pretraining import course_model as CM
from llmcourse.tokenizers.course_tokenizer import VOCAB_SIZE, course_tokenizer

TINY = dict(context_length=32, d_model=32, n_layers=1, n_heads=2, batch_size=8, max_steps=20, warmup_steps=2,
            eval_interval=10, eval_steps=2)


def test_the_pretrained_gpt_uses_the_tokenizer_chapter_03_leaves(tmp_path):
    config = CM.course_train_config(fast=True, **TINY)
    tokenizer = course_tokenizer(cache_dir=tmp_path)
    seen = []
    first = CM.pretrain_course_gpt(config, n_chars=60_000, cache_dir=tmp_path, on_sample=lambda *s: seen.append(s))
    assert first.built and "built here" in str(first)
    # a sample at each of sample_steps, shown as it formed and kept in the checkpoint
    assert [step for step, _ in seen] == CM.sample_steps(config) == [2, 6, 20]
    assert [tuple(s) for s in first.value[2]["samples"]] == seen
    assert all(text.startswith(CM.SAMPLE_PROMPT) and len(text) > len(CM.SAMPLE_PROMPT) for _, text in seen)
    assert seen[-1][1] == CM.sample_text(first.value[0], first.value[1]), "the last sample is the saved model's"
    assert not list(tmp_path.rglob("*.run")), "the run's own checkpoint is removed once the artifact is written"
    model, its_tokenizer, checkpoint = first.value
    assert its_tokenizer.merges == tokenizer.value.merges and model.vocab_size == VOCAB_SIZE
    record_recipe = CM.course_gpt_recipe(tokenizer.sha256, config, 60_000)
    assert record_recipe["tokenizer_sha256"] == tokenizer.sha256 and checkpoint["step"] == config.max_steps
    # chapter 09 starts from exactly that checkpoint: loaded, not trained again
    base = CM.course_base_model(config, n_chars=60_000, cache_dir=tmp_path)
    assert not base.built and base.path == first.path and base.chapter == "08"
    for p, q in zip(base.value[0].parameters(), model.parameters()):
        assert torch.equal(p, q)


def test_another_tokenizer_or_setting_means_another_model(tmp_path):
    config = CM.course_train_config(fast=True, **TINY)
    a = CM.course_gpt_recipe("a" * 64, config, 60_000)
    assert a != CM.course_gpt_recipe("b" * 64, config, 60_000)
    assert a != CM.course_gpt_recipe("a" * 64, CM.course_train_config(fast=True, **{**TINY, "lr": 5e-3}), 60_000)
    assert a != CM.course_gpt_recipe("a" * 64, config, 70_000)


def test_full_and_fast_settings():
    full, fast = CM.course_train_config(fast=False), CM.course_train_config(fast=True)
    assert full.context_length == 64 and full.d_model == 128 and full.n_layers == 4 and full.max_steps == 1000
    assert fast.max_steps < full.max_steps and CM.course_corpus_chars(True) < CM.course_corpus_chars(False)


def _lesson_code(chapter: str) -> str:
    import nbformat

    from conftest import ROOT

    [path] = (ROOT / "notebooks").glob(f"{chapter}_*.ipynb")
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")


def test_the_lessons_hand_on_one_model():
    """Chapter 03 saves the tokenizer through the artifact cache; 04 and 05 use its tokens; 07 builds the GPT with its vocabulary and 08's
    settings; 08 pretrains with that tokenizer and leaves the checkpoint that 09 fine-tunes; 10 trains 08's settings."""
    import re

    assert "course_tokenizer()" in _lesson_code("03")
    for chapter in ("04", "05"):
        assert "course_tokenizer()" in _lesson_code(chapter), f"chapter {chapter} shows its ideas on the course's tokens"
    ch07 = _lesson_code("07")
    assert "course_tokenizer()" in ch07 and "course_train_config(fast=False).gpt_config(course_tok.vocab_size)" in ch07
    ch08 = _lesson_code("08")
    # the default call: the course's settings (course_train_config()) and chapter 03's cached tokenizer
    assert re.search(r"pretrain_course_gpt\((on_sample=\w+)?\)", ch08)
    assert "char_tokenize" not in ch08, "chapter 08 trains on the course tokenizer's ids, not on characters"
    ch09 = _lesson_code("09")
    assert "course_base_model()" in ch09, "chapter 09 fine-tunes chapter 08's checkpoint"
    assert "pretrain_on_text(" not in ch09 and "base = GPT(" not in ch09, "and pretrains no base of its own"
    assert "course_train_config()" in _lesson_code("10"), "chapter 10 trains chapter 08's configuration again"
    defaults = CM.pretrain_course_gpt.__defaults__
    assert defaults[:2] == (None, None), "no config and no size given: course_train_config() and the full corpus"


@pytest.mark.parametrize("name", ["MultiHeadAttention", "TransformerBlock", "GPT", "Trainer"])
def test_lessons_show_the_classes_they_use(name):
    """A lesson that builds on one of the course's central classes shows its code (show_code) at least once."""
    import re

    users = [chapter for chapter in ("05", "06", "07", "08", "09", "10")
             if re.search(rf"\bimport\b[^\n]*\b{name}\b", _lesson_code(chapter))]
    assert users, f"no lesson imports {name}"
    for chapter in users:
        assert f"show_code({name}" in _lesson_code(chapter), f"lesson {chapter} imports {name} but never shows it"


def test_chapter_08s_committed_sample_is_mostly_real_words():
    """The final sample committed in lesson 08 (a full-size run): at least 60% of its words occur in the training text."""
    import nbformat

    from conftest import ROOT
    from llmcourse.tokenizers.course_tokenizer import training_text

    [path] = (ROOT / "notebooks").glob("08_*.ipynb")
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["llmcourse"]["fast"] is False
    [cell] = [c for c in nb.cells if c.cell_type == "code" and "real_share" in c.source]
    printed = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    sample = printed.rsplit("\n\n", 1)[0]
    words = sample.split()
    assert len(words) >= 40, "the committed sample is the full 120-token one"
    corpus_words = set(training_text().split())
    share = sum(w in corpus_words for w in words) / len(words)
    assert share >= 0.6, f"only {share:.0%} of the committed sample's words occur in the training text"
