"""Conceptual diagrams of chapters 08 (pretraining), 09 (fine-tuning) and 10 (parallel training): each returns a
Figure that names what it shows, with no text overlapping other text or cut off at the edge."""
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from diagram_checks import all_text, overlapping_texts, texts_outside
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
]


@pytest.mark.parametrize("function, kwargs, expected", CASES,
                         ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(CASES)])
def test_diagram_names_what_it_shows_and_stays_readable(function, kwargs, expected):
    text = assert_readable(drawn(function(**kwargs)))
    for label in expected:
        assert label in text, f"{label!r} missing from {function.__name__}({kwargs})"


BAD = [
    (pre.plot_window_shift, {"text": "short", "context_length": 8}, "needs 9 tokens"),
    (pre.plot_window_shift, {"context_length": 1}, "context_length must be a whole number from 2 to 16"),
    (pre.plot_window_shift, {"text": 123}, "text must be a string"),
    (pre.plot_gradient_accumulation, {"n_micro": 0}, "n_micro must be a whole number from 1 to 8"),
    (pre.plot_gradient_accumulation, {"micro_batch": 2.5}, "micro_batch must be a whole number"),
]


@pytest.mark.parametrize("function, kwargs, message", BAD, ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(BAD)])
def test_bad_arguments_are_refused_with_a_readable_message(function, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        function(**kwargs)


def test_every_new_module_is_listed_in_its_part():
    import llmcourse.pretraining
    for part in (llmcourse.pretraining,):
        assert "* ``diagrams`` - " in part.__doc__, part.__name__
