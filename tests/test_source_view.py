"""llmcourse.source_view: lessons show the package's own code."""
import pytest
import torch
from matplotlib import pyplot as plt

from diagram_checks import overlapping_texts, texts_outside
from llmcourse.models.gpt import GPT
from llmcourse.source_view import show_code, source_of


def test_source_of_a_method_is_its_code_dedented():
    code = source_of(GPT.forward)
    assert code.startswith("def forward(self")
    assert "\n    " in code and "\n        " in code  # the body keeps its own indentation
    compile(code, "<GPT.forward>", "exec")             # and is valid Python on its own


def test_show_code_displays_plain_text_and_colours():
    shown = show_code(GPT)
    assert "GPT" in shown._repr_html_()
    assert "class GPT" in repr(shown)


def test_source_of_a_builtin_says_why_not():
    with pytest.raises(TypeError, match="written in C"):
        source_of(torch.matmul)


def test_the_overlap_checker_sees_overlaps_and_cut_text():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.text(0.5, 0.5, "first label", transform=ax.transAxes)
    ax.text(0.52, 0.5, "second label", transform=ax.transAxes)
    ax.text(1.5, 0.5, "far outside", transform=ax.transAxes)
    assert ("first label", "second label") in overlapping_texts(fig)
    assert "far outside" in texts_outside(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_axis_off()
    ax.text(0.1, 0.8, "apart", transform=ax.transAxes)
    ax.text(0.1, 0.2, "away", transform=ax.transAxes)
    assert overlapping_texts(fig) == [] and texts_outside(fig) == []
    plt.close(fig)
