"""Common mistakes in chapter 01's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

# --------------------------------------------------------------------------- neuron


def neuron_without_bias(x, w, b):
    """Forgets the bias."""
    return torch.sigmoid((x * w).sum(dim=-1))


def neuron_bias_after_activation(x, w, b):
    """Adds the bias after the sigmoid instead of before it."""
    return torch.sigmoid((x * w).sum(dim=-1)) + b


def neuron_without_activation(x, w, b):
    """Returns the weighted sum z, forgetting the activation."""
    return (x * w).sum(dim=-1) + b


def neuron_sums_the_whole_batch(x, w, b):
    """Sums over every entry, so a batch collapses into one number."""
    return torch.sigmoid((x * w).sum() + b)


# --------------------------------------------------------------------------- dense_layer


def dense_transposed(a, W, b):
    """Computes W·a as in the textbook column-vector form, with the batch as columns."""
    return W.T @ a.T + b


def dense_wrong_side_transpose(a, W, b):
    """Treats W as nn.Linear's (n_out, n_in) layout."""
    return a @ W.T + b


def dense_without_bias(a, W, b):
    """Forgets the bias."""
    return a @ W


def dense_with_relu(a, W, b):
    """Adds an activation the exercise did not ask for."""
    return torch.relu(a @ W + b)


def dense_bias_per_example(a, W, b):
    """Adds b as a column, one bias per example instead of one per neuron."""
    return a @ W + b.reshape(-1, 1)


# --------------------------------------------------------------------------- mlp_forward


def mlp_relu_on_output(x, weights, biases):
    """Also puts ReLU after the last layer, clipping negative scores."""
    for W, b in zip(weights, biases):
        x = torch.relu(x @ W + b)
    return x


def mlp_without_activations(x, weights, biases):
    """No ReLU at all: the whole network collapses into one linear layer."""
    for W, b in zip(weights, biases):
        x = x @ W + b
    return x


def mlp_activation_before_matmul(x, weights, biases):
    """Applies ReLU to each layer's input, including the raw input x."""
    for W, b in zip(weights, biases):
        x = torch.relu(x) @ W + b
    return x


def mlp_skips_last_layer(x, weights, biases):
    """An off-by-one loop that never runs the output layer."""
    for W, b in zip(weights[:-1], biases[:-1]):
        x = torch.relu(x @ W + b)
    return x


# --------------------------------------------------------------------------- relu


def relu_python_max(x):
    """Python's max compares one number with a whole tensor."""
    return max(0, x)


def relu_elementwise_loop(x):
    """Loops in Python over the first dimension: only right for 1-D float32 input."""
    return torch.tensor([max(0.0, v) for v in x.tolist()])


def relu_returns_the_derivative(x):
    """Returns the step function (ReLU's derivative) instead of ReLU."""
    return (x > 0).to(x.dtype)


def relu_abs(x):
    """Flips negatives instead of zeroing them."""
    return x.abs()


# --------------------------------------------------------------------------- gelu


def gelu_sigmoid_approximation(x):
    """The quick sigmoid approximation x * sigmoid(1.702 x)."""
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh_approximation(x):
    """GPT-2's tanh approximation: close, but not the exact GELU."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gelu_forgets_sqrt2(x):
    """Forgets to divide by sqrt(2) inside erf."""
    return 0.5 * x * (1 + torch.erf(x))


def gelu_without_x(x):
    """Returns the normal CDF Phi(x), forgetting to multiply by x."""
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


# --------------------------------------------------------------------------- stable_softmax


def softmax_naive(x, dim=-1):
    """No max subtraction: exp(1000) overflows to inf and inf / inf is nan."""
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def softmax_wrong_dim(x, dim=-1):
    """Normalises over dimension 0 whatever `dim` says."""
    e = torch.exp(x - x.amax(dim=0, keepdim=True))
    return e / e.sum(dim=0, keepdim=True)


def softmax_global_max(x, dim=-1):
    """Subtracts the maximum of the whole tensor: rows far below it underflow to 0 / 0."""
    e = torch.exp(x - x.max())
    return e / e.sum(dim=dim, keepdim=True)


def softmax_max_without_keepdim(x, dim=-1):
    """Drops keepdim, so the maximum broadcasts along the wrong axis."""
    e = torch.exp(x - x.amax(dim=dim))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_ignores_dim_in_sum(x, dim=-1):
    """Shifts along `dim` but always sums over the last dimension."""
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


# --------------------------------------------------------------------------- cross_entropy_from_logits


def ce_log_of_naive_softmax(logits, targets):
    """log(exp(z) / sum(exp(z))) without a shift: nan on large logits."""
    probs = torch.exp(logits) / torch.exp(logits).sum(dim=-1, keepdim=True)
    return -torch.log(probs[torch.arange(len(targets)), targets]).mean()


def ce_logits_as_probabilities(logits, targets):
    """Treats logits as probabilities: -log(z[target]) (nan for negative logits)."""
    return -torch.log(logits[torch.arange(len(targets)), targets]).mean()


def ce_sum_not_mean(logits, targets):
    """Sums the per-example losses instead of averaging them."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    return -log_probs[torch.arange(len(targets)), targets].sum()


def ce_relu_on_logits(logits, targets):
    """Puts a ReLU on the logits first, as a widely copied training example does."""
    z = torch.relu(logits)
    shifted = z - z.amax(dim=-1, keepdim=True)
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    return -log_probs[torch.arange(len(targets)), targets].mean()


def ce_ignores_targets(logits, targets):
    """Averages the log-probabilities of every class, not of the target class."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    return -log_probs.mean()


def ce_wrong_indexing(logits, targets):
    """Indexes with log_probs[:, targets], which picks an (N, N) block instead of one entry per row."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    return -log_probs[:, targets].mean()


# --------------------------------------------------------------------------- the experiment: where naive softmax breaks


def _naive_softmax_is_finite(c, dtype):
    z = torch.tensor([float(c), 0.0], dtype=dtype)
    e = torch.exp(z)
    return bool(torch.isfinite(e / e.sum()).all())


def breaks_at_in_float64_always(dtype):
    """Forgets the dtype: builds the logits in float64 whatever it is asked, so every answer is float64's."""
    c = 0
    while _naive_softmax_is_finite(c, torch.float64):
        c += 1
    return c


def breaks_at_last_working_value(dtype):
    """Returns the last c that still works instead of the first one that breaks."""
    c = 0
    while _naive_softmax_is_finite(c + 1, dtype):
        c += 1
    return c


def breaks_at_coarse_steps(dtype):
    """Searches in steps of ten, so it only finds the breaking point to within ten."""
    for c in range(0, 2000, 10):
        if not _naive_softmax_is_finite(c, dtype):
            return c
    return None


def breaks_at_with_the_max_shift(dtype):
    """Uses the stable softmax (shifted by the maximum), which never breaks, and gives up at the end of its search."""
    for c in range(2000):
        z = torch.tensor([float(c), 0.0], dtype=dtype)
        e = torch.exp(z - z.max())
        if not torch.isfinite(e / e.sum()).all():
            return c
    return None


# --------------------------------------------------------------------------- the derivation: the gradient of cross-entropy


def _probabilities(logits):
    e = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def ce_grad_sum_not_mean(logits, targets):
    """The gradient of the summed loss: forgets to divide by the batch size."""
    grad = _probabilities(logits)
    grad[torch.arange(len(targets)), targets] -= 1
    return grad


def ce_grad_sign_flipped(logits, targets):
    """Subtracts the other way round: one-hot minus softmax, the direction that increases the loss."""
    grad = -_probabilities(logits)
    grad[torch.arange(len(targets)), targets] += 1
    return grad / len(targets)


def ce_grad_naive_softmax(logits, targets):
    """Takes softmax without subtracting the maximum, so large logits give inf / inf = nan."""
    grad = torch.exp(logits) / torch.exp(logits).sum(dim=-1, keepdim=True)
    grad[torch.arange(len(targets)), targets] -= 1
    return grad / len(targets)


def ce_grad_indexes_whole_columns(logits, targets):
    """Writes grad[:, targets] -= 1, which subtracts 1 in every row at every target's column."""
    grad = _probabilities(logits)
    grad[:, targets] -= 1
    return grad / len(targets)


WRONG: dict[str, list[Callable]] = {
    "neuron": [neuron_without_bias, neuron_bias_after_activation, neuron_without_activation,
               neuron_sums_the_whole_batch],
    "dense_layer": [dense_transposed, dense_wrong_side_transpose, dense_without_bias, dense_with_relu,
                    dense_bias_per_example],
    "mlp_forward": [mlp_relu_on_output, mlp_without_activations, mlp_activation_before_matmul,
                    mlp_skips_last_layer],
    "relu": [relu_python_max, relu_elementwise_loop, relu_returns_the_derivative, relu_abs],
    "gelu": [gelu_sigmoid_approximation, gelu_tanh_approximation, gelu_forgets_sqrt2, gelu_without_x],
    "stable_softmax": [softmax_naive, softmax_wrong_dim, softmax_global_max, softmax_max_without_keepdim,
                       softmax_ignores_dim_in_sum],
    "cross_entropy_from_logits": [ce_log_of_naive_softmax, ce_logits_as_probabilities, ce_sum_not_mean,
                                  ce_relu_on_logits, ce_ignores_targets, ce_wrong_indexing],
    "naive_softmax_breaks_at": [breaks_at_in_float64_always, breaks_at_last_working_value, breaks_at_coarse_steps,
                                breaks_at_with_the_max_shift],
    "cross_entropy_grad": [ce_grad_sum_not_mean, ce_grad_sign_flipped, ce_grad_naive_softmax,
                           ce_grad_indexes_whole_columns],
}
