"""Chapter 09's SFT pieces: labels masked on the prompt, padding, the loss vs F.cross_entropy, exact match."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.finetuning.instructions import END_OF_ANSWER, format_prompt, make_tokenizer
from llmcourse.finetuning.sft import (
    IGNORE_INDEX,
    SFTCollator,
    answer,
    answer_loss,
    build_sft_example,
    exact_match,
    mask_prompt_labels,
    sft_loss,
)

TOK = make_tokenizer()


def tiny_gpt(seed: int = 0, context_length: int = 48) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, context_length=context_length, d_model=32, n_layers=1,
                         n_heads=2)).eval()


def test_mask_prompt_labels():
    ids = torch.tensor([3, 1, 4, 1, 5])
    labels = mask_prompt_labels(ids, 2)
    assert labels.tolist() == [-100, -100, 4, 1, 5] and ids.tolist() == [3, 1, 4, 1, 5]
    for bad in (-1, 6, 1.5, True):
        with pytest.raises(ValueError, match="prompt_length"):
            mask_prompt_labels(ids, bad)
    with pytest.raises(ValueError, match="1-D"):
        mask_prompt_labels(ids[None], 1)


def test_build_sft_example_masks_exactly_the_prompt():
    ids, labels = build_sft_example(TOK, "23+20", "43")
    n_prompt = len(format_prompt("23+20"))  # one token per character
    assert TOK.decode(ids.tolist()) == "Q: 23+20\nA: 43" + END_OF_ANSWER
    assert (labels[:n_prompt] == IGNORE_INDEX).all()
    assert labels[n_prompt:].tolist() == ids[n_prompt:].tolist()
    assert TOK.decode(labels[n_prompt:].tolist()) == " 43" + END_OF_ANSWER  # the answer starts with its space


def test_collator_pads_on_the_right():
    a, b = build_sft_example(TOK, "1+1", "2"), build_sft_example(TOK, "Where does Mira live?", "Quorn")
    ids, labels = SFTCollator(pad_id=7)([a, b])
    assert ids.shape == labels.shape == (2, len(b[0]))
    assert ids[0, :len(a[0])].tolist() == a[0].tolist() and (ids[0, len(a[0]):] == 7).all()
    assert labels[0, :len(a[0])].tolist() == a[1].tolist() and (labels[0, len(a[0]):] == IGNORE_INDEX).all()
    assert ids[1].tolist() == b[0].tolist()
    with pytest.raises(ValueError, match="empty"):
        SFTCollator(0)([])
    with pytest.raises(ValueError, match="max_length"):
        SFTCollator(0, max_length=5)([a])


def test_right_padding_does_not_change_the_real_positions():
    model = tiny_gpt()
    short, long = build_sft_example(TOK, "1+1", "2"), build_sft_example(TOK, "12+30", "42")
    ids, _ = SFTCollator(pad_id=0)([short, long])
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0, :len(short[0])], model(short[0][None])[0])


def test_sft_loss_equals_cross_entropy_and_a_direct_sum():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 9, 13, generator=generator)
    labels = torch.randint(0, 13, (3, 9), generator=generator)
    labels[0, :4] = labels[1, :2] = labels[2, 6:] = IGNORE_INDEX
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 13), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(sft_loss(logits, labels), expected)
    terms = [-torch.log_softmax(logits[b, t], 0)[labels[b, t + 1]]
             for b in range(3) for t in range(8) if labels[b, t + 1] != IGNORE_INDEX]
    torch.testing.assert_close(sft_loss(logits, labels), torch.stack(terms).mean())


def test_sft_loss_gives_prompt_positions_exactly_zero_gradient():
    model = tiny_gpt(1)
    ids, labels = SFTCollator(pad_id=0)([build_sft_example(TOK, "7+8", "15"),
                                         build_sft_example(TOK, "What pet does Dov have?", "owl")])
    logits = model(ids).detach().requires_grad_(True)
    sft_loss(logits, labels).backward()
    predicts_ignored = torch.zeros_like(labels, dtype=torch.bool)
    predicts_ignored[:, :-1] = labels[:, 1:] == IGNORE_INDEX
    predicts_ignored[:, -1] = True  # the last position predicts nothing
    assert (logits.grad[predicts_ignored] == 0).all()  # exactly zero, not just small
    assert (logits.grad[~predicts_ignored].abs().sum(-1) > 0).all()


def test_sft_loss_errors():
    with pytest.raises(ValueError, match="every label is -100"):
        sft_loss(torch.zeros(1, 4, 5), torch.full((1, 4), IGNORE_INDEX))
    with pytest.raises(ValueError, match="batch, seq"):
        sft_loss(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))


def _manual_greedy_answer(model, question, max_new_tokens):
    ids = TOK.encode(format_prompt(question))
    out = ""
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(torch.tensor([ids]))[0, -1].argmax())
            ids.append(token)
            if TOK.decode([token]) == END_OF_ANSWER:
                break
            out += TOK.decode([token])
    return out


def test_answer_and_exact_match_agree_with_a_manual_greedy_loop():
    model = tiny_gpt(2)
    with torch.no_grad():  # sharper random logits: varied answers
        model.lm_head.weight.mul_(20)
    pairs = [("1+2", "3"), ("Where does Pim live?", "Vell"), ("40+2", "42")]
    manual = [_manual_greedy_answer(model, q, 6) for q, _ in pairs]
    assert [answer(model, TOK, q, 6) for q, _ in pairs] == manual
    pairs_hit = [(q, manual[0]) for q, _ in pairs[:1]] + pairs[1:]
    expected = sum(_manual_greedy_answer(model, q, 6) == a for q, a in pairs_hit) / 3
    assert exact_match(model, TOK, pairs_hit, 6) == expected >= 1 / 3
    with pytest.raises(ValueError, match="at least one"):
        exact_match(model, TOK, [], 6)


def test_answer_loss_matches_sft_loss_on_one_batch():
    model = tiny_gpt(3)
    pairs = [("1+2", "3"), ("Where does Pim live?", "Vell")]
    ids, labels = SFTCollator(TOK.encode(END_OF_ANSWER)[0])([build_sft_example(TOK, q, a) for q, a in pairs])
    with torch.no_grad():
        assert answer_loss(model, TOK, pairs) == pytest.approx(float(sft_loss(model(ids), labels)))
