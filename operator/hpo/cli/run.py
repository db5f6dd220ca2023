"""``hpo run`` and ``hpo validate``: a study on this machine, and the check before it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpo.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_STUDY_FAILED,
    app,
    console,
    err,
    fail,
    load,
    plural,
    spread,
)
from hpo.study.contract import stage_label
from hpo.study.summary import selection_score

if TYPE_CHECKING:  # pydantic, pandas, scikit-optimize load when a command needs them
    from hpo.engine import StudyProgress
    from hpo.local.runner import Outcome
    from hpo.store import StoreRef
    from hpo.study.contract import SeedResult
    from hpo.study.spec import Study


def _best(p: StudyProgress) -> str:
    if p.best_mae is None:
        return "best -"
    return f"best val MAE {spread(p.best_mae, p.best_std, p.best_seeds)} ({p.best_trial})"


class _Display:
    """A live bar on a terminal; one line per training otherwise (CI logs, pipes)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self.bar = Progress(
            TextColumn("[bold]{task.fields[phase]:<8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("running {task.fields[running]}  failed {task.fields[failed]}"),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not self.live,
        )
        self.task = self.bar.add_task("study", total=None, phase="", running=0, failed=0, best="")
        #: Notes already shown (at the start); the end repeats none of them.
        self.noted: set[str] = set()

    def __enter__(self) -> _Display:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def __call__(self, event: str, p: StudyProgress, result: SeedResult | None) -> None:
        if event.startswith("warning"):
            err.print(f"[yellow]{escape(event)}[/]", highlight=False, soft_wrap=True)
            return
        if event.startswith("note: "):
            self.noted.add(event.removeprefix("note: "))
            self.bar.console.print(escape(event), highlight=False, soft_wrap=True)
            return
        self.bar.update(
            self.task,
            completed=p.done + p.failed,
            total=p.total,
            phase=stage_label(p.phase),
            running=p.running,
            failed=p.failed,
            best=_best(p),
        )
        if self.live or self.quiet:
            if event == "stage" and self.live:
                self.bar.console.print(f"stage: [bold]{stage_label(p.phase)}[/]")
            return
        if event == "stage":
            console.print(f"stage: {stage_label(p.phase)}", highlight=False)
        elif result is not None:
            score = selection_score(result)
            what = (  # the selection score, as the best beside it (never the test MAE)
                f"val MAE {score:.4f}"
                if result.status == "succeeded" and score is not None
                else f"FAILED ({result.error})"
            )
            retry = " (will retry)" if event == "retry" else ""
            console.print(
                f"[{p.done + p.failed}/{p.total}] {stage_label(result.stage)} {result.trial} "
                f"seed {result.seed}: {what}{retry}  running {p.running}  {_best(p)}",
                highlight=False,
                soft_wrap=True,
            )


@app.command()
def run(
    study_file: Annotated[
        Path, typer.Argument(metavar="STUDY.yaml", help="An HPOStudy YAML file.")
    ],
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR|s3://BUCKET/PREFIX",
            help="Run folder, or s3://bucket/prefix (default: spec.storage).",
        ),
    ] = None,
    parallelism: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Trainings at once (default: spec.parallelism)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
    rebuild_ledger: Annotated[
        bool,
        typer.Option(
            "--rebuild-ledger",
            help="If the ledger cannot be read, keep it as ledger.xlsx.corrupt-<time> and "
            "rebuild it from the trainings' scores.json files.",
        ),
    ] = False,
) -> None:
    """Run a study on this machine; running it again resumes where it stopped."""
    from hpo.local.runner import LocalRunner
    from hpo.records.report import render_table
    from hpo.study.storage import store_ref_for

    if out is not None and not out.strip():
        fail(["--out: empty; give a folder or s3://bucket/prefix (or leave --out out)"])
    study = load(study_file)
    try:
        ref = store_ref_for(study, out)
        set_aside = (lambda: _set_aside_ledger(study, ref)) if rebuild_ledger else None
        with _Display(quiet) as display:
            runner = LocalRunner(
                study, ref, parallelism=parallelism, listener=display, when_held=set_aside
            )
            outcome = runner.run()
    except Exception as exc:
        refusal = _refusal(exc, study_file, out)
        if refusal is None:
            raise
        fail(*refusal)
    for note in (n for n in outcome.notes if n not in display.noted):  # new since the start
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    if outcome.status == "interrupted":
        err.print(f"[yellow]{escape(outcome.message)}[/]")
        raise typer.Exit(128 + outcome.signum)  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
    labels = study.spec.dataset.labels
    if outcome.best is not None and len(outcome.best):
        console.print(render_table(outcome.best, labels))
    console.print(_summary(outcome), highlight=False)
    console.print(f"results in {outcome.location}", highlight=False)
    if outcome.status == "failed":
        err.print(f"[bold red]study failed:[/] {escape(outcome.message)}", highlight=False)
        raise typer.Exit(EXIT_STUDY_FAILED)


def _refusal(exc: Exception, study_file: Path, out: str | None) -> tuple[list[str], int] | None:
    """What ``hpo run`` says for an error it expects (and its exit code); None for a bug."""
    from hpo.data.checks import DatasetProblem, DatasetUnavailable
    from hpo.engine import HistoryConflict
    from hpo.local.lock import StudyBusy
    from hpo.records.ledger import LedgerUnreadable
    from hpo.records.recorder import LedgerConflict
    from hpo.records.warmstart import WarmStartProblem
    from hpo.store import FolderError, OutputUnwritable, StoreError
    from hpo.study.spec import SpecError

    # In the order of an except chain: a subclass before its base.
    if isinstance(exc, DatasetUnavailable):
        return [f"{study_file}: {exc}", "nothing was trained; run again once it answers"], (
            EXIT_STUDY_FAILED
        )
    if isinstance(exc, (DatasetProblem, HistoryConflict)):
        return [f"{study_file}: {exc}"], EXIT_BAD_INPUT
    if isinstance(exc, WarmStartProblem):
        return [f"{study_file}: {exc}", "nothing was trained or written"], EXIT_BAD_INPUT
    if isinstance(exc, LedgerConflict):
        return [str(exc)], EXIT_STUDY_FAILED
    if isinstance(exc, StudyBusy):
        return [str(exc)], EXIT_BAD_INPUT
    if isinstance(exc, OutputUnwritable):  # disk full, read-only: not a failed training
        return [
            f"stopped: {exc}",
            "finished trainings are kept; make room (or make it writable), then run the "
            "same command again to resume",
        ], EXIT_BAD_INPUT
    if isinstance(exc, LedgerUnreadable):
        return [
            str(exc),
            "every finished training is also kept in its scores.json: run again with "
            "--rebuild-ledger to keep this file as ledger.xlsx.corrupt-<time> and rebuild "
            "the ledger from them (a failed training, which has none, is read back from "
            "failures/ if recorded there, else tried again)",
        ], EXIT_BAD_INPUT
    if isinstance(exc, FolderError):
        return [f"{'--out' if out is not None else 'spec.storage.path'}: {exc}"], EXIT_BAD_INPUT
    if isinstance(exc, StoreError):
        return [
            f"object store: {exc}",
            "finished trainings are kept in the store; run the same command again to resume",
        ], EXIT_STUDY_FAILED
    if isinstance(exc, SpecError):  # e.g. an s3:// --out without an endpoint
        return [f"{study_file}: {p}" for p in exc.problems], EXIT_BAD_INPUT
    return None


def _summary(outcome: Outcome) -> str:
    """The closing line: trainings, configurations per stage, what was handed over."""
    d = outcome.engine.describe()
    taken = f", {d['warm_trainings']} taken from earlier studies" if d["warm_trainings"] else ""
    warm = f", {d['warm_configs']} from earlier studies" if d["warm_configs"] else ""
    narrow = d["narrow_configs"]
    return (
        f"{plural(d['trainings'], 'training')} ({d['failed']} failed{taken}): "
        f"{d['random_configs']} random and {narrow} narrow-stage "
        f"{'configuration' if narrow == 1 else 'configurations'}"
        f"{warm}"
        "; handed over: "
        f"{', '.join(d['handed_over']) or '-'}"
    )


def _set_aside_ledger(study: Study, ref: StoreRef) -> None:
    """``--rebuild-ledger``: an unreadable ledger is moved aside (never overwritten), so
    the run rebuilds it from the ``scores.json`` files as it does a deleted one."""
    from hpo.records.recorder import set_aside_unreadable_ledger, stored_results
    from hpo.store import open_store
    from hpo.study.layout import StudyPaths

    store = open_store(ref)
    paths = StudyPaths(study.name)
    aside = set_aside_unreadable_ledger(store, paths)
    if aside is None:
        console.print("note: the ledger reads back fine; nothing to rebuild", highlight=False)
        return
    n = len(stored_results(store, paths))
    console.print(
        f"note: the unreadable ledger is kept as {store.uri}/{aside}; rebuilding it from "
        f"{plural(n, 'scores.json file')}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def validate(
    study_file: Annotated[
        Path, typer.Argument(metavar="STUDY.yaml", help="An HPOStudy YAML file.")
    ],
    spec_only: Annotated[
        bool,
        typer.Option(
            "--spec-only",
            help="Check the spec alone: no dataset read, no network (an s3:// dataset is "
            "otherwise read from the study's store, with HPO_S3_ACCESS_KEY/SECRET_KEY).",
        ),
    ] = False,
) -> None:
    """Check a study file and its dataset without training anything."""
    from hpo.data.checks import DatasetProblem, DatasetUnavailable, check_dataset
    from hpo.engine import cost_line
    from hpo.store import FolderError
    from hpo.study.space import space_size
    from hpo.study.spec import SpecError
    from hpo.study.storage import store_ref_for

    study = load(study_file)
    spec = study.spec
    space = f"search space of {space_size(spec.search_space):,} configurations"
    if spec_only:
        console.print(f"{study.name}: spec valid (dataset not checked); {space}", highlight=False)
        console.print(f"{study.name}: {cost_line(spec)}", highlight=False, soft_wrap=True)
        return
    try:
        # The study's own store: an s3:// dataset is read from its endpoint, as `hpo run` does.
        store = store_ref_for(study) if spec.dataset.path.startswith("s3://") else None
        prepared = check_dataset(study, store)
    except SpecError as exc:
        fail([f"{study_file}: {p}" for p in exc.problems])
    except FolderError as exc:
        fail([f"{study_file}: spec.storage.path: {exc}"])
    except DatasetUnavailable as exc:
        fail(
            [
                f"{study_file}: {exc}",
                "the spec is valid; the dataset could not be checked: check the endpoint "
                "and credentials, or give --spec-only to check the spec alone",
            ],
            EXIT_STUDY_FAILED,
        )
    except DatasetProblem as exc:
        fail([f"{study_file}: {exc}"])
    for note in prepared.notes:
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    if spec.warm_start is not None:
        for line in _warm_start_check(study_file, study, prepared):
            console.print(line, highlight=False, soft_wrap=True)
    console.print(
        f"{study.name}: valid; {plural(prepared.rows, 'row')} ({prepared.rows_dropped} "
        f"dropped), {plural(len(prepared.dataset.features), 'feature')}, "
        f"{plural(len(prepared.dataset.labels), 'label')}; "
        f"{space}",
        highlight=False,
    )
    console.print(f"{study.name}: {cost_line(spec)}", highlight=False, soft_wrap=True)


def _warm_start_check(study_file: Path, study: Study, prepared: Any) -> list[str]:
    """What ``hpo run`` would take from each warm-start source (read only), or exit 2."""
    from hpo.records.warmstart import WarmStartProblem, describe, take
    from hpo.results.location import reading_ref
    from hpo.store import LocalStore, Store, StoreError, open_store

    ref = reading_ref(study)
    try:
        store: Store | None
        if ref.kind == "local":
            store = LocalStore(ref.root) if Path(ref.root).is_dir() else None
        else:
            store = open_store(ref)
        return describe(take(study, prepared, store))
    except WarmStartProblem as exc:
        fail([f"{study_file}: {exc}"])
    except StoreError as exc:
        fail([f"{study_file}: spec.storage: {exc}"], EXIT_STUDY_FAILED)
