"""Conceptual diagrams of chapters 08 (pretraining), 09 (fine-tuning) and 10 (parallel training): each returns a
Figure that names what it shows, with no text overlapping other text or cut off at the edge."""
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from diagram_checks import all_text, overlapping_texts, texts_outside
from llmcourse.finetuning import diagrams as ft
from llmcourse.parallel import diagrams as par
from llmcourse.pretraining import diagrams as pre


def drawn(fig: Figure) -> Figure:
    """A closed figure (as the package returns it) has lost its canvas: give it one to measure its texts."""
    assert isinstance(fig, Figure)
    FigureCanvasAgg(fig)
    return fig


def assert_readable(fig: Figure) -> str:
    assert overlapping_texts(fig) == []
    assert texts_outside(fig) == []
    return all_text(fig)


CASES = [
    # function, arguments, texts the picture must contain
    (pre.plot_window_shift, {}, ["window\n9 tokens", "window[0:8]", "window[1:9]", "shape (8,)", "teacher forcing",
                                 "mean of 8 cross-entropies"]),
    (pre.plot_window_shift, {"text": "abcd", "context_length": 3}, ["window\n4 tokens", "window[1:4]", "shape (3,)",
                                                                     "all 3 positions"]),
    (pre.plot_window_shift, {"text": "hello world, hello again", "context_length": 16},
     ["window[0:16]", "window[1:17]", "␣"]),
    (pre.plot_gradient_accumulation, {}, ["micro-batch 4", "loss₄ / 4", ".grad = (g₁ + … + g₄) / 4", "clip\ngrad norm",
                                          "optimizer\n.step()", "zero_grad()", "one batch of 16 windows (1,024 tokens)"]),
    (pre.plot_gradient_accumulation, {"n_micro": 8, "micro_batch": 2, "context_length": 32},
     ["micro-batch 8", "loss₈ / 8", "(g₁ + … + g₈) / 8", "8 micro-batches of 2 windows × 32 tokens", "(512 tokens)"]),
    (pre.plot_gradient_accumulation, {"n_micro": 1}, ["1 micro-batch of 4", ".grad = (g₁) / 1"]),
    (ft.plot_training_pipeline, {}, ["base model", "SFT model", "reward model", "PPO", "DPO", "chat model",
                                     "K = 4 answers", "= 6 pairs", "RLHF with PPO", "pairwise loss"]),
    (ft.plot_training_pipeline, {"ranked_answers": 9}, ["K = 9 answers", "= 36 pairs"]),
    (ft.plot_lora, {}, ["(out, in) = (64, 64)", "frozen: 4,096", "(r, in) = (8, 64)", "(out, r) = (64, 8)",
                        "8·(64 + 64) = 1,024", "(25.0%)", "starts at 0", "× α/r = 2"]),
    (ft.plot_lora, {"in_features": 3, "out_features": 4, "r": 1, "alpha": 2.0},
     ["(out, in) = (4, 3)", "frozen: 12 numbers", "(r, in) = (1, 3)", "(out, r) = (4, 1)", "= 7 numbers", "(58.3%)"]),
    (ft.plot_lora, {"in_features": 4096, "out_features": 11008, "r": 8},
     ["(11008, 4096)", "45,088,768", "120,832", "(0.3%)"]),
    (par.plot_data_parallel, {}, ["device 0", "device 1", "full copy of the model", "examples 0–3", "examples 4–7",
                                  "g = (g₀ + g₁) / 2", "all-reduce", "2 shards of 4"]),
    (par.plot_data_parallel, {"n_devices": 4, "batch": 16},
     ["device 3", "examples 12–15", "g = (g₀ + g₁ + g₂ + g₃) / 4", "4 shards of 4"]),
    (par.plot_tensor_parallel, {}, ["A[:, 0:16]\n(8, 16)", "B[16:32, :]\n(16, 8)", "X\n(4, 8)", "all-\nreduce",
                                    "Z₀ + Z₁", "split by columns", "split by rows"]),
    (par.plot_tensor_parallel, {"n_devices": 4, "d_model": 768, "d_hidden": 3072, "tokens": 2048},
     ["A[:, 2304:3072]\n(768, 768)", "B[0:768, :]", "Z₀ + Z₁ + Z₂ + Z₃", "1/4 of A", "device\n3"]),
    (par.plot_pipeline_layout, {}, ["device 0: stage 0", "device 3: stage 3", "layer 0", "layer 7", "4 micro-",
                                    "activations (forward)", "gradients (backward)", "stages of 2 consecutive"]),
    (par.plot_pipeline_layout, {"n_devices": 2, "n_layers": 5, "n_microbatches": 8},
     ["device 1: stage 1", "layer 2", "layer 4", "8 micro-", "3 or 2 consecutive", "all 2 stages"]),
    (par.plot_pipeline_layout, {"n_devices": 3, "n_layers": 16, "n_microbatches": 1},
     ["layer 15", "1 micro-\nbatch", "only one device is busy"]),
]


@pytest.mark.parametrize("function, kwargs, expected", CASES,
                         ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(CASES)])
def test_diagram_names_what_it_shows_and_stays_readable(function, kwargs, expected):
    text = assert_readable(drawn(function(**kwargs)))
    for label in expected:
        assert label in text, f"{label!r} missing from {function.__name__}({kwargs})"


def test_the_pipeline_layout_cuts_layers_like_split_into_stages():
    from torch import nn

    from llmcourse.parallel.pipeline import split_into_stages
    stages = split_into_stages([nn.Identity() for _ in range(7)], 3)
    text = all_text(drawn(par.plot_pipeline_layout(n_devices=3, n_layers=7)))
    first = 0
    for s, stage in enumerate(stages):
        last = first + len(stage) - 1
        assert f"layer {first}" in text and f"layer {last}" in text
        first = last + 1
    assert "3 or 2 consecutive" in text


def test_the_lora_counts_match_a_real_lora_layer():
    from torch import nn

    from llmcourse.finetuning.lora import LoRALinear
    layer = LoRALinear(nn.Linear(24, 40), r=4, alpha=8.0)
    text = all_text(drawn(ft.plot_lora(in_features=24, out_features=40, r=4, alpha=8.0)))
    assert f"{layer.A.numel() + layer.B.numel():,} numbers" in text
    assert f"frozen: {layer.base.weight.numel():,} numbers" in text


BAD = [
    (pre.plot_window_shift, {"text": "short", "context_length": 8}, "needs 9 tokens"),
    (pre.plot_window_shift, {"context_length": 1}, "context_length must be a whole number from 2 to 16"),
    (pre.plot_window_shift, {"text": 123}, "text must be a string"),
    (pre.plot_gradient_accumulation, {"n_micro": 0}, "n_micro must be a whole number from 1 to 8"),
    (pre.plot_gradient_accumulation, {"micro_batch": 2.5}, "micro_batch must be a whole number"),
    (ft.plot_training_pipeline, {"ranked_answers": 1}, "ranked_answers must be a whole number from 2 to 9"),
    (ft.plot_lora, {"r": 65}, "above min"),
    (ft.plot_lora, {"alpha": 0}, "alpha must be a number > 0"),
    (ft.plot_lora, {"in_features": 0}, "in_features must be a whole number"),
    (par.plot_data_parallel, {"n_devices": 8}, "n_devices must be 2, 3 or 4"),
    (par.plot_data_parallel, {"n_devices": 3, "batch": 8}, "cannot be shared out evenly over 3 devices"),
    (par.plot_tensor_parallel, {"n_devices": 3, "d_hidden": 32}, "cannot be split evenly over 3 devices"),
    (par.plot_tensor_parallel, {"d_model": True}, "d_model must be a whole number"),
    (par.plot_pipeline_layout, {"n_devices": 4, "n_layers": 3}, "cannot cut 3 layers into 4 stages"),
    (par.plot_pipeline_layout, {"n_microbatches": 9}, "at most 16 layers and 8 micro-batches"),
]


@pytest.mark.parametrize("function, kwargs, message", BAD, ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(BAD)])
def test_bad_arguments_are_refused_with_a_readable_message(function, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        function(**kwargs)


def test_every_new_module_is_listed_in_its_part():
    import llmcourse.finetuning
    import llmcourse.parallel
    import llmcourse.pretraining
    for part in (llmcourse.pretraining, llmcourse.finetuning, llmcourse.parallel):
        assert "* ``diagrams`` - " in part.__doc__, part.__name__
