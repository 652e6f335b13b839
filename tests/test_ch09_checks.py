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


CORRECT = {
    "LoRALinear": _Build09,
    "mask_prompt_labels": _mask_prompt_labels,
    "sft_loss": _sft_loss,
    "lora_forward": _lora_forward,
    "merge_lora_weights": _merge_lora_weights,
    "pairwise_reward_loss": _pairwise_reward_loss,
    "dpo_loss": _dpo_loss,
    "distillation_loss": _distillation_loss,
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

