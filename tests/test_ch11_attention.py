"""Chapter 11's attention without the score matrix, against independent references: the softmax of PyTorch,
F.scaled_dot_product_attention with masks built entry by entry, allocations of known sizes, and the course GPT's
own forward pass."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.inference import tiled_attention as ta
from llmcourse.models.gpt import GPT, GPTConfig


def loop_mask(q_len: int, k_len: int, causal: bool, window: int | None) -> torch.Tensor:
    """The rule written entry by entry: query i sits at position k_len - q_len + i."""
    mask = torch.zeros(q_len, k_len, dtype=torch.bool)
    for i in range(q_len):
        pos = k_len - q_len + i
        for j in range(k_len):
            ok = True
            if causal or window is not None:
                ok = ok and j <= pos
            if window is not None:
                ok = ok and j > pos - window
            mask[i, j] = ok
    return mask


def test_online_softmax_equals_torch_softmax():
    scores = [1.0, 3.0, 2.0, 5.0, 0.0, 4.0]
    steps = ta.online_softmax_steps(scores)
    assert [m for m, _ in steps] == [1.0, 3.0, 3.0, 5.0, 5.0, 5.0]
    assert steps[-1][1] == pytest.approx(sum(math.exp(s - 5.0) for s in scores))
    assert ta.online_softmax(scores) == pytest.approx(torch.softmax(torch.tensor(scores, dtype=torch.float64),
                                                                    0).tolist(), abs=1e-12)
    big = [1000.0, 1001.0, 999.0]                     # exp(1000) overflows; the running maximum keeps it finite
    assert ta.online_softmax(big) == pytest.approx(torch.softmax(torch.tensor(big), 0).tolist(), abs=1e-6)


@pytest.mark.parametrize("q_len,k_len,causal,window", [(7, 7, True, None), (5, 9, True, None), (6, 6, False, None),
                                                       (8, 8, True, 3), (4, 10, False, 2), (9, 9, True, 1)])
def test_allowed_equals_the_rule_entry_by_entry(q_len, k_len, causal, window):
    assert torch.equal(ta.allowed(q_len, k_len, causal, window), loop_mask(q_len, k_len, causal, window))
    assert torch.equal(ta.allowed(q_len, k_len, causal, window, slice(1, 3), slice(2, 6)),
                       loop_mask(q_len, k_len, causal, window)[1:3, 2:6])


def test_causal_square_mask_is_torchs_is_causal():
    q, k, v = torch.randn(3, 2, 2, 11, 8)
    assert torch.allclose(ta.naive_attention(q, k, v, causal=True),
                          F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("q_len,k_len", [(64, 64), (37, 37), (13, 50), (1, 29)])
@pytest.mark.parametrize("block_q,block_k", [(1, 1), (8, 16), (16, 8), (64, 64), (5, 7)])
def test_tiled_attention_equals_sdpa(causal, q_len, k_len, block_q, block_k):
    gen = torch.Generator().manual_seed(q_len * 100 + k_len)
    q = torch.randn(2, 3, q_len, 16, generator=gen)
    k, v = torch.randn(2, 2, 3, k_len, 16, generator=gen)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=loop_mask(q_len, k_len, causal, None))
    stats = {}
    out = ta.tiled_attention(q, k, v, causal=causal, block_q=block_q, block_k=block_k, stats=stats)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
    assert stats["largest_scores"] <= 2 * 3 * block_q * block_k
    assert stats["tiles_computed"] == int((ta.tile_plan(q_len, k_len, block_q, block_k, causal) > 0).sum())


@pytest.mark.parametrize("window", [1, 3, 8, 100])
def test_tiled_sliding_window_equals_sdpa_with_the_window_mask(window):
    q, k, v = torch.randn(3, 1, 2, 30, 8)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=loop_mask(30, 30, True, window))
    out = ta.tiled_attention(q, k, v, causal=True, block_q=4, block_k=6, window=window)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(ta.naive_attention(q, k, v, window=window), ref, atol=1e-5)


def test_tile_plan_by_hand():
    assert ta.tile_plan(8, 8, 2, 2, causal=True).tolist() == [[1, 0, 0, 0], [2, 1, 0, 0], [2, 2, 1, 0], [2, 2, 2, 1]]
    assert ta.tile_plan(4, 4, 2, 2).tolist() == [[2, 2], [2, 2]]
    assert ta.tile_plan(8, 8, 2, 2, causal=True, window=2).tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0],
                                                                        [0, 0, 1, 1]]
    with pytest.raises(ValueError):
        ta.tiled_attention(*torch.randn(3, 1, 4, 2), block_q=0)
    with pytest.raises(ValueError):
        ta.allowed(4, 4, window=0)


def test_memory_use_counts_known_allocations():
    def two_then_one():
        a = torch.empty(1000)                 # 4,000 bytes
        b = torch.empty(500)                  # 2,000 bytes: 6,000 alive
        del a
        c = torch.empty(250)                  # 1,000 bytes: 3,000 alive
        return b, c
    use = ta.memory_use(two_then_one)
    assert use == {"peak": 6000, "largest": 4000}
    assert ta.memory_use(lambda x: x.view(-1)[:3], torch.randn(10)) == {"peak": 0, "largest": 0}  # views allocate nothing


def test_tiled_attention_never_holds_the_score_matrix():
    q, k, v = torch.randn(3, 1, 2, 512, 16)
    scores_bytes = 2 * 512 * 512 * 4
    out_bytes = 2 * 512 * 16 * 4
    naive, tiled = ta.memory_use(ta.naive_attention, q, k, v, causal=True), \
        ta.memory_use(ta.tiled_attention, q, k, v, causal=True, block_q=64, block_k=64)
    assert naive["largest"] >= scores_bytes and naive["peak"] >= 2 * scores_bytes
    assert tiled["largest"] <= out_bytes and tiled["peak"] < scores_bytes / 4
    assert tiled["peak"] > out_bytes                           # it does hold the result, at least


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=60, context_length=24, d_model=32, n_layers=3, n_heads=4, dropout=0.0)).eval()


def test_windowed_forward_without_a_window_is_the_models_forward(gpt):
    ids = torch.randint(0, 60, (2, 24))
    with torch.no_grad():
        assert torch.allclose(ta.windowed_forward(gpt, ids, None), gpt(ids), atol=1e-5)
        assert torch.allclose(ta.windowed_forward(gpt, ids, 24), gpt(ids), atol=1e-5)
        assert not torch.allclose(ta.windowed_forward(gpt, ids, 4), gpt(ids), atol=1e-3)


@pytest.mark.parametrize("window", [1, 2, 5])
def test_a_window_limits_how_far_back_a_change_reaches(gpt, window):
    """With window w and L layers, position t sees tokens t - L(w-1) ... t and no earlier one."""
    ids = torch.randint(0, 60, (1, 24))
    changed = ids.clone()
    changed[0, 3] = (ids[0, 3] + 1) % 60
    with torch.no_grad():
        diff = (ta.windowed_forward(gpt, ids, window) - ta.windowed_forward(gpt, changed, window)).abs().amax(-1)[0]
    reach = 3 + len(gpt.blocks) * (window - 1)
    moved = (diff > 1e-6).nonzero().flatten().tolist()
    assert moved == list(range(3, min(reach, 23) + 1))


def test_windowed_loss_equals_cross_entropy_of_the_windowed_logits(gpt):
    ids = torch.randint(0, 60, (200,))
    x = torch.stack([ids[0:24], ids[24:48]])
    y = torch.stack([ids[1:25], ids[25:49]])
    with torch.no_grad():
        expected = F.cross_entropy(ta.windowed_forward(gpt, x, 3).reshape(-1, 60), y.reshape(-1))
    assert ta.windowed_loss(gpt, ids, 3, context=24, n_windows=2) == pytest.approx(float(expected), abs=1e-6)


def test_plot_tiles_draws_one_panel_per_plan():
    from llmcourse.inference.plots import plot_tiles
    fig = plot_tiles({"full": ta.tile_plan(8, 8, 2, 2), "causal": ta.tile_plan(8, 8, 2, 2, causal=True)}, block=2)
    assert len(fig.axes) == 2 and "10 of 16" in fig.axes[1].get_title()
