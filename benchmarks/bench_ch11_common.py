"""Shared pieces of the chapter 11 benchmarks (inference and serving): the trained model, the machine line, timing.

Every chapter 11 benchmark times two contenders alternately in one run (round by round, so a burst of load
from other jobs hits both) and reports the best and the median round. Load only ever adds time, so on a shared
machine the best round is the fairer number; the median shows the spread.

Quick mode (``--quick`` or ``LLMCOURSE_FAST=1``) is a smoke test: fewer rounds and the smaller fast-mode
course GPT, for checking that a script runs, not for its numbers.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from typing import Callable

import torch

from llmcourse.config import fast_mode


def parse_args(doc: str, rounds: int) -> argparse.Namespace:
    """``--rounds`` (default ``rounds``, 3 in quick mode) and ``--quick``; quick mode also sets LLMCOURSE_FAST=1."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help=f"timed rounds per contender (default {rounds})")
    parser.add_argument("--quick", action="store_true", help="smoke test: fast-mode model, few rounds")
    args = parser.parse_args()
    if args.quick:
        os.environ["LLMCOURSE_FAST"] = "1"
    args.quick = fast_mode()
    if args.rounds is None:
        args.rounds = 3 if args.quick else rounds
    return args


def course_gpt():
    """(model, tokenizer): the course's pretrained GPT of chapter 08 (the fast-mode one in quick mode), in eval mode."""
    from llmcourse.pretraining.course_model import course_base_model

    model, tokenizer, _ = course_base_model().value
    return model.eval(), tokenizer


def machine_line(extra: str = "") -> str:
    """Date, torch, threads, CPU, load average: the conditions a table row needs."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    return (f"{datetime.date.today()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), {cpu}, "
            f"{os.cpu_count()} cores, load average {load:.2f}" + (f"; {extra}" if extra else ""))


def alternate(contenders: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each contender, ``rounds`` times, the contenders taking turns within each round."""
    for _ in range(warmup):
        for run in contenders.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def best(times: list[float]) -> float:
    return min(times)


def median(times: list[float]) -> float:
    return statistics.median(times)


def spread(times: list[float]) -> str:
    """'best / median / worst' in milliseconds."""
    return f"{min(times) * 1e3:.1f} / {statistics.median(times) * 1e3:.1f} / {max(times) * 1e3:.1f}"


def prompt_ids(tokenizer, text: str, length: int) -> torch.Tensor:
    """(1, length) ids: ``text`` encoded and repeated or cut to exactly ``length`` tokens (a real-text prompt)."""
    ids = tokenizer.encode(text)
    while len(ids) < length:
        ids = ids + ids
    return torch.tensor([ids[:length]])


PROMPT_TEXT = ("Return a new list containing the items of the iterable in sorted order. The key argument "
               "specifies a function of one argument that is used to extract a comparison key from each element.")
