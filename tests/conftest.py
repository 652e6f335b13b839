"""Test settings: fast mode, stable hashing, one thread per process.

They are set before any kernel starts, so nbval's kernels inherit them too.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("LLMCOURSE_FAST", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per pytest worker and per kernel

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
