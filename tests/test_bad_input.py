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
    ("mixed_precision=half", r"TrainConfig\.mixed_precision must be one of"),
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
