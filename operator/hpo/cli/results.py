"""``hpo predict``, ``hpo export`` and ``hpo compare``: using what studies found, through
``hpo.results``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hpo.cli.common import app, console, err, fail, plural
from hpo.cli.where import WHERE_HELP, Endpoint, StudyArg, Tls, study_results


@app.command()
def predict(
    study: StudyArg,
    data: Annotated[
        Path, typer.Argument(metavar="DATA.csv", help="Rows to predict: the feature columns.")
    ],
    rank: Annotated[
        int | None,
        typer.Option(metavar="N", help="Model of the final group's rank N (default 1)."),
    ] = None,
    trial: Annotated[
        str | None, typer.Option(metavar="TRIAL", help="Model of this trial instead, e.g. r0003.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(metavar="S", help="One seed's model (default: every seed, averaged)."),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", "-o", metavar="PREDS.csv", help="Write here (default: stdout)."),
    ] = None,
    keep: Annotated[
        list[str] | None,
        typer.Option(
            "--keep", metavar="COLUMN", help="Copy this input column (an id) before the labels."
        ),
    ] = None,
    endpoint: Endpoint = None,
    tls: Tls = None,
) -> None:
    """Predict the labels of a CSV's rows with a study's model, in the labels' own units.

    A row with a missing or infinite feature value, or a value too large for the model,
    gets empty labels and a ``reason`` (the column appears when a row has one); the
    others are predicted. A missing feature column or an unknown category is refused."""
    import pandas as pd

    from hpo.data.dataset import DatasetError, read_table
    from hpo.results import ResultsError
    from hpo.results.features import REASON

    target = _out_path(out)
    results = study_results(study, endpoint, tls)
    try:
        frame = read_table(data)
    except DatasetError as exc:
        fail([f"{data}: {exc}"])
    try:
        chosen, seeds = results.resolve(rank=rank, trial=trial, seed=seed)
        encoding = results.feature_encoding(chosen, seeds[0])
    except ResultsError as exc:
        fail([str(exc)])
    kept = list(dict.fromkeys(keep or []))
    _check_input(frame, data, encoding, kept, results.labels)
    try:
        predictions = results.load_model(trial=chosen, seed=seed).predict_rows(frame)
    except ResultsError as exc:
        fail([str(exc)])
    _say_unpredicted(predictions, data)
    if predictions[REASON].isna().all():
        predictions = predictions.drop(columns=REASON)
    if kept:
        predictions = pd.concat([frame[kept], predictions], axis=1)
    text = predictions.to_csv(index=False)
    if target is None:
        sys.stdout.write(text)
        return
    try:
        target.write_text(text)
    except OSError as exc:
        fail([f"--out {target}: cannot write ({exc.strerror or exc})"])
    err.print(
        f"{plural(len(predictions), 'prediction')} of trial {chosen} "
        f"({plural(len(seeds), 'seed')}{' averaged' if len(seeds) > 1 else ''}) in {target}",
        highlight=False,
    )


def _check_input(frame: Any, data: Path, encoding: Any, kept: list[str], labels: list[str]) -> None:
    """What is wrong with the whole file, refused before TensorFlow loads (seconds): a
    ``--keep`` column missing or named like an output, a missing feature column, an
    unknown category. Says which columns were read with thousands separators."""
    from hpo.data.table import thousands_columns
    from hpo.results import ResultsError
    from hpo.results.features import REASON, check_columns_of, feature_matrix, incomplete_rows

    missing = [c for c in kept if c not in frame.columns]
    if missing:
        fail([f"--keep {missing[0]!r}: {data} has no such column (it has {list(frame.columns)})"])
    clash = [c for c in kept if c in [*labels, REASON]]
    if clash:
        what = "the column of reasons" if clash[0] == REASON else "a label"
        fail([f"--keep {clash[0]!r}: {what} has this name, and the prediction takes its column"])
    try:
        check_columns_of(frame, encoding)
        feature_matrix(frame[incomplete_rows(frame, encoding).isna().to_numpy()], encoding)
    except ResultsError as exc:  # a missing column, an unknown category
        fail([f"{data}: {exc}"])
    grouped = [c for c in thousands_columns(frame) if c in encoding.names]
    if grouped:
        err.print(
            f"note: {', '.join(map(repr, grouped))} hold numbers written with thousands "
            "separators (e.g. '1,000'): read as numbers (1000)",
            highlight=False,
        )


def _out_path(out: str | None) -> Path | None:
    """``--out``'s file; an empty name is refused (it would mean the current folder)."""
    if out is None:
        return None
    if not out.strip():
        fail(["--out: empty; give a file name (or leave --out out to write to stdout)"])
    return Path(out)


def _say_unpredicted(predictions: Any, data: Path) -> None:
    """How many rows were not predicted, and the first reasons: on stderr, never silent."""
    from hpo.results.features import REASON

    reasons = predictions[REASON].dropna()
    if reasons.empty:
        return
    first = "; ".join(
        f"data row {predictions.index.get_loc(i) + 1}: {r}" for i, r in reasons.head(3).items()
    )
    err.print(
        f"note: {len(reasons)} of {plural(len(predictions), 'row')} of {data} not predicted "
        f"(empty labels, column '{REASON}' says why), e.g. {first}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def export(
    study: StudyArg,
    fmt: Annotated[
        str, typer.Option("--format", "-f", metavar="csv|json|parquet", help="File format.")
    ] = "csv",
    out: Annotated[
        str, typer.Option("--out", "-o", metavar="DIR", help="Folder to write into.")
    ] = ".",
    endpoint: Endpoint = None,
    tls: Tls = None,
) -> None:
    """Write every training and every configuration as two files (csv, json or parquet)."""
    from hpo.results import ResultsError
    from hpo.results.export import FORMATS, check_format, export_study

    if fmt not in FORMATS:
        fail([f"--format {fmt!r}: choose {', '.join(FORMATS)}"])
    try:
        check_format(fmt)
    except ResultsError as exc:
        fail([str(exc)])
    if not out.strip():
        fail(["--out: empty; give a folder (--out . for the current one)"])
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        fail([f"--out {folder}: is a file; give a folder"])
    results = study_results(study, endpoint, tls)
    try:
        paths = export_study(results, fmt, folder)
    except ResultsError as exc:
        fail([str(exc)])
    for path in paths:
        console.print(f"wrote {path}", highlight=False)


@app.command()
def compare(
    studies: Annotated[
        list[str], typer.Argument(metavar="STUDY...", help=f"Two or more studies: {WHERE_HELP}.")
    ],
    endpoint: Endpoint = None,
    tls: Tls = None,
) -> None:
    """The final groups of several studies side by side, with their datasets and budgets."""
    from rich.table import Table

    from hpo.data.dataset import short_fingerprint
    from hpo.results import ResultsError
    from hpo.results.compare import compare as compare_studies

    if len(studies) < 2:
        fail(["give two or more studies to compare"])
    try:
        comparison = compare_studies([study_results(s, endpoint, tls) for s in studies])
    except ResultsError as exc:
        fail([str(exc)])
    table = Table(title="Final groups: ranked on validation MAE", header_style="bold")
    for name in ("study", "#", "trial", "configuration", "val MAE", "test MAE", "seeds"):
        table.add_column(name, overflow="fold")
    for row in comparison.table.to_dict("records"):
        table.add_row(
            str(row["study"]),
            str(row["rank"]),
            str(row["trial"]),
            str(row["config_key"]),
            f"{row['val_mae_mean']:.4f}",
            f"{row['test_mae_mean']:.4f}",
            str(row["seeds"]),
        )
    console.print(table)
    first = comparison.studies[0].name
    for i, line in enumerate(comparison.studies):
        state = "finished" if line.finished else "not finished (no final group yet)"
        console.print(
            f"{line.name}: {state}; {plural(line.trainings, 'training')} succeeded; "
            f"budget {line.budget}; dataset {short_fingerprint(line.fingerprint)}",
            highlight=False,
            soft_wrap=True,
        )
        if line.best_val is not None and line.best_test is not None:
            change = comparison.change(i)
            versus = f" ({change:+.1%} vs {first})" if i and change is not None else ""
            console.print(
                f"  best: val MAE {line.best_val:.4f}, test MAE {line.best_test:.4f}{versus}",
                highlight=False,
            )
    if comparison.same_dataset:
        console.print("same dataset: the errors are comparable", highlight=False)
    else:
        console.print(
            "different datasets (or one not recorded): the errors are not comparable "
            "across these studies",
            highlight=False,
        )
