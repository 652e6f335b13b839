"""Chapter 11's scheduler (llmcourse.inference.scheduler) against independent references: every request's tokens
equal the prompt generated alone and transformers' GPT-2 greedy ``generate`` on the same weights, under both
policies and both caches, with requests arriving mid-run, different lengths and stop tokens; with the simulator's
cost model its schedule equals ``batching.simulate`` step for step. Also the batching-timeline explorer."""
import pytest
import torch
import transformers

from llmcourse.inference import batching, scheduler, widgets
from llmcourse.models.gpt import GPT

MAX_NEW = 14


@pytest.fixture(scope="module")
def hf_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=48,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def gpt(hf_gpt2):
    return GPT.from_hf(hf_gpt2).eval()


def _prompts(n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 50, (int(torch.randint(1, 9, (1,), generator=gen)),), generator=gen).tolist()
            for _ in range(n)]


@pytest.fixture(scope="module")
def stream(gpt):
    """14 requests arriving over time, 2 to 14 new tokens; a stop id that some of them produce early."""
    prompts = _prompts(14)
    plain = scheduler.prompt_stream(prompts, rate=400.0, shortest=2, longest=MAX_NEW, seed=3)
    counts = {}
    for r in plain:
        for t in batching.generate_alone(gpt, list(r.prompt), r.max_new_tokens)[:-1]:
            counts[t] = counts.get(t, 0) + 1
    stop = max(counts, key=counts.get)      # the token most answers produce before their last
    return [scheduler.GenerationRequest(r.arrival, r.prompt, r.max_new_tokens, stop) for r in plain]


@pytest.mark.parametrize("cache", ["contiguous", "paged"])
@pytest.mark.parametrize("policy", ["static", "continuous"])
def test_every_request_gets_what_it_gets_alone(gpt, stream, policy, cache):
    report = scheduler.serve(gpt, stream, max_batch=4, policy=policy, cache=cache, step_time=(0.004, 0.001))
    want = [batching.generate_alone(gpt, list(r.prompt), r.max_new_tokens, r.stop_id) for r in stream]
    assert report["tokens"] == want
    stopped = [t for t, r in zip(want, stream) if len(t) < r.max_new_tokens]
    assert stopped and all(t[-1] == stream[0].stop_id for t in stopped)        # some stopped early at the stop id
    assert len({len(t) for t in want}) > 3                                       # answers of many lengths
    served = report["served"]
    assert all(s.request.arrival <= s.admitted < s.first_token <= s.finished for s in served)
    assert max(s.request.arrival for s in served) > min(s.finished for s in served)  # arrivals while others run
    if policy == "continuous":  # some step prefilled new prompts while decoding earlier ones
        assert any(0 < p < b for p, (_, b) in zip(report["prefills"], report["timeline"]))
    else:                       # a static batch is admitted only when the previous one has left
        assert all(p in (0, b) for p, (_, b) in zip(report["prefills"], report["timeline"]))
    assert max(b for _, b in report["timeline"]) == 4


@pytest.mark.parametrize("policy", ["static", "continuous"])
def test_every_request_equals_transformers_greedy_generate(hf_gpt2, gpt, stream, policy):
    report = scheduler.serve(gpt, stream, max_batch=3, policy=policy)          # measured clock
    for r, tokens in zip(stream, report["tokens"]):
        out = hf_gpt2.generate(torch.tensor([r.prompt]), max_new_tokens=r.max_new_tokens, do_sample=False,
                               eos_token_id=r.stop_id, pad_token_id=0)
        assert tokens == out[0, len(r.prompt):].tolist()


@pytest.mark.parametrize("cost", [(0.01, 0.002), (0.01, 0.002, 0.007)])
@pytest.mark.parametrize("policy", ["static", "continuous"])
def test_with_the_cost_model_the_schedule_is_the_simulators(gpt, policy, cost):
    prompts = _prompts(20, seed=4)
    requests = scheduler.prompt_stream(prompts, rate=150.0, shortest=1, longest=12, seed=5)
    report = scheduler.serve(gpt, requests, max_batch=5, policy=policy, step_time=cost)
    simulated = batching.simulate(batching.request_stream(20, 150.0, 1, 12, seed=5), 5, policy, cost)
    if len(cost) == 3:  # the prefill charge lands on the steps that admitted requests, and only there
        extra = [d - cost[0] - cost[1] * b for d, (_, b) in zip(report["durations"], report["timeline"])]
        assert extra == pytest.approx([cost[2] if p else 0.0 for p in report["prefills"]], abs=1e-12)
        assert 0 < sum(p > 0 for p in report["prefills"]) < report["steps"]
    assert [len(t) for t in report["tokens"]] == [r.max_new_tokens for r in requests]
    assert report["timeline"] == simulated["timeline"] and report["steps"] == simulated["steps"]
    assert report["finish"] == pytest.approx(simulated["finish"], abs=1e-12)
    assert report["throughput"] == pytest.approx(simulated["throughput"])
    assert report["mean_latency"] == pytest.approx(simulated["mean_latency"])


def test_a_schedule_played_by_hand(gpt):
    # three requests waiting at 0 s wanting 1, 3 and 2 tokens; room for 2; every step takes 1 s
    requests = [scheduler.GenerationRequest(0.0, (3, 4), 1), scheduler.GenerationRequest(0.0, (5,), 3),
                scheduler.GenerationRequest(0.0, (6, 7, 8), 2)]
    static = scheduler.serve(gpt, requests, 2, "static", step_time=(1.0, 0.0))
    assert [s.admitted for s in static["served"]] == [0.0, 0.0, 3.0]       # request 2 waits for the whole batch
    assert [s.first_token for s in static["served"]] == [1.0, 1.0, 4.0]
    assert static["finish"] == [1.0, 3.0, 5.0] and static["prefills"] == [2, 0, 0, 1, 0]
    continuous = scheduler.serve(gpt, requests, 2, "continuous", step_time=(1.0, 0.0))
    assert [s.admitted for s in continuous["served"]] == [0.0, 0.0, 1.0]   # it takes request 0's slot at step 2
    assert continuous["finish"] == [1.0, 3.0, 3.0] and continuous["prefills"] == [2, 1, 0]
    assert continuous["time_to_first_token"] == [1.0, 1.0, 2.0]
    assert continuous["throughput"] == pytest.approx(6 / 3) and static["throughput"] == pytest.approx(6 / 5)
    late = scheduler.serve(gpt, [scheduler.GenerationRequest(2.0, (1,), 1)], 4, step_time=(0.5, 0.25))
    assert late["finish"] == [2.75] and late["latency"] == [0.75] and late["steps"] == 1   # idle until 2 s


def test_the_paged_cache_holds_fewer_slots_and_gives_them_all_back(gpt, stream):
    contiguous = scheduler.Scheduler(gpt, 4, cache="contiguous", step_time=(0.004, 0.001))
    paged = scheduler.Scheduler(gpt, 4, cache="paged", block_size=4, step_time=(0.004, 0.001))
    assert contiguous.run(stream)["tokens"] == paged.run(stream)["tokens"]
    assert paged.peak_slots < contiguous.peak_slots == 4 * 48                # 4 requests x a 48-token context
    assert paged.cache.pool.blocks_in_use == 0 and sorted(contiguous.cache.free) == [0, 1, 2, 3]


def test_measured_clock_adds_up(gpt, stream):
    report = scheduler.serve(gpt, stream, 4, "continuous")
    assert all(d > 0 for d in report["durations"]) and report["busy_s"] == pytest.approx(sum(report["durations"]))
    span = max(report["finish"]) - min(r.arrival for r in stream)
    assert report["throughput"] == pytest.approx(sum(len(t) for t in report["tokens"]) / span)
    assert report["mean_time_to_first_token"] < report["mean_latency"]


def test_fit_step_time_recovers_a_linear_cost():
    sizes = [1, 2, 3, 4, 8, 8, 5]
    fake = {"timeline": [(0.0, b) for b in sizes], "durations": [0.003 + 0.0005 * b for b in sizes]}
    fixed, per_row = scheduler.fit_step_time(fake)
    assert fixed == pytest.approx(0.003) and per_row == pytest.approx(0.0005)
    # a step that also prefills costs 0.002 s more, however many prompts it admits
    fake["prefills"] = [1, 0, 0, 3, 0, 2, 0]
    fake["durations"] = [0.003 + 0.0005 * b + 0.002 * (p > 0) for b, p in zip(sizes, fake["prefills"])]
    assert scheduler.fit_step_time(fake, prefill=True) == pytest.approx((0.003, 0.0005, 0.002))
    line_fixed, line_per_row = scheduler.fit_step_time(fake)
    assert line_fixed != pytest.approx(0.003, rel=0.01)       # a line alone cannot say which steps prefilled
    # noisy timings in which bigger batches look cheaper: the per-row cost is fixed at zero, not negative
    noisy = {"timeline": [(0.0, b) for b in sizes], "durations": [0.004 - 0.0001 * b for b in sizes]}
    fixed, per_row = scheduler.fit_step_time(noisy)
    assert per_row == 0.0 and fixed == pytest.approx(sum(noisy["durations"]) / len(sizes))


def test_bad_input_is_named(gpt):
    for kwargs, word in [({"policy": "greedy"}, "policy"), ({"max_batch": 0}, "max_batch"),
                         ({"cache": "ring"}, "cache"), ({"step_time": (-1.0, 0.0)}, "step_time"),
                         ({"step_time": (1.0, 0.0, 0.0, 1.0)}, "step_time")]:
        with pytest.raises(ValueError, match=word):
            scheduler.Scheduler(gpt, **{"max_batch": 2, **kwargs})
    with pytest.raises(ValueError, match="context length 48"):
        scheduler.serve(gpt, [scheduler.GenerationRequest(0.0, tuple(range(1, 41)), 10)], 2)
    with pytest.raises(ValueError, match="at least one token"):
        scheduler.serve(gpt, [scheduler.GenerationRequest(0.0, (), 10)], 2)


# --------------------------------------------------------------------------- the explorer

def test_batching_timeline_is_the_simulators():
    results = widgets.timeline_results(rate=40.0, max_batch=8, shortest=4, longest=32, policy="both", seed=2)
    stream = batching.request_stream(widgets.N_REQUESTS, 40.0, 4, 32, seed=2)
    for policy in ["static", "continuous"]:
        assert results[policy] == batching.simulate(stream, 8, policy, widgets.STEP_TIME)
    assert list(widgets.timeline_results(40.0, 8, 4, 32, "static", 2)) == ["static"]
    fig = widgets.batching_timeline(40.0, 8, 4, 32, "both", 2)
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert f"{results['continuous']['throughput']:.0f} tokens/s" in titles
    with pytest.raises(ValueError, match="policy"):
        widgets.batching_timeline(40.0, 8, 4, 32, "fifo", 2)
    with pytest.raises(ValueError, match="shortest"):
        widgets.batching_timeline(40.0, 8, 40, 32, "both", 2)


def test_batching_explorer_builds_headless():
    import ipywidgets

    explorer = widgets.batching_explorer()
    assert isinstance(explorer, ipywidgets.interactive)
    assert "image/png" in explorer._repr_mimebundle_()
