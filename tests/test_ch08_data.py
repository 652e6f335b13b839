"""Chapter 08's building blocks against independent references: the synthetic corpus (closed forms, an
eigen-solver, long samples), data windows and loaders (torch's unfold, DataLoader), downloads (a fake URL
opener serving local bytes; no network), schedules (PyTorch's LinearLR + CosineAnnealingLR, transformers'
schedule) and the estimates (FlopCounterMode on a real GPT, tensors' nbytes, AdamW's state)."""
from __future__ import annotations

import hashlib
import io
import math
import urllib.error

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from llmcourse.pretraining import data as D
from llmcourse.pretraining import estimates as E
from llmcourse.pretraining.schedules import warmup_cosine_lr, warmup_cosine_schedule
from llmcourse.pretraining.synthetic import MarkovSource, de_bruijn, default_source

# --------------------------------------------------------------------------- synthetic corpus


def _shannon(p) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def test_order_zero_entropy_is_the_unigram_entropy():
    source = MarkovSource(vocab_size=7, order=0, seed=3, branching=5)
    assert source.entropy_rate() == pytest.approx(_shannon(source.probs[0].tolist()), abs=1e-12)
    assert source.optimal_loss(16) == pytest.approx(source.entropy_rate(), abs=1e-12)


def test_two_state_chain_matches_the_closed_form():
    source = MarkovSource(vocab_size=2, order=1, seed=5, branching=2, concentration=2.0)
    a, b = float(source.probs[0, 1]), float(source.probs[1, 0])  # P(0 -> 1), P(1 -> 0)
    pi0 = b / (a + b)
    h = pi0 * _shannon([a, 1 - a]) + (1 - pi0) * _shannon([b, 1 - b])
    assert source.entropy_rate() == pytest.approx(h, abs=1e-10)
    assert source.conditional_entropy(0) == pytest.approx(_shannon([pi0, 1 - pi0]), abs=1e-10)


def test_stationary_distribution_matches_an_eigenvector():
    source = MarkovSource(vocab_size=5, order=2, seed=1, branching=3)
    C, V = source.n_contexts, source.vocab_size
    P = torch.zeros(C, C, dtype=torch.float64)
    for c in range(C):
        for x in range(V):
            P[c, (c * V + x) % C] += source.probs[c, x]
    values, vectors = torch.linalg.eig(P.T)
    v = vectors[:, (values - 1).abs().argmin()].real
    torch.testing.assert_close(source.stationary, v / v.sum(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_long_sample_loss_converges_to_the_entropy_rate(order):
    source = MarkovSource(vocab_size=8, order=order, seed=order, branching=3)
    ids = source.sample(150_000, seed=7)
    assert len(ids) == 150_000 and ids.dtype == torch.long
    assert -source.token_log_probs(ids).mean().item() == pytest.approx(source.entropy_rate(), abs=0.02)
    unigrams = torch.bincount(ids, minlength=8).double() / len(ids)  # plug-in entropies from counts
    bigrams = torch.bincount(ids[:-1] * 8 + ids[1:], minlength=64).double() / (len(ids) - 1)
    assert source.conditional_entropy(0) == pytest.approx(_shannon(unigrams.tolist()), abs=0.01)
    assert source.conditional_entropy(1) == pytest.approx(
        _shannon(bigrams.tolist()) - _shannon(unigrams.tolist()), abs=0.01)


def test_windows_cost_more_than_the_entropy_rate_and_converge_to_it():
    source = default_source()
    losses = [source.optimal_loss(t) for t in (1, 2, 8, 64, 4096)]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    assert losses[0] == source.conditional_entropy(1)  # one token seen: a first-order guess
    h, h1 = source.entropy_rate(), source.conditional_entropy(1)
    assert source.optimal_loss(32) == pytest.approx((h1 + 31 * h) / 32)  # order 2: only position 0 lacks context
    assert losses[-1] == pytest.approx(source.entropy_rate(), abs=1e-3)
    assert 1.0 < source.entropy_rate() < 1.5


def test_transition_table_is_sparse_seeded_and_normalised():
    source = MarkovSource(vocab_size=10, order=2, seed=4, branching=3)
    torch.testing.assert_close(source.probs.sum(-1), torch.ones(100, dtype=torch.float64))
    assert ((source.probs > 0).sum(-1) == 3).all()
    torch.testing.assert_close(MarkovSource(10, 2, seed=4, branching=3).probs, source.probs)
    assert not torch.equal(MarkovSource(10, 2, seed=5, branching=3).probs, source.probs)
    assert torch.equal(source.sample(500, seed=1), source.sample(500, seed=1))
    assert not torch.equal(source.sample(500, seed=1), source.sample(500, seed=2))


@pytest.mark.parametrize("vocab, order", [(2, 3), (3, 2), (5, 1), (4, 3)])
def test_de_bruijn_visits_every_context_once(vocab, order):
    cycle = de_bruijn(vocab, order)
    assert len(cycle) == vocab ** order
    contexts = {tuple((cycle + cycle)[i:i + order]) for i in range(len(cycle))}
    assert len(contexts) == vocab ** order


def test_letters_round_trip_and_errors():
    source = default_source()
    text = source.text(40, seed=3)
    assert set(text) <= set(source.alphabet) and len(text) == 40
    assert source.decode(source.encode(text)) == text
    with pytest.raises(ValueError, match="not one of"):
        source.encode("xyz!")
    for kwargs in ({"vocab_size": 1}, {"vocab_size": 30}, {"branching": 20}, {"branching": 1}, {"concentration": 0.0},
                   {"order": -1}):
        with pytest.raises(ValueError):
            MarkovSource(**{"vocab_size": 12, **kwargs})
    with pytest.raises(ValueError, match="token ids"):
        source.token_log_probs(torch.tensor([0, 1, 99]))


# --------------------------------------------------------------------------- windows, splits, loaders


@pytest.mark.parametrize("n, T, stride", [(101, 10, None), (100, 10, None), (57, 8, 3), (9, 8, 1)])
def test_token_windows_match_unfold(n, T, stride):
    ids = torch.randint(0, 50, (n,), generator=torch.Generator().manual_seed(n))
    windows = D.TokenWindows(ids.tolist(), T, stride)
    reference = ids.unfold(0, T + 1, stride or T)  # independent: every (T + 1)-token slice
    assert len(windows) == len(reference)
    x = torch.stack([windows[i][0] for i in range(len(windows))])
    y = torch.stack([windows[i][1] for i in range(len(windows))])
    assert torch.equal(x, reference[:, :-1]) and torch.equal(y, reference[:, 1:])
    with pytest.raises(IndexError):
        windows[len(windows)]


def test_token_windows_reject_bad_input():
    with pytest.raises(ValueError, match="context_length"):
        D.TokenWindows(list(range(10)), 0)
    with pytest.raises(ValueError, match="at least context_length"):
        D.TokenWindows(list(range(10)), 10)
    with pytest.raises(ValueError, match="1-D"):
        D.TokenWindows(torch.zeros(3, 4, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="integer"):
        D.TokenWindows(torch.rand(20), 4)
    with pytest.raises(ValueError, match="stride"):
        D.TokenWindows(list(range(10)), 3, stride=0)


def test_split_is_contiguous():
    train, val = D.split_ids(list(range(100)), 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError, match="val_fraction"):
            D.split_ids(list(range(100)), bad)
    with pytest.raises(ValueError, match="empty"):
        D.split_ids([1, 2, 3], 0.01)


def test_loader_epochs_are_seeded_reshuffled_and_complete():
    windows = D.TokenWindows(torch.arange(401), 4)  # 100 windows
    first = [x for x, _ in D.make_loader(windows, 8, seed=3, drop_last=False)]
    again = [x for x, _ in D.make_loader(windows, 8, seed=3, drop_last=False)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    starts = sorted(torch.cat(first)[:, 0].tolist())
    assert starts == list(range(0, 400, 4))  # every window exactly once per epoch
    loader = D.make_loader(windows, 8, seed=3)
    epoch0 = torch.cat([x for x, _ in loader])
    epoch1 = torch.cat([x for x, _ in loader])
    assert epoch0.shape == (96, 4) and not torch.equal(epoch0, epoch1)
    loader.sampler.set_epoch(1)  # jump straight to epoch 1: the same order as before
    assert torch.equal(torch.cat([x for x, _ in loader]), epoch1)
    x, y = next(iter(loader))
    assert x.shape == y.shape == (8, 4) and torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="batch_size"):
        D.make_loader(windows, 0)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        D.make_loader(windows, 500)


def test_random_batch_is_shifted_and_covers_the_last_window():
    ids = torch.arange(20)
    x, y = D.random_batch(ids, 2000, 5, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (2000, 5)
    assert torch.equal(y, x + 1)  # ids are 0, 1, 2, ...: the target is the next id
    assert x[:, 0].min() == 0 and x[:, 0].max() == 20 - 5 - 1
    x2, _ = D.random_batch(ids, 2000, 5, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="too short"):
        D.random_batch(ids, 2, 20)


def test_real_text_and_char_tokenizer():
    text = D.real_text_corpus(5000)
    assert 4000 < len(text) <= 5000 and text == D.real_text_corpus(5000)
    tokenizer, ids = D.char_tokenize(text)
    assert tokenizer.decode(ids.tolist()) == text and ids.dtype == torch.long


# --------------------------------------------------------------------------- files and downloads

PAYLOAD = "First Citizen:\nBefore we proceed any further, hear me speak.\n".encode()


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def fake_corpus(monkeypatch):
    """Register a corpus whose 'download' serves PAYLOAD from memory; count the downloads."""
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return FakeResponse(PAYLOAD)

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    source = D.CorpusSource("https://example.invalid/t.txt", "t.txt", len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())
    monkeypatch.setitem(D.CORPORA, "test_corpus", source)
    return calls


def test_fetch_downloads_once_and_checks_the_cache(tmp_path, fake_corpus):
    path = D.fetch_corpus("test_corpus", tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert D.load_corpus("test_corpus", tmp_path) == PAYLOAD.decode()
    assert len(fake_corpus) == 1  # the second use came from the cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]  # no leftover partial file
    path.write_bytes(PAYLOAD.replace(b"speak", b"SPEAK"))  # same size, different bytes
    with pytest.raises(D.CorpusError, match="SHA-256"):
        D.fetch_corpus("test_corpus", tmp_path)


def test_fetch_uses_the_cache_variable(tmp_path, monkeypatch, fake_corpus):
    monkeypatch.setenv("LLMCOURSE_CACHE", str(tmp_path / "cache"))
    assert D.fetch_corpus("test_corpus").parent == tmp_path / "cache"


def test_fetch_rejects_a_wrong_download(tmp_path, monkeypatch, fake_corpus):
    monkeypatch.setitem(D.CORPORA, "test_corpus", D.CorpusSource("https://example.invalid/t.txt", "t.txt",
                                                                    len(PAYLOAD), "0" * 64))
    with pytest.raises(D.CorpusError, match="checksum"):
        D.fetch_corpus("test_corpus", tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-checked stays behind


def test_fetch_offline_says_where_to_put_the_file(tmp_path, monkeypatch, fake_corpus):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(D.CorpusError, match="save it as") as info:
        D.fetch_corpus("test_corpus", tmp_path)
    assert str(tmp_path / "t.txt") in str(info.value)
    (tmp_path / "t.txt").write_bytes(PAYLOAD)  # placed by hand: accepted after the checks
    assert D.fetch_corpus("test_corpus", tmp_path).read_bytes() == PAYLOAD


def test_trust_on_first_use_records_the_checksum(tmp_path, monkeypatch, fake_corpus):
    monkeypatch.setitem(D.CORPORA, "test_corpus", D.CorpusSource("https://example.invalid/t.txt", "t.txt",
                                                                    None, None))
    path = D.fetch_corpus("test_corpus", tmp_path)
    assert (tmp_path / "t.txt.sha256").read_text().strip() == hashlib.sha256(PAYLOAD).hexdigest()
    path.write_bytes(PAYLOAD + b"more")
    with pytest.raises(D.CorpusError, match="SHA-256"):
        D.fetch_corpus("test_corpus", tmp_path)


def test_registry_and_unknown_names():
    source = D.CORPORA["tiny_shakespeare"]
    assert source.size == 1_115_394 and len(source.sha256) == 64 and int(source.sha256, 16) >= 0
    with pytest.raises(ValueError, match="tiny_shakespeare"):
        D.fetch_corpus("no_such_corpus")


def test_load_text_file_names_the_bad_byte(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello \xff world")
    with pytest.raises(ValueError, match="byte 6"):
        D.load_text_file(path)
    good = tmp_path / "good.txt"
    good.write_bytes("héllo".encode())
    assert D.load_text_file(good, hashlib.sha256("héllo".encode()).hexdigest()) == "héllo"
    with pytest.raises(D.CorpusError):
        D.load_text_file(good, "0" * 64)
    with pytest.raises(FileNotFoundError):
        D.load_text_file(tmp_path / "missing.txt")


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("warmup, total, min_lr", [(10, 50, 1e-4), (0, 30, 0.0), (5, 5, 2e-4), (1, 40, 0.0)])
def test_schedule_matches_torch_and_transformers(warmup, total, min_lr):
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    max_lr = 1e-3

    def optimizer():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)

    opt_torch, opt_hf = optimizer(), optimizer()
    phases = [CosineAnnealingLR(opt_torch, T_max=max(total - warmup, 1), eta_min=min_lr)]
    if warmup:  # LinearLR cannot start at exactly 0; 1e-12 is close enough
        phases.insert(0, LinearLR(opt_torch, start_factor=1e-12, end_factor=1.0, total_iters=warmup))
    torch_schedule = SequentialLR(opt_torch, phases, milestones=[warmup]) if warmup else phases[0]
    hf_schedule = get_cosine_with_min_lr_schedule_with_warmup(opt_hf, warmup, total, min_lr=min_lr)
    for step in range(total + 1):
        ours = warmup_cosine_lr(step, max_lr, warmup, total, min_lr)
        if warmup < total or step < warmup:  # with no cosine phase the references disagree with each other
            assert ours == pytest.approx(opt_torch.param_groups[0]["lr"], abs=1e-12), step
            assert ours == pytest.approx(opt_hf.param_groups[0]["lr"], abs=1e-12), step
        for opt, schedule in ((opt_torch, torch_schedule), (opt_hf, hf_schedule)):
            opt.step()
            schedule.step()
    assert warmup_cosine_lr(total, max_lr, warmup, total, min_lr) == pytest.approx(min_lr)
    assert warmup_cosine_lr(total + 100, max_lr, warmup, total, min_lr) == min_lr


def test_schedule_key_points_and_errors():
    assert warmup_cosine_lr(0, 1.0, 10, 110) == 0.0
    assert warmup_cosine_lr(5, 1.0, 10, 110) == 0.5
    assert warmup_cosine_lr(10, 1.0, 10, 110) == 1.0
    assert warmup_cosine_lr(60, 1.0, 10, 110, 0.2) == pytest.approx(0.6)
    for args in ((-1, 1.0, 10, 100), (0, 1.0, 10, 5), (0, 1.0, 10, 100, 2.0), (0.5, 1.0, 10, 100)):
        with pytest.raises(ValueError):
            warmup_cosine_lr(*args)


def test_lambda_schedule_follows_the_function_for_every_group():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW([{"params": [model.weight], "lr": 1e-3}, {"params": [model.bias], "lr": 4e-3}])
    schedule = warmup_cosine_schedule(opt, 4, 20, min_lr=1e-4)
    for step in range(25):
        for group, max_lr in zip(opt.param_groups, (1e-3, 4e-3)):
            assert group["lr"] == pytest.approx(warmup_cosine_lr(step, max_lr, 4, 20, 1e-4), abs=1e-15)
        opt.step()
        schedule.step()
    with pytest.raises(ValueError, match="min_lr"):
        warmup_cosine_schedule(torch.optim.SGD(model.parameters(), lr=1e-5), 4, 20, min_lr=1e-4)


# --------------------------------------------------------------------------- estimates


def _small_gpt():
    from llmcourse.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, context_length=32, d_model=64, n_layers=2, n_heads=4))


def _counted_training_flops(model, ids, logits_of=lambda out: out) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        logits_of(model(ids)).sum().backward()
    return counter.get_total_flops()


def test_flops_match_a_counted_forward_and_backward():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.pytorch_utils import Conv1D

    # transformers' GPT-2 with its plain ("eager") attention: every matrix product is visible to the counter
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=64, n_layer=2, n_head=4, bos_token_id=0,
                        eos_token_id=0)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(config)
    ids = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(0))
    counted = _counted_training_flops(gpt2, ids, lambda out: out.logits)
    n_matmul = sum(m.weight.numel() for m in gpt2.modules() if isinstance(m, (Conv1D, torch.nn.Linear)))
    assert counted == pytest.approx(E.flops_per_token(n_matmul, 2, 32, 64) * ids.numel(), rel=1e-6)
    without_attention = E.flops_per_token(n_matmul, 2, 32, 64, include_attention=False)
    assert without_attention == E.training_flops(n_matmul, 1)

    model = _small_gpt()  # the course's GPT: 6 N D with all its parameters is within 10%
    n_all = sum(p.numel() for p in model.parameters())
    assert _counted_training_flops(model, ids) == pytest.approx(E.training_flops(n_all, ids.numel()), rel=0.10)


def test_memory_breakdown_matches_real_tensors():
    model = _small_gpt()
    n = sum(p.numel() for p in model.parameters())
    model(torch.randint(0, 64, (2, 8))).logsumexp(-1).mean().backward()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.step()
    states = sum(s[k].nbytes for s in opt.state.values() for k in ("exp_avg", "exp_avg_sq"))
    fp32 = E.memory_breakdown(n, "fp32", "adamw")
    assert fp32["parameters"] == sum(p.nbytes for p in model.parameters())
    assert fp32["gradients"] == sum(p.grad.nbytes for p in model.parameters())
    assert fp32["optimizer_states"] == states
    assert fp32["total"] == 16 * n and fp32["activations"] == 0

    half = _small_gpt().to(torch.bfloat16)  # mixed precision: 16-bit working copy, fp32 master + states
    half(torch.randint(0, 64, (2, 8))).float().logsumexp(-1).mean().backward()
    mixed = E.memory_breakdown(n, "mixed", "adamw", activations_bytes=1000)
    assert mixed["parameters"] == sum(p.nbytes for p in half.parameters())
    assert mixed["gradients"] == sum(p.grad.nbytes for p in half.parameters())
    assert mixed["optimizer_states"] == states + sum(p.nbytes for p in model.parameters())
    assert mixed["total"] == 16 * n + 1000  # ZeRO's 16 bytes per parameter

    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sgd.step()
    buffers = sum(s["momentum_buffer"].nbytes for s in sgd.state.values())
    assert E.memory_breakdown(n, "fp32", "sgd_momentum")["optimizer_states"] == buffers
    assert E.memory_breakdown(n, "fp32", "sgd")["total"] == 8 * n
    with pytest.raises(ValueError, match="precision"):
        E.memory_breakdown(n, "fp8")
    with pytest.raises(ValueError, match="optimizer"):
        E.memory_breakdown(n, optimizer="lion")


@pytest.mark.parametrize("b, s, h, a, L", [(1, 2048, 12288, 96, 96), (8, 128, 64, 4, 2)])
def test_activation_bytes_follow_korthikanti(b, s, h, a, L):
    assert E.activation_bytes(b, s, h, L, a) == pytest.approx(L * s * b * h * (34 + 5 * a * s / h))
    assert E.activation_bytes(b, s, h, L, a, recompute="selective") == L * 34 * s * b * h
    assert E.activation_bytes(b, s, h, L, a, recompute=True) == L * 2 * s * b * h
    assert E.activation_bytes(b, s, h, L, a, bytes_per_value=4, dropout=False) == L * 4 * (16 * s * b * h
                                                                                          + a * s * s * b)
    with pytest.raises(ValueError, match="batch"):
        E.activation_bytes(0, s, h, L, a)


def test_throughput_mfu_and_peaks():
    assert E.tokens_per_second(1000, 2.0) == 500.0
    assert E.mfu(1000.0, 6e9, 1.2e13) == pytest.approx(0.5)
    assert E.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert E.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert E.peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert E.peak_flops("cpu") is None and E.peak_flops("Some Future GPU") is None
    assert E.measure_matmul_flops(64, repeats=2) > 1e6
    with pytest.raises(ValueError, match="peak_flops"):
        E.mfu(1000.0, 6e9, None)
    with pytest.raises(ValueError):
        E.tokens_per_second(10, 0)
