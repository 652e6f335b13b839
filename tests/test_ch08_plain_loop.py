"""Chapter 08's plain loop takes exactly the Trainer's steps when the Trainer's extras are switched off."""
from __future__ import annotations

import math

import torch

from llmcourse import seed_everything
from llmcourse.models.gpt import GPT
from llmcourse.pretraining.plain_loop import plain_training_loop
from llmcourse.pretraining.synthetic import default_source
from llmcourse.pretraining.trainer import TrainConfig, Trainer


def _config(**overrides):
    settings = dict(vocab_size=12, context_length=16, d_model=32, n_layers=2, n_heads=4, batch_size=8, max_steps=15,
                    lr=3e-3, min_lr=3e-3, warmup_steps=0, grad_clip=None, eval_interval=0, progress=False, cpu=True)
    return TrainConfig(**{**settings, **overrides})


def test_plain_loop_equals_trainer_with_extras_off():
    ids = default_source().sample(5_000, seed=0)
    config = _config()
    trainer_losses = Trainer(config, ids).fit().train_loss
    seed_everything(config.seed)  # the Trainer seeds before it builds its model
    model = GPT(config.gpt_config(12))
    plain = plain_training_loop(model, ids, config.max_steps, config.batch_size, config.lr, config.weight_decay,
                                seed=config.seed)
    torch.testing.assert_close(torch.tensor(plain), torch.tensor(trainer_losses), rtol=1e-5, atol=1e-6)
    assert plain[0] > math.log(12) - 0.3 and plain[-1] < plain[0] - 0.1, "it learns"


def test_warmup_makes_the_trainer_differ():
    ids = default_source().sample(5_000, seed=0)
    config = _config(warmup_steps=5, min_lr=3e-4)
    trainer_losses = Trainer(config, ids).fit().train_loss
    seed_everything(config.seed)
    plain = plain_training_loop(GPT(config.gpt_config(12)), ids, config.max_steps, config.batch_size, config.lr,
                                config.weight_decay, seed=config.seed)
    assert plain[0] == trainer_losses[0]  # the same first batch and weights
    assert max(abs(a - b) for a, b in zip(plain, trainer_losses)) > 1e-3  # then a different learning rate
