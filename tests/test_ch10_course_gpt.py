"""Chapter 10: the course's GPT trained by chapter 08's Trainer in two processes is chapter 08's run.

At a tiny size (a course configuration shrunk, on a synthetic Markov text), the two-process run started with
notebook_launch (the lesson's launcher) gives the one-process losses to rounding, reads exactly the one-process
windows, and keeps its two copies identical. Lesson 10 runs it with chapter 08's own configuration.
"""
from __future__ import annotations

import ast
import math

import matplotlib.pyplot as plt
import nbformat
import pytest
import torch
from conftest import ROOT

from llmcourse.parallel.course_gpt import (
    compare_runs,
    per_process_config,
    same_windows_as_one_process,
    windows_of_step,
)
from llmcourse.parallel.launch import notebook_launch
from llmcourse.parallel.plots import plot_runs_compared
from llmcourse.pretraining.course_model import course_train_config
from llmcourse.pretraining.synthetic import MarkovSource
from llmcourse.pretraining.trainer import Trainer, eval_indices

TINY = dict(vocab_size=12, context_length=16, d_model=32, n_layers=1, n_heads=2, batch_size=8, max_steps=12,
            warmup_steps=2, eval_interval=6, eval_steps=2)


def _tiny_run():
    config = course_train_config(fast=True, **TINY)
    ids = MarkovSource(vocab_size=12, order=2, seed=3).sample(3000, seed=1)
    return config, ids[:2600], ids[2600:]


def _train(config, train_ids, val_ids):
    trainer = Trainer(config, train_ids, val_ids)
    history = trainer.fit()
    return {"history": history.to_dict(), "weights": [p.detach().clone() for p in trainer.unwrapped_model.parameters()]}


@pytest.fixture(scope="module")
def runs():
    config, train_ids, val_ids = _tiny_run()
    two = notebook_launch(_train, 2, args=(per_process_config(config, 2), train_ids, val_ids), timeout_s=120)
    one = _train(config, train_ids, val_ids)
    return config, one, two


def test_two_processes_give_the_one_process_losses(runs):
    config, one, two = runs
    comparison = compare_runs(one["history"], two[0]["history"], agree_steps=config.max_steps, tolerance=1e-4)
    assert comparison.steps == config.max_steps and comparison.first_apart is None, comparison.gaps
    assert comparison.max_gap_early < 1e-4
    assert comparison.val_steps == [6, 12] and max(abs(g) for g in comparison.val_gaps) < 1e-4
    for p, q in zip(one["weights"], two[0]["weights"]):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-4)


def test_both_processes_hold_one_model_and_report_the_same_history(runs):
    _, _, two = runs
    assert two[0]["history"]["train_loss"] == two[1]["history"]["train_loss"]  # the mean over the processes
    assert two[0]["history"]["val_loss"] == two[1]["history"]["val_loss"]
    assert all(torch.equal(p, q) for p, q in zip(two[0]["weights"], two[1]["weights"]))


def test_per_process_config_splits_the_batch_and_keeps_the_rest():
    config = course_train_config(fast=False)
    each = per_process_config(config, 2)
    assert (each.batch_size, each.eval_steps) == (config.batch_size // 2, config.eval_steps * 2)
    assert 2 * each.tokens_per_step == config.tokens_per_step
    kept = ("context_length", "d_model", "n_layers", "n_heads", "max_steps", "lr", "min_lr", "warmup_steps",
            "weight_decay", "betas", "grad_clip", "eval_interval", "seed")
    assert all(getattr(each, k) == getattr(config, k) for k in kept)
    with pytest.raises(ValueError, match="cannot be split evenly over 3"):
        per_process_config(config, 3)
    with pytest.raises(ValueError, match="world_size"):
        per_process_config(config, 0)
    with pytest.raises(TypeError, match="TrainConfig"):
        per_process_config({"batch_size": 16}, 2)


@pytest.mark.parametrize("n_windows", [1000, 37])  # 37: the stream wraps into later epochs within a few steps
@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_the_processes_read_the_one_process_windows(n_windows, world_size, grad_accum_steps):
    config = course_train_config(fast=True, batch_size=16, grad_accum_steps=grad_accum_steps, max_steps=30)
    assert same_windows_as_one_process(n_windows, config, world_size)
    # independently: one epoch is a seeded randperm, read in order, each step taking the next windows
    each = per_process_config(config, world_size)
    order = torch.randperm(n_windows, generator=torch.Generator().manual_seed(config.seed * 1_000_003)).tolist()
    per_step = config.batch_size * grad_accum_steps
    for step in range(3):
        parts = windows_of_step(n_windows, each, step, world_size)
        assert [len(p) for p in parts] == [per_step // world_size] * world_size
        if (step + 1) * per_step <= n_windows:  # still inside epoch 0
            assert sorted(i for p in parts for i in p) == sorted(order[step * per_step:(step + 1) * per_step])


def test_without_the_split_the_processes_read_other_windows():
    config = course_train_config(fast=True, batch_size=16)
    ranks = windows_of_step(1000, config, 0, world_size=2)  # 16 each: 32 windows, not chapter 08's 16
    (whole,) = windows_of_step(1000, config, 0, world_size=1)
    assert ranks[0] == whole and set(ranks[1]).isdisjoint(whole)


def test_the_split_evaluation_scores_the_same_windows():
    for n_val in (25_000, 100):
        config = course_train_config(fast=False)
        each = per_process_config(config, 2)
        assert (sum(eval_indices(n_val, config.eval_steps, config.batch_size), [])
                == sum(eval_indices(n_val, each.eval_steps, each.batch_size), []))
        # without doubling eval_steps, half the windows would be scored
        assert len(sum(eval_indices(25_000, config.eval_steps, each.batch_size), [])) == 160


def test_compare_runs_measures_the_gaps():
    one = {"step": [1, 2, 3, 4], "train_loss": [8.0, 7.0, 6.0, 5.0], "val_step": [2, 4], "val_loss": [7.5, 5.5]}
    two = {"step": [1, 2, 3], "train_loss": [8.0, 7.0000005, 6.5], "val_step": [2], "val_loss": [7.25]}
    c = compare_runs(one, two, agree_steps=2)
    assert c.steps == 3 and c.first_apart == 3 and c.max_gap_early < 1e-6
    assert c.val_steps == [2] and c.final_val_gap == pytest.approx(-0.25)
    assert c.mean_gap_last == pytest.approx(0.5)
    assert math.isnan(compare_runs(one, {**two, "val_step": [], "val_loss": []}, 1).final_val_gap)
    with pytest.raises(ValueError, match="agree_steps"):
        compare_runs(one, two, agree_steps=4)
    with pytest.raises(ValueError, match="at least one step"):
        compare_runs(one, {"step": [], "train_loss": []}, 1)


def test_plot_runs_compared_draws_both_runs_and_the_gap(runs):
    _, one, two = runs
    fig = plot_runs_compared(one["history"], two[0]["history"])
    assert len(fig.axes) == 2 and not plt.fignum_exists(fig.number)
    left, right = fig.axes
    assert right.get_yscale() == "log" and len(left.get_lines()) == 6  # 2 runs x (raw, smoothed, validation)
    with pytest.raises(ValueError, match="labels"):
        plot_runs_compared(one["history"], two[0]["history"], labels=("one",))


# --------------------------------------------------------------------------- the lesson


def _lesson_code_cells() -> list[str]:
    [path] = (ROOT / "notebooks").glob("10_*.ipynb")
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def test_lesson_10_trains_chapter_08s_configuration_in_two_processes():
    cells = [(src, ast.parse("\n".join(l for l in src.splitlines() if not l.startswith(("%", "!")))))
             for src in _lesson_code_cells()]
    source = "\n".join(src for src, _ in cells)
    tree = ast.parse("\n".join(l for l in source.splitlines() if not l.startswith(("%", "!"))))
    # chapter 08's configuration, with no overrides, is the one split over the processes
    configs = [n for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
               and getattr(n.value.func, "id", None) == "course_train_config"]
    assert configs, "lesson 10 never calls course_train_config()"
    assert all(not c.value.args and not c.value.keywords for c in configs), "chapter 08's settings, unchanged"
    config_names = {t.id for c in configs for t in c.targets}
    splits = [c for c in _calls(tree, "per_process_config")
              if isinstance(c.args[0], ast.Name) and c.args[0].id in config_names]
    assert splits, "the two-process run must split course_train_config() with per_process_config"
    # the cell that launches two processes runs the Trainer in them, on the split configuration
    [launch_cell] = [t for src, t in cells if _calls(t, "Trainer") and _calls(t, "notebook_launch")]
    split_names = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.value in splits
                   for t in n.targets}
    [launch] = _calls(launch_cell, "notebook_launch")
    world = launch.args[1] if len(launch.args) > 1 else next(k.value for k in launch.keywords if k.arg == "world_size")
    assert ast.literal_eval(world) == 2
    args = next(k.value for k in launch.keywords if k.arg == "args")
    assert {getattr(a, "id", None) for a in args.elts} & split_names
    # and it is compared with chapter 08's own loss history
    assert 'checkpoint["history"]' in source and "course_base_model()" in source


def _rank():
    import torch.distributed as dist

    return dist.get_rank()


def test_notebook_launch_does_not_repeat_what_was_printed_before_it(tmp_path, monkeypatch):
    """A fork copies the unsent part of the notebook's output; every rank used to send it again."""
    path = tmp_path / "out.txt"
    with open(path, "w", buffering=1 << 16) as out:
        monkeypatch.setattr("sys.stdout", out)
        print("printed before the launch")  # still in the buffer
        assert notebook_launch(_rank, 2, timeout_s=60) == [0, 1]
        monkeypatch.undo()
    assert path.read_text().count("printed before the launch") == 1
