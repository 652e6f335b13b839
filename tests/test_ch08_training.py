"""Chapter 08: checkpoints, the optimizer, the training loop (accumulation, clipping, evaluation, resume), plots."""
import copy
import math
import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from llmcourse.pretraining.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from llmcourse.pretraining.data import TokenWindows
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.pretraining.plots import LiveLossPlot, plot_loss_curves, smooth
from llmcourse.tokenizers.simple import CharTokenizer
from llmcourse.pretraining.trainer import (History, StepBatchSampler, TrainConfig, Trainer, configure_optimizer, evaluate,
                                load_trained_model, resolve_precision, rng_state, set_rng_state)

TINY = dict(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=2, batch_size=4, max_steps=6,
            warmup_steps=1, eval_interval=3, eval_steps=2, progress=False, cpu=True, lr=3e-3)


def tiny_config(**changes) -> TrainConfig:
    return TrainConfig(**{**TINY, **changes})


def tiny_data(n: int = 600, seed: int = 0, vocab: int = 11) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def minimal_state(step: int = 3) -> dict:
    model = GPT(GPTConfig(vocab_size=5, context_length=4, d_model=8, n_layers=1, n_heads=2))
    return {"model": model.state_dict(), "model_config": model.config_dict(), "step": step}


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_atomic_write(tmp_path):
    path = tmp_path / "runs" / "ck.pt"
    state = minimal_state()
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["format"] == "llmcourse-checkpoint" and loaded["version"] == 1
    for key, value in state["model"].items():
        torch.testing.assert_close(loaded["model"][key], value, rtol=0, atol=0)
    # a save that fails half way leaves the old file intact and no temporary file behind
    bad = {**minimal_state(step=9), "extra": lambda: None}  # a lambda cannot be pickled
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_checkpoint(path, bad)
    assert load_checkpoint(path)["step"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.pt"]


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    path = tmp_path / "ck.pt"
    save_checkpoint(path, minimal_state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut short, as by a crash in a non-atomic writer
    with pytest.raises(CheckpointError, match="damaged or cut short"):
        load_checkpoint(path)
    path.write_bytes(os.urandom(200))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, path)  # a PyTorch file, but not ours
    with pytest.raises(CheckpointError, match="not an llmcourse checkpoint"):
        load_checkpoint(path)
    torch.save({"format": "llmcourse-checkpoint", "version": 99, "step": 1}, path)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(path)
    torch.save({"format": "llmcourse-checkpoint", "version": 1, "step": 1}, path)
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="missing"):
        save_checkpoint(path, {"step": 1})


def test_checkpoints_load_with_weights_only(tmp_path):
    """Everything the Trainer stores is plain data: torch.load(weights_only=True) accepts it."""
    trainer = Trainer(tiny_config(max_steps=1), tiny_data(), tokenizer=CharTokenizer().train("abcdefghijk"))
    trainer.fit()
    path = trainer.save(tmp_path / "t.pt")
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"model", "optimizer", "scheduler", "rng", "history", "tokenizer", "train_config"}


# --------------------------------------------------------------------------- the optimizer


def test_configure_optimizer_groups_and_equals_hand_built_adamw():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, context_length=6, d_model=8, n_layers=2, n_heads=2))
    reference = copy.deepcopy(model)
    opt = configure_optimizer(model, lr=1e-2, weight_decay=0.5, betas=(0.8, 0.9))
    decay_names = {n for n, p in model.named_parameters() if p.dim() >= 2}
    assert {"wte.weight", "wpe.table.weight", "blocks.0.attn.q_proj.weight", "blocks.1.mlp.up.weight"} <= decay_names
    ids = {id(p) for p in opt.param_groups[0]["params"]}
    assert ids == {id(p) for n, p in model.named_parameters() if n in decay_names}
    no_decay = [n for n, p in model.named_parameters() if id(p) in {id(q) for q in opt.param_groups[1]["params"]}]
    assert all(n.endswith("bias") or ".ln_" in n or n.startswith("ln_f") for n in no_decay) and no_decay
    total = sum(len(g["params"]) for g in opt.param_groups)
    assert total == len(list(model.parameters()))  # the tied output matrix is not listed twice
    # the same as torch.optim.AdamW built by hand from parameter names
    named = dict(reference.named_parameters())
    hand = torch.optim.AdamW([{"params": [named[n] for n in named if n in decay_names], "weight_decay": 0.5},
                              {"params": [named[n] for n in named if n not in decay_names], "weight_decay": 0.0}],
                             lr=1e-2, betas=(0.8, 0.9))
    x = torch.randint(0, 7, (3, 6), generator=torch.Generator().manual_seed(1))
    for m, o in ((model, opt), (reference, hand)):
        for _ in range(3):
            F.cross_entropy(m(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
            o.step()
            o.zero_grad()
    for (n, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, msg=n)
    with pytest.raises(ValueError, match="no trainable"):
        configure_optimizer(torch.nn.Linear(2, 2).requires_grad_(False), 1e-3, 0.1)


# --------------------------------------------------------------------------- one step against plain PyTorch


def plain_step(model, x, y, cfg, accumulate=1):
    """One AdamW step written directly with torch (loss averaged over micro-batches, clipping, first-step lr)."""
    named = dict(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [p for p in named.values() if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                             {"params": [p for p in named.values() if p.dim() < 2], "weight_decay": 0.0}],
                            lr=cfg.lr, betas=cfg.betas)
    for xs, ys in zip(x.chunk(accumulate), y.chunk(accumulate)):
        (F.cross_entropy(model(xs).flatten(0, 1), ys.flatten()) / accumulate).backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
    opt.step()
    return norm


@pytest.mark.parametrize("batch_size,accum", [(8, 1), (4, 2), (2, 4)])
def test_trainer_step_equals_plain_pytorch(batch_size, accum):
    """k micro-batches of b (accumulated) = one batch of k*b = a hand-written step, clipping included."""
    cfg = tiny_config(batch_size=batch_size, grad_accum_steps=accum, warmup_steps=0, max_steps=5, grad_clip=0.05)
    data = tiny_data()
    trainer = Trainer(cfg, data)
    reference = copy.deepcopy(trainer.unwrapped_model)
    windows = TokenWindows(data, cfg.context_length, stride=1)
    order = StepBatchSampler(len(windows), 8, seed=cfg.seed).indices(0)  # the 8 windows of step 0
    x = torch.stack([windows[i][0] for i in order])
    y = torch.stack([windows[i][1] for i in order])
    with torch.no_grad():
        expected_loss = F.cross_entropy(reference(x).flatten(0, 1), y.flatten()).item()
    assert trainer.lr == cfg.lr  # no warmup: the first step uses the full learning rate
    loss = trainer.train_step()
    assert trainer.lr < cfg.lr  # the cosine schedule moved on
    norm = plain_step(reference, x, y, cfg)
    assert norm > cfg.grad_clip  # clipping was active
    for (n, p), q in zip(trainer.unwrapped_model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)
    assert loss == pytest.approx(expected_loss, rel=1e-5)


def test_trainers_in_one_process_keep_their_own_accumulation():
    """accelerate's accumulation setting is process-wide; a later Trainer must not change an earlier one's."""
    data = tiny_data()
    big = Trainer(tiny_config(batch_size=8, grad_accum_steps=1, warmup_steps=0, max_steps=3), data)
    accumulated = Trainer(tiny_config(batch_size=4, grad_accum_steps=2, warmup_steps=0, max_steps=3), data)
    big_losses, accumulated_losses = big.fit().train_loss, accumulated.fit().train_loss
    assert big_losses == pytest.approx(accumulated_losses, rel=1e-5)
    for p, q in zip(big.unwrapped_model.parameters(), accumulated.unwrapped_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_clipping_matters_and_accumulation_averages():
    """Without clipping the same step gives other parameters (so the test above can fail)."""
    data = tiny_data()
    clipped = Trainer(tiny_config(batch_size=8, warmup_steps=0, grad_clip=0.05), data)
    free = Trainer(tiny_config(batch_size=8, warmup_steps=0, grad_clip=None), data)
    clipped.train_step(), free.train_step()
    diffs = [(p - q).abs().max() for p, q in zip(clipped.unwrapped_model.parameters(),
                                                  free.unwrapped_model.parameters())]
    assert max(diffs) > 1e-4


# --------------------------------------------------------------------------- evaluation


def test_evaluate_equals_cross_entropy_over_all_tokens():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=9, context_length=5, d_model=8, n_layers=1, n_heads=2, dropout=0.3)).train()
    x = torch.randint(0, 9, (7, 5))
    y = torch.randint(0, 9, (7, 5))
    batches = [(x[:3], y[:3]), (x[3:4], y[3:4]), (x[4:], y[4:])]  # uneven batch sizes
    result = evaluate(model, batches)
    with torch.no_grad():
        expected = F.cross_entropy(model.eval()(x).flatten(0, 1), y.flatten()).item()
    model.train()
    assert result.loss == pytest.approx(expected, rel=1e-6)
    assert result.perplexity == pytest.approx(math.exp(expected), rel=1e-6)
    assert result.tokens == 35 and model.training  # the mode is restored
    assert evaluate(model, batches, steps=1).tokens == 15
    with pytest.raises(ValueError, match="no batches"):
        evaluate(model, [])
    with pytest.raises(ValueError, match="steps"):
        evaluate(model, batches, steps=0)


def test_trainer_records_history_and_evaluates_on_schedule():
    cfg = tiny_config(max_steps=6, eval_interval=4)
    trainer = Trainer(cfg, tiny_data(), tiny_data(200, seed=5))
    history = trainer.fit()
    assert history.step == [1, 2, 3, 4, 5, 6] and history.val_step == [4, 6]
    assert all(math.isfinite(v) for v in history.train_loss + history.val_loss)
    assert max(history.lr) == pytest.approx(cfg.lr, rel=1e-6) and history.lr[-1] < cfg.lr
    assert all(t > 0 for t in history.tokens_per_s)
    assert history.val_loss[-1] == pytest.approx(trainer.evaluate().loss, rel=1e-9)


# --------------------------------------------------------------------------- the data order


def test_step_batch_sampler_is_a_pure_function_and_shards():
    single = StepBatchSampler(10, 3, seed=4)
    stream = [i for m in range(10) for i in single.indices(m)]  # 30 positions = 3 epochs
    for epoch in range(3):
        assert sorted(stream[epoch * 10:(epoch + 1) * 10]) == list(range(10))  # each epoch a permutation
    assert stream[:10] != stream[10:20]  # a new order every epoch
    resumed = StepBatchSampler(10, 3, seed=4, start=4)
    assert next(iter(resumed)) == single.indices(4)
    ranks = [StepBatchSampler(10, 3, seed=4, rank=r, world_size=2) for r in range(2)]
    merged = [i for m in range(5) for r in ranks for i in r.indices(m)]
    assert merged == stream  # two processes read the single-process stream, interleaved, without overlap
    with pytest.raises(ValueError, match="rank"):
        StepBatchSampler(10, 3, rank=2, world_size=2)


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = rng_state()
    a = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(state)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]


# --------------------------------------------------------------------------- interrupt and resume


class StopAt:
    def __init__(self, step):
        self.step = step

    def __call__(self, history):
        if history.step[-1] == self.step:
            raise KeyboardInterrupt


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, capsys):
    data, val = tiny_data(), tiny_data(200, seed=5)
    changes = dict(max_steps=7, dropout=0.2, grad_accum_steps=2, eval_interval=2)
    full = Trainer(tiny_config(**changes), data, val)
    full.fit()
    path = tmp_path / "ck.pt"
    first = Trainer(tiny_config(checkpoint_path=str(path), **changes), data, val, callbacks=[StopAt(3)])
    history = first.fit()
    assert history.step == [1, 2, 3] and path.exists()
    out = capsys.readouterr().out
    assert "interrupted at step 3" in out and str(path) in out and "resume=True" in out
    second = Trainer(tiny_config(checkpoint_path=str(path), **changes), data, val)  # a fresh process, say
    resumed = second.fit(resume=True)
    assert resumed.step == list(range(1, 8))
    assert resumed.train_loss == full.history.train_loss  # exactly, dropout included
    assert resumed.val_loss == full.history.val_loss
    for p, q in zip(second.unwrapped_model.parameters(), full.unwrapped_model.parameters()):
        assert torch.equal(p, q)
    # continuing in memory (fit() again on the interrupted trainer) is exact too
    first.callbacks = []
    assert first.fit().train_loss == full.history.train_loss


def test_interrupt_inside_a_step_loses_only_that_step(tmp_path):
    """Ctrl-C during the 2nd micro-batch of step 4: steps 1-3 are kept, step 4 is redone exactly."""
    data = tiny_data()
    changes = dict(max_steps=6, dropout=0.2, grad_accum_steps=2)
    full = Trainer(tiny_config(**changes), data)
    full.fit()
    path = tmp_path / "ck.pt"
    trainer = Trainer(tiny_config(checkpoint_path=str(path), **changes), data)
    calls = []

    def interrupt(module, args):
        if module.training:
            calls.append(1)
            if len(calls) == 8:  # step 4, micro-batch 2: after a forward that drew dropout masks
                raise KeyboardInterrupt

    handle = trainer.unwrapped_model.register_forward_pre_hook(interrupt)
    assert trainer.fit().step == [1, 2, 3]
    handle.remove()
    saved = path.read_bytes()
    assert load_checkpoint(path)["step"] == 3
    assert trainer.fit().train_loss == full.history.train_loss  # in memory
    path.write_bytes(saved)
    resumed = Trainer(tiny_config(checkpoint_path=str(path), **changes), data).fit(resume=True)  # from the file
    assert resumed.train_loss == full.history.train_loss


def test_resume_rejects_other_model_and_corrupt_file(tmp_path):
    path = tmp_path / "ck.pt"
    Trainer(tiny_config(max_steps=2, checkpoint_path=str(path)), tiny_data()).fit()
    other = Trainer(tiny_config(d_model=32, checkpoint_path=str(path)), tiny_data())
    with pytest.raises(CheckpointError, match="shape"):
        other.fit(resume=True)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="damaged"):
        Trainer(tiny_config(checkpoint_path=str(path)), tiny_data()).fit(resume=True)


def test_checkpoint_is_enough_to_generate(tmp_path):
    text = "abcab cabca bcabc " * 40
    tokenizer = CharTokenizer().train(text)
    ids = torch.tensor(tokenizer.encode(text))
    path = tmp_path / "ck.pt"
    trainer = Trainer(tiny_config(vocab_size=None, max_steps=2, checkpoint_path=str(path)), ids, tokenizer=tokenizer)
    assert trainer.unwrapped_model.vocab_size == tokenizer.vocab_size
    trainer.fit()
    model, tok, state = load_trained_model(path)
    assert state["step"] == 2 and tok.stoi == tokenizer.stoi and not model.training
    for (n, p), q in zip(model.named_parameters(), trainer.unwrapped_model.parameters()):
        assert torch.equal(p, q), n


# --------------------------------------------------------------------------- precision


def test_bf16_autocast_on_cpu_is_close_to_fp32():
    data = tiny_data()
    fp32 = Trainer(tiny_config(max_steps=3), data)
    bf16 = Trainer(tiny_config(max_steps=3, mixed_precision="bf16"), data)
    assert bf16.accelerator.mixed_precision == "bf16"
    h16, h32 = bf16.fit(), fp32.fit()
    assert all(math.isfinite(v) for v in h16.train_loss)
    assert max(abs(a - b) for a, b in zip(h16.train_loss, h32.train_loss)) < 0.05
    assert h16.train_loss != h32.train_loss  # bf16 really ran
    again = Trainer(tiny_config(max_steps=1), data)  # back to fp32 in the same process
    assert again.accelerator.mixed_precision == "no"


def test_precision_choices():
    assert resolve_precision("no") == "no" and resolve_precision("bf16") == "bf16"
    if not torch.cuda.is_available():
        assert resolve_precision("auto") == "no"
        with pytest.raises(ValueError, match="CUDA"):
            resolve_precision("fp16")
    with pytest.raises(ValueError, match="mixed_precision"):
        resolve_precision("fp8")


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("changes,match", [
    (dict(batch_size=0), "batch_size"), (dict(lr=-1.0), "lr"), (dict(min_lr=1.0), "min_lr"),
    (dict(betas=(0.9,)), "betas"), (dict(mixed_precision="half"), "mixed_precision"),
    (dict(d_model=15), "divisible"), (dict(warmup_steps=50, max_steps=10), "warmup_steps"),
    (dict(grad_clip=-1.0), "grad_clip"), (dict(max_steps=0), "max_steps"),
])
def test_config_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**changes)


def test_config_from_dict():
    cfg = TrainConfig.from_dict({"d_model": 32, "betas": [0.9, 0.95]})
    assert cfg.d_model == 32 and cfg.betas == (0.9, 0.95)
    with pytest.raises(ValueError, match="unknown TrainConfig setting"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer({"lr": 1e-3}, tiny_data())
    with pytest.raises(TypeError, match="tensor of token ids"):
        Trainer(tiny_config(), 12345)
    with pytest.raises(ValueError, match="too short"):
        Trainer(tiny_config(), [1, 2, 3])  # a list of ids is fine, but needs more than context_length of them


# --------------------------------------------------------------------------- plots


def test_smooth_matches_the_formula():
    values = [4.0, 2.0, 3.0]
    a = 0.5
    s1 = (1 - a) * 4.0
    s2 = a * s1 + (1 - a) * 2.0
    s3 = a * s2 + (1 - a) * 3.0
    assert smooth(values, a) == pytest.approx([s1 / (1 - a), s2 / (1 - a**2), s3 / (1 - a**3)])
    assert smooth(values, 0.0) == values
    with pytest.raises(ValueError):
        smooth(values, 1.0)


def test_loss_plot_and_live_plot_headless():
    history = History(step=[1, 2, 3], lr=[1.0] * 3, train_loss=[3.0, 2.5, 2.0], tokens_per_s=[1.0] * 3,
                      val_step=[3], val_loss=[2.2])
    fig = plot_loss_curves(history, entropy=1.05)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "validation" in labels and any("entropy limit 1.050" in lab for lab in labels)
    limit = next(line for line in ax.get_lines() if "entropy" in line.get_label())
    assert list(limit.get_ydata()) == [1.05, 1.05]
    live = LiveLossPlot(entropy=1.05, every=1)
    assert not live.live  # no notebook kernel in a test
    live(history)
    assert live.draws == 0
    live.on_end(history)
    assert live.draws == 1 and isinstance(live.figure, Figure)
    with pytest.raises(ValueError, match="every"):
        LiveLossPlot(every=0)


def test_callbacks_see_every_step_and_the_end():
    seen, ended = [], []

    class Recorder:
        def __call__(self, history):
            seen.append(history.step[-1])

        def on_end(self, history):
            ended.append(len(history))

    Trainer(tiny_config(max_steps=4), tiny_data(), callbacks=[Recorder()]).fit()
    assert seen == [1, 2, 3, 4] and ended == [4]


# --------------------------------------------------------------------------- the fast paths used in training


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_fused_attention_equals_the_step_by_step_path(n_kv_heads):
    from llmcourse.transformer.attention import MultiHeadAttention

    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, n_kv_heads=n_kv_heads, bias=True).eval()
    x = torch.randn(2, 6, 16)
    for causal in (True, False):
        fast = mha(x, is_causal=causal)
        slow, _ = mha(x, is_causal=causal, return_weights=True)  # weights asked for: the explicit path
        torch.testing.assert_close(fast, slow)
    # with a KV cache: 2 new queries after 4 cached tokens (bottom-right causal alignment), then 1 query
    _, past = mha(x[:, :4], is_causal=True, use_cache=True)
    fast, _ = mha(x[:, 4:], is_causal=True, past_kv=past)
    slow, _, _ = mha(x[:, 4:], is_causal=True, past_kv=past, return_weights=True)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(fast, mha(x, is_causal=True)[:, 4:])


def test_gpt_layer_norm_is_the_chapter_06_layer_norm():
    from llmcourse.models.gpt import FusedLayerNorm
    from llmcourse.transformer.norms import LayerNorm, layer_norm

    ln = FusedLayerNorm(8, bias=True)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5), ln.bias.uniform_(-1, 1)
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(ln(x), layer_norm(x, ln.weight, ln.bias, ln.eps))
    torch.testing.assert_close(ln(x), torch.nn.functional.layer_norm(x, (8,), ln.weight, ln.bias, 1e-5))
    assert isinstance(ln, LayerNorm) and repr(ln).startswith("LayerNorm(8")
    with pytest.raises(ValueError, match="last dimension"):
        ln(torch.randn(2, 7))


def test_trainers_in_one_process_keep_their_own_precision():
    """accelerate keeps one precision per process: building a bf16 Trainer must not turn an earlier fp32 one into
    bf16, nor the other way round."""
    data = tiny_data()
    fp32_alone = Trainer(tiny_config(max_steps=2), data).fit().train_loss
    bf16_alone = Trainer(tiny_config(max_steps=2, mixed_precision="bf16"), data).fit().train_loss
    assert fp32_alone != bf16_alone
    fp32 = Trainer(tiny_config(max_steps=2), data)
    bf16 = Trainer(tiny_config(max_steps=2, mixed_precision="bf16"), data)
    assert fp32.fit().train_loss == fp32_alone
    Trainer(tiny_config(max_steps=1), data)  # back to "no" process-wide
    assert bf16.fit().train_loss == bf16_alone
