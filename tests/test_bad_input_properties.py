"""Property-based checks (hypothesis) over the command line's training settings and the tokenizers' inputs:
whatever a user types gives a result or one `error:` line with exit status 2, never a traceback, and
encoding then decoding never loses text."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcourse.cli import load_train_settings
from llmcourse.pretraining.trainer import TrainConfig
from llmcourse.tokenizers.regex_bpe import RegexTokenizer

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

KEYS = ["lr", "min_lr", "dropout", "batch_size", "max_steps", "warmup_steps", "betas", "grad_clip", "progress",
        "mixed_precision", "seed", "checkpoint_path", "weight_decay", "val_fraction", "dataset_size", "d_model",
        "n_heads", "context_length"]
VALUES = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                   st.none(), st.text(max_size=8), st.lists(st.floats(-2, 2), max_size=3))


@FAST
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
def test_any_settings_give_a_config_or_one_clear_value_error(values):
    overrides = [f"{k}={json.dumps(v)}" for k, v in values.items()]
    try:
        data, config_settings = load_train_settings(None, overrides)
        config = TrainConfig.from_dict(config_settings)
    except ValueError as exc:
        message = str(exc)
        assert message and "\n" not in message
        assert any(k in message for k in values) or "divisible" in message or "warmup_steps" in message
        return
    import math

    for name in ("lr", "min_lr", "dropout", "weight_decay"):
        assert math.isfinite(getattr(config, name))
    assert 0 < data["val_fraction"] < 1 and isinstance(config.progress, bool)


@FAST
@given(keys=st.lists(st.sampled_from(KEYS), max_size=2), value=VALUES)
def test_the_cli_never_prints_a_traceback(keys, value, tmp_path_factory, capsys):
    from llmcourse.cli import main as cli

    out = tmp_path_factory.mktemp("run")
    argv = ["train"]
    for k in keys:
        argv += ["--set", f"{k}={json.dumps(value)}"]
    # a dataset that does not exist, checked after every other setting: nothing trains however the rest is set
    assert cli([*argv, "--set", "dataset=no/such/file.txt", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ")


@pytest.fixture(scope="module")
def tokenizer():
    return RegexTokenizer().train("Hello world! Tokens, numbers 12345 and émoji 🙂 here. " * 10, 300)


@FAST
@given(text=st.text(max_size=60))
def test_encode_then_decode_loses_nothing(tokenizer, text):
    ids = tokenizer.encode(text, allowed_special="none")
    expected = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # lone surrogates -> U+FFFD
    assert tokenizer.decode(ids) == expected
    assert list(tokenizer.encode_iterable([text[: len(text) // 2], text[len(text) // 2:]],
                                          allowed_special="none")) == tokenizer.encode(text[: len(text) // 2]
                                                                                       + text[len(text) // 2:],
                                                                                       allowed_special="none")
