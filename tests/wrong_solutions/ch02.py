"""Common mistakes in chapter 02's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

from typing import Callable

import torch

# --------------------------------------------------------------------------- finite_difference_gradient


def fd_one_sided(f, x, eps=1e-6):
    """A forward difference (f(x + eps) - f(x)) / eps: its error shrinks only like eps."""
    grad = torch.zeros_like(x)
    base = float(f(x))
    for i in range(x.numel()):
        nudged = x.clone()
        nudged.view(-1)[i] += eps
        grad.view(-1)[i] = (float(f(nudged)) - base) / eps
    return grad


def fd_huge_eps(f, x, eps=1e-6):
    """Ignores eps and nudges by 0.1: the slope of a chord, not of the curve."""
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        up, down = x.clone(), x.clone()
        up.view(-1)[i] += 0.1
        down.view(-1)[i] -= 0.1
        grad.view(-1)[i] = (float(f(up)) - float(f(down))) / 0.2
    return grad


def fd_divides_by_eps(f, x, eps=1e-6):
    """Central difference divided by eps instead of 2 eps: every slope comes out twice too large."""
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        up, down = x.clone(), x.clone()
        up.view(-1)[i] += eps
        down.view(-1)[i] -= eps
        grad.view(-1)[i] = (float(f(up)) - float(f(down))) / eps
    return grad


def fd_never_restores(f, x, eps=1e-6):
    """Nudges x in place and never puts the element back: later slopes are taken at the wrong point."""
    flat = x.view(-1)
    grad = torch.zeros_like(flat)
    for i in range(flat.numel()):
        flat[i] += eps
        f_up = float(f(x))
        flat[i] -= 2 * eps
        f_down = float(f(x))
        grad[i] = (f_up - f_down) / (2 * eps)
    return grad.view_as(x)


def fd_nudges_everything(f, x, eps=1e-6):
    """Nudges all the elements at once: one directional slope copied into every entry."""
    slope = (float(f(x + eps)) - float(f(x - eps))) / (2 * eps)
    return torch.full_like(x, slope)


# --------------------------------------------------------------------------- mul_backward


def mul_overwrites(out):
    """Assigns with = instead of adding: loses what other paths contributed, and a * a gets half its gradient."""
    a, b = out.parents
    a.grad = out.grad * b.data
    b.grad = out.grad * a.data


def mul_swapped(out):
    """Gives each parent its own value as the local derivative instead of the other one's."""
    a, b = out.parents
    a.grad += out.grad * a.data
    b.grad += out.grad * b.data


def mul_forgets_out_grad(out):
    """Uses the local derivatives alone, forgetting the sensitivity that arrived from further on."""
    a, b = out.parents
    a.grad += b.data
    b.grad += a.data


def mul_returns_instead_of_adding(out):
    """Computes the right numbers but returns them instead of adding them to the parents' grads."""
    a, b = out.parents
    return out.grad * b.data, out.grad * a.data


# --------------------------------------------------------------------------- topological_sort


def topo_root_first(root):
    """A correct depth-first order, but returned the wrong way round (root first)."""
    order, seen = [], set()

    def visit(node):
        if node not in seen:
            seen.add(node)
            for parent in node.parents:
                visit(parent)
            order.append(node)

    visit(root)
    return order[::-1]


def topo_preorder(root):
    """Appends each node before visiting its parents (pre-order): children come before their parents."""
    order, seen = [], set()

    def visit(node):
        if node not in seen:
            seen.add(node)
            order.append(node)
            for parent in node.parents:
                visit(parent)

    visit(root)
    return order


def topo_no_visited_set(root):
    """Forgets the visited set: a Value reached along several paths is listed several times."""
    order = []

    def visit(node):
        for parent in node.parents:
            visit(parent)
        order.append(node)

    visit(root)
    return order


def topo_breadth_first_reversed(root):
    """Breadth-first from the root, reversed: fails when a node is reached by paths of different lengths."""
    order, seen, queue = [], {root}, [root]
    while queue:
        node = queue.pop(0)
        order.append(node)
        for parent in node.parents:
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    return order[::-1]


def topo_skips_leaves(root):
    """Lists only the nodes made by an operation, leaving out inputs, weights and constants."""
    order, seen = [], set()

    def visit(node):
        if node not in seen:
            seen.add(node)
            for parent in node.parents:
                visit(parent)
            if node.parents:
                order.append(node)

    visit(root)
    return order


# --------------------------------------------------------------------------- layer_delta


def _sigmoid(z):
    return 1 / (1 + torch.exp(-z))


def delta_without_slope(delta_next, W, z):
    """Forgets the activation's derivative: passes delta_next @ W.T straight through."""
    return delta_next @ W.T


def delta_sigmoid_not_its_slope(delta_next, W, z):
    """Multiplies by σ(z) where σ'(z) belongs (a slip found in published derivations)."""
    return _sigmoid(z) * (delta_next @ W.T)


def delta_without_transpose(delta_next, W, z):
    """Multiplies by W instead of W.T (the shapes only line up by accident when W is square)."""
    return _sigmoid(z) * (1 - _sigmoid(z)) * (delta_next @ W)


def delta_slope_of_the_output(delta_next, W, z):
    """Takes the slope at σ(z), as if z were already the activation: σ'(σ(z))."""
    a = _sigmoid(z)
    return _sigmoid(a) * (1 - _sigmoid(a)) * (delta_next @ W.T)


def delta_tanh_slope(delta_next, W, z):
    """Uses tanh's derivative 1 - tanh(z)² for a sigmoid layer."""
    return (1 - torch.tanh(z) ** 2) * (delta_next @ W.T)


# --------------------------------------------------------------------------- momentum_step


def momentum_moving_average(param, grad, buf, lr, momentum=0.9):
    """buf = momentum * buf + (1 - momentum) * grad: an average, not PyTorch's sum (steps 10x smaller)."""
    buf = (1 - momentum) * grad if buf is None else momentum * buf + (1 - momentum) * grad
    return param - lr * buf, buf


def momentum_lr_in_buffer(param, grad, buf, lr, momentum=0.9):
    """Puts the learning rate inside the buffer: the same path, but the buffer is not PyTorch's."""
    buf = lr * grad if buf is None else momentum * buf + lr * grad
    return param - buf, buf


def momentum_old_buffer(param, grad, buf, lr, momentum=0.9):
    """Steps with the old buffer, before adding the new gradient."""
    step = torch.zeros_like(param) if buf is None else buf
    new_param = param - lr * step
    buf = grad.clone() if buf is None else momentum * buf + grad
    return new_param, buf


def momentum_in_place(param, grad, buf, lr, momentum=0.9):
    """Right numbers, but updates the caller's param tensor in place."""
    buf = grad.clone() if buf is None else momentum * buf + grad
    param -= lr * buf
    return param, buf


def momentum_ignored(param, grad, buf, lr, momentum=0.9):
    """Plain gradient descent: the buffer never remembers anything."""
    return param - lr * grad, grad.clone()


# --------------------------------------------------------------------------- adam_step


def adam_no_bias_correction(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """Uses m and v as they are: early steps come out the wrong size."""
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    return param - lr * m / (v.sqrt() + eps), m, v


def adam_eps_inside_sqrt(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """Adds eps under the square root instead of after it."""
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return param - lr * m_hat / (v_hat + eps).sqrt(), m, v


def adam_v_of_abs_grad(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """Averages |grad| in v instead of grad², and then still takes the square root."""
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad.abs()
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


def adam_corrected_state(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """Returns the bias-corrected m_hat and v_hat as the new state, so the correction compounds."""
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m_hat, v_hat


def adam_betas_swapped(param, grad, m, v, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """Uses beta2 for the gradient's average and beta1 for the square's."""
    beta2, beta1 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return param - lr * m_hat / (v_hat.sqrt() + eps), m, v


# --------------------------------------------------------------------------- inverted_dropout


def dropout_without_scaling(x, p, training=True, generator=None):
    """Zeroes entries but forgets to divide the survivors by 1 - p: the average shrinks."""
    if not training:
        return x
    return x * (torch.rand(x.shape, generator=generator) >= p)


def dropout_multiplies_by_keep(x, p, training=True, generator=None):
    """Multiplies the survivors by 1 - p instead of dividing."""
    if not training:
        return x
    return x * (torch.rand(x.shape, generator=generator) >= p) * (1 - p)


def dropout_also_at_inference(x, p, training=True, generator=None):
    """Ignores `training`: still drops units when the model is used."""
    return x * (torch.rand(x.shape, generator=generator) >= p) / (1 - p)


def dropout_keeps_with_probability_p(x, p, training=True, generator=None):
    """Keeps each entry with probability p instead of dropping it with probability p."""
    if not training:
        return x
    return x * (torch.rand(x.shape, generator=generator) < p) / (1 - p)


def dropout_classic_convention(x, p, training=True, generator=None):
    """The classic convention (as some explanations describe inference): no scaling in training, x (1 - p) at inference."""
    if not training:
        return x * (1 - p)
    return x * (torch.rand(x.shape, generator=generator) >= p)


def dropout_global_random(x, p, training=True, generator=None):
    """Ignores the generator and draws from the global random numbers: masks cannot be reproduced."""
    if not training:
        return x
    return x * (torch.rand(x.shape) >= p) / (1 - p)



# --------------------------------------------------------------------------- Value (build the engine)

import math  # noqa: E402


class _Engine:
    """A correct engine whose subclasses each break one thing."""

    def __init__(self, data, parents=()):
        self.data, self.grad, self._parents, self._backward = float(data), 0.0, parents, lambda: None

    def _make(self, data, parents, local):
        out = type(self)(data, parents)

        def backward():
            for parent, derivative in zip(parents, local()):
                self._accumulate(parent, derivative * out.grad)
        out._backward = backward
        return out

    @staticmethod
    def _accumulate(node, amount):
        node.grad += amount

    def _wrap(self, other):
        return other if isinstance(other, _Engine) else type(self)(other)

    def __add__(self, other):
        other = self._wrap(other)
        return self._make(self.data + other.data, (self, other), lambda: (1.0, 1.0))

    def __mul__(self, other):
        other = self._wrap(other)
        return self._make(self.data * other.data, (self, other), lambda: (other.data, self.data))

    def __pow__(self, k):
        return self._make(self.data ** k, (self,), lambda: (k * self.data ** (k - 1),))

    def exp(self):
        e = math.exp(self.data)
        return self._make(e, (self,), lambda: (e,))

    def tanh(self):
        t = math.tanh(self.data)
        return self._make(t, (self,), lambda: (1 - t * t,))

    def relu(self):
        return self._make(max(self.data, 0.0), (self,), lambda: (float(self.data > 0),))

    def backward(self):
        order, seen = [], set()

        def visit(node):
            if id(node) not in seen:
                seen.add(id(node))
                for parent in node._parents:
                    visit(parent)
                order.append(node)
        visit(self)
        self.grad = 1.0
        for node in reversed(order):
            node._backward()

    def __neg__(self):
        return self * -1

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other ** -1

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return (-self) + other

    def __rtruediv__(self, other):
        return type(self)(other) / self


class EngineOverwritesGrads(_Engine):
    """Sets a parent's grad instead of adding to it: a node used twice keeps only one share."""

    @staticmethod
    def _accumulate(node, amount):
        node.grad = amount


class EngineWithoutTopologicalOrder(_Engine):
    """Passes gradient on depth-first, before a shared node has heard from all of its users."""

    def backward(self):
        self.grad = 1.0

        def send(node):
            node._backward()
            for parent in node._parents:
                send(parent)
        send(self)


class EngineWrongTanhDerivative(_Engine):
    """Uses 1 - tanh(x) for the derivative of tanh."""

    def tanh(self):
        t = math.tanh(self.data)
        return self._make(t, (self,), lambda: (1 - t,))


class EngineWrongPowerRule(_Engine):
    """d(x^k)/dx written as k * x^k."""

    def __pow__(self, k):
        return self._make(self.data ** k, (self,), lambda: (k * self.data ** k,))


class EngineReversedSubtraction(_Engine):
    """2 - a computed as a - 2."""

    def __rsub__(self, other):
        return self - other


# --------------------------------------------------------------------------- the experiment: vanishing gradients


def _deep_net_grads(activation, weight_std, depth, width, seed, hidden_activation=True):
    """Weight gradients (first to last) and weights of the experiment's network, for the wrong versions below."""
    g = torch.Generator().manual_seed(seed)
    weights = [(weight_std * torch.randn(width, width, generator=g)).requires_grad_(True) for _ in range(depth)]
    h = torch.randn(64, width, generator=g)
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[activation]
    for i, W in enumerate(weights):
        h = h @ W
        if hidden_activation and i < depth - 1:
            h = act(h)
    (h**2).mean().backward()
    return [W.grad for W in weights], weights


def ratio_without_activation(activation, weight_std, depth=20, width=64, seed=0):
    """Forgets to apply the activation, so the network is a stack of linear layers."""
    grads, _ = _deep_net_grads(activation, weight_std, depth, width, seed, hidden_activation=False)
    return float(grads[0].norm() / grads[-1].norm())


def ratio_upside_down(activation, weight_std, depth=20, width=64, seed=0):
    """Divides the last layer's gradient by the first one's."""
    grads, _ = _deep_net_grads(activation, weight_std, depth, width, seed)
    return float(grads[-1].norm() / grads[0].norm())


def ratio_first_layer_only(activation, weight_std, depth=20, width=64, seed=0):
    """Returns the size of the first layer's gradient instead of comparing it with the last layer's."""
    grads, _ = _deep_net_grads(activation, weight_std, depth, width, seed)
    return float(grads[0].norm())


def ratio_of_the_weights(activation, weight_std, depth=20, width=64, seed=0):
    """Compares the sizes of the weights themselves, not of their gradients."""
    _, weights = _deep_net_grads(activation, weight_std, depth, width, seed)
    return float(weights[0].detach().norm() / weights[-1].detach().norm())


# --------------------------------------------------------------------------- the derivation: how far momentum carries


def distance_at_top_speed(lr, momentum, steps):
    """Assumes every step already has the top speed lr / (1 - momentum), forgetting the warm-up."""
    return lr * steps / (1 - momentum)


def distance_with_a_moving_average(lr, momentum, steps):
    """Sums a buffer kept as a moving average, momentum * buf + (1 - momentum) * g, which is not PyTorch's rule."""
    return lr * (steps - momentum * (1 - momentum**steps) / (1 - momentum))


def distance_of_the_last_step(lr, momentum, steps):
    """Returns the size of the last step, lr times the buffer, instead of the sum of all the steps."""
    return lr * (1 - momentum**steps) / (1 - momentum)


def distance_one_step_late(lr, momentum, steps):
    """Uses the buffer from before each update (0 on the first step), so every step is one step behind."""
    return lr / (1 - momentum) * (steps - (1 - momentum**steps) / (1 - momentum))


# --------------------------------------------------------------------------- label_smoothed_cross_entropy


def _log_softmax(logits):
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))


def smoothing_over_the_wrong_classes(logits, targets, smoothing):
    """Gives the right class exactly 1 - smoothing and shares smoothing among the other C - 1 classes only."""
    C = logits.shape[-1]
    q = torch.full_like(logits, smoothing / (C - 1))
    q[torch.arange(len(targets)), targets] = 1 - smoothing
    return -(q * _log_softmax(logits)).sum(dim=-1).mean()


def smoothing_without_the_keep_factor(logits, targets, smoothing):
    """Adds smoothing * mean(-log p) to the full cross-entropy, forgetting to scale it by 1 - smoothing."""
    log_p = _log_softmax(logits)
    return (-log_p[torch.arange(len(targets)), targets] - smoothing * log_p.mean(dim=-1)).mean()


def smoothing_with_log_of_softmax(logits, targets, smoothing):
    """Takes log(softmax(z)): the smallest probabilities round to 0 and their log is -inf."""
    p = torch.exp(logits) / torch.exp(logits).sum(dim=-1, keepdim=True)
    q = (1 - smoothing) * torch.nn.functional.one_hot(targets, logits.shape[-1]) + smoothing / logits.shape[-1]
    return -(q * torch.log(p)).sum(dim=-1).mean()


def smoothing_summed_over_the_batch(logits, targets, smoothing):
    """Sums the examples' losses instead of averaging them."""
    q = (1 - smoothing) * torch.nn.functional.one_hot(targets, logits.shape[-1]) + smoothing / logits.shape[-1]
    return -(q * _log_softmax(logits)).sum()


def smoothing_of_the_probabilities(logits, targets, smoothing):
    """Smooths the prediction instead of the target: plain cross-entropy of (1 - s) p + s / C."""
    p = torch.exp(_log_softmax(logits))
    smoothed = (1 - smoothing) * p + smoothing / logits.shape[-1]
    return -torch.log(smoothed[torch.arange(len(targets)), targets]).mean()


# --------------------------------------------------------------------------- expected_calibration_error


def _bins(confidence, n_bins, upper_edge_in_upper_bin=False):
    if upper_edge_in_upper_bin:
        return (torch.floor(confidence * n_bins).long()).clamp(0, n_bins - 1)
    return (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)


def _gaps(confidence, correct, which, n_bins):
    counts = torch.bincount(which, minlength=n_bins).double()
    conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, confidence.double())
    right = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, correct.double())
    filled = counts > 0
    return counts[filled], (right[filled] - conf[filled]).abs() / counts[filled]


def ece_unweighted_mean_of_bins(probs, labels, n_bins=10):
    """Averages the gaps of the filled bins, forgetting to weigh each by its number of predictions."""
    confidence, predicted = probs.max(dim=-1)
    _, gaps = _gaps(confidence, predicted == labels, _bins(confidence, n_bins), n_bins)
    return float(gaps.mean())


def ece_probability_of_the_label(probs, labels, n_bins=10):
    """Uses the probability given to the right class as the confidence, not the largest probability."""
    confidence = probs[torch.arange(len(labels)), labels]
    predicted = probs.argmax(dim=-1)
    counts, gaps = _gaps(confidence, predicted == labels, _bins(confidence, n_bins), n_bins)
    return float((counts * gaps).sum() / len(labels))


def ece_edges_in_the_upper_bin(probs, labels, n_bins=10):
    """Bins with [lo, hi), so a confidence on an edge lands one bin higher."""
    confidence, predicted = probs.max(dim=-1)
    counts, gaps = _gaps(confidence, predicted == labels, _bins(confidence, n_bins, True), n_bins)
    return float((counts * gaps).sum() / len(labels))


def ece_without_bins(probs, labels, n_bins=10):
    """Averages |correct - confidence| over single predictions: every prediction is its own bin."""
    confidence, predicted = probs.max(dim=-1)
    return float(((predicted == labels).double() - confidence.double()).abs().mean())


def ece_signed_gaps(probs, labels, n_bins=10):
    """Adds the signed gaps, so over- and under-confident bins cancel."""
    confidence, predicted = probs.max(dim=-1)
    which = _bins(confidence, n_bins)
    conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, confidence.double())
    right = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, which, (predicted == labels).double())
    return float(abs((right - conf).sum()) / len(labels))


WRONG: dict[str, list[Callable]] = {
    "Value": [EngineOverwritesGrads, EngineWithoutTopologicalOrder, EngineWrongTanhDerivative, EngineWrongPowerRule,
              EngineReversedSubtraction],
    "finite_difference_gradient": [fd_one_sided, fd_huge_eps, fd_divides_by_eps, fd_never_restores,
                                   fd_nudges_everything],
    "mul_backward": [mul_overwrites, mul_swapped, mul_forgets_out_grad, mul_returns_instead_of_adding],
    "topological_sort": [topo_root_first, topo_preorder, topo_no_visited_set, topo_breadth_first_reversed,
                         topo_skips_leaves],
    "layer_delta": [delta_without_slope, delta_sigmoid_not_its_slope, delta_without_transpose,
                    delta_slope_of_the_output, delta_tanh_slope],
    "momentum_step": [momentum_moving_average, momentum_lr_in_buffer, momentum_old_buffer, momentum_in_place,
                      momentum_ignored],
    "adam_step": [adam_no_bias_correction, adam_eps_inside_sqrt, adam_v_of_abs_grad, adam_corrected_state,
                  adam_betas_swapped],
    "inverted_dropout": [dropout_without_scaling, dropout_multiplies_by_keep, dropout_also_at_inference,
                         dropout_keeps_with_probability_p, dropout_classic_convention, dropout_global_random],
    "vanishing_gradient_ratio": [ratio_without_activation, ratio_upside_down, ratio_first_layer_only,
                                 ratio_of_the_weights],
    "momentum_distance": [distance_at_top_speed, distance_with_a_moving_average, distance_of_the_last_step,
                          distance_one_step_late],
    "label_smoothed_cross_entropy": [smoothing_over_the_wrong_classes, smoothing_without_the_keep_factor,
                                     smoothing_with_log_of_softmax, smoothing_summed_over_the_batch,
                                     smoothing_of_the_probabilities],
    "expected_calibration_error": [ece_unweighted_mean_of_bins, ece_probability_of_the_label,
                                   ece_edges_in_the_upper_bin, ece_without_bins, ece_signed_gaps],
}
