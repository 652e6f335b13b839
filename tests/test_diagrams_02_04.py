"""The conceptual diagrams of chapters 02-04: they name what they show, with the real shapes, and read cleanly."""
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from diagram_checks import all_text, overlapping_texts, texts_outside
from llmcourse.basics.backprop_diagrams import draw_layer_backprop, draw_sensitivity_boxes


def drawn(fig: Figure) -> Figure:
    """A returned figure is closed (pyplot forgets its canvas); give it a renderer again to measure its texts."""
    assert isinstance(fig, Figure)
    FigureCanvasAgg(fig)
    return fig


def assert_clean(fig: Figure) -> None:
    assert overlapping_texts(fig) == []
    assert texts_outside(fig) == []


# ------------------------------------------------------------------------------------------------------- chapter 02

@pytest.mark.parametrize("n_preceding, n_current", [(2, 3), (4, 2), (1, 6)])
def test_sensitivity_boxes_name_every_unit_and_both_directions(n_preceding, n_current):
    fig = drawn(draw_sensitivity_boxes(n_preceding, n_current))
    text = all_text(fig)
    for i in range(1, n_preceding + 1):
        assert f"$p_{i}$" in text and f"$A(p_{i})$" in text and rf"$\delta p_{i}$" in text
    for j in range(1, n_current + 1):
        assert f"$c_{j}$" in text and rf"$\delta c_{j} = \partial e/\partial c_{j}$" in text
    assert f"$p_{n_preceding + 1}$" not in text and f"$c_{n_current + 1}$" not in text
    for words in ("preceding box", "current box", "forward (values)", "backward (sensitivities)",
                  r"$c_j = \sum_i\, A(p_i)\, w_{ij} + b_j$", r"$\delta p_i = A'(p_i) \sum_j\, w_{ij}\, \delta c_j$"):
        assert words in text
    assert_clean(fig)


@pytest.mark.parametrize("batch, n_in, n_out", [(4, 3, 2), (200, 8, 2), (1, 1, 1), (16, 64, 10)])
def test_layer_backprop_labels_every_block_with_its_shape(batch, n_in, n_out):
    fig = drawn(draw_layer_backprop(batch, n_in, n_out))
    lines = all_text(fig).splitlines()
    for shape in [(batch, n_in), (n_in, n_out), (batch, n_out), (n_in, batch), (n_out, n_in)]:
        assert f"({shape[0]}, {shape[1]})" in lines, shape
    assert f"({n_out},)" in lines
    for name in ["$X$", "$W$", "$Z$", "$X^T$", "$W^T$", r"$\Delta$", r"$\partial L/\partial W$",
                 r"$\partial L/\partial b$", r"$\Delta_\mathrm{prev}$", r"$A'(Z_\mathrm{prev})$",
                 "sum over the batch of"]:
        assert name in lines, name
    assert_clean(fig)


def test_backprop_diagrams_refuse_bad_sizes():
    with pytest.raises(ValueError, match="n_preceding must be between 1 and 6"):
        draw_sensitivity_boxes(0, 3)
    with pytest.raises(ValueError, match="n_current must be a whole number"):
        draw_sensitivity_boxes(2, 2.5)
    with pytest.raises(ValueError, match="batch must be between 1"):
        draw_layer_backprop(batch=0)
    with pytest.raises(ValueError, match="n_out must be a whole number"):
        draw_layer_backprop(n_out="2")
