"""Chapter 03 benchmark: encoding speed of llmcourse's pure-Python BPE encoder vs tiktoken.

Encodes 1 MB of English prose and 1 MB of Python source code (from
``llmcourse.tokenizers.corpora``) with:

* ``llmcourse, cl100k``  -- :func:`llmcourse.tokenizers.tiktoken_bridge.load_cl100k`:
  GPT-4's 100k vocabulary in our pure-Python :class:`RegexTokenizer`;
* ``llmcourse, 4,096``   -- a 4,096-token :class:`RegexTokenizer` trained by llmcourse on
  other text (the 0.5 MB of prose and of code that follow the benchmark texts);
* ``tiktoken export``    -- that 4,096-token tokenizer exported with ``to_tiktoken``;
* ``tiktoken cl100k``    -- tiktoken's own ``cl100k_base`` (Rust).

All use ``encode_ordinary`` (no special tokens) on one thread. The pure-Python encoder
starts each run with an empty pre-token cache, so it pays for every distinct pre-token
once per text, as on new text. Each speed is the best of ``--repeats`` runs (default 3),
the contenders alternating. Every encoder's ids are checked against its tiktoken twin.
The results are appended to ``benchmarks/README.md`` as "## Chapter 03: encoding speed"
(replacing only that section on a rerun).

    .venv/bin/python benchmarks/bench_tokenize_encode.py            # about a minute
    .venv/bin/python benchmarks/bench_tokenize_encode.py --quick    # 100 KB, no README update
"""
from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tiktoken  # noqa: E402

from llmcourse.tokenizers.corpora import english_prose, source_code  # noqa: E402
from llmcourse.tokenizers.regex_bpe import RegexTokenizer  # noqa: E402
from llmcourse.tokenizers.tiktoken_bridge import cl100k_encoding, load_cl100k, to_tiktoken  # noqa: E402

README = Path(__file__).resolve().parent / "README.md"
SECTION = "## Chapter 03: encoding speed"


def best_of(jobs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall-clock time of each job over ``repeats`` rounds; the jobs alternate within a round."""
    best = {name: float("inf") for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def cold(tok: RegexTokenizer) -> Callable[[str], list[int]]:
    """``tok.encode_ordinary``, starting each call with an empty pre-token cache."""
    def encode(text: str) -> list[int]:
        tok.clear_cache()
        return tok.encode_ordinary(text)
    return encode


def write_section(body: str) -> None:
    """Append our section to the README, or replace our own earlier one; other sections stay as they are."""
    text = README.read_text(encoding="utf-8")   # re-read right before writing: others append too
    start = text.find(SECTION + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + (text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    README.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 KB texts, 1 repeat, no README update")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    size = 100_000 if args.quick else 1_000_000
    repeats = args.repeats or (1 if args.quick else 3)

    texts = {"English": english_prose(size), "code": source_code(size)}
    train_text = english_prose(size * 3 // 2)[len(texts["English"]):] + source_code(size * 3 // 2)[len(texts["code"]):]

    start = time.perf_counter()
    cl100k_py = load_cl100k()
    load_s = time.perf_counter() - start
    cl100k_tt = cl100k_encoding()
    start = time.perf_counter()
    small_py = RegexTokenizer().train(train_text, 4096)
    train_s = time.perf_counter() - start
    small_tt = to_tiktoken(small_py)

    encoders = {   # name: (encode function, its tiktoken twin that must give the same ids)
        "llmcourse `RegexTokenizer`, cl100k ranks (pure Python)": (cold(cl100k_py), cl100k_tt),
        "llmcourse `RegexTokenizer`, 4,096 tokens trained by llmcourse (pure Python)": (cold(small_py), small_tt),
        "tiktoken, export of that 4,096-token tokenizer (`to_tiktoken`)": (small_tt.encode_ordinary, small_tt),
        "tiktoken `cl100k_base` (Rust)": (cl100k_tt.encode_ordinary, cl100k_tt),
    }
    speed: dict[str, dict[str, float]] = {name: {} for name in encoders}
    tokens: dict[str, dict[str, int]] = {name: {} for name in encoders}
    for corpus, text in texts.items():
        mb = len(text.encode("utf-8")) / 1e6
        for name, (encode, twin) in encoders.items():
            ids = encode(text)
            assert ids == twin.encode_ordinary(text), f"{name} disagrees with tiktoken on {corpus}"
            tokens[name][corpus] = len(ids)
        jobs = {name: functools.partial(encode, text) for name, (encode, _) in encoders.items()}
        for name, seconds in best_of(jobs, repeats).items():
            speed[name][corpus] = mb / seconds

    ref = "tiktoken `cl100k_base` (Rust)"
    lines = [
        "| encoder | English MB/s | code MB/s | English: time ÷ tiktoken cl100k's "
        "| code: time ÷ tiktoken cl100k's | English tokens | code tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in encoders:
        s, n = speed[name], tokens[name]
        lines.append(f"| {name} | {s['English']:.2f} | {s['code']:.2f} | {speed[ref]['English'] / s['English']:.1f} "
                     f"| {speed[ref]['code'] / s['code']:.1f} | {n['English']:,} | {n['code']:,} |")
    table = "\n".join(lines)
    conditions = (f"{datetime.date.today()}, {platform.python_implementation()} {platform.python_version()}, "
                  f"{os.cpu_count()} CPU cores (shared), tiktoken {tiktoken.__version__}; "
                  f"{len(texts['English'].encode()):,} bytes of English (`english_prose`) and "
                  f"{len(texts['code'].encode()):,} bytes of code (`source_code`); best of {repeats}; "
                  f"one thread; cold pre-token cache for the pure-Python encoder")
    print(f"# Encoding speed — {conditions}\n")
    print(table)
    print(f"\nRecovering cl100k's 100,000 merges from its ranks and building the tokenizer: {load_s:.1f} s; "
          f"training the 4,096-token tokenizer on {len(train_text.encode()):,} bytes: {train_s:.1f} s.")
    if not args.quick:
        write_section(
            f"{SECTION}\n\n"
            "`.venv/bin/python benchmarks/bench_tokenize_encode.py`: `encode_ordinary` speed in MB/s "
            "(10⁶ bytes of UTF-8 per second). The pure-Python encoders give exactly the ids of their "
            "tiktoken twins (checked in the run).\n\n"
            f"Conditions: {conditions}.\n\n{table}\n\n"
            f"Loading cl100k into llmcourse (recovering 100,000 merges from the ranks): {load_s:.1f} s. "
            f"Training the 4,096-token tokenizer (0.5 MB of prose + 0.5 MB of code that follow the "
            f"benchmark texts): {train_s:.1f} s.\n")
        print(f"\nwrote the section '{SECTION}' of {README}")


if __name__ == "__main__":
    main()
