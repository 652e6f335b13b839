"""Chapter 07, encoder-only pretraining: the BERT encoder equals transformers' BertModel / BertForPreTraining with the
same weights (hidden states, pooled output, MLM and NSP logits, the pretraining loss); mask_tokens follows the
80/10/10 rule within binomial tolerances and never touches special tokens; sentence pairs are built as stated;
the encoder sees both directions and a causal GPT does not; a short run lowers the MLM loss; the fill-in-the-blank
comparison equals a prefix-by-prefix loop."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import transformers

from llmcourse.models.bert import BertConfig, BertEncoder, BertForPreTraining
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.masked_lm import IGNORE, SpecialIds, mask_tokens, nsp_pairs, pretraining_losses, split_sentences
from llmcourse.pretraining.encoder_pretraining import (course_sentences, fill_in_the_blank, train_causal_lm,
                                                       train_masked_lm)

SPECIAL = SpecialIds(96)  # 96 ordinary ids, then [CLS] 96, [SEP] 97, [MASK] 98, [PAD] 99


def _hf_config(**overrides):
    settings = dict(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                    max_position_embeddings=40, type_vocab_size=2, hidden_act="gelu", initializer_range=0.2,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    settings.update(overrides)
    return transformers.BertConfig(**settings)


@pytest.fixture(scope="module")
def hf_bert():
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(_hf_config()).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that a swapped copy cannot go unnoticed
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 96, (3, 20), generator=g)
    segments = torch.zeros_like(ids)
    segments[:, 9:] = 1
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 15:] = 0  # a padded row
    attention_mask[2, 11:] = 0
    return ids, segments, attention_mask


# --------------------------------------------------------------------------- equal to transformers' BERT


def test_encoder_equals_hf_bert_model(hf_bert):
    ours = BertEncoder.from_hf(hf_bert).eval()
    ids, segments, attention_mask = _batch()
    with torch.no_grad():
        hidden, pooled = ours(ids, segments, attention_mask)
        out = hf_bert.bert(input_ids=ids, token_type_ids=segments, attention_mask=attention_mask)
    torch.testing.assert_close(hidden, out.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, out.pooler_output, atol=1e-5, rtol=0)
    assert ours.num_parameters() == sum(p.numel() for p in hf_bert.bert.parameters())


def test_pretraining_heads_and_loss_equal_hf(hf_bert):
    ours = BertForPreTraining.from_hf(hf_bert).eval()
    ids, segments, attention_mask = _batch(1)
    labels = torch.full_like(ids, IGNORE)
    labels[0, 3], labels[1, 12], labels[2, 5] = 7, 50, 95
    next_label = torch.tensor([0, 1, 1])
    with torch.no_grad():
        mlm, nsp = ours(ids, segments, attention_mask)
        out = hf_bert(input_ids=ids, token_type_ids=segments, attention_mask=attention_mask, labels=labels,
                      next_sentence_label=next_label)
        chosen = labels != IGNORE
        mlm_chosen, _ = ours(ids, segments, attention_mask, mlm_positions=chosen)
    torch.testing.assert_close(mlm, out.prediction_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(nsp, out.seq_relationship_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(mlm_chosen, out.prediction_logits[chosen], atol=1e-5, rtol=0)
    loss = F.cross_entropy(mlm.flatten(0, 1), labels.flatten(), ignore_index=IGNORE) + F.cross_entropy(nsp, next_label)
    torch.testing.assert_close(loss, out.loss, atol=1e-5, rtol=0)
    assert ours.num_parameters() == sum(p.numel() for p in hf_bert.parameters())
    assert ours.bert.wte.weight.data_ptr() == hf_bert.cls.predictions.decoder.weight.data_ptr() or \
        torch.equal(hf_bert.cls.predictions.decoder.weight, hf_bert.bert.embeddings.word_embeddings.weight)


def test_only_exact_gelu_and_absolute_positions_are_copied():
    with pytest.raises(ValueError, match="gelu"):
        BertEncoder.from_hf(transformers.BertModel(_hf_config(hidden_act="relu")))


# --------------------------------------------------------------------------- mask_tokens


def _sample(seed=0, shape=(400, 250)):
    """Ordinary ids with every fifth position a special id."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, SPECIAL.n_regular, shape, generator=g)
    ids[:, ::5] = torch.tensor(SPECIAL.all)[torch.randint(0, 4, (shape[0], len(range(0, shape[1], 5))), generator=g)]
    return ids


def _within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_mask_tokens_follows_the_80_10_10_rule():
    ids = _sample()
    before = ids.clone()
    inputs, labels = mask_tokens(ids, SPECIAL.mask, SPECIAL.vocab_size, 0.15, torch.Generator().manual_seed(1),
                                 SPECIAL.all)
    assert torch.equal(ids, before), "the input must not be changed in place"
    ordinary = ids < SPECIAL.n_regular
    chosen = labels != IGNORE
    n_ordinary, n_chosen = int(ordinary.sum()), int(chosen.sum())
    assert _within(n_chosen, n_ordinary, 0.15)                      # 80,000 ordinary tokens, sigma ~ 101
    assert not chosen[~ordinary].any(), "special tokens are never chosen"
    assert torch.equal(labels[chosen], ids[chosen]) and bool((labels[~chosen] == IGNORE).all())
    assert torch.equal(inputs[~chosen], ids[~chosen]), "only chosen positions may change"
    masked = chosen & (inputs == SPECIAL.mask)
    kept = chosen & (inputs == ids)
    replaced = chosen & ~masked & ~kept
    v = SPECIAL.n_regular                                           # random replacements come from the ordinary ids
    assert _within(int(masked.sum()), n_chosen, 0.8)
    assert _within(int(replaced.sum()), n_chosen, 0.1 * (1 - 1 / v))  # a random draw may hit the original token
    assert _within(int(kept.sum()), n_chosen, 0.1 + 0.1 / v)
    assert bool((inputs[replaced] < SPECIAL.n_regular).all()), "random replacements are ordinary tokens"
    assert len(inputs[replaced].unique()) > 0.9 * v                 # and spread over the vocabulary


def test_mask_tokens_is_seeded_and_handles_the_edges():
    ids = _sample(2, (20, 50))
    a = mask_tokens(ids, SPECIAL.mask, SPECIAL.vocab_size, generator=torch.Generator().manual_seed(5),
                    special_ids=SPECIAL.all)
    b = mask_tokens(ids, SPECIAL.mask, SPECIAL.vocab_size, generator=torch.Generator().manual_seed(5),
                    special_ids=SPECIAL.all)
    c = mask_tokens(ids, SPECIAL.mask, SPECIAL.vocab_size, generator=torch.Generator().manual_seed(6),
                    special_ids=SPECIAL.all)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    none_in, none_labels = mask_tokens(ids, SPECIAL.mask, SPECIAL.vocab_size, 0.0, special_ids=SPECIAL.all)
    assert torch.equal(none_in, ids) and bool((none_labels == IGNORE).all())
    _, all_labels = mask_tokens(ids, SPECIAL.mask, SPECIAL.vocab_size, 1.0, special_ids=SPECIAL.all)
    ordinary = ids < SPECIAL.n_regular
    assert torch.equal(all_labels[ordinary], ids[ordinary]) and bool((all_labels[~ordinary] == IGNORE).all())
    with pytest.raises(ValueError, match="probability"):
        mask_tokens(ids, SPECIAL.mask, SPECIAL.vocab_size, 1.5)


# --------------------------------------------------------------------------- sentences and pairs


def test_split_sentences_joins_back_into_the_text():
    text = "First sentence here. Second sentence follows!\n\nA new paragraph: with a colon. 1. Short.\nEnd of it all."
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    assert pieces[:2] == ["First sentence here.", " Second sentence follows!"]
    assert all(len(p.strip()) >= 20 for p in pieces[:-1])


def test_nsp_pairs_are_built_as_stated():
    sentences = [[i % 90] * (3 + i % 7) for i in range(300)]        # sentence i holds only the token i % 90
    batch = nsp_pairs(sentences, 2000, SPECIAL, max_tokens=5, generator=torch.Generator().manual_seed(0))
    assert batch.ids.shape == (2000, 13)
    assert _within(int(batch.is_random.sum()), 2000, 0.5)
    for row in range(40):
        a, b = int(batch.a_len[row]), int(batch.b_len[row])
        ids = batch.ids[row].tolist()
        assert ids[0] == SPECIAL.cls and ids[a + 1] == SPECIAL.sep and ids[a + b + 2] == SPECIAL.sep
        assert set(ids[a + b + 3:]) <= {SPECIAL.pad}
        assert batch.segments[row, :a + 2].eq(0).all() and batch.segments[row, a + 2:].eq(1).all()
        assert batch.attention_mask[row].sum() == a + b + 3
        first, second = ids[1], ids[a + 2]
        if batch.is_random[row] == 0:
            assert second == (first + 1) % 90, "a real pair is two neighbouring sentences"
        assert 1 <= a <= 5 and 1 <= b <= 5
    real = nsp_pairs(sentences, 200, SPECIAL, random_fraction=0.0, generator=torch.Generator().manual_seed(1))
    assert real.is_random.sum() == 0


def test_course_sentences_hold_out_text_the_gpt_did_not_train_on():
    from llmcourse.tokenizers.course_tokenizer import course_tokenizer

    tokenizer = course_tokenizer().value
    data = course_sentences(tokenizer, 100_000)
    train_tokens, held_tokens = sum(map(len, data.train)), sum(map(len, data.held_out))
    assert len(data.train) > 100 and len(data.held_out) > 10
    assert 0.85 < train_tokens / (train_tokens + held_tokens) < 0.92
    assert not {tuple(s) for s in data.held_out} & {tuple(s) for s in data.train[-200:]}


# --------------------------------------------------------------------------- what an encoder can see


def test_the_encoder_sees_later_tokens_and_a_gpt_does_not():
    torch.manual_seed(0)
    encoder = BertEncoder(BertConfig(vocab_size=100, context_length=16, d_model=32, n_layers=2, n_heads=4)).eval()
    gpt = GPT(GPTConfig(vocab_size=100, context_length=16, d_model=32, n_layers=2, n_heads=4)).eval()
    ids = torch.tensor([[5, 17, 42, 8, 23, 61]])
    changed = ids.clone()
    changed[0, 5] = 3
    with torch.no_grad():
        enc_moved = (encoder(changed)[0] - encoder(ids)[0]).abs().amax(-1)[0]
        gpt_moved = (gpt(changed) - gpt(ids)).abs().amax(-1)[0]
    assert bool((enc_moved > 1e-3).all()), "every encoder position sees the changed last token"
    assert bool((gpt_moved[:5] == 0).all()) and gpt_moved[5] > 1e-3


# --------------------------------------------------------------------------- training and the comparison


def _toy_sentences(n=400, seed=0):
    """Sentences that count up by one from a random start: every blank follows from its neighbours."""
    g = torch.Generator().manual_seed(seed)
    return [list(range(s, s + 6)) for s in torch.randint(0, 90, (n,), generator=g).tolist()]


def test_a_short_run_lowers_the_masked_lm_loss():
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=SPECIAL.vocab_size, context_length=16, d_model=32, n_layers=2,
                                          n_heads=4))
    history = train_masked_lm(model, _toy_sentences(), SPECIAL, steps=200, batch_size=32, max_tokens=6, lr=5e-3,
                              warmup_steps=5, seed=0)
    assert len(history.mlm_loss) == len(history.nsp_loss) == len(history.n_predictions) == 200
    first, last = sum(history.mlm_loss[:5]) / 5, sum(history.mlm_loss[-10:]) / 10
    assert abs(first - math.log(SPECIAL.vocab_size)) < 0.1, "an untrained head spreads its bets evenly"
    assert last < first - 0.5  # about 4.61 -> 3.73
    assert not model.training


def test_causal_training_lowers_the_loss():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=96, context_length=16, d_model=32, n_layers=2, n_heads=4))
    losses = train_causal_lm(gpt, _toy_sentences(), steps=40, batch_size=16, lr=3e-3, warmup_steps=5)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0


def test_fill_in_the_blank_equals_a_prefix_by_prefix_loop():
    torch.manual_seed(1)
    encoder = BertForPreTraining(BertConfig(vocab_size=SPECIAL.vocab_size, context_length=16, d_model=32,
                                            n_layers=1, n_heads=4)).eval()
    gpt = GPT(GPTConfig(vocab_size=96, context_length=16, d_model=32, n_layers=1, n_heads=4)).eval()
    sentences = [[(7 * i + j) % 96 for j in range(3 + i % 4)] for i in range(50)]
    scores = fill_in_the_blank(encoder, gpt, sentences, SPECIAL, n_pairs=30, max_tokens=6, p=0.3, seed=3)
    # the same pairs and blanks, drawn again, scored one blank at a time
    from llmcourse.pretraining.encoder_pretraining import _blank_positions

    g = torch.Generator().manual_seed(3)
    batch = nsp_pairs(sentences, 30, SPECIAL, 6, random_fraction=0.0, generator=g)
    blanks = _blank_positions(batch, 0.3, g)
    enc_right = gpt_right = n = 0
    gpt_nll = 0.0
    with torch.no_grad():
        for row in range(30):
            a_len = int(batch.a_len[row])
            masked = torch.where(blanks[row], SPECIAL.mask, batch.ids[row])[None]
            logits, _ = encoder(masked, batch.segments[row][None], batch.attention_mask[row][None])
            text = [t for t in batch.ids[row].tolist() if t < SPECIAL.n_regular]
            for col in blanks[row].nonzero().flatten().tolist():
                target = int(batch.ids[row, col])
                enc_right += int(logits[0, col].argmax()) == target
                at = col - 1 if col <= a_len else col - 2
                assert text[at] == target
                gpt_logits = gpt(torch.tensor([text[:at]]))[0, -1]
                gpt_right += int(gpt_logits.argmax()) == target
                gpt_nll -= float(torch.log_softmax(gpt_logits, -1)[target])
                n += 1
    assert scores.n_blanks == n > 10
    assert scores.encoder_accuracy == pytest.approx(enc_right / n, abs=1e-6)
    assert scores.gpt_accuracy == pytest.approx(gpt_right / n, abs=1e-6)
    assert scores.gpt_loss == pytest.approx(gpt_nll / n, abs=1e-4)
    assert 0.0 <= scores.nsp_accuracy <= 1.0 and scores.n_pairs == 30


def test_pretraining_losses_score_only_the_chosen_positions():
    torch.manual_seed(2)
    model = BertForPreTraining(BertConfig(vocab_size=SPECIAL.vocab_size, context_length=16, d_model=32, n_layers=1,
                                          n_heads=4)).eval()
    batch = nsp_pairs(_toy_sentences(50), 8, SPECIAL, 6, generator=torch.Generator().manual_seed(0))
    mlm, nsp, n = pretraining_losses(model, batch, SPECIAL, generator=torch.Generator().manual_seed(4))
    inputs, labels = mask_tokens(batch.ids, SPECIAL.mask, SPECIAL.vocab_size, 0.15,
                                 torch.Generator().manual_seed(4), SPECIAL.all)
    with torch.no_grad():
        full, nsp_logits = model(inputs, batch.segments, batch.attention_mask)
    torch.testing.assert_close(mlm, F.cross_entropy(full.flatten(0, 1), labels.flatten(), ignore_index=IGNORE))
    torch.testing.assert_close(nsp, F.cross_entropy(nsp_logits, batch.is_random))
    assert n == int((labels != IGNORE).sum()) > 0
