"""llmcourse.artifacts (what one chapter leaves for the next) and the course's tokenizer built through it."""
from __future__ import annotations

import json

import pytest

from llmcourse import artifacts
from llmcourse.artifacts import cached, obtain, recipe_fingerprint
from llmcourse.tokenizers import course_tokenizer as CT


def _writer(text: str, calls: list):
    def build(path):
        calls.append(path)
        path.write_text(text)
    return build


def _read(path):
    return path.read_text()


def test_built_once_then_loaded(tmp_path):
    calls = []
    first = obtain("notes.txt", {"n": 1}, _writer("hello", calls), _read, chapter="03", cache_dir=tmp_path)
    second = obtain("notes.txt", {"n": 1}, _writer("other", calls), _read, chapter="03", cache_dir=tmp_path)
    assert first.built and not second.built and len(calls) == 1
    assert first.value == second.value == "hello" and first.path == second.path and first.sha256 == second.sha256
    assert "built here" in str(first) and "loaded from the cache" in str(second) and "chapter 03" in str(second)
    record = json.loads(first.path.with_name(first.path.name + ".record.json").read_text())
    assert record["recipe"] == {"n": 1} and record["chapter"] == "03" and len(record["sha256"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, first.path.name + ".record.json"])


def test_another_recipe_is_another_artifact(tmp_path):
    a = obtain("notes.txt", {"n": 1}, _writer("one", []), _read, chapter="03", cache_dir=tmp_path)
    b = obtain("notes.txt", {"n": 2}, _writer("two", []), _read, chapter="03", cache_dir=tmp_path)
    assert a.path != b.path and a.value == "one" and b.value == "two"
    assert cached("notes.txt", {"n": 1}, tmp_path) == a.path and cached("notes.txt", {"n": 3}, tmp_path) is None
    assert recipe_fingerprint({"a": 1, "b": [1, 2]}) == recipe_fingerprint({"b": [1, 2], "a": 1})


def test_a_damaged_file_is_built_again(tmp_path):
    first = obtain("notes.txt", {"n": 1}, _writer("hello", []), _read, chapter="03", cache_dir=tmp_path)
    first.path.write_text("hellO")  # one changed byte: the checksum no longer matches
    assert cached("notes.txt", {"n": 1}, tmp_path) is None
    again = obtain("notes.txt", {"n": 1}, _writer("hello", []), _read, chapter="03", cache_dir=tmp_path)
    assert again.built and again.value == "hello"


def test_rebuild_builds_even_when_cached(tmp_path):
    calls = []
    obtain("notes.txt", {}, _writer("x", calls), _read, chapter="03", cache_dir=tmp_path)
    assert obtain("notes.txt", {}, _writer("y", calls), _read, chapter="03", cache_dir=tmp_path, rebuild=True).value == "y"
    assert len(calls) == 2


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def broken(path):
        path.write_text("half")
        raise KeyboardInterrupt  # Ctrl-C in the middle of building

    with pytest.raises(KeyboardInterrupt):
        obtain("notes.txt", {}, broken, _read, chapter="03", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="wrote nothing"):
        obtain("notes.txt", {}, lambda path: None, _read, chapter="03", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_names_and_recipes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="artifact name"):
        obtain("../escape.txt", {}, _writer("x", []), _read, chapter="03", cache_dir=tmp_path)
    with pytest.raises(TypeError, match="JSON values"):
        obtain("notes.txt", {"f": object()}, _writer("x", []), _read, chapter="03", cache_dir=tmp_path)


def test_the_cache_folder_follows_llmcourse_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMCOURSE_CACHE", str(tmp_path))
    assert artifacts.artifact_dir() == tmp_path / "artifacts"
    got = obtain("notes.txt", {}, _writer("x", []), _read, chapter="03")
    assert got.path.parent == tmp_path / "artifacts"


def test_the_course_tokenizer_is_trained_once_and_loaded_with_the_same_merges(tmp_path):
    built = CT.course_tokenizer(cache_dir=tmp_path)
    loaded = CT.course_tokenizer(cache_dir=tmp_path)
    assert built.built and not loaded.built
    tok, fresh = loaded.value, CT.train_course_tokenizer()
    assert tok.vocab_size == CT.VOCAB_SIZE and tok.special_tokens == {CT.END_OF_TEXT: CT.VOCAB_SIZE - 1}
    assert tok.merges == fresh.merges == built.value.merges and tok.byte_ids == fresh.byte_ids
    text = "def forward(self, x):\n    return self.head(x)  # the logits<|endoftext|>"
    assert tok.encode(text, allowed_special="all") == fresh.encode(text, allowed_special="all")
    assert tok.decode(tok.encode(text, allowed_special="all")) == text
    assert len(tok.encode("The function returns a new list.")) < len("The function returns a new list.") / 3


def test_the_course_tokenizer_recipe_names_its_training_text():
    recipe = CT.course_tokenizer_recipe()
    assert recipe["vocab_size"] == 4096 and recipe["n_chars"] == CT.N_CHARS and len(recipe["corpus_sha256"]) == 64
    assert CT.course_tokenizer_recipe("another text")["corpus_sha256"] != recipe["corpus_sha256"]


def test_a_checkpoint_keeps_the_course_tokenizer(tmp_path):
    import torch

    from llmcourse.pretraining.trainer import (CheckpointError, TrainConfig, Trainer, load_trained_model,
                                               tokenizer_from_description)

    tok = CT.course_tokenizer(cache_dir=tmp_path).value
    ids = torch.tensor(tok.encode(CT.training_text()[:20_000]))
    cut = int(len(ids) * 0.8)
    config = TrainConfig(context_length=16, d_model=16, n_layers=1, n_heads=2, batch_size=4, max_steps=2,
                         warmup_steps=1, eval_interval=0, eval_steps=1, checkpoint_path=str(tmp_path / "run.pt"),
                         progress=False)
    Trainer(config, ids[:cut], ids[cut:], tokenizer=tok).fit()
    model, loaded, _ = load_trained_model(tmp_path / "run.pt")
    assert model.vocab_size == CT.VOCAB_SIZE and loaded.merges == tok.merges and loaded.special_tokens == tok.special_tokens
    with pytest.raises(CheckpointError, match="damaged"):
        tokenizer_from_description({"kind": "regex-bpe", "tokenizer": {"format": "something else"}})
