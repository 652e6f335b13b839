"""Tests of chapter 09's graded checks: they pass correct solutions (written here independently, and the
package's own functions), fail the untouched stub, and are quick and deterministic. (test_course.py runs every
hand-written wrong solution of tests/wrong_solutions/ch09.py against them.)"""
from __future__ import annotations

import math

import torch
from check_contract import contract_tests
from wrong_solutions.ch09 import _LoRA as _Build09  # the correct layer the wrong ones break

from llmcourse.finetuning import distill, lora, preference, sft
from llmcourse.grading.chapters.ch09 import chapter
from llmcourse.grading.checks import run_checks

# --------------------------------------------------------------------------- correct solutions, written here


def _mask_prompt_labels(ids, prompt_length):
    if prompt_length < 0 or prompt_length > ids.numel():
        raise ValueError("prompt_length out of range")
    keep = torch.arange(ids.numel()) >= prompt_length
    return torch.where(keep, ids, torch.full_like(ids, -100))


def _sft_loss(logits, labels):
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target != -100:
                total = total - torch.log_softmax(logits[b, t], dim=0)[target]
                count += 1
    return total / count


def _lora_forward(x, W, b, A, B, alpha, r):
    out = torch.einsum("...i,oi->...o", x, W)
    out = out + (alpha / r) * torch.einsum("...k,ok->...o", torch.einsum("...i,ki->...k", x, A), B)
    return out if b is None else out + b


def _merge_lora_weights(W, A, B, alpha, r):
    return torch.addmm(W, B, A, alpha=alpha / r)


def _pairwise_reward_loss(r_chosen, r_rejected):
    return torch.nn.functional.softplus(r_rejected - r_chosen).mean()


def _dpo_loss(pc, pr, rc, rr, beta):
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    return torch.nn.functional.softplus(rejected - chosen).mean(), chosen, rejected


def _distillation_loss(student_logits, teacher_logits, temperature=2.0):
    log_s = torch.log_softmax(student_logits / temperature, dim=-1)
    log_t = torch.log_softmax(teacher_logits / temperature, dim=-1)
    per_row = (log_t.exp() * (log_t - log_s)).sum(dim=-1)
    return temperature ** 2 * per_row.mean()


def _lora_fit_error(delta_w, r, steps=500):
    # written differently from the solution: SGD with momentum on the summed squared error, and a factored A
    torch.manual_seed(1)
    n_out, n_in = delta_w.shape
    a = torch.nn.Parameter(torch.randn(r, n_in) * 0.1)
    b = torch.nn.Parameter(torch.zeros(n_out, r))
    optimizer = torch.optim.SGD([a, b], lr=0.002, momentum=0.9)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.sum((torch.mm(b, a) - delta_w) ** 2).backward()
        optimizer.step()
    with torch.no_grad():
        return math.sqrt(float(((torch.mm(b, a) - delta_w) ** 2).sum()) / float((delta_w ** 2).sum()))


def _dpo_grad(pc, pr, rc, rr, beta):
    # d/dz of softplus(-z) is -(1 - sigmoid(z)); z moves by +beta with pc and by -beta with pr
    z = beta * ((pc - pr) - (rc - rr))
    weight = (1 - torch.sigmoid(z)) * beta / z.numel()
    return -weight, weight


CORRECT = {
    "LoRALinear": _Build09,
    "mask_prompt_labels": _mask_prompt_labels,
    "sft_loss": _sft_loss,
    "lora_forward": _lora_forward,
    "merge_lora_weights": _merge_lora_weights,
    "pairwise_reward_loss": _pairwise_reward_loss,
    "dpo_loss": _dpo_loss,
    "distillation_loss": _distillation_loss,
    "lora_fit_error": _lora_fit_error,
    "dpo_grad": _dpo_grad,
}

PACKAGE = {
    "mask_prompt_labels": sft.mask_prompt_labels,
    "sft_loss": sft.sft_loss,
    "lora_forward": lora.lora_forward,
    "merge_lora_weights": lora.merge_lora_weights,
    "pairwise_reward_loss": preference.pairwise_reward_loss,
    "dpo_loss": preference.dpo_loss,
    "distillation_loss": distill.distillation_loss,
}


# --------------------------------------------------------------------------- the tests


(test_chapter_registers_its_exercises, test_checks_pass_for_a_correct_implementation,
 test_the_package_functions_pass_the_checks,
 test_checks_are_quick_and_deterministic) = contract_tests(chapter, "09", CORRECT, PACKAGE, at_least=6)


def test_stability_checks_really_overflow_the_naive_formulas():
    # the inputs of the stability checks must break log(sigmoid) and log(softmax) in float32
    assert math.isinf(float(-torch.log(torch.sigmoid(torch.tensor(-1000.0)))))
    assert math.isinf(float(-torch.log(torch.sigmoid(torch.tensor(-3995.0)))))
    assert float(torch.softmax(torch.tensor([0.0, 200.0, -200.0]), -1)[0]) == 0.0



def test_the_lora_fit_targets_have_the_ranks_the_checks_say():
    from llmcourse.grading.chapters.ch09 import _low_rank_change, _rank_r_best_error

    assert int(torch.linalg.matrix_rank(_low_rank_change(100))) == 2
    assert _rank_r_best_error(_low_rank_change(100), 2) < 1e-6
    assert 0.5 < _rank_r_best_error(torch.randn(12, 10, generator=torch.Generator().manual_seed(0)), 1) < 1


def test_dpo_grad_refuses_autograd():
    import torch.nn.functional as F

    def by_autograd(pc, pr, rc, rr, beta):
        pc, pr = pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)
        loss = -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()
        return torch.autograd.grad(loss, (pc, pr))

    def by_backward(pc, pr, rc, rr, beta):
        pc, pr = pc.clone().requires_grad_(True), pr.clone().requires_grad_(True)
        (-F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()).backward()
        return pc.grad, pr.grad

    for builtin in (by_autograd, by_backward):
        results = run_checks(chapter, {"dpo_grad": builtin}, "dpo_grad")
        failed = [r for r in results if not r.passed]
        assert failed and all("asks you to write" in r.message for r in failed), builtin.__name__
