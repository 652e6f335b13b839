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


# ------------------------------------------------------------------------------------------------------- chapter 03

TINY = "the cat sat on the mat; the cats sat on the mats; that cat ate the rat"


@pytest.fixture(scope="module")
def small_tokenizer():
    from llmcourse.tokenizers import RegexTokenizer
    return RegexTokenizer().train(TINY * 3 + " Hello world, hello 2024!", vocab_size=256 + 20)


@pytest.mark.parametrize("text", ["Hello world, 2024!", "the cats sat", "x"])
def test_encoding_pipeline_shows_every_stage(small_tokenizer, text):
    from llmcourse.tokenizers.diagrams import draw_encoding_pipeline
    from llmcourse.tokenizers.widgets import show_token
    fig = drawn(draw_encoding_pipeline(small_tokenizer, text))
    shown = all_text(fig)
    lines = shown.splitlines()
    pieces = small_tokenizer.pretokenize(text)
    ids = small_tokenizer.encode_ordinary(text)
    for piece in pieces:
        assert show_token(piece.encode()) in lines, piece
    for b in text.encode():
        assert str(b) in lines
    for i in ids:
        assert str(i) in lines and show_token(small_tokenizer.vocab[i]) in lines
    assert any(f"{len(pieces)} pre-tokens -> {len(text.encode())} bytes -> {len(ids)} tokens" in s for s in lines)
    for row in ["text", "pre-tokens\n(regex split)", "UTF-8 bytes", "ids"]:
        assert row in shown
    assert_clean(fig)


def test_encoding_pipeline_merges_inside_pretokens_only(small_tokenizer):
    from llmcourse.tokenizers.diagrams import draw_encoding_pipeline
    lines = all_text(drawn(draw_encoding_pipeline(small_tokenizer, "the cat"))).splitlines()
    assert "␣cat" in lines and "the" in lines          # two pre-tokens, each one token after the merges
    assert lines.count("the␣cat") == 1                 # only the text itself: no token crosses the pre-tokens


def test_merge_step_highlights_the_most_frequent_pair():
    from llmcourse.tokenizers.diagrams import draw_merge_step
    fig = drawn(draw_merge_step(TINY))
    text = all_text(fig)
    assert "most frequent pair (97, 116) = 'a' + 't', 10 times  ->  new token 256 'at'" in text
    assert "length 70 -> 60 tokens" in text
    assert text.splitlines().count("at") == 10 and text.splitlines().count("before") == 3   # wrapped in 3 lines
    assert_clean(fig)


def test_merge_step_from_ids_with_a_given_pair_and_vocabulary():
    from llmcourse.tokenizers.diagrams import draw_merge_step
    vocab = {**{i: bytes([i]) for i in range(256)}, 256: b"at", 257: b"th"}
    ids = [257, 101, 32, 99, 256, 32, 115, 256]              # "the cat sat" after two merges
    fig = drawn(draw_merge_step(ids, pair=(32, 115), vocab=vocab))
    text = all_text(fig)
    assert "pair (32, 115) = '␣' + 's', 1 times  ->  new token 258 '␣s'" in text
    assert "most frequent" not in text and "length 8 -> 7 tokens" in text
    assert {"th", "at", "␣s"} <= set(text.splitlines())
    assert_clean(fig)


def test_tokenizer_diagrams_refuse_bad_arguments(small_tokenizer):
    from llmcourse.tokenizers.diagrams import draw_encoding_pipeline, draw_merge_step
    with pytest.raises(ValueError, match="RegexTokenizer"):
        draw_encoding_pipeline("not a tokenizer", "hi")
    with pytest.raises(ValueError, match="at most 32 fit"):
        draw_encoding_pipeline(small_tokenizer, "a much longer sentence than one row can hold")
    with pytest.raises(ValueError, match="non-empty string"):
        draw_encoding_pipeline(small_tokenizer, "")
    with pytest.raises(ValueError, match="does not occur"):
        draw_merge_step("abc", pair=(99, 97))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        draw_merge_step("a")
    with pytest.raises(ValueError, match="fresh id"):
        draw_merge_step([1, 2, 300], pair=(1, 2), new_id=300)
