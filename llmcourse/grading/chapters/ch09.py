"""Graded checks of chapter 09, "Fine-tuning and alignment".

Seven exercises on the losses and layers of fine-tuning, and one module to build (``LoRALinear``): masking the prompt's
labels, the SFT loss, a LoRA layer's forward pass and its merged weight, the
reward model's pairwise loss, the DPO loss and the distillation loss. Each is
checked on seeded inputs against an independent reference (``F.cross_entropy``,
``F.linear`` with the merged matrix, ``F.softplus``, ``F.kl_div``, the papers'
formulas written out, hand-computed examples).

Then an open experiment and a derivation. ``lora_fit_error`` trains a rank-r
product B A to match a given weight change and reports the relative error left;
it is checked against the best error any rank-r matrix can reach (the
Eckart-Young theorem, from ``torch.linalg.svdvals``): zero for a change of rank
<= r, and neither below nor far above the optimum for a full-rank one.
``dpo_grad`` is the gradient of the DPO loss with respect to the policy's
log-probabilities of the chosen and the rejected answers, checked against
``torch.autograd`` while every autograd entry point is switched off for the
learner's code. No check needs another
exercise's function.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from llmcourse.grading.checks import (
    Chapter,
    CheckFailed,
    as_number,
    beside_the_learner,
    call,
    call_method,
    call_method_inplace,
    call_object,
    expect,
    expect_close,
    expect_raises_value_error,
    expect_shape,
    forbid_autograd,
    get_function,
    run_learner,
    seeded_generator,
    seeded_randn,
)

chapter = Chapter("09", "Fine-tuning and alignment")

Namespace = Mapping[str, Any]


def _expect_number(value: Any, expected: float, what: str, rel: float = 1e-4, abs_tol: float = 1e-5) -> None:
    got = as_number(value, what)
    if not math.isfinite(got) and math.isfinite(expected):
        raise CheckFailed(f"{what} is {got}, but the expected value {expected:.6g} is finite.")
    expect(math.isclose(got, expected, rel_tol=rel, abs_tol=abs_tol),
           f"{what} is {got:.6g}, expected {expected:.6g}.")


# --------------------------------------------------------------------------- mask_prompt_labels

@chapter.check("mask_prompt_labels", points=1, hint="Copy the ids and set the first prompt_length positions to -100 "
               "(the value F.cross_entropy ignores); the answer's positions keep their token ids.")
def mask_values(ns: Namespace) -> None:
    ids = torch.tensor([5, 9, 2, 7, 3, 8])
    got = expect_shape(call(ns, "mask_prompt_labels", ids.clone(), 3), (6,), "mask_prompt_labels(ids of 6, 3)")
    expect(got.tolist() == [-100, -100, -100, 7, 3, 8],
           f"mask_prompt_labels([5, 9, 2, 7, 3, 8], 3) returned {got.tolist()}, expected [-100, -100, -100, 7, 3, 8].")
    generator = torch.Generator().manual_seed(3)
    for length, prompt in [(10, 4), (7, 1), (12, 11)]:
        ids = torch.randint(0, 50, (length,), generator=generator)
        expected = torch.where(torch.arange(length) < prompt, torch.tensor(-100), ids)
        got = expect_shape(call(ns, "mask_prompt_labels", ids.clone(), prompt), (length,),
                           f"mask_prompt_labels(ids of {length}, {prompt})")
        expect(torch.equal(got.long(), expected), f"mask_prompt_labels(ids of {length}, {prompt}) returned "
               f"{got.tolist()}, expected {expected.tolist()}.")


@chapter.check("mask_prompt_labels", points=1, hint="Work on a copy (ids.clone()): the ids themselves are still "
               "needed as the model's input. prompt_length 0 masks nothing; len(ids) masks everything.")
def mask_keeps_ids(ns: Namespace) -> None:
    ids = torch.tensor([4, 1, 6, 2, 9])
    got = call(ns, "mask_prompt_labels", ids, 2)
    expect(ids.tolist() == [4, 1, 6, 2, 9], "mask_prompt_labels changed the ids it was given; return a new "
           "tensor and leave the input alone.")
    got = expect_shape(got, (5,), "mask_prompt_labels(ids of 5, 2)")
    expect(not got.is_floating_point(), f"the labels should be integer token ids (like the input), got {got.dtype}.")
    expect(call(ns, "mask_prompt_labels", ids, 0).tolist() == ids.tolist(),
           "with prompt_length 0 nothing should be masked.")
    expect(call(ns, "mask_prompt_labels", ids, 5).tolist() == [-100] * 5,
           "with prompt_length equal to len(ids) every position should be -100.")


@chapter.check("mask_prompt_labels", points=1, hint="A prompt cannot be longer than the example or shorter than 0: "
               "raise a ValueError instead of silently masking a different number of tokens.")
def mask_rejects_bad_lengths(ns: Namespace) -> None:
    expect_raises_value_error(ns, "mask_prompt_labels", torch.tensor([1, 2, 3]), 4)
    expect_raises_value_error(ns, "mask_prompt_labels", torch.tensor([1, 2, 3]), -1)


# --------------------------------------------------------------------------- sft_loss

def _sft_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    logits = seeded_randn(3, 8, 11, seed=seed) * 2
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 11, (3, 8), generator=generator)
    labels[0, :3] = -100  # prompts of different lengths
    labels[1, :5] = -100
    labels[2, :2] = -100
    labels[1, 7:] = -100  # padding
    return logits, labels


@chapter.check("sft_loss", points=1, hint="Logits at position t predict the token at t + 1: drop the last position "
               "of the logits and the first of the labels, then take the cross-entropy ignoring labels of -100.")
def sft_loss_matches_cross_entropy(ns: Namespace) -> None:
    for seed in (1, 2):
        logits, labels = _sft_inputs(seed)
        expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
        _expect_number(call(ns, "sft_loss", logits.clone(), labels.clone()), float(expected),
                       "sft_loss(logits (3, 8, 11), labels (3, 8))")


@chapter.check("sft_loss", points=1, hint="Positions whose next label is -100 (the prompt, the padding) must not "
               "count at all: leave them out of both the sum and the count.")
def sft_loss_ignores_masked_positions(ns: Namespace) -> None:
    logits, labels = _sft_inputs(3)
    before = as_number(call(ns, "sft_loss", logits.clone(), labels.clone()), "sft_loss")
    changed = logits.clone()
    masked_next = torch.zeros(3, 8, dtype=torch.bool)
    masked_next[:, :-1] = labels[:, 1:] == -100
    changed[masked_next] = seeded_randn(int(masked_next.sum()), 11, seed=4) * 5
    after = as_number(call(ns, "sft_loss", changed, labels.clone()), "sft_loss")
    expect(math.isclose(before, after, rel_tol=1e-5, abs_tol=1e-6),
           f"changing the logits that predict masked (-100) labels changed the loss from {before:.5f} to "
           f"{after:.5f}; those positions must not count.")


@chapter.check("sft_loss", points=1, hint="Average over answer TOKENS, not over rows: a row with 3 answer tokens "
               "counts three times as much as a row with one.")
def sft_loss_by_hand(ns: Namespace) -> None:
    # vocabulary of 2; uniform logits except where noted, so each token's loss is log 2 or log(1 + e^-2).
    logits = torch.zeros(2, 4, 2)
    labels = torch.tensor([[-100, -100, -100, 1], [-100, 0, 0, 0]])
    logits[1, :3, 0] = 2.0  # row 1 predicts its three 0s with logit gap 2
    expected = (math.log(2) + 3 * math.log(1 + math.exp(-2))) / 4
    _expect_number(call(ns, "sft_loss", logits, labels), expected,
                   "sft_loss for one row with 1 answer token (loss log 2) and one with 3 (loss 0.127 each)")


# --------------------------------------------------------------------------- lora_forward

def _lora_tensors(seed: int, d_in: int = 6, d_out: int = 4, r: int = 2):
    return (seeded_randn(2, 5, d_in, seed=seed), seeded_randn(d_out, d_in, seed=seed + 1),
            seeded_randn(d_out, seed=seed + 2), seeded_randn(r, d_in, seed=seed + 3),
            seeded_randn(d_out, r, seed=seed + 4))


@chapter.check("lora_forward", points=1, hint="Compute the frozen layer x W^T + b, then add the adapter's path "
               "(x A^T) B^T multiplied by alpha / r.")
def lora_forward_matches_merged(ns: Namespace) -> None:
    for alpha, r, seed in [(8.0, 2, 1), (1.0, 3, 7)]:
        x, W, b, A, B = _lora_tensors(seed, r=r)
        expected = F.linear(x, W + (alpha / r) * B @ A, b)
        expect_close(call(ns, "lora_forward", x, W, b, A, B, alpha, r), expected,
                     f"lora_forward(x (2, 5, 6), W (4, 6), b, A ({r}, 6), B (4, {r}), alpha={alpha}, r={r})")


@chapter.check("lora_forward", points=1, hint="B starts at zero, so a fresh adapter must give exactly the original "
               "layer. b may be None (a layer without bias): then add no bias.")
def lora_forward_zero_B_and_no_bias(ns: Namespace) -> None:
    x, W, b, A, B = _lora_tensors(11)
    expect_close(call(ns, "lora_forward", x, W, b, A, torch.zeros_like(B), 16.0, 2), F.linear(x, W, b),
                 "lora_forward with B = 0 (it should equal x W^T + b)")
    expect_close(call(ns, "lora_forward", x, W, None, A, B, 4.0, 2), F.linear(x, W + 2.0 * B @ A),
                 "lora_forward with b=None")


@chapter.check("lora_forward", points=1, hint="Check the scale on a tiny case: x = [1, 2], W = I, A = [[1, 1]], "
               "B = [[1], [0]], alpha = 2, r = 1 gives x + 2 * (1 + 2) * [1, 0] = [7, 2].")
def lora_forward_by_hand(ns: Namespace) -> None:
    got = call(ns, "lora_forward", torch.tensor([[1.0, 2.0]]), torch.eye(2), torch.zeros(2),
               torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0], [0.0]]), 2.0, 1)
    expect_close(got, torch.tensor([[7.0, 2.0]]), "lora_forward on the 2-number example")


# --------------------------------------------------------------------------- merge_lora_weights

@chapter.check("merge_lora_weights", points=1, hint="The merged matrix is W + (alpha / r) * B @ A, shape "
               "(out, in) like W: multiplying x by it must give the frozen layer plus the adapter.")
def merge_matches_two_paths(ns: Namespace) -> None:
    for alpha, r, seed in [(16.0, 4, 21), (3.0, 1, 22)]:
        x, W, _, A, B = _lora_tensors(seed, d_in=7, d_out=3, r=r)
        merged = call(ns, "merge_lora_weights", W.clone(), A, B, alpha, r)
        merged = expect_shape(merged, (3, 7), f"merge_lora_weights(W (3, 7), A ({r}, 7), B (3, {r}), {alpha}, {r})")
        two_paths = x @ W.T + (alpha / r) * ((x @ A.T) @ B.T)
        expect_close(x @ merged.T, two_paths, f"x @ merged.T with alpha={alpha}, r={r} (vs x W^T + the adapter)")


@chapter.check("merge_lora_weights", points=1, hint="Return a new matrix (W + ...), do not add into W in place: "
               "the frozen base weight must stay as it was. With B = 0 the merge gives W back.")
def merge_keeps_base(ns: Namespace) -> None:
    _, W, _, A, B = _lora_tensors(31, d_in=5, d_out=5, r=2)
    original = W.clone()
    call(ns, "merge_lora_weights", W, A, B, 4.0, 2)
    expect(torch.equal(W, original), "merge_lora_weights changed W in place; return W + (alpha / r) B A instead.")
    expect_close(call(ns, "merge_lora_weights", W, A, torch.zeros_like(B), 4.0, 2), W,
                 "merge_lora_weights with B = 0")


# --------------------------------------------------------------------------- pairwise_reward_loss

@chapter.check("pairwise_reward_loss", points=1, hint="Per pair the loss is -log(sigmoid(r_chosen - r_rejected)); "
               "return the mean over the pairs.")
def reward_loss_values(ns: Namespace) -> None:
    rc, rr = seeded_randn(10, seed=41, dtype=torch.float64) * 2, seeded_randn(10, seed=42, dtype=torch.float64) * 2
    expected = float((-torch.log(1 / (1 + torch.exp(-(rc - rr))))).mean())
    _expect_number(call(ns, "pairwise_reward_loss", rc.float(), rr.float()), expected,
                   "pairwise_reward_loss on 10 pairs")


@chapter.check("pairwise_reward_loss", points=1, hint="sigmoid(-1000) rounds to 0 and log(0) is -inf. Use "
               "F.logsigmoid (or softplus: -log sigmoid(z) = softplus(-z)), which stays finite.")
def reward_loss_is_stable(ns: Namespace) -> None:
    rc, rr = torch.tensor([-500.0, 500.0, 3.0]), torch.tensor([500.0, -500.0, 1.0])
    expected = float(F.softplus(-(rc - rr)).mean())
    _expect_number(call(ns, "pairwise_reward_loss", rc, rr), expected,
                   "pairwise_reward_loss with reward gaps of -1000, +1000 and +2")


@chapter.check("pairwise_reward_loss", points=1, hint="The loss must be small when the chosen answer already scores "
               "higher, and large when it scores lower: check the sign of the difference.")
def reward_loss_prefers_chosen(ns: Namespace) -> None:
    good = as_number(call(ns, "pairwise_reward_loss", torch.tensor([2.0]), torch.tensor([0.0])), "loss")
    bad = as_number(call(ns, "pairwise_reward_loss", torch.tensor([0.0]), torch.tensor([2.0])), "loss")
    expect(math.isclose(good, math.log(1 + math.exp(-2)), rel_tol=1e-4) and
           math.isclose(bad, math.log(1 + math.exp(2)), rel_tol=1e-4),
           f"for r_chosen=2, r_rejected=0 the loss should be {math.log(1 + math.exp(-2)):.4f} (got {good:.4f}); "
           f"with the rewards swapped it should be {math.log(1 + math.exp(2)):.4f} (got {bad:.4f}).")


# --------------------------------------------------------------------------- dpo_loss

def _dpo_parts(value: Any, what: str, n: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise CheckFailed(f"{what} should return three things: (loss, chosen_rewards, rejected_rewards).")
    loss = as_number(value[0], f"{what}'s loss")
    return (loss, expect_shape(value[1], (n,), f"{what}'s chosen_rewards"),
            expect_shape(value[2], (n,), f"{what}'s rejected_rewards"))


def _logps(seed: int, n: int = 6) -> list[torch.Tensor]:
    return [-(seeded_randn(n, seed=seed + i).abs() * 10 + 1) for i in range(4)]


@chapter.check("dpo_loss", points=2, hint="chosen_rewards = beta * (policy_chosen - ref_chosen), rejected_rewards = "
               "beta * (policy_rejected - ref_rejected); the loss is the mean of -log sigmoid(chosen - rejected).")
def dpo_matches_formula(ns: Namespace) -> None:
    for beta, seed in [(0.1, 51), (0.5, 55)]:
        pc, pr, rc, rr = _logps(seed)
        d = [t.double() for t in (pc, pr, rc, rr)]
        # Rafailov et al. 2023, eq. 7: -log sigma(beta log(pi(y_w)/pi_ref(y_w)) - beta log(pi(y_l)/pi_ref(y_l)))
        z = beta * (d[0] - d[2]) - beta * (d[1] - d[3])
        expected = float(-torch.log(1 / (1 + torch.exp(-z))).mean())
        what = f"dpo_loss(..., beta={beta})"
        loss, chosen, rejected = _dpo_parts(call(ns, "dpo_loss", pc, pr, rc, rr, beta), what, 6)
        _expect_number(loss, expected, f"{what}'s loss")
        expect_close(chosen, beta * (d[0] - d[2]), f"{what}'s chosen_rewards")
        expect_close(rejected, beta * (d[1] - d[3]), f"{what}'s rejected_rewards")


@chapter.check("dpo_loss", points=1, hint="When the policy equals the reference, every reward is 0 and the loss is "
               "log 2, whatever the log-probabilities are: the loss compares each model with the reference.")
def dpo_policy_equal_to_reference(ns: Namespace) -> None:
    pc, pr, _, _ = _logps(61)
    loss, chosen, rejected = _dpo_parts(call(ns, "dpo_loss", pc, pr, pc.clone(), pr.clone(), 0.2),
                                        "dpo_loss with policy = reference", 6)
    _expect_number(loss, math.log(2), "dpo_loss with policy = reference")
    expect_close(chosen, torch.zeros(6), "chosen_rewards with policy = reference")
    expect_close(rejected, torch.zeros(6), "rejected_rewards with policy = reference")


@chapter.check("dpo_loss", points=1, hint="Log-probabilities of whole answers can differ by thousands: compute "
               "-log sigmoid(z) with F.logsigmoid, never as log(sigmoid(z)).")
def dpo_is_stable(ns: Namespace) -> None:
    pc, pr = torch.tensor([-5.0, -4000.0]), torch.tensor([-4000.0, -5.0])
    rc, rr = torch.tensor([-10.0, -10.0]), torch.tensor([-10.0, -10.0])
    z = 1.0 * (pc - rc) - 1.0 * (pr - rr)
    loss, _, _ = _dpo_parts(call(ns, "dpo_loss", pc, pr, rc, rr, 1.0), "dpo_loss with beta=1", 2)
    _expect_number(loss, float(F.softplus(-z).mean()), "dpo_loss with log-probability gaps near 4000")


# --------------------------------------------------------------------------- distillation_loss

@chapter.check("distillation_loss", points=2, hint="Divide both logits by T, take log_softmax of the student and "
               "softmax of the teacher, sum p_teacher * (log p_teacher - log p_student) over the vocabulary, "
               "average over the rows, and multiply by T squared.")
def distill_matches_kl_div(ns: Namespace) -> None:
    student, teacher = seeded_randn(8, 10, seed=71) * 2, seeded_randn(8, 10, seed=72) * 3
    for t in (1.0, 2.0, 4.0):
        expected = t * t * F.kl_div(F.log_softmax(student / t, -1), F.softmax(teacher / t, -1), reduction="batchmean")
        _expect_number(call(ns, "distillation_loss", student.clone(), teacher.clone(), temperature=t),
                       float(expected), f"distillation_loss(student (8, 10), teacher (8, 10), temperature={t})")


@chapter.check("distillation_loss", points=1, hint="KL is not symmetric. The teacher's probabilities weigh the "
               "log-ratio: KL(teacher || student) = sum p_t * log(p_t / p_s).")
def distill_direction(ns: Namespace) -> None:
    teacher = torch.tensor([[0.9, 0.1]]).log()
    student = torch.tensor([[0.5, 0.5]]).log()
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    _expect_number(call(ns, "distillation_loss", student, teacher, temperature=1.0), expected,
                   "distillation_loss for teacher probabilities [0.9, 0.1] and student [0.5, 0.5] at T=1")


@chapter.check("distillation_loss", points=1, hint="softmax can round a tiny probability to 0, and log(0) is -inf. "
               "Take F.log_softmax of the scaled logits instead of log(softmax(...)).")
def distill_is_stable(ns: Namespace) -> None:
    teacher = torch.tensor([[200.0, 0.0, -200.0]])
    student = torch.tensor([[0.0, 200.0, -200.0]])
    log_s, log_t = F.log_softmax(student, -1).double(), F.log_softmax(teacher, -1).double()
    expected = float((log_t.exp() * (log_t - log_s)).sum())
    _expect_number(call(ns, "distillation_loss", student, teacher, temperature=1.0), expected,
                   "distillation_loss for logits of +-200 at T=1")


__all__ = ["chapter"]


# --------------------------------------------------------------------------- LoRALinear (build the module)

_LORA = "LoRALinear"


def _seeded_linear(n_in: int, n_out: int, seed: int, bias: bool = True):
    from torch import nn
    layer = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(seeded_randn(n_out, n_in, seed=seed))
        if bias:
            layer.bias.copy_(seeded_randn(n_out, seed=seed + 1))
    return layer


def _lora_module(ns: Namespace, base, r: int, alpha: float):
    from torch import nn

    from llmcourse.finetuning.lora import LoRALinear as PackageLoRA

    module = call(ns, _LORA, base, r=r, alpha=alpha)
    if not isinstance(module, nn.Module):
        raise CheckFailed(f"`{_LORA}(...)` should build an nn.Module, got {type(module).__name__}")
    if isinstance(module, PackageLoRA):
        raise CheckFailed(f"`{_LORA}` must be written here, not taken from llmcourse.finetuning.lora.")
    for name, shape in (("A", (r, base.in_features)), ("B", (base.out_features, r))):
        value = getattr(module, name, None)
        if not isinstance(value, nn.Parameter):
            raise CheckFailed(f"the module needs a trainable nn.Parameter `{name}` of shape {shape}")
        expect_shape(value, shape, f"`{name}`")
    return module


def _set_parameters(module, values: dict) -> None:
    """Copy ``values`` into ``module``'s parameters of those names (beside the learner's code, where the module is)."""
    with torch.no_grad():
        for name, value in values.items():
            getattr(module, name).copy_(value)


def _merged_output(module, x: torch.Tensor) -> tuple:
    """Whether ``module.merged()`` is a plain nn.Linear, its class's name, and its output for ``x``."""
    from torch import nn

    merged = module.merged()
    with torch.no_grad():
        return type(merged) is nn.Linear, type(merged).__name__, merged(x)


def _move_adapters(model, names: list[str]) -> None:
    """Pretend fine-tuning moved every adapter: seeded values into each named LoRA layer's B."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for k, name in enumerate(names):
            modules[name].B.copy_(seeded_randn(*modules[name].B.shape, seed=20 + k) * 0.1)


def _model(ns: Namespace):
    """:func:`_tiny_gpt`, built beside the learner's code (in their kernel when grading), so that what their
    ``inject`` and ``merge_all`` do to it is what the check reads."""
    return beside_the_learner(ns, _tiny_gpt)


def _lora_call(module, x: torch.Tensor, what: str) -> torch.Tensor:
    return call_object(what, module, x)


@chapter.check(_LORA, points=1, hint="B starts at zero (A can start random), so that at first the layer computes "
               "exactly what the frozen nn.Linear computed.")
def lora_module_starts_as_the_base(ns: Namespace) -> None:
    base = _seeded_linear(6, 5, seed=1)
    module = _lora_module(ns, base, r=2, alpha=4.0)
    x = seeded_randn(3, 6, seed=2)
    with torch.no_grad():
        expect_close(_lora_call(module, x, "the new layer"), base(x), "the output before any training")


@chapter.check(_LORA, points=1, hint="forward(x) = base(x) + (alpha / r) * (x A^T) B^T: the input is squeezed to r "
               "numbers by A and expanded again by B.")
def lora_module_forward(ns: Namespace) -> None:
    base = _seeded_linear(8, 4, seed=3)
    module = _lora_module(ns, base, r=3, alpha=6.0)
    A, B = seeded_randn(3, 8, seed=4), seeded_randn(4, 3, seed=5)
    run_learner("setting A and B", lambda: beside_the_learner(ns, _set_parameters, module, {"A": A, "B": B}))
    with torch.no_grad():
        x = seeded_randn(2, 5, 8, seed=6)
        expect_close(_lora_call(module, x, "the layer"), base(x) + (6.0 / 3) * (x @ A.T) @ B.T,
                     "the output with given A and B (alpha 6, r 3)")


@chapter.check(_LORA, points=1, hint="Freeze the wrapped layer (requires_grad_(False) on its weight and bias); only A "
               "and B are trained, so only they appear among the parameters that require gradients.")
def lora_module_trains_only_the_adapter(ns: Namespace) -> None:
    base = _seeded_linear(5, 5, seed=7)
    module = _lora_module(ns, base, r=2, alpha=2.0)
    trainable = sorted(name for name, p in module.named_parameters() if p.requires_grad)
    expect(trainable == ["A", "B"], f"the trainable parameters should be exactly ['A', 'B'], got {trainable}")
    with torch.no_grad():
        module.B.copy_(seeded_randn(5, 2, seed=8))
    _lora_call(module, seeded_randn(4, 5, seed=9), "the layer").pow(2).sum().backward()
    expect(base.weight.grad is None, "the frozen weight got a gradient")
    expect(module.A.grad is not None and module.B.grad is not None, "A and B should both get gradients")


@chapter.check(_LORA, points=1, hint="merged() returns a plain nn.Linear with weight W + (alpha / r) B A and the "
               "base's bias: the same outputs, no extra cost at inference.")
def lora_module_merges(ns: Namespace) -> None:
    base = _seeded_linear(6, 3, seed=10)
    module = _lora_module(ns, base, r=2, alpha=8.0)
    values = {"A": seeded_randn(2, 6, seed=11), "B": seeded_randn(3, 2, seed=12)}
    run_learner("setting A and B", lambda: beside_the_learner(ns, _set_parameters, module, values))
    x = seeded_randn(4, 6, seed=13)
    plain, name, out = run_learner(f"`{_LORA}.merged()`", lambda: beside_the_learner(ns, _merged_output, module, x))
    if not plain:
        raise CheckFailed(f"merged() should return a plain nn.Linear, got {name}")
    with torch.no_grad():
        expect_close(out, _lora_call(module, x, "the layer"), "the merged layer's output")


def _learner_method(module, name: str):
    return call_method(module, _LORA, name)


def _tiny_gpt():
    from llmcourse.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=20, context_length=8, d_model=16, n_layers=2, n_heads=2))


_TARGETS = ("q_proj", "v_proj", "up")


def _expected_targets(model) -> list[str]:
    from torch import nn
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.split(".")[-1] in _TARGETS]


def _inject(ns: Namespace, model, targets=_TARGETS, r: int = 2, alpha: float = 4.0) -> list[str]:
    cls = get_function(ns, _LORA)
    _lora_module(ns, _seeded_linear(4, 4, seed=0), r=2, alpha=4.0)  # the layer itself must work first
    names = call_method_inplace(cls, _LORA, "inject", model, targets, r, alpha)
    expect(isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names), "inject should return the "
           f"dotted names of the replaced layers (a list of str), got {type(names).__name__}")
    return list(names)


@chapter.check(_LORA, points=1, hint="inject walks model.named_modules(), and for each nn.Linear whose own name (the "
               "part after the last dot) is a target, setattr(parent, child_name, cls(linear, r, alpha)). Freeze the "
               "whole model first (requires_grad_(False)), so only the new A and B train. Nothing matched: ValueError.")
def lora_inject_into_a_model(ns: Namespace) -> None:
    model = _model(ns)
    ids = torch.randint(0, 20, (2, 8), generator=seeded_generator(14))
    with torch.no_grad():
        before = model(ids)
    originals = dict(model.named_modules())
    expected = _expected_targets(model)
    names = _inject(ns, model)
    expect(names == expected, f"inject with targets {_TARGETS} should replace {expected}, in that order; it "
           f"returned {names}")
    modules = dict(model.named_modules())
    cls = ns[_LORA]
    for name in expected:
        expect(isinstance(modules[name], cls), f"`{name}` should now be a {_LORA}, it is a {type(modules[name]).__name__}")
        expect(getattr(modules[name], "base", None) is originals[name], f"`{name}`'s {_LORA} should wrap the model's "
               f"own nn.Linear as `base` (the same object, not a copy)")
    with torch.no_grad():
        expect_close(run_learner("the injected model", lambda: model(ids)), before,
                     "the model's logits right after inject (B starts at zero)")
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    want = sorted(f"{name}.{ab}" for name in expected for ab in "AB")
    expect(trainable == want, f"after inject only the adapters' A and B should train; trainable: {trainable[:8]}"
           f"{' ...' if len(trainable) > 8 else ''}")
    try:
        call_method_inplace(cls, _LORA, "inject", _tiny_gpt(), ("no_such_layer",), 2, 4.0)
    except CheckFailed as exc:
        if "raised ValueError" in str(exc):
            return
        raise
    raise CheckFailed("inject with targets ('no_such_layer',) replaced nothing and returned; it should raise a "
                      "ValueError that names the targets, since a typo would otherwise fine-tune nothing.")


@chapter.check(_LORA, points=1, hint="merge_all(model) walks the model like inject and replaces every "
               f"{_LORA} by its merged() nn.Linear, at the same place (setattr on the parent), so the model's "
               "state_dict has its original names again and loads into the plain model.")
def lora_merge_all_gives_back_a_plain_model(ns: Namespace) -> None:
    from llmcourse.models.gpt import GPT

    model = _model(ns)
    names = _inject(ns, model)
    run_learner("the injected model", lambda: beside_the_learner(ns, _move_adapters, model, names))
    ids = torch.randint(0, 20, (2, 8), generator=seeded_generator(15))
    with torch.no_grad():
        tuned = run_learner("the model with adapters", lambda: model(ids))
    merged_names = call_method_inplace(ns[_LORA], _LORA, "merge_all", model)
    expect(list(merged_names or []) == names, f"merge_all should return the names it merged, {names}; got "
           f"{merged_names}")
    left = [name for name, m in model.named_modules() if isinstance(m, ns[_LORA])]
    expect(not left, f"after merge_all no {_LORA} should be left, but these are: {left}")
    with torch.no_grad():
        expect_close(model(ids), tuned, "the merged model's logits (they must equal the model with adapters)")
        plain = GPT(model.config)
        keys, want = sorted(model.state_dict()), sorted(plain.state_dict())
        expect(keys == want, f"the merged model's state_dict should have the plain GPT's names; extra: "
               f"{sorted(set(keys) - set(want))[:4]}, missing: {sorted(set(want) - set(keys))[:4]}")
        plain.load_state_dict(model.state_dict())
        expect_close(plain(ids), tuned, "a plain GPT loaded with the merged weights")


# --------------------------------------------------------------------------- an experiment: what a rank-r adapter can learn

def _rank_r_best_error(delta_w: torch.Tensor, r: int) -> float:
    """Eckart-Young: the smallest ||M - delta_w||_F / ||delta_w||_F over matrices M of rank <= r (from the SVD)."""
    s = torch.linalg.svdvals(delta_w.double())
    return float(s[r:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt())


def _fit_error(ns: Namespace, delta_w: torch.Tensor, r: int, what: str) -> float:
    got = as_number(call(ns, "lora_fit_error", delta_w.clone(), r, steps=500), what)
    expect(math.isfinite(got) and got >= 0, f"{what} returned {got}; a relative error is a number >= 0.")
    return got


def _low_rank_change(seed: int, d_out: int = 12, d_in: int = 10, rank: int = 2) -> torch.Tensor:
    return 3 * seeded_randn(d_out, rank, seed=seed) @ seeded_randn(rank, d_in, seed=seed + 1)


@chapter.check("lora_fit_error", points=1, hint="Start as a LoRA layer does: A small and random, B all zeros (if "
               "both start at zero, neither ever gets a gradient). Train BOTH with torch.optim.Adam (lr 0.02), "
               "zero the gradients every step, and return ||B A - delta_w|| / ||delta_w|| (Frobenius norms).")
def lora_fit_learns_a_low_rank_change(ns: Namespace) -> None:
    delta_w = _low_rank_change(100)
    for r in (2, 3):
        what = f"lora_fit_error(a rank-2 change (12, 10), r={r})"
        got = _fit_error(ns, delta_w, r, what)
        expect(got < 0.02, f"{what} returned {got:.4f}: an adapter of rank {r} can express a change of rank 2 "
                           f"exactly, so 500 steps of training should bring the relative error below 0.02.")


@chapter.check("lora_fit_error", points=1, hint="Return the RELATIVE error, ||B A - delta_w|| / ||delta_w|| (Frobenius "
               "norms, not squared, not a mean), measured after training. A full-rank change cannot be matched by "
               "rank r: the best possible error comes from the singular values the adapter cannot reach.")
def lora_fit_gets_the_best_rank_r_error(ns: Namespace) -> None:
    delta_w = 3 * seeded_randn(12, 10, seed=101)
    for r in (1, 4):
        what = f"lora_fit_error(a full-rank change (12, 10), r={r})"
        got, best = _fit_error(ns, delta_w, r, what), _rank_r_best_error(delta_w, r)
        expect(got >= best - 1e-3, f"{what} returned {got:.4f}, but no matrix of rank {r} comes closer than "
                                   f"{best:.4f} (from the singular values of delta_w): is it the relative error "
                                   f"of B A after training?")
        expect(got <= best + 0.02, f"{what} returned {got:.4f}; the best rank-{r} matrix has the relative error "
                                   f"{best:.4f}, and 500 steps of Adam get within 0.02 of it.")


# --------------------------------------------------------------------------- a derivation: the gradient of the DPO loss


def _dpo_grad_reference(pc, pr, rc, rr, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    chosen = pc.detach().double().requires_grad_(True)
    rejected = pr.detach().double().requires_grad_(True)
    # Rafailov et al. 2023, eq. 7, averaged over the pairs
    margin = beta * (chosen - rc.double()) - beta * (rejected - rr.double())
    return torch.autograd.grad(-F.logsigmoid(margin).mean(), (chosen, rejected))


def _dpo_grads(ns: Namespace, logps: list[torch.Tensor], beta: float, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    with forbid_autograd("dpo_grad"):
        got = call(ns, "dpo_grad", *[t.clone() for t in logps], beta)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(f"{what} should return two tensors: (grad_policy_chosen, grad_policy_rejected).")
    return got[0], got[1]


def _expect_dpo_grad(ns: Namespace, logps: list[torch.Tensor], beta: float, what: str) -> None:
    want_chosen, want_rejected = _dpo_grad_reference(*logps, beta)
    got_chosen, got_rejected = _dpo_grads(ns, logps, beta, f"dpo_grad {what}")
    expect_close(got_chosen, want_chosen, f"dpo_grad {what}: the gradient for the chosen answers", atol=1e-10,
                 rtol=1e-7)
    expect_close(got_rejected, want_rejected, f"dpo_grad {what}: the gradient for the rejected answers", atol=1e-10,
                 rtol=1e-7)


@chapter.check("dpo_grad", points=1, hint="Call the margin z = beta * (chosen gain - rejected gain). The derivative "
               "of -log sigmoid(z) with respect to z is -sigmoid(-z) (or -(1 - sigmoid(z))); then the chain rule "
               "through z, and the mean over the pairs divides by n_pairs.")
def dpo_grad_matches_autograd(ns: Namespace) -> None:
    for beta, seed in [(0.1, 120), (0.5, 124)]:
        logps = [t.double() for t in _logps(seed)]
        _expect_dpo_grad(ns, logps, beta, f"on 6 pairs with beta={beta}")


@chapter.check("dpo_grad", points=1, hint="The loss depends only on the DIFFERENCE of the two gains, so the chosen and "
               "the rejected log-probability get pushes of the same size and opposite sign. At the start (policy = "
               "reference) the margin is 0 and sigmoid(0) = 1/2.")
def dpo_grad_at_the_start(ns: Namespace) -> None:
    pc, pr, _, _ = [t.double() for t in _logps(128, n=4)]
    beta = 0.2
    got_chosen, got_rejected = _dpo_grads(ns, [pc, pr, pc.clone(), pr.clone()], beta,
                                          "dpo_grad with policy = reference")
    push = beta * 0.5 / 4
    expect_close(got_chosen, torch.full((4,), -push, dtype=torch.float64),
                 "dpo_grad with policy = reference (beta 0.2, 4 pairs): the gradient for the chosen answers")
    expect_close(got_rejected, torch.full((4,), push, dtype=torch.float64),
                 "dpo_grad with policy = reference (beta 0.2, 4 pairs): the gradient for the rejected answers")


@chapter.check("dpo_grad", points=1, hint="Log-probabilities of whole answers can differ by thousands: compute the "
               "sigmoid with torch.sigmoid, not as exp(...) / (1 + exp(...)), whose exp overflows to inf.")
def dpo_grad_is_stable(ns: Namespace) -> None:
    logps = [torch.tensor([-5.0, -4000.0, -30.0], dtype=torch.float64),
             torch.tensor([-4000.0, -5.0, -20.0], dtype=torch.float64),
             torch.full((3,), -10.0, dtype=torch.float64), torch.full((3,), -10.0, dtype=torch.float64)]
    _expect_dpo_grad(ns, logps, 1.0, "with log-probability gaps near 4000 (beta=1)")

