"""Chapter 09's preference learning and distillation, each against an independent formula."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.finetuning.distill import distillation_loss, soft_targets
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.finetuning.instructions import PreferencePair, format_example, format_prompt, make_tokenizer
from llmcourse.finetuning.preference import (
    RewardModel,
    dpo_loss,
    pairwise_reward_loss,
    preference_batch,
    reward_batch,
    sequence_logprob,
)
from llmcourse.finetuning.sft import IGNORE_INDEX

TOK = make_tokenizer()


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, context_length=48, d_model=32, n_layers=1, n_heads=2)).eval()


# --------------------------------------------------------------------------- log-probabilities


def test_sequence_logprob_sums_the_answer_tokens_only():
    model = tiny_gpt()
    pairs = [PreferencePair("3+4", "7", "8"), PreferencePair("Where does Dov live?", "Umber", "Not telling.")]
    batch = preference_batch(TOK, pairs)
    got = sequence_logprob(model, batch["rejected_ids"], batch["rejected_labels"])
    with torch.no_grad():
        for row, pair in enumerate(pairs):  # score each answer character by character, unpadded
            prompt = format_prompt(pair.question)  # the answer starts with the template's space
            ids = TOK.encode(format_example(pair.question, pair.rejected))
            logps = torch.log_softmax(model(torch.tensor([ids]))[0], -1)
            expected = sum(float(logps[t - 1, ids[t]]) for t in range(len(prompt), len(ids)))
            assert float(got[row]) == pytest.approx(expected, rel=1e-5)


def test_sequence_logprob_ignores_labels_of_minus_100():
    model = tiny_gpt()
    ids = torch.randint(0, TOK.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, IGNORE_INDEX)
    assert (sequence_logprob(model, ids, labels) == 0).all()
    labels[:, 4:] = ids[:, 4:]
    with torch.no_grad():
        ce = F.cross_entropy(model(ids)[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none",
                             ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(sequence_logprob(model, ids, labels), -ce.sum(-1))


# --------------------------------------------------------------------------- reward model


def test_pairwise_reward_loss_matches_the_formula_and_is_stable():
    rc, rr = torch.randn(20, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    expected = -torch.log(torch.sigmoid(rc - rr)).mean()
    torch.testing.assert_close(pairwise_reward_loss(rc, rr), expected)
    big = pairwise_reward_loss(torch.tensor([-1000.0]), torch.tensor([1000.0]))
    assert float(big) == pytest.approx(2000.0)
    assert math.isinf(float(-torch.log(torch.sigmoid(torch.tensor(-2000.0)))))  # what the naive formula gives
    with pytest.raises(ValueError, match="same shape"):
        pairwise_reward_loss(torch.zeros(3), torch.zeros(4))


def test_reward_model_scores_the_last_real_token():
    backbone = tiny_gpt(1)
    model = RewardModel(backbone).eval()
    with torch.no_grad():
        model.head.weight.normal_()
    pairs = [PreferencePair("1+1", "2", "3"), PreferencePair("What colour does Mira like?", "red", "blue")]
    batch = reward_batch(TOK, pairs)
    with torch.no_grad():
        rewards = model(batch["chosen_ids"], batch["chosen_lengths"])
        for row, pair in enumerate(pairs):
            ids = torch.tensor([TOK.encode(format_example(pair.question, pair.chosen))])
            h = backbone.hidden_states(ids)[0, -1]
            assert float(rewards[row]) == pytest.approx(float(h @ model.head.weight[0] + model.head.bias[0]),
                                                        rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------- DPO


def _dpo_reference(pc, pr, rc, rr, beta):
    """Rafailov et al. (2023), eq. 7, written out: -E log σ(β log π(y_w)/π_ref(y_w) - β log π(y_l)/π_ref(y_l))."""
    ratio_w = torch.exp(pc - rc)  # π(y_w|x) / π_ref(y_w|x)
    ratio_l = torch.exp(pr - rr)
    sigma = 1.0 / (1.0 + torch.exp(-(beta * torch.log(ratio_w) - beta * torch.log(ratio_l))))
    return -torch.log(sigma).mean()


def test_dpo_loss_matches_the_papers_formula():
    generator = torch.Generator().manual_seed(0)
    logps = [-torch.rand(16, generator=generator, dtype=torch.float64) * 20 for _ in range(4)]
    for beta in (0.1, 0.5, 2.0):
        loss, chosen, rejected = dpo_loss(*logps, beta=beta)
        torch.testing.assert_close(loss, _dpo_reference(*logps, beta))
        torch.testing.assert_close(chosen, beta * (logps[0] - logps[2]))
        torch.testing.assert_close(rejected, beta * (logps[1] - logps[3]))
        assert not chosen.requires_grad


def test_dpo_loss_is_stable_for_large_margins():
    pc, pr = torch.tensor([-1.0, -9000.0]), torch.tensor([-9000.0, -1.0])
    rc = rr = torch.tensor([-50.0, -50.0])
    loss, _, _ = dpo_loss(pc, pr, rc, rr, beta=1.0)
    assert math.isfinite(float(loss)) and float(loss) == pytest.approx(8999.0 / 2)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0.0)
    with pytest.raises(ValueError, match="same shape"):
        dpo_loss(pc, pr[:1], rc, rr)


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    pc, pr = torch.tensor([-5.0], requires_grad=True), torch.tensor([-5.0], requires_grad=True)
    loss, _, _ = dpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.5)
    loss.backward()
    assert float(pc.grad) == pytest.approx(-0.25) and float(pr.grad) == pytest.approx(0.25)  # ∓β σ(0)


# --------------------------------------------------------------------------- distillation


def test_distillation_soft_term_matches_kl_div_and_a_direct_sum():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(4, 6, 11, generator=generator), torch.randn(4, 6, 11, generator=generator)
    for t in (1.0, 2.0, 5.0):
        expected = t * t * F.kl_div(F.log_softmax(student.reshape(-1, 11) / t, -1),
                                    F.softmax(teacher.reshape(-1, 11) / t, -1), reduction="batchmean")
        torch.testing.assert_close(distillation_loss(student, teacher, temperature=t), expected)
        p_t, p_s = soft_targets(teacher, t), soft_targets(student, t)
        direct = t * t * (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
        torch.testing.assert_close(distillation_loss(student, teacher, temperature=t), direct)


def test_distillation_blends_with_cross_entropy():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(5, 7, generator=generator), torch.randn(5, 7, generator=generator)
    labels = torch.tensor([0, 3, IGNORE_INDEX, 6, 2])
    soft = distillation_loss(student, teacher, temperature=3.0)
    hard = F.cross_entropy(student, labels, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(distillation_loss(student, teacher, labels, temperature=3.0, alpha=0.3),
                               0.3 * soft + 0.7 * hard)
    torch.testing.assert_close(distillation_loss(student, teacher, labels, alpha=0.0), hard)
    assert float(distillation_loss(teacher, teacher, temperature=2.0)) == pytest.approx(0.0, abs=1e-6)


def test_t_squared_keeps_gradients_comparable_across_temperatures():
    # d(T² KL)/dz_s = T (p_s - p_t), and for large T, p_s - p_t is about (z_s - z_t, centred) / (V T): the
    # gradient tends to a limit that does not depend on T. Without T² it would shrink like 1/T².
    generator = torch.Generator().manual_seed(2)
    teacher = torch.randn(8, 10, generator=generator)
    norms = []
    for t in (4.0, 8.0):
        student = torch.randn(8, 10, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
        distillation_loss(student, teacher, temperature=t).backward()
        norms.append(float(student.grad.norm()))
    assert norms[1] / norms[0] == pytest.approx(1.0, rel=0.1)


def test_distillation_errors():
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), alpha=1.5)
    with pytest.raises(ValueError, match="labels must have shape"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
