"""llmcourse.pretraining.trained_attention: attention maps of the course's GPT, checked against transformers'
GPT-2 (output_attentions), and what a model trained on an order-2 Markov source looks at."""
from __future__ import annotations

import pytest
import torch
import transformers

from diagram_checks import overlapping_texts
from llmcourse.models.gpt import GPT
from llmcourse.pretraining.trained_attention import attention_by_distance, attention_maps, plot_attention_by_distance


@pytest.fixture(scope="module")
def hf_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=16,
                                  bos_token_id=None, eos_token_id=None, initializer_range=0.3)
    cfg._attn_implementation = "eager"  # the fused kernels do not return the weights
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_maps_equal_transformers_attentions(hf_gpt2):
    model = GPT.from_hf(hf_gpt2)
    ids = torch.randint(0, 50, (1, 16), generator=torch.Generator().manual_seed(1))
    maps = attention_maps(model, ids[0])
    with torch.no_grad():
        theirs = torch.stack([a[0] for a in hf_gpt2(ids, output_attentions=True).attentions])
    assert maps.shape == (2, 4, 16, 16)
    torch.testing.assert_close(maps, theirs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 4, 16))
    assert not maps.triu(1).any()  # causal: nothing on future keys


def test_maps_leave_the_model_as_they_found_it(hf_gpt2):
    model = GPT.from_hf(hf_gpt2).train()
    attention_maps(model, torch.arange(8))
    assert model.training
    assert all(not b.attn._forward_hooks for b in model.blocks)


def test_distance_profile_by_hand():
    seq = 6
    previous = torch.zeros(seq, seq)
    previous[0, 0] = 1
    previous[torch.arange(1, seq), torch.arange(0, seq - 1)] = 1  # every query looks one back
    maps = torch.stack([torch.eye(seq), previous])[None]          # (1 layer, 2 heads, seq, seq)
    profile = attention_by_distance(maps, max_distance=3)
    torch.testing.assert_close(profile, torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0]]]))
    with pytest.raises(ValueError, match="max_distance"):
        attention_by_distance(maps, max_distance=6)


def test_bad_input_is_named(hf_gpt2):
    with pytest.raises(ValueError, match="one sequence"):
        attention_maps(GPT.from_hf(hf_gpt2), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="blocks"):
        attention_maps(torch.nn.Linear(2, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="profile must have shape"):
        plot_attention_by_distance(torch.zeros(3, 4))


def test_a_model_trained_on_an_order_2_source_looks_at_the_current_and_previous_letter(tmp_path):
    from llmcourse.pretraining.synthetic import MarkovSource
    from llmcourse.pretraining.trainer import TrainConfig, Trainer

    source = MarkovSource(vocab_size=8, order=2, seed=0)
    config = TrainConfig(vocab_size=8, context_length=32, d_model=32, n_layers=1, n_heads=2, batch_size=16,
                         max_steps=400, lr=1e-2, min_lr=1e-3, warmup_steps=20, eval_interval=0, eval_steps=1,
                         checkpoint_path=str(tmp_path / "m.pt"), progress=False, seed=0)
    trainer = Trainer(config, source.sample(40_000, seed=0), source.sample(5_000, seed=1))
    history = trainer.fit()
    assert history.train_loss[-1] < source.optimal_loss(32) + 0.15  # it learned the source (1.17 against 1.09)
    profile = attention_by_distance(attention_maps(trainer.unwrapped_model, source.sample(32, seed=2)), 6)
    # the current letter reaches the prediction through the residual stream; the one before it needs a head:
    # one head puts 0.95 of its weight on the previous position
    assert profile[..., 1].max() > 0.8, profile
    fig = plot_attention_by_distance(profile, title="trained on an order-2 source")
    assert overlapping_texts(fig) == []
