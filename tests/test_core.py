"""Fast mode, device choice and seeding (chapter 00's package core)."""
import random

import numpy as np
import pytest
import torch

from llmcourse import fast_mode, get_device, scaled, seed_everything
from llmcourse.device import describe_device


@pytest.mark.parametrize("value,expected", [("1", True), ("yes", True), ("0", False), ("", False), ("off", False)])
def test_fast_mode_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("LLMCOURSE_FAST", value)
    assert fast_mode() is expected
    assert scaled(1000, 10) == (10 if expected else 1000)


def test_fast_mode_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_FAST", "maybe")
    with pytest.raises(ValueError, match="LLMCOURSE_FAST"):
        fast_mode()


def test_seed_everything_repeats_every_generator():
    seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(7)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])
    # and it is the same stream as PyTorch's own seeding
    torch.manual_seed(7)
    assert torch.equal(torch.rand(3), first[2])


def test_seed_everything_returns_a_seeded_generator():
    g1, g2 = seed_everything(3), seed_everything(3)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    with pytest.raises(TypeError):
        seed_everything("3")


def test_get_device_agrees_with_accelerate():
    from accelerate import PartialState

    assert get_device() == PartialState().device
    assert get_device("cpu") == torch.device("cpu")
    assert describe_device(torch.device("cpu")).startswith("cpu")


def test_get_device_environment_override(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_a_missing_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        get_device("cuda")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from llmcourse.files import atomic_write

    target = tmp_path / "state.bin"
    with atomic_write(target) as f:
        f.write(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as f:
            f.write(b"half of the sec")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]  # no temporary file left behind
    with atomic_write(target, "w", encoding="utf-8") as f:
        f.write("second")
    assert target.read_text(encoding="utf-8") == "second"
