"""Library functions under bad input: tokenizers given tensors, surrogates or a pattern with gaps, and
run_parallel's ranks that leave children behind or return nothing. Nothing lost, nothing silently wrong."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from llmcourse.tokenizers.basic import BasicTokenizer
from llmcourse.tokenizers.regex_bpe import RegexTokenizer
from llmcourse.tokenizers.simple import CharTokenizer


@pytest.fixture(scope="module")
def regex_tok():
    return RegexTokenizer().train("hello world, hello there. " * 20, 280)


def test_decode_takes_a_tensor_or_an_array(regex_tok):
    ids = regex_tok.encode("hello there")
    for tok, some in ((regex_tok, ids), (BasicTokenizer().train("abcabcab" * 5, 260), [97, 256]),
                      (CharTokenizer().train("hello"), [0, 1, 2])):
        expected = tok.decode(some)
        assert tok.decode(torch.tensor(some)) == expected
        assert tok.decode(np.array(some)) == expected
        assert tok.decode(torch.tensor(some, dtype=torch.int32)) == expected
        with pytest.raises(ValueError, match="one sequence"):
            tok.decode(torch.tensor([some]))
        with pytest.raises(ValueError, match="whole numbers"):
            tok.decode([1.5])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        regex_tok.decode(torch.tensor([10_000]))


def test_a_pattern_that_leaves_characters_out_is_an_error():
    tok = RegexTokenizer(pattern="a")
    with pytest.raises(ValueError, match=r"does not match every character: 'b' at position 1 would be dropped"):
        tok.encode("abc")
    with pytest.raises(ValueError, match="position 2"):
        tok.pretokenize("aab")
    with pytest.raises(ValueError, match="does not match every character"):
        list(tok.encode_iterable(["aaaa", "ab", "aa"]))
    with pytest.raises(ValueError, match=r"'b' at position 1 would be dropped"):
        RegexTokenizer(pattern="a").train("abc" * 20, 260)  # training would learn from a text with holes
    covered = RegexTokenizer(pattern=r"a|\s+|\S")
    assert covered.decode(covered.encode("abc")) == "abc"
    covered.train("abc" * 20, 260)
    assert covered.decode(covered.encode("abcabc")) == "abcabc"


def test_lone_surrogates_become_the_replacement_character_as_in_tiktoken(regex_tok):
    text = "hi \ud800 there \udfff!"
    expected = "hi \ufffd there \ufffd!"
    assert regex_tok.encode(text) == regex_tok.encode(expected)
    assert regex_tok.encode_ordinary(text) == regex_tok.encode(expected)
    assert list(regex_tok.encode_iterable([text[:4], text[4:]])) == regex_tok.encode(expected)
    basic = BasicTokenizer().train("abc" * 10, 258)
    assert basic.encode("a\ud83db") == basic.encode("a\ufffdb")
    tiktoken = pytest.importorskip("tiktoken")
    from llmcourse.tokenizers.tiktoken_bridge import cl100k_ranks_path

    try:
        cl100k_ranks_path()
    except FileNotFoundError:
        pytest.skip("GPT-4's ranks are not available offline")
    from llmcourse.tokenizers.tiktoken_bridge import cl100k_encoding

    enc = cl100k_encoding()
    assert enc.encode(text) == enc.encode(expected)  # what tiktoken itself does


# --------------------------------------------------------------------------- run_parallel


def _start_a_child_and_fail(path: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(path, "w") as f:
        f.write(str(child.pid))
    time.sleep(0.5)
    raise RuntimeError("boom")


def _exit_quietly() -> None:
    import torch.distributed as dist

    if dist.get_rank() == 1:
        os._exit(0)
    return 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its parent counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_run_parallel_stops_the_children_of_its_ranks(tmp_path):
    from llmcourse.parallel.launch import ParallelError, run_parallel

    marker = tmp_path / "child.pid"
    with pytest.raises(ParallelError, match="boom"):
        run_parallel(_start_a_child_and_fail, world_size=1, backend="gloo", timeout_s=60, args=(str(marker),))
    pid = int(marker.read_text())
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid), "the rank's child process outlived the run"


def test_run_parallel_names_a_rank_that_exited_0_without_a_result():
    from llmcourse.parallel.launch import ParallelError, run_parallel

    with pytest.raises(ParallelError, match=r"rank\(s\) \[1\] exited with code 0 but returned no result"):
        run_parallel(_exit_quietly, world_size=2, backend="gloo", timeout_s=60)
