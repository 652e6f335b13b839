"""Chapter 08: `llmcourse train` and `llmcourse generate`, in-process and under torchrun with two processes."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from llmcourse.cli import load_train_settings, parse_setting
from llmcourse.cli import main as cli
from llmcourse.pretraining.trainer import load_trained_model

SMALL = ["--set", "max_steps=4", "--set", "warmup_steps=1", "--set", "d_model=16", "--set", "n_layers=1",
         "--set", "n_heads=2", "--set", "context_length=8", "--set", "batch_size=4", "--set", "eval_interval=2",
         "--set", "eval_steps=2", "--set", "progress=false", "--set", "cpu=true"]


def test_parse_settings(tmp_path):
    assert parse_setting("lr=3e-4") == ("lr", 3e-4)
    assert parse_setting("betas=[0.9, 0.95]") == ("betas", [0.9, 0.95])
    assert parse_setting("dataset=python-docs") == ("dataset", "python-docs")
    assert parse_setting("grad_clip=null") == ("grad_clip", None)
    with pytest.raises(ValueError, match="key=value"):
        parse_setting("lr")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"dataset": "python-docs", "d_model": 64, "lr": 1e-3}))
    data, settings = load_train_settings(str(cfg), ["lr=2e-3"])
    assert data == {"dataset": "python-docs", "dataset_size": 200_000, "val_fraction": 0.1}
    assert settings == {"d_model": 64, "lr": 2e-3}


def test_train_then_generate_from_the_checkpoint_alone(tmp_path, capsys):
    out = tmp_path / "run"
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat. " * 100)
    assert cli(["train", *SMALL, "--set", f"dataset={text}", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "validation loss" in printed and str(out / "checkpoint.pt") in printed
    history = json.loads((out / "history.json").read_text())
    assert history["step"] == [1, 2, 3, 4] and len(history["val_loss"]) == 2
    assert json.loads((out / "config.json").read_text())["dataset"] == str(text)
    # generate from the file: the tokenizer travels inside the checkpoint
    args = ["generate", "--checkpoint", str(out / "checkpoint.pt"), "--prompt", "the ", "--max-new-tokens", "3",
            "--seed", "1"]
    assert cli(args) == 0
    first = capsys.readouterr().out.rstrip("\n")
    assert first.startswith("the ") and len(first) == 7 and set(first) <= set("the cat sat on mat.")
    assert cli(args) == 0 and capsys.readouterr().out.rstrip("\n") == first  # seeded
    # the same tokens as llmcourse.models.generation.generate on the loaded model
    from llmcourse.models.generation import generate

    model, tok, _ = load_trained_model(out / "checkpoint.pt")
    ids = generate(model, torch.tensor(tok.encode("the ")), 3, temperature=0.8,
                   generator=torch.Generator().manual_seed(1))
    assert tok.decode(ids.tolist()) == first
    # resume to more steps
    assert cli(["train", *SMALL, "--set", f"dataset={text}", "--set", "max_steps=6", "--out", str(out),
                "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert json.loads((out / "history.json").read_text())["step"] == [1, 2, 3, 4, 5, 6]


def test_train_on_the_synthetic_source_reports_the_entropy(tmp_path, capsys):
    assert cli(["train", *SMALL, "--set", "dataset_size=3000", "--out", str(tmp_path)]) == 0
    assert re.search(r"entropy limit 1\.0\d+", capsys.readouterr().out)
    assert cli(["generate", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--prompt", "ab",
                "--max-new-tokens", "4", "--top-k", "2"]) == 0
    assert re.fullmatch(r"ab[a-l]{4}\n", capsys.readouterr().out)


def test_cli_errors_are_usage_errors(tmp_path, capsys):
    assert cli(["train", "--set", "dataset=nowhere.txt", "--out", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert cli(["train", "--set", "learning_rate=1", "--out", str(tmp_path)]) == 2
    assert "unknown TrainConfig setting" in capsys.readouterr().err
    assert cli(["train", "--config", str(tmp_path / "none.json")]) == 2
    assert "no config file" in capsys.readouterr().err
    assert cli(["generate", "--checkpoint", str(tmp_path / "none.pt"), "--prompt", "a"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed next to this Python")
def test_torchrun_two_processes_stay_in_sync(tmp_path):
    """Two CPU processes (gloo): each reads different batches, yet after every step both hold the same weights."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "ACCELERATE_USE_CPU": "yes", "OMP_NUM_THREADS": "1", "LLMCOURSE_FAST": "1"}
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "llmcourse.cli", "train", *SMALL,
               "--set", "dataset_size=3000", "--out", str(tmp_path), "--check-sync"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=ROOT, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers
        process.communicate()
        raise
    assert process.returncode == 0, stderr[-3000:]
    lines = re.findall(r"rank (\d)/(\d) step (\d+) losses (\[.*?\]) checksum ([-+0-9.e]+)", stdout)
    report = stdout + stderr[-2000:]
    assert sorted(line[0] for line in lines) == ["0", "1"] and {line[1] for line in lines} == {"2"}, report
    (_, _, step0, losses0, sum0), (_, _, step1, losses1, sum1) = lines
    assert step0 == step1 == "4" and losses0 == losses1 and sum0 == sum1, report
    assert len(json.loads(losses0)) == 4
    assert "2 process(es)" in stdout, report
