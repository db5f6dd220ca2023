"""The ``hpo`` command: run a study locally, validate a study file, report on a run, serve
a dashboard, run the operator.

Thin: each command parses its options and hands over to the package that does the work.
The commands live by job in ``run`` (run, validate), ``cluster`` (operator, status, crd),
``browse`` (report, ls, get, dashboard) and ``results`` (predict, export, compare);
importing them registers them on ``app`` in the order ``hpo --help`` lists them.
Everything heavy (pydantic, pandas, kopf, TensorFlow) loads inside the command that needs it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from hpo.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STUDY_FAILED,
    app,
    console,
    version,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STUDY_FAILED", "app", "main"]


def _print_version(value: bool) -> None:
    if value:
        console.print(f"hpo {version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Two-stage hyperparameter optimisation for Keras MLPs, locally or on Kubernetes."""


# Registered in this order (``hpo --help`` lists them so).
from hpo.cli import run, cluster, browse, results  # noqa: E402, F401, I001


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
