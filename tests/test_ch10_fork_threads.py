"""Chapter 10: processes forked from a notebook whose thread pool is already running never hang.

A kernel that has computed with several OpenMP threads and then forks gives its children none of those
threads; a child asked to use them waits forever. notebook_launch runs each forked rank with one thread, and
every rank's wait is bounded: one that makes no progress for timeout_s is stopped with a clear error.
Each case runs in a fresh Python process with OMP_NUM_THREADS unset and four threads, as a learner's kernel on
a many-core laptop would have.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from llmcourse.parallel import launch
    from llmcourse.parallel.launch import ParallelError, notebook_launch

    if sys.argv[1] == "without-fix":
        launch.FORKED_RANK_THREADS = None   # what notebook_launch did before: keep the parent's thread count
    torch.set_num_threads(4)
    a = torch.randn(512, 512)
    (a @ a).sum()                           # the parent's OpenMP pool is now live
    assert torch.get_num_threads() == 4

    def work():
        x = torch.randn(512, 512)
        for _ in range(5):
            x = torch.tanh(x @ x / 512)     # parallel regions in the forked child
        return torch.get_num_threads()

    start = time.monotonic()
    try:
        print("RESULT", notebook_launch(work, 2, timeout_s=10))
    except ParallelError as exc:
        print("ERROR", exc)
    print("SECONDS", time.monotonic() - start)
    print("AFTER", notebook_launch(lambda: 7, 2, timeout_s=10))   # the launching process is still usable
""")


def _run(mode: str, tmp_path) -> str:
    script = tmp_path / "launch_from_a_threaded_process.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([sys.executable, str(script), mode], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_ranks_forked_from_a_multithreaded_process_finish(tmp_path):
    out = _run("with-fix", tmp_path)
    assert "RESULT [1, 1]" in out, out
    assert float(out.split("SECONDS ")[1].split()[0]) < 10
    assert "AFTER [7, 7]" in out


def test_a_rank_that_makes_no_progress_is_named_with_where_it_was_stuck(tmp_path):
    out = _run("without-fix", tmp_path)  # the children now wait for threads that do not exist
    assert "RESULT" not in out, out
    error = out.split("ERROR ", 1)[1]
    assert "made no progress for 10 s" in error
    assert error.startswith(("rank 0 ", "rank 1 "))
    assert "in work" in error and "x @ x" in error   # the stack of the stalled line, from the learner's function
    assert float(out.split("SECONDS ")[1].split()[0]) < 40
    assert "AFTER [7, 7]" in out
