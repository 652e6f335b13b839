"""Common mistakes in chapter 09's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------- mask_prompt_labels


def mask_off_by_one(ids, prompt_length):
    """Masks one token too few: the last prompt token (the space after "A:") is still trained on."""
    if not 0 <= prompt_length <= len(ids):
        raise ValueError("bad prompt_length")
    labels = ids.clone()
    labels[:max(prompt_length - 1, 0)] = -100
    return labels


def mask_the_answer(ids, prompt_length):
    """Masks the answer and trains on the prompt: exactly backwards."""
    if not 0 <= prompt_length <= len(ids):
        raise ValueError("bad prompt_length")
    labels = ids.clone()
    labels[prompt_length:] = -100
    return labels


def mask_in_place(ids, prompt_length):
    """Writes -100 into the ids themselves, destroying the model's input."""
    if not 0 <= prompt_length <= len(ids):
        raise ValueError("bad prompt_length")
    ids[:prompt_length] = -100
    return ids


def mask_with_zero(ids, prompt_length):
    """Uses 0 instead of -100: token 0 becomes a training target on every prompt position."""
    if not 0 <= prompt_length <= len(ids):
        raise ValueError("bad prompt_length")
    labels = ids.clone()
    labels[:prompt_length] = 0
    return labels


def mask_unchecked(ids, prompt_length):
    """Right for valid lengths, but a too-long prompt silently masks everything (and -1 masks all but one)."""
    labels = ids.clone()
    labels[:prompt_length] = -100
    return labels


# --------------------------------------------------------------------------- sft_loss


def sft_loss_no_shift(logits, labels):
    """Scores each position's own token instead of the next one."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def sft_loss_shift_wrong_way(logits, labels):
    """Pairs the logits at t + 1 with the label at t."""
    return F.cross_entropy(logits[:, 1:].reshape(-1, logits.shape[-1]), labels[:, :-1].reshape(-1),
                           ignore_index=-100)


def sft_loss_counts_masked_positions(logits, labels):
    """Sums the answer tokens' losses but divides by every position."""
    targets = labels[:, 1:]
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return -(logps * (targets != -100)).sum() / targets.numel()


def sft_loss_mean_of_rows(logits, labels):
    """Averages each row first, then the rows: short answers weigh as much as long ones."""
    rows = []
    for row_logits, row_labels in zip(logits, labels):
        rows.append(F.cross_entropy(row_logits[:-1], row_labels[1:], ignore_index=-100))
    return torch.stack(rows).mean()


def sft_loss_prompt_as_class_zero(logits, labels):
    """Replaces -100 by 0 instead of ignoring it, so the prompt trains the model to say token 0."""
    targets = labels[:, 1:].clamp(min=0)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1))


# --------------------------------------------------------------------------- lora_forward


def lora_forward_no_scale(x, W, b, A, B, alpha, r):
    """Forgets the alpha / r scale."""
    return F.linear(x, W, b) + (x @ A.T) @ B.T


def lora_forward_scale_upside_down(x, W, b, A, B, alpha, r):
    """Scales by r / alpha."""
    return F.linear(x, W, b) + (r / alpha) * (x @ A.T) @ B.T


def lora_forward_drops_bias(x, W, b, A, B, alpha, r):
    """Leaves out the frozen layer's bias."""
    return x @ W.T + (alpha / r) * (x @ A.T) @ B.T


def lora_forward_adapter_only(x, W, b, A, B, alpha, r):
    """Returns only the adapter's path, as if it replaced the layer instead of adding to it."""
    return (alpha / r) * (x @ A.T) @ B.T


# --------------------------------------------------------------------------- merge_lora_weights


def merge_no_scale(W, A, B, alpha, r):
    """Forgets the alpha / r scale."""
    return W + B @ A


def merge_in_place(W, A, B, alpha, r):
    """Adds into the frozen W itself."""
    W += (alpha / r) * B @ A
    return W


def merge_transposed(W, A, B, alpha, r):
    """Adds the update transposed, shape (in, out) instead of W's (out, in)."""
    return W + (alpha / r) * (B @ A).T


# --------------------------------------------------------------------------- pairwise_reward_loss


def reward_log_of_sigmoid(r_chosen, r_rejected):
    """log(sigmoid(z)): sigmoid(-1000) is 0 in float32, and the loss becomes inf."""
    return -torch.log(torch.sigmoid(r_chosen - r_rejected)).mean()


def reward_sign_swapped(r_chosen, r_rejected):
    """Rewards the rejected answer."""
    return -F.logsigmoid(r_rejected - r_chosen).mean()


def reward_sum(r_chosen, r_rejected):
    """Sums over the pairs instead of averaging."""
    return -F.logsigmoid(r_chosen - r_rejected).sum()


# --------------------------------------------------------------------------- dpo_loss


def dpo_without_reference(pc, pr, rc, rr, beta):
    """Forgets the reference model: compares the policy's raw log-probabilities."""
    chosen, rejected = beta * pc, beta * pr
    return -F.logsigmoid(chosen - rejected).mean(), chosen, rejected


def dpo_log_of_sigmoid(pc, pr, rc, rr, beta):
    """log(sigmoid(z)) overflows when the margin is in the thousands."""
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    return -torch.log(torch.sigmoid(chosen - rejected)).mean(), chosen, rejected


def dpo_swapped(pc, pr, rc, rr, beta):
    """Pushes the rejected answer up."""
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    return -F.logsigmoid(rejected - chosen).mean(), chosen, rejected


def dpo_beta_outside(pc, pr, rc, rr, beta):
    """Multiplies the loss by beta instead of the log-ratios."""
    chosen, rejected = pc - rc, pr - rr
    return -beta * F.logsigmoid(chosen - rejected).mean(), beta * chosen, beta * rejected


# --------------------------------------------------------------------------- distillation_loss


def distill_without_t_squared(student_logits, teacher_logits, temperature=2.0):
    """Forgets the T² factor."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.softmax(teacher_logits / t, -1), reduction="batchmean")


def distill_kl_swapped(student_logits, teacher_logits, temperature=2.0):
    """KL(student || teacher) instead of KL(teacher || student)."""
    t = temperature
    return t * t * F.kl_div(F.log_softmax(teacher_logits / t, -1), F.softmax(student_logits / t, -1),
                            reduction="batchmean")


def distill_log_of_softmax(student_logits, teacher_logits, temperature=2.0):
    """log(softmax(...)): a probability that rounds to 0 gives log 0 = -inf."""
    t = temperature
    p_s, p_t = torch.softmax(student_logits / t, -1), torch.softmax(teacher_logits / t, -1)
    return t * t * (p_t * (torch.log(p_t) - torch.log(p_s))).nan_to_num(0.0).sum(-1).mean()


def distill_mean_over_entries(student_logits, teacher_logits, temperature=2.0):
    """Averages over rows * vocabulary entries instead of over rows (like kl_div(reduction="mean"))."""
    t = temperature
    log_s, log_t = F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1)
    return t * t * (log_t.exp() * (log_t - log_s)).mean()


def distill_student_not_scaled(student_logits, teacher_logits, temperature=2.0):
    """Softens only the teacher, not the student."""
    t = temperature
    return t * t * F.kl_div(F.log_softmax(student_logits, -1), F.softmax(teacher_logits / t, -1),
                            reduction="batchmean")



# --------------------------------------------------------------------------- LoRALinear (build the module)

import math as _math  # noqa: E402

from torch import nn as _nn  # noqa: E402


class _LoRA(_nn.Module):
    """A correct layer whose subclasses each break one thing."""
    zero_b, freeze, divide_by_r, merge_scaled = True, True, True, True

    def __init__(self, base, r=8, alpha=16.0):
        super().__init__()
        self.base = base
        if self.freeze:
            self.base.requires_grad_(False)
        self.scale = alpha / r if self.divide_by_r else alpha
        self.A = _nn.Parameter(torch.randn(r, base.in_features) / _math.sqrt(base.in_features))
        start = torch.zeros if self.zero_b else torch.randn
        self.B = _nn.Parameter(start(base.out_features, r))

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T

    def merged(self):
        linear = _nn.Linear(self.base.in_features, self.base.out_features)
        with torch.no_grad():
            linear.weight.copy_(self.base.weight + (self.scale if self.merge_scaled else 1.0) * self.B @ self.A)
            linear.bias.copy_(self.base.bias)
        return linear

    @classmethod
    def inject(cls, model, target_names=("q_proj", "v_proj"), r=8, alpha=16.0):
        model.requires_grad_(False)
        found = [(name, m) for name, m in model.named_modules()
                 if type(m) is _nn.Linear and name.rpartition(".")[2] in target_names]
        if not found:
            raise ValueError(f"no nn.Linear named {tuple(target_names)} in the model")
        for name, linear in found:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, cls(linear, r, alpha))
        return [name for name, _ in found]

    @staticmethod
    def merge_all(model):
        found = [(name, m) for name, m in model.named_modules() if isinstance(m, _LoRA)]
        for name, layer in found:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer.merged())
        return [name for name, _ in found]


class LoRARandomB(_LoRA):
    """Starts B at random: the new layer no longer equals the base layer."""
    zero_b = False


class LoRANotFrozen(_LoRA):
    """Leaves the base layer trainable."""
    freeze = False


class LoRAScaledByAlpha(_LoRA):
    """Scales by alpha instead of alpha / r."""
    divide_by_r = False


class LoRAMergeForgetsScale(_LoRA):
    """Merges B A without the alpha / r factor."""
    merge_scaled = False


# --------------------------------------------------------------------------- the experiment: lora_fit_error


def _fit(delta_w, r, steps, init_a=True, train_a=True, zero_grad=True):
    n_out, n_in = delta_w.shape
    generator = torch.Generator().manual_seed(0)
    A = torch.randn(r, n_in, generator=generator) / n_in ** 0.5 if init_a else torch.zeros(r, n_in)
    A.requires_grad_(train_a)
    B = torch.zeros(n_out, r, requires_grad=True)
    optimizer = torch.optim.Adam([A, B] if train_a else [B], lr=0.02)
    for _ in range(steps):
        if zero_grad:
            optimizer.zero_grad()
        (B @ A - delta_w).pow(2).mean().backward()
        optimizer.step()
    return (B @ A - delta_w).detach()


def lora_fit_both_zero(delta_w, r, steps=500):
    """Starts A at zero as well as B: neither ever gets a gradient, and nothing is learned."""
    return (torch.linalg.norm(_fit(delta_w, r, steps, init_a=False)) / torch.linalg.norm(delta_w)).item()


def lora_fit_freezes_a(delta_w, r, steps=500):
    """Trains only B and leaves the random A frozen, so B A is stuck in A's random row space."""
    return (torch.linalg.norm(_fit(delta_w, r, steps, train_a=False)) / torch.linalg.norm(delta_w)).item()


def lora_fit_absolute_error(delta_w, r, steps=500):
    """Returns ||B A - delta_w|| without dividing by ||delta_w||."""
    return torch.linalg.norm(_fit(delta_w, r, steps)).item()


def lora_fit_returns_the_loss(delta_w, r, steps=500):
    """Returns the mean squared error it trained on instead of the relative Frobenius error."""
    return _fit(delta_w, r, steps).pow(2).mean().item()


def lora_fit_never_zeroes_gradients(delta_w, r, steps=500):
    """Forgets optimizer.zero_grad(): every step follows the sum of all the gradients so far."""
    return (torch.linalg.norm(_fit(delta_w, r, steps, zero_grad=False)) / torch.linalg.norm(delta_w)).item()


# --------------------------------------------------------------------------- the derivation: dpo_grad


def _dpo_margin(pc, pr, rc, rr, beta):
    return beta * (pc - rc) - beta * (pr - rr)


def dpo_grad_sign_flipped(pc, pr, rc, rr, beta):
    """Gives the direction that lowers the chosen answer and raises the rejected one (the ascent direction)."""
    push = beta * torch.sigmoid(-_dpo_margin(pc, pr, rc, rr, beta)) / len(pc)
    return push, -push


def dpo_grad_sigmoid_of_the_margin(pc, pr, rc, rr, beta):
    """Uses sigmoid(z) where sigmoid(-z) belongs: pushes hardest on the pairs that are already right."""
    push = beta * torch.sigmoid(_dpo_margin(pc, pr, rc, rr, beta)) / len(pc)
    return -push, push


def dpo_grad_of_the_sum(pc, pr, rc, rr, beta):
    """Forgets that the loss is a mean over the pairs."""
    push = beta * torch.sigmoid(-_dpo_margin(pc, pr, rc, rr, beta))
    return -push, push


def dpo_grad_without_beta(pc, pr, rc, rr, beta):
    """Drops the chain rule's factor beta (keeps it only inside the margin)."""
    push = torch.sigmoid(-_dpo_margin(pc, pr, rc, rr, beta)) / len(pc)
    return -push, push


def dpo_grad_naive_sigmoid(pc, pr, rc, rr, beta):
    """Writes sigmoid(-z) as exp(-z) / (1 + exp(-z)): inf / inf = nan for margins of -4000."""
    e = torch.exp(-_dpo_margin(pc, pr, rc, rr, beta))
    push = beta * (e / (1 + e)) / len(pc)
    return -push, push

class LoRAInjectLeavesTheRestTrainable(_LoRA):
    """Freezes only the wrapped layers, so the rest of the model is still fine-tuned in full."""

    @classmethod
    def inject(cls, model, target_names=("q_proj", "v_proj"), r=8, alpha=16.0):
        trainable = [p for p in model.parameters() if p.requires_grad]
        names = super().inject(model, target_names, r, alpha)
        for p in trainable:
            if not any(p is m.base.weight or p is m.base.bias for m in model.modules() if isinstance(m, _LoRA)):
                p.requires_grad_(True)
        return names


class LoRAInjectNeverRefuses(_LoRA):
    """Returns an empty list when no layer has a target's name, so a typo silently fine-tunes nothing."""

    @classmethod
    def inject(cls, model, target_names=("q_proj", "v_proj"), r=8, alpha=16.0):
        model.requires_grad_(False)
        found = [(name, m) for name, m in model.named_modules()
                 if type(m) is _nn.Linear and name.rpartition(".")[2] in target_names]
        for name, linear in found:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, cls(linear, r, alpha))
        return [name for name, _ in found]


class LoRAMergeAllOnlyTopLevel(_LoRA):
    """Looks only at the model's direct children, so the adapters deep inside the blocks stay."""

    @staticmethod
    def merge_all(model):
        found = [(name, m) for name, m in model.named_children() if isinstance(m, _LoRA)]
        for name, layer in found:
            setattr(model, name, layer.merged())
        return [name for name, _ in found]


class LoRAMergeAllKeepsTheWrapper(_LoRA):
    """Folds the update into the base weight but keeps the wrapper, so the state_dict still has base/A/B names."""

    @staticmethod
    def merge_all(model):
        found = [(name, m) for name, m in model.named_modules() if isinstance(m, _LoRA)]
        with torch.no_grad():
            for _, layer in found:
                layer.base.weight += layer.scale * layer.B @ layer.A
                layer.B.zero_()
        return [name for name, _ in found]


WRONG: dict[str, list[Callable]] = {
    "LoRALinear": [LoRARandomB, LoRANotFrozen, LoRAScaledByAlpha, LoRAMergeForgetsScale,
                   LoRAInjectLeavesTheRestTrainable, LoRAInjectNeverRefuses, LoRAMergeAllOnlyTopLevel,
                   LoRAMergeAllKeepsTheWrapper],
    "mask_prompt_labels": [mask_off_by_one, mask_the_answer, mask_in_place, mask_with_zero, mask_unchecked],
    "sft_loss": [sft_loss_no_shift, sft_loss_shift_wrong_way, sft_loss_counts_masked_positions,
                 sft_loss_mean_of_rows, sft_loss_prompt_as_class_zero],
    "lora_forward": [lora_forward_no_scale, lora_forward_scale_upside_down, lora_forward_drops_bias,
                     lora_forward_adapter_only],
    "merge_lora_weights": [merge_no_scale, merge_in_place, merge_transposed],
    "pairwise_reward_loss": [reward_log_of_sigmoid, reward_sign_swapped, reward_sum],
    "dpo_loss": [dpo_without_reference, dpo_log_of_sigmoid, dpo_swapped, dpo_beta_outside],
    "distillation_loss": [distill_without_t_squared, distill_kl_swapped, distill_log_of_softmax,
                          distill_mean_over_entries, distill_student_not_scaled],
    "lora_fit_error": [lora_fit_both_zero, lora_fit_freezes_a, lora_fit_absolute_error, lora_fit_returns_the_loss,
                       lora_fit_never_zeroes_gradients],
    "dpo_grad": [dpo_grad_sign_flipped, dpo_grad_sigmoid_of_the_margin, dpo_grad_of_the_sum, dpo_grad_without_beta,
                 dpo_grad_naive_sigmoid],
}
