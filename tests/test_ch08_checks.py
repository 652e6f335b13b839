"""Tests of chapter 08's graded checks: they pass correct solutions (written here independently, and the
package's own functions), fail the untouched stub and every common mistake, and are quick and deterministic."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from check_contract import contract_tests
from wrong_solutions.ch08 import _Loop as _Build08  # the correct loop the wrong ones break

from llmcourse.grading.chapters.ch08 import chapter
from llmcourse.pretraining import evaluation
from llmcourse.pretraining.data import TokenWindows
from llmcourse.grading.checks import run_checks
from llmcourse.pretraining.schedules import warmup_cosine_lr

# --------------------------------------------------------------------------- correct solutions, written here


def _make_windows(ids, context_length):
    if context_length < 1:
        raise ValueError("context_length must be >= 1")
    n = (len(ids) - 1) // context_length
    if n < 1:
        raise ValueError("too few tokens")
    starts = torch.arange(n) * context_length
    index = starts[:, None] + torch.arange(context_length)
    return ids[index], ids[index + 1]


def _next_token_loss(logits, ids):
    logp = logits[:, :-1].log_softmax(-1)
    return -logp.gather(-1, ids[:, 1:, None]).mean()


def _warmup_cosine_lr(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    if step < warmup_steps:
        return step / warmup_steps * max_lr
    t = min(step, total_steps) - warmup_steps
    span = total_steps - warmup_steps
    return min_lr + (max_lr - min_lr) * (math.cos(math.pi * t / span) + 1) / 2


def _clip_grad_norm(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.cat([g.flatten() for g in grads]).norm()
    if total > max_norm:
        for g in grads:
            g *= max_norm / total
    return total


def _accumulate_gradients(model, loss_fn, micro_batches):
    for p in model.parameters():
        p.grad = None
    total = 0.0
    for x, y in micro_batches:
        loss = loss_fn(model(x), y)
        (loss / len(micro_batches)).backward()
        total += loss.item()
    return total / len(micro_batches)


def _perplexity(mean_losses, n_tokens):
    losses = torch.as_tensor(mean_losses, dtype=torch.float64)
    counts = torch.as_tensor(n_tokens, dtype=torch.float64)
    return math.exp(float((losses * counts).sum() / counts.sum()))


def _initial_loss(vocab_size, init_std, n_layers=2, d_model=64):
    from llmcourse.models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=vocab_size, context_length=64, d_model=d_model, n_layers=n_layers, n_heads=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".weight") and p.dim() == 2:      # the embeddings and every Linear layer
                p.normal_(0.0, init_std)
            elif name.endswith(".bias") and "ln" not in name:  # Linear biases; LayerNorms keep theirs
                p.zero_()
        ids = torch.randint(0, vocab_size, (16, 65))
        log_probs = torch.log_softmax(model(ids[:, :-1]).double(), dim=-1)
        return -log_probs.gather(-1, ids[:, 1:, None]).mean().item()


def _adamw_after_steps(param, grad, steps, lr, weight_decay, betas=(0.9, 0.95), eps=1e-8):
    # the bias-corrected moments of a constant gradient are g and g^2 at every step
    update = lr * grad / (grad.abs() + eps)
    if weight_decay == 0:
        return param - steps * update
    keep = (1 - lr * weight_decay) ** steps
    return keep * param - (1 - keep) * update / (lr * weight_decay)


def _bigram_table(ids, vocab_size, k):
    if k <= 0 or ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError("k must be > 0 and ids within the vocabulary")
    counts = torch.bincount(ids[:-1] * vocab_size + ids[1:], minlength=vocab_size ** 2).double()
    counts = counts.view(vocab_size, vocab_size)
    return (counts + k) / (counts.sum(1, keepdim=True) + k * vocab_size)


def _bits_per_byte(mean_loss, n_tokens, n_bytes):
    if n_tokens < 1 or n_bytes < 1:
        raise ValueError("need at least one token and one byte")
    return mean_loss * n_tokens / (n_bytes * math.log(2))


CORRECT = {
    "TrainingLoop": _Build08,
    "make_windows": _make_windows,
    "next_token_loss": _next_token_loss,
    "warmup_cosine_lr": _warmup_cosine_lr,
    "clip_grad_norm": _clip_grad_norm,
    "accumulate_gradients": _accumulate_gradients,
    "perplexity": _perplexity,
    "initial_loss": _initial_loss,
    "adamw_after_steps": _adamw_after_steps,
    "bigram_table": _bigram_table,
    "bits_per_byte": _bits_per_byte,
}


def _package_windows(ids, context_length):
    windows = TokenWindows(ids, context_length)
    return torch.stack([windows[i][0] for i in range(len(windows))]), torch.stack(
        [windows[i][1] for i in range(len(windows))])


def _torch_clip(parameters, max_norm):
    return torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)


def _package_bits_per_byte(mean_loss, n_tokens, n_bytes):
    if n_tokens < 1:
        raise ValueError("need at least one token")
    return evaluation.bits_per_byte(mean_loss * n_tokens, n_bytes)   # the package takes the summed loss


PACKAGE = {
    "make_windows": _package_windows,
    "warmup_cosine_lr": warmup_cosine_lr,
    "next_token_loss": lambda logits, ids: F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:]),
    "bits_per_byte": _package_bits_per_byte,
}


# --------------------------------------------------------------------------- the tests


(test_chapter_registers_its_exercises, test_checks_pass_for_a_correct_implementation,
 test_the_package_functions_pass_the_checks,
 test_checks_are_quick_and_deterministic) = contract_tests(chapter, "08", CORRECT, PACKAGE, at_least=6)


def test_a_stub_fails_every_check():
    def stub(*args, **kwargs):
        raise NotImplementedError

    results = run_checks(chapter, {name: stub for name in CORRECT})
    assert results and not any(r.passed for r in results)
    assert all("not written yet" in r.message for r in results)


def test_calling_torch_clip_is_refused():
    results = run_checks(chapter, {"clip_grad_norm": _torch_clip}, "clip_grad_norm")
    assert not any(r.passed for r in results)
    assert "write `clip_grad_norm` yourself" in results[0].message



def test_accumulation_check_would_notice_a_big_batch_step():
    """The micro-batches really differ: one micro-batch's gradient is not the big batch's."""
    from llmcourse.grading.chapters.ch08 import _accumulation_setup, _micro_batches

    model, big, x, y, _ = _accumulation_setup(4)
    (xb, yb) = _micro_batches(x, y, 4)[0]
    F.cross_entropy(model(xb), yb).backward()
    assert not torch.allclose(next(model.parameters()).grad, next(big.parameters()).grad, atol=1e-3)
