"""Common mistakes in chapter 00's exercises; each must fail at least one graded check.

``WRONG`` maps an exercise name to wrong implementations of it. Every function is
self-contained, so it can be graded from a namespace that holds only that name.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

# --------------------------------------------------------------------------- gradients


def gradients_on_the_callers_tensors(f, *inputs):
    """Marks the caller's own tensors as requiring grad: a second call adds onto the old .grad."""
    for x in inputs:
        x.requires_grad_(True)
    f(*inputs).backward()
    return tuple(x.grad for x in inputs)


def gradients_keeping_the_graph(f, *inputs):
    """Asks autograd for a differentiable result, so the gradients still require grad."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    return torch.autograd.grad(f(*leaves), leaves, create_graph=True)


def gradients_by_hand_of_a_product(f, *inputs):
    """Thinks the derivative of a * b with respect to a is a: returns the inputs themselves."""
    return tuple(x.clone() for x in inputs)


# --------------------------------------------------------------------------- counting parameters


def count_tensors(model):
    """Counts parameter tensors instead of the numbers inside them."""
    return len(list(model.parameters()))


def count_frozen_too(model):
    """Counts every parameter, including the frozen ones."""
    return sum(p.numel() for p in model.parameters())


def count_state_dict(model):
    """Counts the state_dict, which also holds buffers such as BatchNorm's running statistics."""
    return sum(t.numel() for t in model.state_dict().values())


# --------------------------------------------------------------------------- swapping submodules


def swap_top_level_only(model, old_type, make_new):
    """Looks only at the model's direct children and misses nested modules."""
    count = 0
    for name, child in model.named_children():
        if isinstance(child, old_type):
            setattr(model, name, make_new(child))
            count += 1
    return count


def swap_loop_variable(model, old_type, make_new):
    """Rebinds the loop variable, which leaves the model untouched."""
    count = 0
    for module in model.modules():
        if isinstance(module, old_type):
            module = make_new(module)  # noqa: F841 (the mistake)
            count += 1
    return count


def swap_with_dotted_names(model, old_type, make_new):
    """setattr with a dotted name such as '2.1' adds a new child instead of replacing the nested one."""
    found = [(name, module) for name, module in model.named_modules() if name and isinstance(module, old_type)]
    for name, module in found:
        setattr(model, name, make_new(module))
    return len(found)


# --------------------------------------------------------------------------- devices and dtypes


def prepare_without_assigning(model, x, y):
    """Calls .to on the tensors but throws the results away."""
    device = next(model.parameters()).device
    x.to(device)
    y.to(device)
    return x, y


def prepare_device_only(model, x, y):
    """Moves the batch but forgets the dtypes."""
    device = next(model.parameters()).device
    return x.to(device), y.to(device)


def prepare_labels_as_floats(model, x, y):
    """Gives the labels the model's float dtype too, though cross-entropy needs integer classes."""
    weight = next(model.parameters())
    return x.to(weight.device, weight.dtype), y.to(weight.device, weight.dtype)


# --------------------------------------------------------------------------- reproducible data loading


def loader_without_generator(dataset, batch_size, seed):
    """Shuffles with the global random generator, so the order depends on whatever ran before."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True)


def loader_seeding_globally(dataset, batch_size, seed):
    """Seeds the global generator once, but the shuffle is drawn later, at iteration time."""
    torch.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True)


def loader_not_shuffled(dataset, batch_size, seed):
    """Reproducible, but only because it never shuffles."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


# --------------------------------------------------------------------------- one training step


def step_without_zero_grad(model, optimizer, x, y):
    """Never clears the gradients, so each step uses the sum of all previous ones."""
    model.train()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def step_returning_tensor(model, optimizer, x, y):
    """Returns the loss tensor, which still requires grad, instead of a number."""
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def step_without_train_mode(model, optimizer, x, y):
    """Forgets model.train(), so a model that was just evaluated trains in evaluation mode."""
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def step_before_backward(model, optimizer, x, y):
    """Updates before back-propagating, so every step uses the previous step's gradients."""
    model.train()
    loss = F.cross_entropy(model(x), y)
    optimizer.step()
    optimizer.zero_grad()
    loss.backward()
    return loss.item()


# --------------------------------------------------------------------------- evaluation


def accuracy_mean_of_batches(model, loader):
    """Averages per-batch accuracies, which overweights a short last batch."""
    model.eval()
    with torch.no_grad():
        scores = [(model(x).argmax(dim=-1) == y).float().mean().item() for x, y in loader]
    return sum(scores) / len(scores)


def accuracy_in_train_mode(model, loader):
    """Forgets model.eval(): dropout and friends stay in training behaviour."""
    correct, total = 0, 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(dim=-1) == y).sum().item()
            total += len(y)
    return correct / total


def accuracy_with_grad(model, loader):
    """Forgets torch.no_grad(), so autograd records a graph it will never use."""
    model.eval()
    correct, total = 0, 0
    for x, y in loader:
        correct += (model(x).argmax(dim=-1) == y).sum().item()
        total += len(y)
    return correct / total


def accuracy_as_tensor(model, loader):
    """Returns a 0-d tensor rather than a Python float."""
    model.eval()
    correct, total = torch.tensor(0), 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(dim=-1) == y).sum()
            total += len(y)
    return correct / total


# --------------------------------------------------------------------------- the experiment: the first optimizer step


def _one_step(optimizer, grad_scale, lr, n, loss="sum"):
    """One optimizer step on n zeros with gradient grad_scale * noise; returns the parameter before and after."""
    param = torch.zeros(n, requires_grad=True)
    noise = grad_scale * torch.randn(n, generator=torch.Generator().manual_seed(0))
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW)([param], lr=lr)
    opt.zero_grad()
    ((param * noise).sum() if loss == "sum" else (param * noise).mean()).backward()
    before = param.detach().clone()
    opt.step()
    return before, param.detach().clone()


def step_size_without_step(optimizer, grad_scale, lr=0.01, n=10_000):
    """Computes the gradient but never calls optimizer.step(), so the weights do not move."""
    param = torch.zeros(n, requires_grad=True)
    noise = grad_scale * torch.randn(n, generator=torch.Generator().manual_seed(0))
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW)([param], lr=lr)
    opt.zero_grad()
    before = param.detach().clone()
    (param * noise).sum().backward()
    return (param.detach() - before).abs().mean().item()


def step_size_signed_mean(optimizer, grad_scale, lr=0.01, n=10_000):
    """Averages the signed changes, which cancel out, instead of their sizes."""
    before, after = _one_step(optimizer, grad_scale, lr, n)
    return (after - before).mean().item()


def step_size_as_lr_times_gradient(optimizer, grad_scale, lr=0.01, n=10_000):
    """Assumes every optimizer moves a weight by lr times its gradient, so AdamW looks like SGD."""
    noise = grad_scale * torch.randn(n, generator=torch.Generator().manual_seed(0))
    return (lr * noise).abs().mean().item()


def step_size_from_a_mean_loss(optimizer, grad_scale, lr=0.01, n=10_000):
    """Gets the gradient from (param * noise).mean(), which makes every gradient n times smaller."""
    before, after = _one_step(optimizer, grad_scale, lr, n, loss="mean")
    return (after - before).abs().mean().item()


# --------------------------------------------------------------------------- the derivation: a linear layer's gradients


def mse_grads_batch_mean_only(x, weight, bias, y):
    """Divides by the batch size only, although the loss averages over every output too."""
    err = x @ weight.T + bias - y
    return 2 * err.T @ x / x.shape[0], 2 * err.sum(dim=0) / x.shape[0]


def mse_grads_without_the_two(x, weight, bias, y):
    """Forgets the factor 2 that the derivative of a square brings."""
    err = x @ weight.T + bias - y
    return err.T @ x / err.numel(), err.sum(dim=0) / err.numel()


def mse_grads_transposed(x, weight, bias, y):
    """Multiplies in the wrong order: the weight gradient comes out (in, out), the transpose of weight's shape."""
    err = x @ weight.T + bias - y
    return 2 * x.T @ err / err.numel(), 2 * err.sum(dim=0) / err.numel()


def mse_grads_sign_flipped(x, weight, bias, y):
    """Differentiates (y - prediction) squared but forgets the minus sign of the inner derivative."""
    err = y - (x @ weight.T + bias)
    return 2 * err.T @ x / err.numel(), 2 * err.sum(dim=0) / err.numel()


WRONG: dict[str, list[Callable]] = {
    "gradients": [gradients_on_the_callers_tensors, gradients_keeping_the_graph, gradients_by_hand_of_a_product],
    "count_trainable_parameters": [count_tensors, count_frozen_too, count_state_dict],
    "swap_modules": [swap_top_level_only, swap_loop_variable, swap_with_dotted_names],
    "prepare_batch": [prepare_without_assigning, prepare_device_only, prepare_labels_as_floats],
    "make_loader": [loader_without_generator, loader_seeding_globally, loader_not_shuffled],
    "train_step": [step_without_zero_grad, step_returning_tensor, step_without_train_mode, step_before_backward],
    "evaluate_accuracy": [accuracy_mean_of_batches, accuracy_in_train_mode, accuracy_with_grad, accuracy_as_tensor],
    "first_step_size": [step_size_without_step, step_size_signed_mean, step_size_as_lr_times_gradient,
                        step_size_from_a_mean_loss],
    "linear_mse_grads": [mse_grads_batch_mean_only, mse_grads_without_the_two, mse_grads_transposed,
                         mse_grads_sign_flipped],
}
