"""Chapter 10: a lesson and its exercise open at the same time can both start process groups.

Two Python processes (like two notebook kernels) call notebook_launch at the same moment, several times; every
group must form and give the right all-reduce, with no port taken by the other.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    from llmcourse.parallel.launch import notebook_launch

    def total(offset):
        x = torch.tensor([float(dist.get_rank() + offset)])
        dist.all_reduce(x)
        return x.item()

    offset = int(sys.argv[1])
    for round in range(3):
        assert notebook_launch(total, 2, args=(offset,), timeout_s=60) == [1.0 + 2 * offset] * 2
    print("OK", offset)
""")


def test_two_kernels_launch_process_groups_at_the_same_time():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    runs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(offset)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for offset in (10, 20)]
    outputs = [run.communicate(timeout=240) for run in runs]
    for run, (out, err), offset in zip(runs, outputs, (10, 20)):
        assert run.returncode == 0, err[-2000:]
        assert f"OK {offset}" in out
