"""Bad input to training, resuming, checkpoints, `llmcourse build` and the CLI: nothing lost, nothing silently
wrong. Each case is one a careless or curious user tried; each must give one `error:` line and exit status 2
(or a clear exception from the library), and must never lose a good checkpoint."""
import json
import math
import os
import stat
from pathlib import Path

import pytest
import torch

from llmcourse.cli import main as cli
from llmcourse.pretraining.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from llmcourse.pretraining.trainer import TrainConfig, Trainer, TrainingDiverged, load_trained_model

SMALL = ["--set", "max_steps=4", "--set", "warmup_steps=1", "--set", "d_model=16", "--set", "n_layers=1",
         "--set", "n_heads=2", "--set", "context_length=8", "--set", "batch_size=4", "--set", "eval_interval=2",
         "--set", "eval_steps=2", "--set", "progress=false", "--set", "cpu=true", "--set", "dataset_size=2000"]


def one_error_line(capsys) -> str:
    """The single `error:` line a failed command printed (and no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step run on the synthetic source: (folder, checkpoint path)."""
    out = tmp_path_factory.mktemp("run")
    assert cli(["train", *SMALL, "--out", str(out)]) == 0
    return out, out / "checkpoint.pt"


# --------------------------------------------------------------------------- settings checked before any work


@pytest.mark.parametrize("setting,match", [
    ("dropout=1.5", r"TrainConfig\.dropout must be a number in \[0, 1\), got 1\.5"),
    ("lr=Infinity", r"TrainConfig\.lr must be a finite number > 0, got inf"),
    ("lr=NaN", r"TrainConfig\.lr must be a finite number > 0, got nan"),
    ("lr=abc", r"TrainConfig\.lr must be a finite number > 0, got 'abc'"),
    ("batch_size=\"4\"", r"TrainConfig\.batch_size must be a whole number >= 1, got '4'"),
    ("max_steps=2.5", r"TrainConfig\.max_steps must be a whole number >= 1, got 2\.5"),
    ("progress=maybe", r"TrainConfig\.progress must be true or false, got 'maybe'"),
    ("grad_clip=-Infinity", r"TrainConfig\.grad_clip must be null, 0 \(off\) or a finite number >= 0"),
    ("betas=[0.9, 1.5]", r"TrainConfig\.betas must be two numbers in \[0, 1\)"),
    ("weight_decay=1e400", r"TrainConfig\.weight_decay must be a finite number >= 0, got inf"),
    ("checkpoint_path=3", r"TrainConfig\.checkpoint_path must be null"),
    ("val_fraction=5", r"val_fraction must be a number strictly between 0 and 1 .*got 5"),
    ("val_fraction=0", r"val_fraction must be a number strictly between 0 and 1"),
    ("dataset_size=-3", r"dataset_size must be a whole number >= 1 .*got -3"),
    ("dataset=7", r"dataset must be 'synthetic', 'python-docs' or the path"),
    ("mixed_precision=fp16", r"fp16|mixed_precision"),
    ("vocab_size=3", r"token id \d+ is outside the vocabulary"),
    ("context_length=100000", r"too short for windows of context_length=100000"),
    ("mixed_precision=half", r"mixed_precision must be one of \('no', 'bf16', 'fp16', 'auto'\), got 'half'"),
])
def test_bad_settings_are_one_error_line_before_training(setting, match, tmp_path, capsys):
    if setting == "mixed_precision=fp16" and torch.cuda.is_available():
        pytest.skip("fp16 is allowed where there is a GPU")
    out = tmp_path / "run"
    assert cli(["train", *SMALL, "--set", setting, "--out", str(out)]) == 2
    import re

    assert re.search(match, one_error_line(capsys))
    assert not (out / "checkpoint.pt").exists() and not (out / "history.json").exists()  # nothing ran


def test_an_existing_file_as_out_or_checkpoint_path_is_refused_before_training(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    assert cli(["train", *SMALL, "--out", str(afile)]) == 2
    assert "is a file, not a folder" in one_error_line(capsys)
    assert cli(["train", *SMALL, "--set", f"checkpoint_path={afile}/ck.pt", "--out", str(tmp_path / "r")]) == 2
    assert "is a file, not a folder" in one_error_line(capsys)
    assert afile.read_text() == "keep me" and not (tmp_path / "r" / "history.json").exists()
    with pytest.raises(ValueError, match="checkpoint_path .* is a folder"):
        Trainer(TrainConfig(context_length=8, d_model=16, n_layers=1, n_heads=2, max_steps=2, warmup_steps=0,
                            checkpoint_path=str(tmp_path)), torch.arange(50) % 5)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_checkpoint_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert cli(["train", *SMALL, "--set", f"checkpoint_path={locked}/ck.pt", "--out", str(tmp_path / "r")]) == 2
        assert "is not writable" in one_error_line(capsys)
    finally:
        locked.chmod(0o700)


def test_checkpoint_path_null_warns_that_nothing_is_saved(tmp_path, capsys):
    assert cli(["train", *SMALL, "--set", "checkpoint_path=null", "--set", "max_steps=1", "--set",
                "warmup_steps=0", "--out", str(tmp_path)]) == 0
    assert "warning: checkpoint_path is null, so nothing is saved" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.pt"))


def test_an_interrupted_run_saves_and_exits_non_zero(tmp_path, capsys, monkeypatch):
    from llmcourse.pretraining import trainer as trainer_module

    real = trainer_module.Trainer.train_step

    def stop_at_third(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", stop_at_third)
    assert cli(["train", *SMALL, "--out", str(tmp_path)]) == 130
    assert "interrupted at step 2 of 4" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2


@pytest.mark.parametrize("argv,match", [
    (["build", "abc", "--no-execute", "--no-self-check"], "no solutions notebook for chapter 'abc'"),
    (["build", "99", "--no-execute", "--no-self-check"], "no solutions notebook for chapter '99'"),
    (["execute", "nope.ipynb"], "no notebook at nope.ipynb"),
    (["generate", "--checkpoint", "nowhere.pt", "--prompt", "ab"], "no checkpoint at nowhere.pt"),
])
def test_cli_usage_errors(argv, match, capsys):
    assert cli(argv) == 2
    assert match in one_error_line(capsys)


def test_start_into_a_file_is_an_error(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert cli(["start", "01", "--dest", str(afile)]) == 2
    assert "is a file, not a folder" in one_error_line(capsys)


def test_generate_errors(trained, tmp_path, capsys):
    _, checkpoint = trained
    if not torch.cuda.is_available():
        assert cli(["generate", "--checkpoint", str(checkpoint), "--prompt", "ab", "--device", "cuda"]) == 2
        assert "no usable CUDA GPU" in one_error_line(capsys)
    assert cli(["generate", "--checkpoint", str(checkpoint), "--prompt", "ab", "--device", "banana"]) == 2
    assert "not a device name" in one_error_line(capsys)
    # mismatched weights: the shape in the file says d_model=16, the tensors are of another model
    state = torch.load(checkpoint, weights_only=True)
    state["model_config"]["d_model"] = 32
    state["model_config"]["n_heads"] = 4
    from llmcourse.pretraining.checkpoint import FORMAT

    bad = tmp_path / "mismatched.pt"
    save_checkpoint(bad, {k: v for k, v in state.items() if k not in ("format", "version", "checksum")})
    assert cli(["generate", "--checkpoint", str(bad), "--prompt", "ab"]) == 2
    assert "the weights do not fit the model" in one_error_line(capsys)


def test_a_tiny_temperature_is_greedy_decoding(trained, capsys):
    _, checkpoint = trained
    args = ["generate", "--checkpoint", str(checkpoint), "--prompt", "ab", "--max-new-tokens", "6"]
    assert cli([*args, "--temperature", "1e-45"]) == 0
    tiny = capsys.readouterr().out
    assert cli([*args, "--top-k", "1"]) == 0
    assert tiny == capsys.readouterr().out  # temperature -> 0 is argmax


def test_generate_accepts_a_list_of_ids(trained):
    from llmcourse.models.generation import generate

    model, _, _ = load_trained_model(trained[1])
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    listed = generate(model, [1, 2], 5, generator=g())
    assert torch.equal(listed, generate(model, torch.tensor([1, 2]), 5, generator=g()))
    assert torch.equal(generate(model, [[1, 2], [3, 4]], 2, top_k=1),
                       generate(model, torch.tensor([[1, 2], [3, 4]]), 2, top_k=1))
    with pytest.raises(ValueError, match="whole numbers"):
        generate(model, [1.5, 2], 3)
    with pytest.raises(ValueError, match="a tensor or a list"):
        generate(model, "ab", 3)


# --------------------------------------------------------------------------- divergence


def tiny(**changes) -> TrainConfig:
    base = dict(context_length=8, d_model=16, n_layers=1, n_heads=2, batch_size=4, max_steps=12, warmup_steps=0,
                progress=False, cpu=True, eval_interval=0, grad_clip=None)
    return TrainConfig(**{**base, **changes})


def synthetic_ids(n=3000):
    from llmcourse.pretraining.synthetic import default_source

    return default_source().sample(n, seed=0)


def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "ck.pt"
    ids = synthetic_ids()
    good = Trainer(tiny(max_steps=2, checkpoint_path=str(path)), ids)
    good.fit()
    # an enormous learning rate: a step soon gives NaN weights, hence a NaN loss
    wild = Trainer(tiny(max_steps=12, lr=1e30, checkpoint_path=str(path), checkpoint_interval=1), ids)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+: the (loss|gradient|weights?) "
                                               r"(is|are) not finite.*last good checkpoint .* is kept"):
        wild.fit()
    assert wild.step < 12
    state = load_checkpoint(path)
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())
    assert state["step"] == wild.step >= 1  # the checkpoint of the last good step, not a NaN one
    assert all(bool(torch.isfinite(p).all()) for p in wild.unwrapped_model.parameters())  # no NaN step taken


def test_divergence_on_the_command_line_is_an_error(tmp_path, capsys):
    assert cli(["train", *SMALL, "--set", "lr=1e30", "--set", "grad_clip=null", "--set", "max_steps=12",
                "--out", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert "training diverged" in line and "no checkpoint was written" in line
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_non_finite_checkpoint_is_never_written(tmp_path):
    weights = {"w": torch.tensor([1.0, float("nan")])}
    with pytest.raises(ValueError, match="not finite"):
        save_checkpoint(tmp_path / "ck.pt", {"model": weights, "model_config": {}, "step": 1})
    assert not list(tmp_path.iterdir())


def test_sampling_from_non_finite_logits_is_a_clear_error():
    from llmcourse.models.sampling import sample_next

    with pytest.raises(ValueError, match="no finite value"):
        sample_next(torch.full((1, 5), float("nan")))


# --------------------------------------------------------------------------- checkpoints on disk


def small_trained_state(tmp_path):
    path = tmp_path / "ck.pt"
    Trainer(tiny(max_steps=2, checkpoint_path=str(path)), synthetic_ids()).fit()
    return path


def test_a_flipped_bit_in_the_tensor_data_is_refused(tmp_path):
    path = tmp_path / "ck.pt"
    weights = {"w": torch.arange(64, dtype=torch.float32) + 0.5}
    save_checkpoint(path, {"model": weights, "model_config": {}, "step": 3})
    assert torch.equal(load_checkpoint(path)["model"]["w"], weights["w"])
    raw = bytearray(path.read_bytes())
    where = bytes(raw).find(weights["w"].numpy().tobytes())
    assert where > 0  # the tensor's bytes are stored as they are
    raw[where + 40] ^= 0x01  # one bit of one float
    path.write_bytes(bytes(raw))
    torch.load(path, weights_only=True)  # PyTorch itself does not notice
    with pytest.raises(CheckpointError, match="damaged: its contents no longer match the checksum"):
        load_checkpoint(path)


def test_a_changed_plain_value_is_refused(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "model_config": {"d": 1}, "step": 3})
    state = torch.load(path, weights_only=True)
    state["step"] = 4
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_stale_temporary_files_are_removed_by_the_next_save_and_by_resume(tmp_path):
    path = small_trained_state(tmp_path)
    leftover = tmp_path / ".ck.pt.k1ll3d.tmp"  # what `kill -9` during a save leaves
    leftover.write_bytes(b"\0" * 1000)
    Trainer(tiny(max_steps=3, checkpoint_path=str(path)), synthetic_ids()).fit(resume=True,
                                                                                allow_changes=["max_steps"])
    assert not leftover.exists()
    leftover.write_bytes(b"\0" * 1000)
    save_checkpoint(path, load_checkpoint(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_written_files_keep_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        from llmcourse.authoring import write_exercise
        from llmcourse.tokenizers.regex_bpe import RegexTokenizer

        path = small_trained_state(tmp_path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        tok = RegexTokenizer()
        tok.train("hello hello world", 260)
        tok.save(tmp_path / "tok.json")
        assert stat.S_IMODE((tmp_path / "tok.json").stat().st_mode) == 0o644
        sol = tmp_path / "99_demo.ipynb"
        nbformat.write(demo_solution(), sol)
        write_exercise(sol, tmp_path / "ex" / "99_demo.ipynb")
        assert stat.S_IMODE((tmp_path / "ex" / "99_demo.ipynb").stat().st_mode) == 0o644
        os.umask(0o077)
        save_checkpoint(path, load_checkpoint(path))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the umask is respected, as open() would
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- build --force and byte-identical rebuilds

import nbformat  # noqa: E402


def demo_solution(extra_code: str = "") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Demo"),
                nbformat.v4.new_code_cell("def relu(x):\n    ### BEGIN SOLUTION\n    return max(x, 0)\n"
                                          "    ### END SOLUTION"),
                nbformat.v4.new_code_cell(extra_code or "print(relu(-2), relu(3))")]
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb


def edit_source(nb):
    nb.cells[1].source += "  # mine"


def edit_output(nb):
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="0 3\n")]
    nb.cells[2].execution_count = 1


def edit_tags(nb):
    nb.cells[2].metadata["tags"] = ["my-note"]


def edit_metadata(nb):
    nb.metadata["kernelspec"]["display_name"] = "My Python"


@pytest.mark.parametrize("edit", [edit_source, edit_output, edit_tags, edit_metadata])
def test_every_kind_of_edit_is_kept_by_build_force(edit, tmp_path):
    from llmcourse.authoring import AuthoringError, is_hand_edited, make_exercise, write_exercise

    sol, ex = tmp_path / "99_demo.ipynb", tmp_path / "ex" / "99_demo.ipynb"
    nbformat.write(demo_solution(), sol)
    write_exercise(sol, ex)
    assert not is_hand_edited(ex, make_exercise(demo_solution(), "99_demo.ipynb"))
    kept = []
    for round_ in range(3):  # three edits, three --force rebuilds: three kept copies
        nb = nbformat.read(ex, as_version=4)
        edit(nb)
        nb.cells[0].metadata["round"] = round_ if edit is edit_metadata else nb.cells[0].metadata.get("round")
        if edit is not edit_metadata:
            nb.cells[0].metadata.pop("round")
        if edit is edit_source:
            nb.cells[1].source += f" {round_}"
        nbformat.write(nb, ex)
        edited = ex.read_bytes()
        with pytest.raises(AuthoringError, match="edited by hand"):
            write_exercise(sol, ex)
        assert ex.read_bytes() == edited  # a plain build leaves the edit alone
        assert write_exercise(sol, ex, force=True) == "updated"
        kept.append(edited)
    names = ["99_demo.ipynb.edited", "99_demo.ipynb.edited-2", "99_demo.ipynb.edited-3"]
    assert [(ex.parent / n).read_bytes() for n in names] == kept
    assert write_exercise(sol, ex) == "unchanged"


def test_building_twice_with_execution_is_byte_identical(tmp_path, monkeypatch, capsys):
    """The solution is executed each time; a stream printed in many pieces must be stored the same way."""
    from llmcourse.cli import main as cli

    (tmp_path / "solutions").mkdir()
    (tmp_path / "exercises").mkdir()
    chunky = ("import sys, time\nfor i in range(6):\n    print(i, end=' ', flush=True)\n    time.sleep(0.02)\n"
              "    sys.stderr.write('.'); sys.stderr.flush()\nprint(relu(-2), relu(3))")
    nbformat.write(demo_solution(chunky), tmp_path / "solutions" / "99_demo.ipynb")
    monkeypatch.setenv("LLMCOURSE_ROOT", str(tmp_path))
    assert cli(["build", "--no-self-check"]) == 0
    first = [(tmp_path / d / "99_demo.ipynb").read_bytes() for d in ("solutions", "exercises")]
    assert b"0 1 2 3 4 5 0 3" in first[0]
    assert cli(["build", "--no-self-check"]) == 0
    assert [(tmp_path / d / "99_demo.ipynb").read_bytes() for d in ("solutions", "exercises")] == first
    assert "exercises/99_demo.ipynb: unchanged" in capsys.readouterr().out


# --------------------------------------------------------------------------- resume checks


def text_run(tmp_path, capsys, text: str, *extra: str, resume: bool = False, name: str = "corpus.txt") -> int:
    corpus = tmp_path / name
    corpus.write_text(text)
    code = cli(["train", *SMALL, "--set", f"dataset={corpus}", *extra, "--out", str(tmp_path / "run"),
                *(["--resume"] if resume else [])])
    return code


def test_resume_on_other_data_with_the_same_vocabulary_is_refused(tmp_path, capsys):
    assert text_run(tmp_path, capsys, "abcd " * 400) == 0
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    before = checkpoint.read_bytes()
    capsys.readouterr()
    # five characters again, but other ones: the same vocabulary size, another tokenizer
    assert text_run(tmp_path, capsys, "vwxyz" * 400, "--set", "max_steps=6", resume=True, name="other.txt") == 2
    line = one_error_line(capsys)
    assert "does not belong to this run" in line and "tokenizer: " in line and "keep the tokenizer" in line
    assert checkpoint.read_bytes() == before  # the old tokenizer was not replaced
    # the same characters in another order: same tokenizer, other tokens
    assert text_run(tmp_path, capsys, "dcba " * 400, "--set", "max_steps=6", resume=True) == 2
    assert "training data" in one_error_line(capsys)
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize("forgotten", ["lr", "min_lr", "seed", "weight_decay", "grad_clip"])
def test_resume_with_settings_that_differ_from_the_checkpoint_is_refused(forgotten, tmp_path, capsys):
    """The first run set a value; the resume does not (the default is taken): refused, naming the setting."""
    first = {"lr": "lr=0.002", "min_lr": "min_lr=0.0002", "seed": "seed=7", "weight_decay": "weight_decay=0.3",
             "grad_clip": "grad_clip=0.5"}
    out = tmp_path / "run"
    assert cli(["train", *SMALL, "--set", first[forgotten], "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "checkpoint.pt").read_bytes()
    assert cli(["train", *SMALL, "--set", "max_steps=6", "--out", str(out), "--resume"]) == 2
    line = one_error_line(capsys)
    assert f"{forgotten}: " in line and "in the checkpoint" in line and "--set key=value" in line
    assert (out / "checkpoint.pt").read_bytes() == before


def test_an_explicit_set_on_resume_is_a_printed_change_that_takes_effect(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", *SMALL, "--set", "max_steps=4", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli(["train", *SMALL, "--set", "max_steps=6", "--set", "lr=0.003", "--set", "min_lr=0.0003",
                "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resuming with changed settings: max_steps 4 -> 6, lr 0.001 -> 0.003, min_lr 0.0001 -> 0.0003" in printed
    history = json.loads((out / "history.json").read_text())
    from llmcourse.pretraining.schedules import warmup_cosine_lr

    # steps 5 and 6 use the new peak and floor, on the new 6-step schedule
    assert history["lr"][4:] == pytest.approx([warmup_cosine_lr(t, 0.003, 1, 6, 0.0003) for t in (4, 5)])


def test_resume_with_the_same_settings_reproduces_the_losses(tmp_path, capsys, monkeypatch):
    from llmcourse.pretraining import trainer as trainer_module

    straight, split = tmp_path / "a", tmp_path / "b"
    six = [*SMALL, "--set", "max_steps=6", "--set", "dropout=0.1"]
    assert cli(["train", *six, "--out", str(straight)]) == 0
    real = trainer_module.Trainer.train_step

    def stop_at_fourth(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", stop_at_fourth)
    assert cli(["train", *six, "--out", str(split)]) == 130
    monkeypatch.setattr(trainer_module.Trainer, "train_step", real)
    assert cli(["train", *six, "--out", str(split), "--resume"]) == 0
    assert "changed settings" not in capsys.readouterr().out
    h_straight = json.loads((straight / "history.json").read_text())
    h_split = json.loads((split / "history.json").read_text())
    assert h_split["step"] == [1, 2, 3, 4, 5, 6]
    assert h_straight["train_loss"] == h_split["train_loss"] and h_straight["lr"] == h_split["lr"]


def test_max_steps_at_or_below_the_checkpoint_step_is_an_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", *SMALL, "--out", str(out)]) == 0
    config_before = (out / "config.json").read_bytes()
    capsys.readouterr()
    for steps in (4, 2):
        assert cli(["train", *SMALL, "--set", f"max_steps={steps}", "--set", "warmup_steps=1", "--out", str(out),
                    "--resume"]) == 2
        assert f"max_steps={steps} is not beyond the checkpoint's step 4" in one_error_line(capsys)
    assert (out / "config.json").read_bytes() == config_before  # nothing rewritten


def test_library_resume_names_the_changes(tmp_path):
    path = tmp_path / "ck.pt"
    ids = synthetic_ids()
    Trainer(tiny(max_steps=2, checkpoint_path=str(path)), ids).fit()
    with pytest.raises(CheckpointError, match=r"batch_size: 4 in the checkpoint, 8 now"):
        Trainer(tiny(max_steps=4, batch_size=8, checkpoint_path=str(path)), ids).fit(resume=True)
    changed = Trainer(tiny(max_steps=4, batch_size=8, checkpoint_path=str(path)), ids)
    changed.fit(resume=True, allow_changes=["batch_size", "max_steps"])
    assert changed.step == 4


def test_a_changed_solution_is_not_taken_for_a_learners_edit(tmp_path):
    """New exercises or tags in the solution regenerate the exercise; only edits made to the exercise count."""
    from llmcourse.authoring import is_hand_edited, write_exercise

    sol, ex = tmp_path / "99_demo.ipynb", tmp_path / "ex" / "99_demo.ipynb"
    nbformat.write(demo_solution(), sol)
    assert write_exercise(sol, ex) == "created"
    grown = demo_solution()
    grown.cells.append(nbformat.v4.new_code_cell("def sign(x):\n    ### BEGIN SOLUTION\n    return (x > 0) - (x < 0)\n"
                                                 "    ### END SOLUTION"))
    grown.cells[2].metadata["tags"] = ["check"]
    grown.metadata["kernelspec"]["display_name"] = "Python 3 (course)"
    nbformat.write(grown, sol)
    assert not is_hand_edited(ex)
    assert write_exercise(sol, ex) == "updated"
    assert not list(ex.parent.glob("*.edited*"))  # nothing was taken for a person's work
    regenerated = nbformat.read(ex, as_version=4)
    assert len(regenerated.cells) == 4 and regenerated.cells[2].metadata["tags"] == ["check"]
    assert write_exercise(sol, ex) == "unchanged"
    edited = nbformat.read(ex, as_version=4)  # a tag the learner adds to the new exercise is still an edit
    edited.cells[3].metadata["tags"] = ["mine"]
    ex.write_text(nbformat.writes(edited) + "\n", encoding="utf-8")
    assert is_hand_edited(ex)
