"""Common mistakes in chapter 08's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------- make_windows


def windows_not_shifted(ids, context_length):
    """Targets equal to the inputs: the model learns to copy, not to predict."""
    if context_length < 1 or len(ids) < context_length + 1:
        raise ValueError("bad input")
    n = (len(ids) - 1) // context_length
    x = ids[:n * context_length].view(n, context_length)
    return x, x.clone()


def windows_overlapping(ids, context_length):
    """Stride 1 instead of context_length: every start position, many overlapping windows."""
    if context_length < 1 or len(ids) < context_length + 1:
        raise ValueError("bad input")
    w = ids.unfold(0, context_length + 1, 1)
    return w[:, :-1], w[:, 1:]


def windows_count_off_by_one(ids, context_length):
    """len(ids) // T windows: the last one runs past the end (or one too few are made)."""
    if context_length < 1 or len(ids) < context_length + 1:
        raise ValueError("bad input")
    n = len(ids) // context_length - 1
    w = ids[:n * context_length + 1]
    return (torch.stack([w[i * context_length:(i + 1) * context_length] for i in range(n)]),
            torch.stack([w[i * context_length + 1:(i + 1) * context_length + 1] for i in range(n)]))


def windows_unchecked(ids, context_length):
    """Right windows, but no error for context_length 0 or a too-short corpus."""
    n = max((len(ids) - 1) // max(context_length, 1), 0)
    x = torch.stack([ids[i * context_length:(i + 1) * context_length] for i in range(n)]) if n else ids[:0]
    y = torch.stack([ids[i * context_length + 1:(i + 1) * context_length + 1] for i in range(n)]) if n else ids[:0]
    return x, y


# --------------------------------------------------------------------------- next_token_loss


def loss_not_shifted(logits, ids):
    """Scores the logits at position t against the token AT t (the one the model already sees)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))


def loss_shifted_backwards(logits, ids):
    """Pairs the logits at t + 1 with the token at t."""
    return F.cross_entropy(logits[:, 1:].reshape(-1, logits.shape[-1]), ids[:, :-1].reshape(-1))


def loss_summed(logits, ids):
    """Sums over the tokens instead of taking the mean."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")


def loss_log_of_softmax(logits, ids):
    """log(softmax(...)) written by hand: exp overflows for large logits."""
    probs = logits.exp() / logits.exp().sum(-1, keepdim=True)
    picked = probs[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    return -picked.log().mean()


# --------------------------------------------------------------------------- warmup_cosine_lr


def lr_warmup_off_by_one(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """Warmup (step + 1) / W: never 0, reaches max_lr one step early."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_ignores_min_lr(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """Cosine down to 0 whatever min_lr says."""
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    return max_lr * 0.5 * (1 + math.cos(math.pi * progress))


def lr_cosine_from_step_zero(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """Progress measured from step 0 (step / total_steps), so the cosine has already started at warmup's end."""
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = min(step / total_steps, 1.0)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_not_clamped(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """No floor after total_steps: the cosine climbs back up."""
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- clip_grad_norm


def clip_per_parameter(parameters, max_norm):
    """Clips each parameter's gradient to max_norm on its own (not one global norm)."""
    params = [p for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
    for p in params:
        norm = p.grad.norm()
        if norm > max_norm:
            p.grad.mul_(max_norm / norm)
    return total


def clip_returns_norm_after(parameters, max_norm):
    """Returns the norm after clipping (at most max_norm) instead of the measured one."""
    params = [p for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
    scale = min(1.0, max_norm / float(total))
    for p in params:
        p.grad.mul_(scale)
    return total * scale


def clip_always_rescales(parameters, max_norm):
    """Rescales every gradient to norm max_norm, even small ones (that is normalising, not clipping)."""
    params = [p for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
    for p in params:
        p.grad.mul_(max_norm / total)
    return total


def clip_reads_generator_twice(parameters, max_norm):
    """Reads ``parameters`` twice; a generator is empty the second time, so nothing gets clipped."""
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in parameters if p.grad is not None))
    if total > max_norm:
        for p in parameters:
            if p.grad is not None:
                p.grad.mul_(max_norm / total)
    return total


def clip_sum_of_norms(parameters, max_norm):
    """Adds the per-parameter norms instead of the squares."""
    params = [p for p in parameters if p.grad is not None]
    total = sum(p.grad.norm() for p in params)
    if total > max_norm:
        for p in params:
            p.grad.mul_(max_norm / total)
    return total


# --------------------------------------------------------------------------- accumulate_gradients


def accumulate_without_dividing(model, loss_fn, micro_batches):
    """Forgets the 1/k: the gradient is k times too large."""
    model.zero_grad()
    losses = []
    for x, y in micro_batches:
        loss = loss_fn(model(x), y)
        loss.backward()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def accumulate_without_zeroing(model, loss_fn, micro_batches):
    """Adds to whatever was already in .grad."""
    losses = []
    for x, y in micro_batches:
        loss = loss_fn(model(x), y)
        (loss / len(micro_batches)).backward()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def accumulate_returns_last_loss(model, loss_fn, micro_batches):
    """Right gradients, but returns the last micro-batch's loss."""
    model.zero_grad()
    for x, y in micro_batches:
        loss = loss_fn(model(x), y)
        (loss / len(micro_batches)).backward()
    return loss.item()


def accumulate_and_step(model, loss_fn, micro_batches):
    """Takes an SGD step after each micro-batch: that is k small steps, not one big one."""
    losses = []
    for x, y in micro_batches:
        model.zero_grad()
        loss = loss_fn(model(x), y)
        (loss / len(micro_batches)).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        losses.append(loss.item())
    return sum(losses) / len(losses)


# --------------------------------------------------------------------------- perplexity


def perplexity_of_sum(mean_losses, n_tokens):
    """exp of the summed batch losses."""
    return math.exp(sum(float(x) for x in mean_losses))


def perplexity_unweighted(mean_losses, n_tokens):
    """Averages the batch losses without weighting by their token counts."""
    losses = [float(x) for x in mean_losses]
    return math.exp(sum(losses) / len(losses))


def perplexity_mean_of_perplexities(mean_losses, n_tokens):
    """Averages the per-batch perplexities (weighted), not the losses."""
    losses, counts = [float(x) for x in mean_losses], [int(n) for n in n_tokens]
    return sum(math.exp(loss) * n for loss, n in zip(losses, counts)) / sum(counts)


def perplexity_in_bits(mean_losses, n_tokens):
    """Uses 2 ** loss, but the losses are in nats (natural log)."""
    losses, counts = [float(x) for x in mean_losses], [int(n) for n in n_tokens]
    return 2 ** (sum(loss * n for loss, n in zip(losses, counts)) / sum(counts))


# --------------------------------------------------------------------------- TrainingLoop (build the program)


class _Loop:
    """A correct training loop (the checks must pass it); the wrong ones below each change one part."""

    betas = (0.9, 0.95)

    def __init__(self, model, max_lr, warmup_steps, total_steps, min_lr=0.0, weight_decay=0.1, max_grad_norm=1.0):
        self.model, self.max_grad_norm = model, max_grad_norm
        self.plan = (max_lr, warmup_steps, total_steps, min_lr)
        self.optimizer = torch.optim.AdamW(self.groups(weight_decay), lr=max_lr, betas=self.betas)
        self.step_count = 0

    def groups(self, weight_decay):
        params = list(self.model.parameters())
        return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
                {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]

    def rate(self, step):
        max_lr, warmup, total, min_lr = self.plan
        if step < warmup:
            return max_lr * step / warmup
        if step >= total:
            return min_lr
        return min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2

    def loss(self, x, y):
        logits = self.model(x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    def clip(self):
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)

    def train_step(self, micro_batches):
        for group in self.optimizer.param_groups:
            group["lr"] = self.rate(self.step_count)
        self.optimizer.zero_grad()
        losses = []
        for x, y in micro_batches:
            loss = self.loss(x, y)
            (loss / len(micro_batches)).backward()
            losses.append(loss.item())
        self.clip()
        self.optimizer.step()
        self.step_count += 1
        return sum(losses) / len(losses)

    def state(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step_count}

    def save(self, path):
        import os
        temporary = f"{path}.partial"
        torch.save(self.state(), temporary)
        os.replace(temporary, path)

    def load(self, path):
        state = torch.load(path, weights_only=True)
        self.model.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = state.get("step", 0)


class LoopDecaysEverything(_Loop):
    """One parameter group: biases and LayerNorm weights decay towards zero as well."""

    def groups(self, weight_decay):
        return [{"params": list(self.model.parameters()), "weight_decay": weight_decay}]


class LoopWithAdamDefaults(_Loop):
    """Keeps AdamW's default betas (0.9, 0.999) instead of the (0.9, 0.95) asked for."""

    betas = (0.9, 0.999)


class LoopRateOneStepAhead(_Loop):
    """Counts the step before setting the rate: the first step already uses step 1's rate."""

    def rate(self, step):
        return super().rate(step + 1)


class LoopConstantRate(_Loop):
    """Never sets the learning rate: every step uses max_lr, no warmup and no decay."""

    def rate(self, step):
        return self.plan[0]


class LoopClipsEachParameter(_Loop):
    """Clips every parameter's gradient on its own instead of their norm together."""

    def clip(self):
        for p in self.model.parameters():
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_([p], self.max_grad_norm)


class LoopNeverClips(_Loop):
    """Forgets to clip."""

    def clip(self):
        pass


class LoopStepsEachMicroBatch(_Loop):
    """Takes an optimizer step after every micro-batch: accumulation without the accumulating."""

    def train_step(self, micro_batches):
        for group in self.optimizer.param_groups:
            group["lr"] = self.rate(self.step_count)
        losses = []
        for x, y in micro_batches:
            self.optimizer.zero_grad()
            loss = self.loss(x, y)
            loss.backward()
            self.clip()
            self.optimizer.step()
            losses.append(loss.item())
        self.step_count += 1
        return sum(losses) / len(losses)


class LoopNeverZeroes(_Loop):
    """Never zeroes the gradients: each step adds to the sum of all earlier ones."""

    def train_step(self, micro_batches):
        self.optimizer.zero_grad = lambda *args, **kwargs: None
        return super().train_step(micro_batches)


class LoopReturnsLastLoss(_Loop):
    """Returns the last micro-batch's loss instead of their mean."""

    def train_step(self, micro_batches):
        super().train_step(micro_batches)
        with torch.no_grad():
            return self.loss(*micro_batches[-1]).item()


class LoopSavesOnlyTheModel(_Loop):
    """Saves the model and the step but not the optimizer: Adam's moments restart from zero."""

    def state(self):
        return {"model": self.model.state_dict(), "step": self.step_count}


class LoopForgetsTheStep(_Loop):
    """Saves model and optimizer but not step_count: the resumed run restarts its warmup."""

    def state(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}


# --------------------------------------------------------------------------- initial_loss


def _fresh_loss(vocab_size, init_std, reinit=True, shift=True, reduction="mean"):
    from torch import nn

    from llmcourse.models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=vocab_size, context_length=64, d_model=64, n_layers=2, n_heads=4))
    if reinit:
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=init_std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
    ids = torch.randint(0, vocab_size, (16, 65))
    inputs, targets = (ids[:, :-1], ids[:, 1:]) if shift else (ids[:, :-1], ids[:, :-1])
    with torch.no_grad():
        logits = model(inputs)
    return float(F.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1), reduction=reduction))


def initial_loss_keeps_the_default_init(vocab_size, init_std, n_layers=2, d_model=64):
    """Never re-draws the weights, so init_std changes nothing."""
    return _fresh_loss(vocab_size, init_std, reinit=False)


def initial_loss_in_bits(vocab_size, init_std, n_layers=2, d_model=64):
    """Reports the loss in bits (log base 2) instead of nats."""
    return _fresh_loss(vocab_size, init_std) / math.log(2)


def initial_loss_summed(vocab_size, init_std, n_layers=2, d_model=64):
    """Sums the loss over the 1024 predicted tokens instead of averaging it."""
    return _fresh_loss(vocab_size, init_std, reduction="sum")


def initial_loss_not_shifted(vocab_size, init_std, n_layers=2, d_model=64):
    """Scores each position against its own token instead of the next one."""
    return _fresh_loss(vocab_size, init_std, shift=False)


# --------------------------------------------------------------------------- adamw_after_steps


def _adam_direction(grad, eps):
    return grad / (grad.abs() + eps)


def adamw_without_bias_correction(param, grad, steps, lr, weight_decay, betas=(0.9, 0.95), eps=1e-8):
    """Forgets the bias corrections: early steps use m = (1 - beta1^t) g and v = (1 - beta2^t) g^2."""
    p = param.clone()
    for t in range(1, min(steps, 10_000) + 1):
        m, v = (1 - betas[0] ** t) * grad, (1 - betas[1] ** t) * grad ** 2
        p = p * (1 - lr * weight_decay) - lr * m / (v.sqrt() + eps)
    return p


def adamw_decay_coupled(param, grad, steps, lr, weight_decay, betas=(0.9, 0.95), eps=1e-8):
    """Adds the decay to the gradient (Adam with L2), so the normalisation divides it away."""
    p = param.clone()
    for _ in range(min(steps, 10_000)):
        p = p - lr * _adam_direction(grad + weight_decay * p, eps)
    return p


def adamw_plain_sgd_step(param, grad, steps, lr, weight_decay, betas=(0.9, 0.95), eps=1e-8):
    """Moves by lr * g, as SGD would: the step then depends on the gradient's size."""
    a = 1 - lr * weight_decay
    if weight_decay == 0:
        return param - steps * lr * grad
    return a ** steps * param - (1 - a ** steps) * grad / weight_decay


def adamw_loops_over_the_steps(param, grad, steps, lr, weight_decay, betas=(0.9, 0.95), eps=1e-8):
    """Right for a few steps, but loops over all of them: a billion steps never finish."""
    p, u = param.clone(), _adam_direction(grad, eps)
    for _ in range(steps):
        p = p * (1 - lr * weight_decay) - lr * u
    return p


# --------------------------------------------------------------------------- bigram_table


def _bigram_ok(ids, vocab_size, k):
    if k <= 0 or ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError("bad input")


def _pair_counts(ids, vocab_size):
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)
    counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1, dtype=torch.float64), accumulate=True)
    return counts


def bigram_counts_every_token(ids, vocab_size, k):
    """Divides by how often a token occurs at all, counting the last token, which starts no pair."""
    _bigram_ok(ids, vocab_size, k)
    occurrences = torch.bincount(ids, minlength=vocab_size).double()
    return (_pair_counts(ids, vocab_size) + k) / (occurrences[:, None] + k * vocab_size)


def bigram_k_once(ids, vocab_size, k):
    """Adds k to the row total once instead of once per possible next token: rows no longer sum to 1."""
    _bigram_ok(ids, vocab_size, k)
    counts = _pair_counts(ids, vocab_size)
    return (counts + k) / (counts.sum(1, keepdim=True) + k)


def bigram_transposed(ids, vocab_size, k):
    """Row = next token, column = previous token: P(previous | next)."""
    _bigram_ok(ids, vocab_size, k)
    counts = _pair_counts(ids, vocab_size).T
    return (counts + k) / (counts.sum(1, keepdim=True) + k * vocab_size)


def bigram_float32(ids, vocab_size, k):
    """Right numbers, but in float32: the rows sum to 1 only to about 1e-7."""
    _bigram_ok(ids, vocab_size, k)
    counts = _pair_counts(ids, vocab_size).float()
    return (counts + k) / (counts.sum(1, keepdim=True) + k * vocab_size)


def bigram_unchecked(ids, vocab_size, k):
    """Right table, but accepts k = 0 (a division by zero for unseen rows) and ids outside the vocabulary."""
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)
    for a, b in zip(ids[:-1].tolist(), ids[1:].tolist()):
        counts[a % vocab_size, b % vocab_size] += 1
    return (counts + k) / (counts.sum(1, keepdim=True) + k * vocab_size)


# --------------------------------------------------------------------------- bits_per_byte


def _bpb_ok(n_tokens, n_bytes):
    if n_tokens < 1 or n_bytes < 1:
        raise ValueError("bad input")


def bpb_per_token(mean_loss, n_tokens, n_bytes):
    """Bits per token: forgets to spread the total over the bytes."""
    _bpb_ok(n_tokens, n_bytes)
    return mean_loss / math.log(2)


def bpb_in_nats(mean_loss, n_tokens, n_bytes):
    """Nats per byte: never converts to bits."""
    _bpb_ok(n_tokens, n_bytes)
    return mean_loss * n_tokens / n_bytes


def bpb_log10(mean_loss, n_tokens, n_bytes):
    """Divides by ln 10 instead of ln 2."""
    _bpb_ok(n_tokens, n_bytes)
    return mean_loss * n_tokens / (n_bytes * math.log(10))


def bpb_inverted(mean_loss, n_tokens, n_bytes):
    """Multiplies by bytes per token instead of tokens per byte."""
    _bpb_ok(n_tokens, n_bytes)
    return mean_loss * n_bytes / (n_tokens * math.log(2))


def bpb_unchecked(mean_loss, n_tokens, n_bytes):
    """Right formula, but an empty text gives a ZeroDivisionError (or 0) instead of a clear ValueError."""
    return mean_loss * n_tokens / (n_bytes * math.log(2)) if n_bytes else 0.0


WRONG: dict[str, list[Callable]] = {
    "TrainingLoop": [LoopDecaysEverything, LoopWithAdamDefaults, LoopRateOneStepAhead, LoopConstantRate,
                     LoopClipsEachParameter, LoopNeverClips, LoopStepsEachMicroBatch, LoopNeverZeroes,
                     LoopReturnsLastLoss, LoopSavesOnlyTheModel, LoopForgetsTheStep],
    "make_windows": [windows_not_shifted, windows_overlapping, windows_count_off_by_one, windows_unchecked],
    "next_token_loss": [loss_not_shifted, loss_shifted_backwards, loss_summed, loss_log_of_softmax],
    "warmup_cosine_lr": [lr_warmup_off_by_one, lr_ignores_min_lr, lr_cosine_from_step_zero, lr_not_clamped],
    "clip_grad_norm": [clip_per_parameter, clip_returns_norm_after, clip_always_rescales, clip_reads_generator_twice,
                       clip_sum_of_norms],
    "accumulate_gradients": [accumulate_without_dividing, accumulate_without_zeroing, accumulate_returns_last_loss,
                             accumulate_and_step],
    "perplexity": [perplexity_of_sum, perplexity_unweighted, perplexity_mean_of_perplexities, perplexity_in_bits],
    "initial_loss": [initial_loss_keeps_the_default_init, initial_loss_in_bits, initial_loss_summed,
                     initial_loss_not_shifted],
    "adamw_after_steps": [adamw_without_bias_correction, adamw_decay_coupled, adamw_plain_sgd_step,
                          adamw_loops_over_the_steps],
    "bigram_table": [bigram_counts_every_token, bigram_k_once, bigram_transposed, bigram_float32, bigram_unchecked],
    "bits_per_byte": [bpb_per_token, bpb_in_nats, bpb_log10, bpb_inverted, bpb_unchecked],
}
