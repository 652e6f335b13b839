"""The conceptual diagrams of chapters 05-07: each names what it shows, with the shapes its arguments give, and stays
readable (no text on text, nothing cut off at the edge)."""
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from diagram_checks import all_text, overlapping_texts, texts_outside
from llmcourse.models.diagrams import gpt_stack_diagram, kv_cache_diagram
from llmcourse.models.gpt import GPTConfig
from llmcourse.transformer.attention_diagrams import grouped_heads_diagram, one_head_diagram, split_heads_diagram
from llmcourse.transformer.block_diagrams import norm_placement_diagram, residual_stream_diagram


def drawn(fig: Figure) -> Figure:
    """The diagram functions return figures closed in pyplot; give one a canvas again so that it can be measured."""
    assert isinstance(fig, Figure)
    FigureCanvasAgg(fig)
    return fig


def assert_readable(fig: Figure) -> None:
    assert overlapping_texts(fig) == []
    assert texts_outside(fig) == []


CASES = [
    # (function, keyword arguments, texts the picture must contain)
    (one_head_diagram, {}, ["x (input)", "W_q", "W_k", "W_v", "Q: queries", "K: keys", "V: values", "scores",
                            "softmax", "weights", "output", "(seq, d_model)\n= (4, 8)", "(d_model, d_k)\n= (8, 4)",
                            "(seq, d_k)\n= (4, 4)", "(seq, seq)\n= (4, 4)", "causal mask"]),
    (one_head_diagram, dict(seq=6, d_model=32, d_k=16, d_v=8, causal=False),
     ["(seq, d_model)\n= (6, 32)", "(d_model, d_k)\n= (32, 16)", "(d_model, d_v)\n= (32, 8)", "(seq, d_v)\n= (6, 8)",
      "(seq, seq)\n= (6, 6)", "= (6, 6)"]),
    (split_heads_diagram, {}, [".view(batch, seq, n_heads, head_dim)", ".transpose(1, 2)", "attention in each head",
                               "merge", "(batch, seq, d_model)\n= (2, 4, 8)",
                               "(batch, seq, n_heads, head_dim)\n= (2, 4, 2, 4)",
                               "(batch, n_heads, seq, head_dim)\n= (2, 2, 4, 4)", "head 0", "head 1",
                               "head_dim = d_model / n_heads = 8 / 2 = 4"]),
    (split_heads_diagram, dict(batch=1, seq=6, d_model=32, n_heads=4),
     ["(batch, seq, d_model)\n= (1, 6, 32)", "(batch, seq, n_heads, head_dim)\n= (1, 6, 4, 8)",
      "(batch, n_heads, seq, head_dim)\n= (1, 4, 6, 8)", "head 3", "batch = 1 sequence"]),
    (grouped_heads_diagram, {}, ["GQA: each group of 4 query heads shares one key/value head", "Q 0", "Q 7",
                                 "K, V 0", "K, V 1", "n_heads = 8", "n_kv_heads = 2", "2/8 of MHA's"]),
    (grouped_heads_diagram, dict(n_heads=4, n_kv_heads=1), ["MQA", "Q 3", "K, V 0", "n_kv_heads = 1"]),
    (grouped_heads_diagram, dict(n_heads=16, n_kv_heads=16), ["MHA", "15", "n_heads = 16"]),
    (residual_stream_diagram, {}, ["residual\nstream", "(batch, seq, d_model)\n= (2, 4, 8)", "block 1", "block 2",
                                   "LayerNorm", "attention", "FFN", "final LayerNorm", "add the output back",
                                   "4 additions"]),
    (residual_stream_diagram, dict(n_blocks=4, batch=1, seq=16, d_model=64, norm="RMSNorm"),
     ["= (1, 16, 64)", "block 4", "final RMSNorm", "8 additions"]),
    (residual_stream_diagram, dict(n_blocks=1), ["block 1", "1 block,\n2 additions"]),
    (norm_placement_diagram, {}, ["post-norm (original Transformer, BERT)", "pre-norm (GPT-2, GPT-3, LLaMA)",
                                  "x = Norm(x + Sublayer(x))", "x = x + Sublayer(Norm(x))", "attention", "FFN",
                                  "final LayerNorm", "clean\nidentity path"]),
    (norm_placement_diagram, dict(sublayers=["self-attention", "cross-attention", "FFN"], norm="RMSNorm"),
     ["self-attention", "cross-attention", "final RMSNorm"]),
    (gpt_stack_diagram, {}, ["token ids  (batch, seq) = (1, 4)", "(vocab, d_model) = (100, 64)",
                             "(context, d_model) = (32, 64)", "(batch, seq, d_model) = (1, 4, 64)", "block 1 of 2",
                             "block 2 of 2", "final LayerNorm ln_f", "lm_head (tied to wte)",
                             "logits  (batch, seq, vocab) = (1, 4, 100)", "tied: one matrix"]),
    (gpt_stack_diagram, dict(config=GPTConfig(tie_weights=False), batch=8, seq=1024),
     ["(batch, seq) = (8, 1024)", "(vocab, d_model) = (50257, 768)", "(context, d_model) = (1024, 768)",
      "block 12 of 12", "9 more blocks", "(batch, seq, vocab) = (8, 1024, 50257)"]),
    (kv_cache_diagram, {}, ["prefill\ntokens 1-3", "step 1\nnew token 4", "step 3\nnew token 6", "keys (K cache)",
                            "values (V cache)", "K: (t, head_dim) = (3, 4)", "K: (t, head_dim) = (6, 4)",
                            "V: (t, head_dim) = (6, 4)", "(1, 6)", "(3, 3)", "read from the cache",
                            "one column per step"]),
    (kv_cache_diagram, dict(prompt_len=5, new_tokens=5, head_dim=8),
     ["prefill\ntokens 1-5", "step 5\nnew token 10", "K: (t, head_dim) = (10, 8)", "(1, 10)", "(5, 5)"]),
]


@pytest.mark.parametrize("function, kwargs, expected", CASES,
                         ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(CASES)])
def test_diagram_names_what_it_shows_and_reads_well(function, kwargs, expected):
    fig = drawn(function(**kwargs))
    text = all_text(fig)
    missing = [label for label in expected if label not in text]
    assert missing == [], f"{function.__name__}({kwargs}) lacks {missing}; its texts:\n{text}"
    assert_readable(fig)


def test_the_shapes_follow_the_arguments():
    """A label is computed, not typed: other sizes give other numbers, and the old ones are gone."""
    small, large = (all_text(drawn(split_heads_diagram(batch=b, seq=4, d_model=d, n_heads=2)))
                    for b, d in ((2, 8), (3, 12)))
    assert "= (2, 4, 8)" in small and "= (2, 4, 8)" not in large and "= (3, 4, 12)" in large
    assert "causal mask" not in all_text(drawn(one_head_diagram(causal=False)))


def test_a_diagram_is_deterministic():
    first, second = (all_text(drawn(kv_cache_diagram())) for _ in range(2))
    assert first == second


BAD = [
    (one_head_diagram, dict(seq=0), "seq must be a whole number >= 1"),
    (one_head_diagram, dict(d_k=2.5), "d_k must be a whole number"),
    (one_head_diagram, dict(seq=40), "seq=40 is too large to draw"),
    (split_heads_diagram, dict(d_model=10, n_heads=4), "not divisible by n_heads=4"),
    (split_heads_diagram, dict(batch=True), "batch must be a whole number"),
    (split_heads_diagram, dict(d_model=48, n_heads=12), "n_heads=12 is too large"),
    (grouped_heads_diagram, dict(n_heads=8, n_kv_heads=3), "multiple of n_kv_heads=3"),
    (grouped_heads_diagram, dict(n_heads=4, n_kv_heads=8), "multiple of n_kv_heads=8"),
    (residual_stream_diagram, dict(n_blocks=0), "n_blocks must be a whole number"),
    (residual_stream_diagram, dict(n_blocks=9), "n_blocks=9 is too large"),
    (residual_stream_diagram, dict(norm=""), "norm must be a non-empty string"),
    (norm_placement_diagram, dict(sublayers="attention"), "sublayers must be a list of 1 to 3 names"),
    (norm_placement_diagram, dict(sublayers=[]), "sublayers must be a list of 1 to 3 names"),
    (norm_placement_diagram, dict(sublayers=["attention", None]), r"sublayers\[1\] must be a non-empty string"),
    (gpt_stack_diagram, dict(seq=33), "longer than the context length 32"),
    (gpt_stack_diagram, dict(config={"d_model": 64}), "config must be a GPTConfig"),
    (gpt_stack_diagram, dict(batch=-1), "batch must be a whole number"),
    (kv_cache_diagram, dict(new_tokens=0), "new_tokens must be a whole number"),
    (kv_cache_diagram, dict(prompt_len=8, new_tokens=4), "total_length=12 is too large"),
]


@pytest.mark.parametrize("function, kwargs, message", BAD,
                         ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(BAD)])
def test_bad_arguments_are_refused_with_a_clear_message(function, kwargs, message):
    with pytest.raises(ValueError, match=message):
        function(**kwargs)
