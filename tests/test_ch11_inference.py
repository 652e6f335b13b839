"""Chapter 11's package against independent references: FlopCounterMode, F.scaled_dot_product_attention on a
contiguous cache, the model's own cache, transformers' GPT-2 generating a left-padded batch, hand-played
schedules, torch.quantize_per_channel / quantize_per_tensor, and PyTorch's dynamic int8 quantization."""
import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch.utils.flop_counter import FlopCounterMode

from llmcourse.inference import batching, costs, paged_cache, quantization
from llmcourse.models.generation import generate
from llmcourse.models.gpt import GPT, GPTConfig


@pytest.fixture(scope="module")
def hf_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=48,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def gpt(hf_gpt2):
    return GPT.from_hf(hf_gpt2).eval()


# --------------------------------------------------------------------------- costs

@pytest.mark.parametrize("m,k,n", [(1, 64, 256), (32, 128, 128), (7, 5, 3)])
def test_matmul_flops_match_pytorchs_counter(m, k, n):
    with FlopCounterMode(display=False) as counter:
        torch.randn(m, k) @ torch.randn(k, n)
    assert costs.matmul_flops(m, k, n) == counter.get_total_flops()
    assert costs.arithmetic_intensity(m, k, n, 2) == pytest.approx(2 * m * k * n / (2 * (m * k + k * n + m * n)))


def test_decode_is_memory_bound_and_prefill_compute_bound_on_the_h100():
    chip = costs.H100_SXM
    assert 250 < chip.balance < 350                                           # 989e12 / 3.35e12 = 295
    assert costs.arithmetic_intensity(1, 4096, 4096, 2) < 1 < chip.balance    # one token: ~1 FLOP per byte
    assert costs.arithmetic_intensity(2048, 4096, 4096, 2) > chip.balance     # a long prompt
    assert chip.attainable(1.0) == pytest.approx(3.35e12)


def test_prefill_is_cheaper_per_token_than_decode(gpt):
    timing = costs.time_prefill_and_decode(gpt, prompt_len=32, new_tokens=8, repeats=2)
    assert timing["prefill_per_token_s"] < timing["decode_per_token_s"]


# --------------------------------------------------------------------------- paged cache

def _random_cache(lengths, block_size=4, heads=2, dim=8, layers=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cache = paged_cache.PagedKVCache(64, block_size, heads, dim, n_layers=layers)
    full = {}
    for step in range(max(lengths)):  # interleave the sequences so their blocks are scattered in the pool
        for i, n in enumerate(lengths):
            if step == 0:
                cache.add_sequence(f"s{i}")
                full[f"s{i}"] = ([], [])
            if step < n:
                k, v = torch.randn(layers, heads, 1, dim, generator=gen), torch.randn(layers, heads, 1, dim, generator=gen)
                cache.append(f"s{i}", k, v)
                full[f"s{i}"][0].append(k)
                full[f"s{i}"][1].append(v)
    return cache, {s: (torch.cat(k, -2), torch.cat(v, -2)) for s, (k, v) in full.items()}


def test_paged_cache_gathers_exactly_the_contiguous_cache():
    cache, full = _random_cache([5, 9, 1, 12])
    for seq, (k, v) in full.items():
        for layer in range(2):
            got_k, got_v = cache.gather(seq, layer)
            assert torch.equal(got_k, k[layer]) and torch.equal(got_v, v[layer])
    assert cache.blocks_in_use == 2 + 3 + 1 + 3
    assert cache.tables["s1"] != sorted(cache.tables["s1"]) or len(set(cache.tables["s1"])) == 3


@pytest.mark.parametrize("q_len", [1, 3])
def test_paged_attention_equals_sdpa_on_the_contiguous_cache(q_len):
    cache, full = _random_cache([7, 13], seed=1)
    q = torch.randn(2, q_len, 8, generator=torch.Generator().manual_seed(2))
    for seq, (k, v) in full.items():
        n = k.shape[-2]
        got = paged_cache.paged_attention(q, cache.k_pool[1], cache.v_pool[1], cache.tables[seq], n)
        causal = torch.ones(q_len, n, dtype=torch.bool).tril(diagonal=n - q_len)
        want = F.scaled_dot_product_attention(q, k[1], v[1], attn_mask=causal)
        assert torch.equal(got, want)
        if q_len == 1:  # a single new query sees every key: plain attention
            assert torch.allclose(got, torch.softmax(q @ k[1].transpose(-1, -2) / math.sqrt(8), -1) @ v[1], atol=1e-6)


def test_fork_shares_blocks_and_copies_on_write():
    cache = paged_cache.PagedKVCache(16, 4, 1, 2)
    cache.add_sequence("a")
    prefix = torch.arange(6.0 * 2).reshape(1, 1, 6, 2)
    cache.append("a", prefix, -prefix)
    cache.fork("a", "b")
    assert cache.tables["a"] == cache.tables["b"] and cache.blocks_in_use == 2   # 6 tokens, blocks of 4
    cache.append("b", torch.full((1, 1, 1, 2), 100.0), torch.full((1, 1, 1, 2), 100.0))
    assert cache.tables["a"][0] == cache.tables["b"][0]                           # the full block stays shared
    assert cache.tables["a"][1] != cache.tables["b"][1] and cache.blocks_in_use == 3
    assert torch.equal(cache.gather("a")[0], prefix[0])                           # the parent did not change
    assert torch.equal(cache.gather("b")[0][:, :6], prefix[0]) and cache.lengths["b"] == 7
    cache.free_sequence("a")
    assert cache.blocks_in_use == 2
    cache.free_sequence("b")
    assert cache.blocks_in_use == 0
    with pytest.raises(MemoryError):
        cache.add_sequence("big")
        cache.append("big", torch.zeros(1, 1, 65, 2), torch.zeros(1, 1, 65, 2))


def test_generation_through_the_paged_cache_equals_the_models_own_cache(gpt):
    ids = torch.tensor([3, 14, 15, 9, 2])
    cache = paged_cache.PagedKVCache(32, 4, 4, 8, n_layers=2)
    got = paged_cache.generate_with_paged_cache(gpt, ids, 20, cache)
    assert torch.equal(got, generate(gpt, ids, 20, top_k=1))
    assert cache.lengths["request"] == 24 and cache.blocks_in_use == 6


def test_slot_counts_by_hand():
    lengths = [1, 4, 5, 16]
    assert paged_cache.contiguous_slots(lengths, 16) == 64
    assert paged_cache.paged_slots(lengths, 4) == 4 + 4 + 8 + 16
    assert paged_cache.waste(lengths, 64) == pytest.approx(1 - 26 / 64)
    assert paged_cache.requests_that_fit(lengths, 30, max_len=16) == 1
    assert paged_cache.requests_that_fit(lengths, 30, block_size=4) == 3
    mix = paged_cache.request_lengths(500, seed=3)
    assert min(mix) >= 16 and max(mix) <= 2048
    assert paged_cache.waste(mix, paged_cache.paged_slots(mix, 16)) < 0.05 < 0.5 < \
        paged_cache.waste(mix, paged_cache.contiguous_slots(mix, 2048))


# --------------------------------------------------------------------------- batching

PROMPTS = [[5], [7, 8, 9, 10, 11, 12], [1, 2, 3], [30, 31]]


def test_left_pad_by_hand():
    ids, mask = batching.left_pad([[4, 5], [6], [7, 8, 9]], pad_id=0)
    assert ids.tolist() == [[0, 4, 5], [0, 0, 6], [7, 8, 9]]
    assert mask.tolist() == [[False, True, True], [False, False, True], [True, True, True]]


def test_masked_forward_gives_each_row_its_unpadded_logits(gpt):
    ids, mask = batching.left_pad(PROMPTS, pad_id=0)
    logits, _ = batching.masked_forward(gpt, ids, mask)
    for row, prompt in enumerate(PROMPTS):
        alone = gpt(torch.tensor([prompt]))
        assert torch.allclose(logits[row, -len(prompt):], alone[0], atol=1e-5)


def test_batched_generation_equals_each_prompt_alone_with_per_row_stopping(gpt):
    stop = batching.generate_alone(gpt, PROMPTS[1], 12)[3]  # a token row 1 produces: that row stops early
    got = batching.generate_batch(gpt, PROMPTS, 12, pad_id=0, stop_id=stop)
    want = [batching.generate_alone(gpt, p, 12, stop_id=stop) for p in PROMPTS]
    assert got == want
    assert len(got[1]) <= 4 and got[1][-1] == stop and max(len(g) for g in got) == 12


def test_batched_generation_equals_transformers_left_padded_generate(hf_gpt2, gpt):
    got = batching.generate_batch(gpt, PROMPTS, 10, pad_id=0)
    ids, mask = batching.left_pad(PROMPTS, pad_id=0)
    out = hf_gpt2.generate(ids, attention_mask=mask.long(), max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert got == out[:, ids.shape[1]:].tolist()


def test_simulated_schedules_by_hand():
    requests = [batching.Request(0.0, 1), batching.Request(0.0, 3), batching.Request(0.0, 2)]
    static = batching.simulate(requests, max_batch=2, policy="static", step_time=(1.0, 0.0))
    # batch {0, 1} runs 3 steps (request 0 leaves after 1 but its slot waits), then {2} runs 2 steps
    assert static["finish"] == [1.0, 3.0, 5.0] and static["steps"] == 5
    continuous = batching.simulate(requests, max_batch=2, policy="continuous", step_time=(1.0, 0.0))
    # request 2 takes request 0's slot at step 2
    assert continuous["finish"] == [1.0, 3.0, 3.0] and continuous["steps"] == 3
    assert continuous["throughput"] == pytest.approx(6 / 3) and static["throughput"] == pytest.approx(6 / 5)
    late = batching.simulate([batching.Request(2.0, 1)], 4, "continuous", (0.5, 0.25))
    assert late["finish"] == [2.75] and late["latency"] == [0.75]
    # a third number: each step that admits requests costs that much more (here 0.5 s)
    with_prefill = batching.simulate(requests, max_batch=2, policy="continuous", step_time=(1.0, 0.0, 0.5))
    assert with_prefill["finish"] == [1.5, 4.0, 4.0]   # steps: 1.5 (admits 0, 1), 1.5 (admits 2), 1.0
    for bad in [(1.0,), (1.0, -0.1), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0)]:
        with pytest.raises(ValueError, match="step_time"):
            batching.simulate(requests, 2, "static", bad)


def test_continuous_batching_beats_static_on_a_stream():
    stream = batching.request_stream(200, rate=40.0, shortest=4, longest=64, seed=0)
    static = batching.simulate(stream, 8, "static", (0.01, 0.002))
    continuous = batching.simulate(stream, 8, "continuous", (0.01, 0.002))
    assert continuous["mean_latency"] < static["mean_latency"]
    assert continuous["throughput"] > static["throughput"]


# --------------------------------------------------------------------------- quantization

def test_batching_timeline_draws_one_panel_per_policy_even_for_one():
    from llmcourse.inference import plots
    stream = batching.request_stream(20, rate=10.0, shortest=2, longest=8, seed=0)
    for policies in (["continuous"], ["static", "continuous"]):
        results = {p: batching.simulate(stream, 4, p, (0.02, 0.002)) for p in policies}
        fig = plots.plot_batching_timeline(stream, results, max_batch=4)
        assert len(fig.axes) == len(policies)
        assert [ax.get_title().split(":")[0] for ax in fig.axes] == policies
    with pytest.raises(ValueError, match="at least one policy"):
        plots.plot_batching_timeline(stream, {}, max_batch=4)


def test_absmax_per_channel_matches_torch_quantize_per_channel():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    q, scale = quantization.absmax_quantize(w, 8, dim=0)
    assert scale.shape == (16, 1) and q.dtype == torch.int8 and int(q.abs().max()) == 127
    ref = torch.quantize_per_channel(w, scale[:, 0].double(), torch.zeros(16, dtype=torch.long), 0, torch.qint8)
    assert torch.equal(q, ref.int_repr())
    assert (quantization.dequantize(q, scale) - w).abs().max() <= scale.max() / 2 + 1e-7


def test_absmax_per_tensor_and_zero_point_match_torch_quantize_per_tensor():
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(1)) + 0.7   # skewed: zero-point helps
    q, scale = quantization.absmax_quantize(w, 8)
    assert torch.equal(q, torch.quantize_per_tensor(w, float(scale), 0, torch.qint8).int_repr())
    qz, zscale, zero = quantization.zero_point_quantize(w, 8)
    ref = torch.quantize_per_tensor(w, float(zscale), int(zero), torch.quint8)
    assert torch.equal(qz, ref.int_repr())
    assert torch.allclose(quantization.dequantize(qz, zscale, zero), ref.dequantize(), atol=1e-6)
    err_abs = (quantization.dequantize(q, scale) - w).abs().mean()
    err_zero = (quantization.dequantize(qz, zscale, zero) - w).abs().mean()
    assert err_zero < err_abs


def test_group_quantization_is_per_channel_quantization_of_the_groups():
    w = torch.randn(6, 64, generator=torch.Generator().manual_seed(2))
    q, scales = quantization.group_quantize(w, 4, 16)
    assert scales.shape == (6, 4, 1) and int(q.abs().max()) == 7
    rows = w.reshape(24, 16)
    ref = torch.quantize_per_channel(rows, scales.reshape(24).double(), torch.zeros(24, dtype=torch.long), 0,
                                     torch.qint8).int_repr()
    assert torch.equal(q.reshape(24, 16), ref)
    back = quantization.group_dequantize(q, scales, 16)
    per_channel = quantization.fake_quantize(w, "int4 per channel")
    assert (back - w).abs().mean() < (per_channel - w).abs().mean()


def test_quantized_model_loss_and_bytes_against_pytorchs_dynamic_int8(gpt):
    ids = torch.randint(0, 50, (4 * 32 + 1,), generator=torch.Generator().manual_seed(3))
    base = quantization.mean_loss(gpt, ids, 32, 4)
    ours = quantization.mean_loss(quantization.quantize_model(gpt, "int8 per tensor"), ids, 32, 4)
    theirs = quantization.mean_loss(quantization.pytorch_dynamic_int8(gpt), ids, 32, 4)
    assert abs(ours - base) < 0.01 and abs(theirs - base) < 0.01
    unique = {id(p): p for p in gpt.parameters()}
    assert quantization.weight_bytes(gpt, None) == 4 * sum(p.numel() for p in unique.values())
    assert quantization.weight_bytes(gpt, "int4 group 32") < quantization.weight_bytes(gpt, "int8 per channel") \
        < quantization.weight_bytes(gpt, None) / 2
    with pytest.raises(ValueError):
        quantization.fake_quantize(gpt.lm_head.weight, "int3")
