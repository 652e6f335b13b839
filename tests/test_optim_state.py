"""Chapter 02's optimizers can be checkpointed like PyTorch's, and gradient clipping equals torch's."""
import io

import pytest
import torch

from llmcourse.basics import optim

MAKERS = {
    "SGD + momentum": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
    "AdaGrad": lambda ps: optim.AdaGrad(ps, lr=0.1),
    "RMSProp": lambda ps: optim.RMSProp(ps, lr=0.01, momentum=0.5),
    "Adam": lambda ps: optim.Adam(ps, lr=0.01),
    "AdamW": lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.1),
}


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_(),
            torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()]


def _steps(opt, params, n, start):
    for step in range(start, start + n):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
        opt.zero_grad()
        (torch.tanh(x @ params[0] + params[1]) ** 2).sum().backward()
        opt.step()


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_resuming_from_a_saved_state_continues_exactly(name):
    straight = _params()
    opt = MAKERS[name](straight)
    _steps(opt, straight, 10, 0)

    first = _params()
    opt1 = MAKERS[name](first)
    _steps(opt1, first, 4, 0)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "optimizer": opt1.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # a checkpoint that loads safely
    resumed = [p.clone().requires_grad_() for p in saved["params"]]
    opt2 = MAKERS[name](resumed)
    opt2.load_state_dict(saved["optimizer"])
    _steps(opt2, resumed, 6, 4)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_state_dict_is_a_copy_and_bad_states_are_refused():
    params = _params()
    opt = optim.Adam(params, lr=0.01)
    _steps(opt, params, 2, 0)
    state = opt.state_dict()
    _steps(opt, params, 1, 2)
    assert state["state"][0]["t"] == 2 and opt.state[0]["t"] == 3
    with pytest.raises(ValueError, match="for 2 parameters, but the optimizer has 1"):
        optim.Adam(params[:1]).load_state_dict(state)
    with pytest.raises(ValueError, match="not the ones it was saved for"):
        optim.Adam([params[1], params[0]]).load_state_dict(state)


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 1e6])
def test_clip_grad_norm_equals_torch(max_norm):
    ours, theirs = _params(1), _params(1)
    for ps in (ours, theirs):
        (ps[0].sum() * 3 + (ps[1] ** 2).sum()).backward()
    norm = optim.clip_grad_norm(ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert norm == pytest.approx(float(expected), rel=1e-12)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        optim.clip_grad_norm(ours, 0)
