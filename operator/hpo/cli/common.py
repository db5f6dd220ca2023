"""What every ``hpo`` command shares: the typer app, the consoles, exit codes and how a
refusal is printed. Light on purpose: ``hpo --help`` imports it and nothing heavy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # pydantic loads when a command needs it
    from hpo.study.spec import Study

#: Exit codes: documented in the README, relied on by scripts.
EXIT_OK, EXIT_STUDY_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    help="Two-stage hyperparameter optimisation for Keras MLPs, locally or on Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
# Logs and pipes get wide lines rather than a table folded to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("hpo-operator")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def spread(mean: float | None, std: float | None, n: int | None) -> str:
    """``mean ± std``; a single seed has no spread to show, so only its value."""
    if mean is None:
        return "-"
    if n is not None and n < 2:
        return f"{mean:.4f} (1 seed)"
    if std is None:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f}"


def fail(messages: list[str], code: int = EXIT_BAD_INPUT) -> NoReturn:
    # Messages are text, not markup: "[parquet]" in a pip command must print as written.
    err.print("[bold red]error:[/] " + escape(messages[0]), highlight=False, soft_wrap=True)
    for m in messages[1:]:
        err.print("       " + escape(m), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load(study_file: Path) -> Study:
    """The study file, or exit 2 with every problem named under the file's name."""
    from hpo.study.spec import SpecError, load_study

    try:
        return load_study(study_file)
    except SpecError as exc:
        fail([f"{study_file}: {p}" for p in exc.problems])
