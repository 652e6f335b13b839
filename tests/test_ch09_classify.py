"""Chapter 09's classification head: the last real token, padding, freezing, and a quick training run."""
from __future__ import annotations

import pytest
import torch

from llmcourse.finetuning.classify import SequenceClassifier, accuracy, last_token_states, pad_right, train_classifier
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.finetuning.instructions import make_tokenizer, review_examples

TOK = make_tokenizer()


def tiny_gpt(seed: int = 0, context_length: int = 48) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, context_length=context_length, d_model=32, n_layers=1,
                         n_heads=2)).eval()


def test_hidden_states_are_what_lm_head_reads():
    model = tiny_gpt()
    ids = torch.randint(0, TOK.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.lm_head(model.hidden_states(ids)), model(ids))


def test_last_token_states_picks_lengths_minus_one():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    picked = last_token_states(hidden, torch.tensor([2, 4]))
    torch.testing.assert_close(picked, torch.stack([hidden[0, 1], hidden[1, 3]]))
    torch.testing.assert_close(last_token_states(hidden), hidden[:, -1])
    with pytest.raises(ValueError, match="from 1 to the padded length 4"):
        last_token_states(hidden, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="one length per row"):
        last_token_states(hidden, torch.tensor([1, 2, 3]))


def test_classifier_ignores_right_padding():
    model = SequenceClassifier(tiny_gpt(1), n_classes=3).eval()
    texts = ["12+5=17", "The soup in Vell was lovely.", "Hi"]
    ids, lengths = pad_right([TOK.encode(t) for t in texts], pad_id=5)
    with torch.no_grad():
        batched = model(ids, lengths)
        for row, text in enumerate(texts):
            torch.testing.assert_close(batched[row], model(torch.tensor([TOK.encode(text)]))[0])
    assert batched.shape == (3, 3)


def test_freezing_the_backbone_trains_only_the_head():
    model = SequenceClassifier(tiny_gpt(2), n_classes=2, freeze_backbone=True)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    ids, lengths = pad_right([TOK.encode("1+1=2"), TOK.encode("2+2=5")], pad_id=0)
    torch.nn.functional.cross_entropy(model(ids, lengths), torch.tensor([1, 0])).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="n_classes"):
        SequenceClassifier(tiny_gpt(), n_classes=1)
    with pytest.raises(TypeError, match="hidden_states"):
        SequenceClassifier(torch.nn.Linear(3, 3), n_classes=2)


def test_fine_tuned_classifier_learns_sentiment():
    train, test = review_examples(200, seed=0), review_examples(60, seed=1)
    model = SequenceClassifier(tiny_gpt(3), n_classes=2)
    before = accuracy(model, TOK, test)
    losses = train_classifier(model, TOK, train, steps=150, batch_size=16, lr=3e-3)
    after = accuracy(model, TOK, test)
    assert losses[-1] < losses[0]
    assert after >= 0.85 and after > before
