"""Chapter 10 as a learner's JupyterLab runs it: full size, no thread variables, a kernel whose thread pool
has several threads (four, even on a smaller machine) before the first launch. The lesson must finish (the
exercises start no processes); before forked ranks were limited to one thread, it hung at the first timed
pipeline."""
from __future__ import annotations

import os
import tempfile

import nbformat
from jupyter_client import KernelManager
from nbclient import NotebookClient

from conftest import ROOT

WARM_POOL = ("import torch\n"
             "torch.set_num_threads(4)\n"
             "(torch.randn(256, 256) @ torch.randn(256, 256)).sum()   # the pool is live before any fork\n"
             "assert torch.get_num_threads() == 4")


def test_chapter_10_lesson_runs_at_full_size_from_a_multithreaded_kernel(monkeypatch):
    [path] = (ROOT / "notebooks").glob("10_*.ipynb")
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(WARM_POOL))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLMCOURSE_FAST", "0")
    with tempfile.TemporaryDirectory(prefix="llmcourse_kernel_") as sockets:
        km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
        NotebookClient(nb, km=km, timeout=240, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors
    assert any("notebook_launch(" in c.source for c in nb.cells if c.cell_type == "code")
