"""The ``hpo`` command: run a study locally, validate a study file, report on a run, serve
a dashboard."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:  # pydantic, pandas, scikit-optimize load when a command needs them
    from hpo.engine import StudyProgress
    from hpo.results import StudyResults
    from hpo.store import Store
    from hpo.study.contract import SeedResult
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hpo-operator")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        console.print(f"hpo {_version()}", highlight=False)
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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _spread(mean: float | None, std: float | None, n: int | None) -> str:
    """``mean ± std``; a single seed has no spread to show, so only its value."""
    if mean is None:
        return "-"
    if n is not None and n < 2:
        return f"{mean:.4f} (1 seed)"
    if std is None:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f}"


def _fail(messages: list[str], code: int = EXIT_BAD_INPUT) -> None:
    # Messages are text, not markup: "[parquet]" in a pip command must print as written.
    err.print("[bold red]error:[/] " + escape(messages[0]), highlight=False, soft_wrap=True)
    for m in messages[1:]:
        err.print("       " + escape(m), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _best(p: StudyProgress) -> str:
    if p.best_mae is None:
        return "best -"
    return f"best val MAE {_spread(p.best_mae, p.best_std, p.best_seeds)} ({p.best_trial})"


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

    def __enter__(self) -> _Display:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def __call__(self, event: str, p: StudyProgress, result: SeedResult | None) -> None:
        if event.startswith("warning"):
            err.print(f"[yellow]{escape(event)}[/]", highlight=False, soft_wrap=True)
            return
        self.bar.update(
            self.task,
            completed=p.done + p.failed,
            total=p.total,
            phase=p.phase,
            running=p.running,
            failed=p.failed,
            best=_best(p),
        )
        if self.live or self.quiet:
            if event == "stage" and self.live:
                self.bar.console.print(f"stage: [bold]{p.phase}[/]")
            return
        if event == "stage":
            console.print(f"stage: {p.phase}", highlight=False)
        elif result is not None:
            what = (
                f"mae {result.mae:.4f}"
                if result.status == "succeeded" and result.mae is not None
                else f"FAILED ({result.error})"
            )
            retry = " (will retry)" if event == "retry" else ""
            console.print(
                f"[{p.done + p.failed}/{p.total}] {result.stage} {result.trial} "
                f"seed {result.seed}: {what}{retry}  running {p.running}  {_best(p)}",
                highlight=False,
                soft_wrap=True,
            )


StudyFile = Annotated[Path, typer.Argument(metavar="STUDY.yaml", help="An HPOStudy YAML file.")]


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
    from hpo.data.checks import DatasetProblem, DatasetUnavailable
    from hpo.engine import HistoryConflict
    from hpo.local.lock import StudyBusy
    from hpo.local.runner import LocalRunner
    from hpo.records.ledger import LedgerUnreadable
    from hpo.records.recorder import LedgerConflict
    from hpo.records.report import render_table
    from hpo.records.warmstart import WarmStartProblem
    from hpo.store import FolderError, OutputUnwritable, StoreError
    from hpo.study.spec import SpecError
    from hpo.study.storage import store_ref_for

    study = _load(study_file)
    try:
        ref = store_ref_for(study, out)
        set_aside = (lambda: _set_aside_ledger(study, ref)) if rebuild_ledger else None
        with _Display(quiet) as display:
            runner = LocalRunner(
                study, ref, parallelism=parallelism, listener=display, when_held=set_aside
            )
            outcome = runner.run()
    except DatasetUnavailable as exc:
        _fail(
            [f"{study_file}: {exc}", "nothing was trained; run again once it answers"],
            EXIT_STUDY_FAILED,
        )
    except DatasetProblem as exc:
        _fail([f"{study_file}: {exc}"])
    except HistoryConflict as exc:
        _fail([f"{study_file}: {exc}"])
    except WarmStartProblem as exc:
        _fail([f"{study_file}: {exc}", "nothing was trained or written"])
    except LedgerConflict as exc:
        _fail([str(exc)], EXIT_STUDY_FAILED)
    except StudyBusy as exc:
        _fail([str(exc)])
    except OutputUnwritable as exc:  # disk full, read-only: not a failed training
        _fail(
            [
                f"stopped: {exc}",
                "finished trainings are kept; make room (or make it writable), then run the "
                "same command again to resume",
            ]
        )
    except LedgerUnreadable as exc:
        _fail(
            [
                str(exc),
                "every finished training is also kept in its scores.json: run again with "
                "--rebuild-ledger to keep this file as ledger.xlsx.corrupt-<time> and rebuild "
                "the ledger from them (failed trainings, which have none, are tried again)",
            ]
        )
    except FolderError as exc:
        _fail([f"{'--out' if out is not None else 'spec.storage.path'}: {exc}"])
    except StoreError as exc:
        _fail(
            [
                f"object store: {exc}",
                "finished trainings are kept in the store; run the same command again to resume",
            ],
            EXIT_STUDY_FAILED,
        )
    except SpecError as exc:  # e.g. an s3:// --out without an endpoint
        _fail([f"{study_file}: {p}" for p in exc.problems])
    for note in outcome.notes:
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    if outcome.status == "interrupted":
        err.print(f"[yellow]{escape(outcome.message)}[/]")
        raise typer.Exit(128 + outcome.signum)  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
    labels = study.spec.dataset.labels
    if outcome.best is not None and len(outcome.best):
        console.print(render_table(outcome.best, labels))
    d = outcome.engine.describe()
    taken = f", {d['warm_trainings']} taken from earlier studies" if d["warm_trainings"] else ""
    warm = f", {d['warm_configs']} from earlier studies" if d["warm_configs"] else ""
    console.print(
        f"{_plural(d['trainings'], 'training')} ({d['failed']} failed{taken}): "
        f"{d['random_configs']} random and {d['bayesian_configs']} Bayesian "
        f"{'configuration' if d['bayesian_configs'] == 1 else 'configurations'}"
        f"{warm}"
        "; handed over: "
        f"{', '.join(d['handed_over']) or '-'}",
        highlight=False,
    )
    console.print(f"results in {outcome.location}", highlight=False)
    if outcome.status == "failed":
        err.print(f"[bold red]study failed:[/] {escape(outcome.message)}", highlight=False)
        raise typer.Exit(EXIT_STUDY_FAILED)


def _load(study_file: Path) -> Study:
    """The study file, or exit 2 with every problem named under the file's name."""
    from hpo.study.spec import SpecError, load_study

    try:
        return load_study(study_file)
    except SpecError as exc:
        _fail([f"{study_file}: {p}" for p in exc.problems])
    raise AssertionError("unreachable")


def _set_aside_ledger(study: Study, ref: Any) -> None:
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
        f"{_plural(n, 'scores.json file')}",
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
    from hpo.store import FolderError
    from hpo.study.space import space_size
    from hpo.study.spec import SpecError
    from hpo.study.storage import store_ref_for

    study = _load(study_file)
    spec = study.spec
    space = f"search space of {space_size(spec.search_space):,} configurations"
    if spec_only:
        console.print(f"{study.name}: spec valid (dataset not checked); {space}", highlight=False)
        return
    try:
        # The study's own store: an s3:// dataset is read from its endpoint, as `hpo run` does.
        store = store_ref_for(study) if spec.dataset.path.startswith("s3://") else None
        prepared = check_dataset(study, store)
    except SpecError as exc:
        _fail([f"{study_file}: {p}" for p in exc.problems])
    except FolderError as exc:
        _fail([f"{study_file}: spec.storage.path: {exc}"])
    except DatasetUnavailable as exc:
        _fail(
            [
                f"{study_file}: {exc}",
                "the spec is valid; the dataset could not be checked: check the endpoint "
                "and credentials, or give --spec-only to check the spec alone",
            ],
            EXIT_STUDY_FAILED,
        )
    except DatasetProblem as exc:
        _fail([f"{study_file}: {exc}"])
    for note in prepared.notes:
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    if spec.warm_start is not None:
        for line in _warm_start_check(study_file, study, prepared):
            console.print(line, highlight=False, soft_wrap=True)
    console.print(
        f"{study.name}: valid; {prepared.rows} rows ({prepared.rows_dropped} dropped), "
        f"{len(prepared.dataset.features)} features, {len(prepared.dataset.labels)} labels; "
        f"{space}",
        highlight=False,
    )


def _warm_start_check(study_file: Path, study: Study, prepared: Any) -> list[str]:
    """What ``hpo run`` would take from each warm-start source (read only), or exit 2."""
    from hpo.records.warmstart import WarmStartProblem, describe, take
    from hpo.store import LocalStore, StoreError, open_store
    from hpo.study.storage import store_ref_for

    ref = store_ref_for(study)
    try:
        if ref.kind == "local":
            store = LocalStore(ref.root) if Path(ref.root).is_dir() else None
        else:
            store = open_store(dataclasses.replace(ref, create_bucket=False))
        return describe(take(study, prepared, store))
    except WarmStartProblem as exc:
        _fail([f"{study_file}: {exc}"])
    except StoreError as exc:
        _fail([f"{study_file}: spec.storage: {exc}"], EXIT_STUDY_FAILED)
    raise AssertionError("unreachable")


@app.command()
def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace", "-n", metavar="NS", help="Watch only these namespaces (repeatable)."
        ),
    ] = None,
    liveness: Annotated[
        str,
        typer.Option(
            metavar="URL", help="Liveness endpoint for the kubelet's probe ('' for none)."
        ),
    ] = "http://0.0.0.0:8080/healthz",
    liveness_window: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="The liveness endpoint turns red once the API server has not answered "
            "for this long.",
        ),
    ] = 60.0,
    log_format: Annotated[str, typer.Option(metavar="plain|json", help="Log lines.")] = "plain",
    poll: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds between reconciliations (at most).")
    ] = 2.0,
    metrics_port: Annotated[
        int, typer.Option(metavar="PORT", help="Port of the Prometheus metrics endpoint (0: none).")
    ] = 9090,
    verbose: Annotated[bool, typer.Option(help="Debug logs.")] = False,
) -> None:
    """Run the operator: every HPOStudy in the watched namespaces is run as trainer pods."""
    import kopf

    from hpo.kube.handlers import QuietPodEvents, default_api_client, make_registry

    if log_format not in ("plain", "json"):
        _fail([f"--log-format {log_format!r}: choose plain or json"])
    if liveness_window <= 0:
        _fail([f"--liveness-window {liveness_window:g}: must be more than 0 seconds"])
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    if not verbose:
        logging.getLogger("kopf.objects").addFilter(QuietPodEvents())
    registry = make_registry(default_api_client, poll_s=poll)
    if metrics_port:
        from prometheus_client import start_http_server

        from hpo.kube.metrics import REGISTRY

        start_http_server(metrics_port, registry=REGISTRY)

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A registry of our own has none of kopf's default login handlers.
        return kopf.login_via_client(**kwargs)

    if liveness:
        from hpo.kube.liveness import ApiContact, ApiUnreachable, study_list_ping

        contact = ApiContact(
            study_list_ping(default_api_client, list(namespace or []), timeout_s=5.0),
            window_s=liveness_window,
        ).start()

        @kopf.on.probe(id="apiServer", registry=registry)
        def _api_server(**_: Any) -> dict[str, Any]:
            # A failed probe handler turns kopf's /healthz into a 500.
            try:
                return contact.check()
            except ApiUnreachable as exc:
                raise kopf.PermanentError(str(exc)) from None

    @kopf.on.startup(registry=registry)
    def _settings(settings: kopf.OperatorSettings, **_: object) -> None:
        settings.persistence.finalizer = "hpo-operator.dev/finalizer"
        settings.posting.level = 30  # warnings and up become Kubernetes events

    kopf.run(
        registry=registry,
        standalone=True,  # one replica (Deployment strategy Recreate): no peering needed
        clusterwide=not namespace,
        namespaces=namespace or (),
        liveness_endpoint=liveness or None,
    )


@app.command()
def status(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The HPOStudy's name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", metavar="NS")] = "default",
    kubeconfig: Annotated[Path | None, typer.Option(envvar="KUBECONFIG", metavar="FILE")] = None,
) -> None:
    """Where a study on the cluster stands: phase, counts, best, conditions."""
    from kubernetes import client, config

    from hpo.kube.api import Cluster

    config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None)
    study = Cluster(client.ApiClient(), user_agent=f"hpo-cli/{_version()}").get_study(
        namespace, name
    )
    if study is None:
        _fail([f"HPOStudy {namespace}/{name} not found"])
    st = study.get("status") or {}
    counts = st.get("counts") or {}
    console.print(
        f"{namespace}/{name}: {st.get('phase', 'Pending')} ({st.get('stage', '-')}), "
        f"trainings {st.get('trainings', '-')}, running {counts.get('running', 0)}, "
        f"failed {counts.get('failed', 0)}",
        highlight=False,
    )
    best = st.get("best")
    if best:
        spread = _spread(best["maeMean"], best.get("maeStd"), best.get("seeds"))
        console.print(f"best: {best['trial']} {best['configKey']} MAE {spread}", highlight=False)
    if st.get("ledger"):
        console.print(f"ledger: {st['ledger']}", highlight=False)
    for c in st.get("conditions") or []:
        console.print(
            f"  {c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def crd() -> None:
    """Print the HPOStudy CustomResourceDefinition (manifests/crd.yaml is this output)."""
    from hpo.kube.crd import crd_yaml

    sys.stdout.write(crd_yaml())


Endpoint = Annotated[
    str | None,
    typer.Option(
        envvar="HPO_S3_ENDPOINT",
        metavar="HOST:PORT",
        help="S3 endpoint, for s3:// locations (default: the study file's spec.storage).",
    ),
]
Tls = Annotated[
    bool | None,
    typer.Option(
        "--tls/--no-tls",
        envvar="HPO_S3_TLS",
        show_default=False,
        help="HTTPS to the S3 endpoint (default: the study file's spec.storage.tls, else HTTPS).",
    ),
]
#: What a browsing command is pointed at: a folder, a bucket URL or a study file.
WHERE_HELP = "runs/NAME, s3://bucket/prefix/namespace/NAME, or the study's YAML file"


def _open(where: str, endpoint: str | None, tls: bool | None) -> tuple[Store, str]:
    from hpo.results.location import open_location
    from hpo.store import StoreError
    from hpo.study.spec import SpecError

    try:
        return open_location(where, endpoint=endpoint, tls=True if tls is None else tls)
    except SpecError as exc:
        _fail(exc.problems)
    except StoreError as exc:
        _fail([_store_problem(exc, endpoint, tls)])
    raise AssertionError("unreachable")


def _store_problem(exc: Exception, endpoint: str | None, tls: bool | None) -> str:
    """The store's error, plus the likely fix when HTTPS met a plain-http endpoint."""
    text = str(exc)
    if tls is not False and any(
        s in text for s in ("WRONG_VERSION_NUMBER", "wrong version number", "SSL", "record layer")
    ):
        text += f"; if {endpoint or 'the endpoint'} speaks plain http, add --no-tls"
    return text


def _study_file(where: str) -> Path | None:
    """``where`` as a study file (YAML), if it is one."""
    path = Path(where)
    return path if path.suffix in (".yaml", ".yml") and path.is_file() else None


def _study_location(
    where: str, endpoint: str | None, tls: bool | None, *, study_folder: bool = True
) -> tuple[Store, str]:
    """The store and the key prefix of a study (``study_folder``) or of a folder of studies.

    A study file gives its own store: endpoint, TLS, bucket and prefix from its
    ``spec.storage`` (``--endpoint``/``--tls`` still win), the study under
    ``<prefix>/<namespace>/<name>`` as ``hpo run`` wrote it.
    """
    from hpo.store import StoreError, open_store
    from hpo.study.spec import SpecError
    from hpo.study.storage import store_ref_for

    study_file = _study_file(where)
    if study_file is not None:
        study = _load(study_file)
        ref = store_ref_for(study)
        if ref.kind == "s3":
            changes = {"endpoint": endpoint} if endpoint else {}
            if tls is not None:
                changes["tls"] = tls  # type: ignore[assignment]
            ref = dataclasses.replace(ref, **changes, create_bucket=False)
        elif not Path(ref.root).is_dir():
            _fail([f"{where}: its run folder {ref.root} does not exist (has it run?)"])
        try:
            store = open_store(ref)
        except SpecError as exc:
            _fail(exc.problems)
        except StoreError as exc:
            _fail([_store_problem(exc, ref.endpoint, ref.tls)])
        return store, study.name if study_folder else ""
    if where.startswith("s3://"):
        return _open(where, endpoint, tls)
    path = Path(where)
    if not path.exists():
        what = "study" if study_folder else "folder"
        _fail([f"{where}: no such {what} (nothing there)"])
    if not path.is_dir():
        _fail([f"{where}: is a file; give a run folder, a study folder or a study's YAML file"])
    if not study_folder:
        return _open(where, endpoint, tls)
    path = path.resolve()
    store, _ = _open(str(path.parent), endpoint, tls)
    return store, path.name


def _results_of(store: Store, root: str, where: str) -> list[SeedResult]:
    """The ledger's results, else (no ledger, or an unreadable one) those the trainings'
    ``scores.json`` files hold, with a note saying so and what rewrites the ledger."""
    from hpo.records.ledger import LedgerUnreadable, read_ledger
    from hpo.records.recorder import stored_results
    from hpo.study.layout import LEDGER_FILE, StudyPaths

    paths = StudyPaths.at(root)
    try:
        if store.exists(paths.ledger):
            return read_ledger(store, paths.ledger)
        why = f"no {LEDGER_FILE} yet"
    except LedgerUnreadable as exc:
        why = str(exc)
    results = stored_results(store, paths)
    if not results:
        _fail([f"{where}: {why}, and no training's scores.json either: nothing to report"])
    err.print(
        f"[yellow]note:[/] {escape(why)}; this report is built from the "
        f"{_plural(len(results), 'scores.json file')} of the trainings (failed trainings have "
        f"none). `hpo run STUDY.yaml` writes the ledger again (with --rebuild-ledger if "
        f"it is unreadable).",
        highlight=False,
        soft_wrap=True,
    )
    return results


@app.command()
def report(
    run_dir: Annotated[str, typer.Argument(metavar="STUDY", help=f"A study: {WHERE_HELP}.")],
    plots: Annotated[bool, typer.Option(help="Redraw the plots into the study's plots/.")] = False,
    endpoint: Endpoint = None,
    tls: Tls = None,
) -> None:
    """Print a study's final group from its ledger (and optionally redraw its plots)."""
    import tempfile

    import yaml

    from hpo.records.report import final_group, render_table
    from hpo.store import StoreError
    from hpo.study.layout import STUDY_FILE, StudyPaths
    from hpo.study.spec import SpecError, load_yaml, parse_study

    store, root = _study_location(run_dir, endpoint, tls)
    paths = StudyPaths.at(root)
    try:
        if not store.exists(paths.study):
            _fail([f"{run_dir}: no {STUDY_FILE} there: not a study (e.g. runs/quickstart)"])
        study = parse_study(load_yaml(store.get_bytes(paths.study).decode("utf-8")))
        results = _results_of(store, root, run_dir)
    except SpecError as exc:
        _fail([f"{run_dir}/{STUDY_FILE}: {p}" for p in exc.problems])
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        _fail([f"{run_dir}/{STUDY_FILE}: cannot be read: {exc}"])
    except StoreError as exc:
        _fail([str(exc)])
    spec = study.spec
    thresholds = {
        k: {"max_mae": t.max_mae, "max_pct": t.max_percent}
        for k, t in spec.result.thresholds.items()
    }
    best = final_group(results, spec.dataset.labels, thresholds, spec.result.size)
    console.print(render_table(best, spec.dataset.labels))
    ok = sum(1 for r in results if r.status == "succeeded")
    console.print(
        f"{_plural(ok, 'training')} succeeded, {len(results) - ok} failed", highlight=False
    )
    if plots:
        from hpo.records.report import make_plots

        with tempfile.TemporaryDirectory() as tmp:
            for png in make_plots(results, best, Path(tmp)):
                store.put_file(paths.plot(png.name), png)
                console.print(f"wrote {store.uri}/{paths.plot(png.name)}", highlight=False)


@app.command("ls")
def ls(
    where: Annotated[
        str,
        typer.Argument(
            metavar="WHERE",
            help="A run folder, s3://bucket/prefix, or a study's YAML file (its store).",
        ),
    ] = "runs",
    endpoint: Endpoint = None,
    tls: Tls = None,
) -> None:
    """List the studies in a run folder or a bucket."""
    from hpo.store import StoreError
    from hpo.study.layout import study_of_best, study_of_ledger, study_of_scores, study_of_status

    store, prefix = _study_location(where, endpoint, tls, study_folder=False)
    try:
        keys = list(store.list(prefix))
    except StoreError as exc:
        _fail([str(exc)])
    found = {s for s in map(study_of_ledger, keys) if s is not None}
    trainings: dict[str, int] = {}
    for k in keys:
        study = study_of_scores(k)
        if study is not None:
            trainings[study] = trainings.get(study, 0) + 1
    finished = {s for s in map(study_of_best, keys) if s is not None}
    live = {s: k for k in keys if (s := study_of_status(k)) is not None}
    studies = sorted(found | set(trainings) | set(live))  # ledger gone or not yet: still a study
    if not studies:
        console.print(f"no studies in {store.uri}/{prefix}".rstrip("/"), highlight=False)
        return
    for s in studies:
        state = "finished" if s in finished else "in progress"
        if s not in found:
            state += " (no ledger)"
        if s in live and s not in finished:
            state += _live_note(store, live[s])
        shown = s.removeprefix(prefix).lstrip("/") if prefix else s
        count = _plural(trainings.get(s, 0), "training")
        console.print(f"{shown:<40} {count:>15}  {state}", highlight=False)


def _live_note(store: Any, key: str) -> str:
    """What a running study's ``status.json`` adds to its ``hpo ls`` line (best-effort)."""
    from hpo.records.livestatus import LiveStatus
    from hpo.store import StoreError

    try:
        st = LiveStatus.model_validate_json(store.get_bytes(key))
    except (StoreError, ValueError):
        return ""
    state = st.state()
    if state == "live":
        return f", {st.running} running ({st.stage}; {st.runner} runner live)"
    if state == "stale":
        return f" (stale: its {st.runner} runner stopped writing {key.rsplit('/', 1)[-1]})"
    return f" ({state})"


@app.command()
def get(
    study: Annotated[str, typer.Argument(metavar="STUDY", help=f"A study: {WHERE_HELP}.")],
    to: Annotated[
        Path, typer.Option("--to", metavar="DIR", help="Local folder to download into.")
    ] = Path("."),
    what: Annotated[
        str,
        typer.Option(
            metavar="WHAT", help="ledger, plots, model (with --trial and --seed), or all."
        ),
    ] = "all",
    trial: Annotated[
        str | None, typer.Option(metavar="TRIAL", help="Trial of the model, e.g. b0002.")
    ] = None,
    seed: Annotated[int | None, typer.Option(metavar="N", help="Seed of the model.")] = None,
    endpoint: Endpoint = None,
    tls: Tls = None,
) -> None:
    """Fetch a study's ledger, plots or a model from its store, with progress."""
    from hpo.store import StoreError
    from hpo.study.layout import StudyPaths

    if what == "model" and (trial is None or seed is None):
        _fail(["--what model needs --trial and --seed"])
    if what not in ("ledger", "plots", "model", "all"):
        _fail([f"--what {what!r}: choose ledger, plots, model or all"])
    if to.exists() and not to.is_dir():
        _fail([f"--to {to}: is a file; give a folder to download into"])
    store, root = _study_location(study, endpoint, tls)
    name = root.rsplit("/", 1)[-1]
    try:
        keys = list(store.list(root))
        if not keys:
            _fail([f"{study}: no such study (nothing stored under it)"])
        wanted = keys
        paths = StudyPaths.at(root)
        if what == "ledger":
            wanted = [paths.ledger, paths.study, paths.best]
        elif what == "plots":
            wanted = [k for k in keys if k.startswith(f"{paths.plots}/")]
        elif what == "model":
            assert trial is not None and seed is not None
            wanted = [k for k in keys if k.startswith(f"{paths.seed(trial, seed)}/")]
            if not wanted:
                _fail([_no_model(keys, f"{paths.trials}/", trial, seed, study)])
        wanted = [k for k in wanted if k in set(keys)]
        if not wanted:
            _fail([f"{study}: nothing to fetch for --what {what}"])
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as bar:
            task = bar.add_task(f"{name}: {what}", total=len(wanted))
            for key in wanted:
                store.get_file(key, to / name / key.removeprefix(root).lstrip("/"))
                bar.advance(task)
    except StoreError as exc:
        _fail([str(exc)])
    except OSError as exc:  # the local side: a file in the way, no permission, disk full
        _fail([f"--to {to}: cannot write {exc.filename or to}: {exc.strerror or exc}"])
    console.print(f"{_plural(len(wanted), 'file')} in {to / name}", highlight=False)


@app.command()
def dashboard(
    where: Annotated[
        str,
        typer.Argument(metavar="WHERE", help="A run folder, a study folder or s3://bucket/prefix."),
    ] = "runs",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to serve on.")] = 8080,
    host: Annotated[
        str,
        typer.Option(metavar="ADDRESS", help="Address to listen on (0.0.0.0: every interface)."),
    ] = "127.0.0.1",
    refresh: Annotated[
        float, typer.Option(metavar="SECONDS", help="How often the pages poll for changes.")
    ] = 2.0,
    endpoint: Endpoint = None,
    tls: Tls = None,
) -> None:
    """Serve a read-only web dashboard of the studies under WHERE (live while they run)."""
    import socket

    if where.startswith("s3://"):
        if not endpoint:
            _fail([f"{where}: give --endpoint or set HPO_S3_ENDPOINT"])
    elif not Path(where).is_dir():
        _fail([f"{where}: no such folder (give a run folder, e.g. runs, or s3://bucket/prefix)"])
    if not 0 < port < 65536:
        _fail([f"--port {port}: give a port between 1 and 65535"])
    if refresh <= 0:
        _fail([f"--refresh {refresh}: give a positive number of seconds"])
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        _fail([f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port"])
    from hpo.dashboard.app import serve

    err.print(f"hpo dashboard of {where} on http://{host}:{port}/ (Ctrl-C stops)", highlight=False)
    serve(where, host=host, port=port, endpoint=endpoint, tls=tls, refresh_s=refresh)


def _no_model(keys: list[str], trials: str, trial: str, seed: int, study: str) -> str:
    """Why ``--trial``/``--seed`` found nothing: no such trial, or no such seed of it."""
    seeds: dict[str, set[str]] = {}
    for k in keys:
        if k.startswith(trials):
            parts = k.removeprefix(trials).split("/")
            if len(parts) >= 2:
                seeds.setdefault(parts[0], set()).add(parts[1].removeprefix("seed-"))
    if trial not in seeds:
        known = ", ".join(sorted(seeds)[:20]) + (", ..." if len(seeds) > 20 else "")
        return f"{study}: trial {trial!r} does not exist (trials: {known or 'none yet'})"
    return (
        f"{study}: trial {trial} has no seed {seed} stored "
        f"(seeds: {', '.join(sorted(seeds[trial], key=lambda s: (len(s), s)))})"
    )


def _results(where: str, endpoint: str | None, tls: bool | None) -> StudyResults:
    """A study's results (``hpo.results``): a folder, an ``s3://`` URL or its YAML file."""
    from hpo.results import ResultsError, StudyResults, open_study

    try:
        if _study_file(where) is not None:
            store, root = _study_location(where, endpoint, tls)
            return StudyResults(store, root, where)
        return open_study(where, endpoint=endpoint, tls=tls)
    except ResultsError as exc:
        _fail([_store_problem(exc, endpoint, tls)])
    raise AssertionError("unreachable")


StudyArg = Annotated[str, typer.Argument(metavar="STUDY", help=f"A study: {WHERE_HELP}.")]


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
        Path | None,
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
    """Predict the labels of a CSV's rows with a study's model, in the labels' own units."""
    import pandas as pd

    from hpo.data.dataset import DatasetError, read_table
    from hpo.results import ResultsError
    from hpo.results.features import feature_matrix

    results = _results(study, endpoint, tls)
    try:
        frame = read_table(data)
    except DatasetError as exc:
        _fail([f"{data}: {exc}"])
    try:
        chosen, seeds = results.resolve(rank=rank, trial=trial, seed=seed)
        encoding = results.feature_encoding(chosen, seeds[0])
    except ResultsError as exc:
        _fail([str(exc)])
    kept = list(dict.fromkeys(keep or []))
    missing = [c for c in kept if c not in frame.columns]
    if missing:
        _fail([f"--keep {missing[0]!r}: {data} has no such column (it has {list(frame.columns)})"])
    clash = [c for c in kept if c in results.labels]
    if clash:
        _fail([f"--keep {clash[0]!r}: a label has this name, and the prediction takes its column"])
    try:  # the columns are checked before TensorFlow loads (seconds): a refusal is quick
        feature_matrix(frame, encoding)
    except ResultsError as exc:
        _fail([f"{data}: {exc}"])
    try:
        predictions = results.load_model(trial=chosen, seed=seed).predict(frame)
    except ResultsError as exc:
        _fail([str(exc)])
    if kept:
        predictions = pd.concat([frame[kept], predictions], axis=1)
    text = predictions.to_csv(index=False)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text)
    except OSError as exc:
        _fail([f"--out {out}: cannot write ({exc.strerror or exc})"])
    err.print(
        f"{_plural(len(predictions), 'prediction')} of trial {chosen} "
        f"({_plural(len(seeds), 'seed')}{' averaged' if len(seeds) > 1 else ''}) in {out}",
        highlight=False,
    )


@app.command()
def export(
    study: StudyArg,
    fmt: Annotated[
        str, typer.Option("--format", "-f", metavar="csv|json|parquet", help="File format.")
    ] = "csv",
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder to write into.")
    ] = Path("."),
    endpoint: Endpoint = None,
    tls: Tls = None,
) -> None:
    """Write every training and every configuration as two files (csv, json or parquet)."""
    from hpo.results import ResultsError
    from hpo.results.export import FORMATS, check_format, export_study

    if fmt not in FORMATS:
        _fail([f"--format {fmt!r}: choose {', '.join(FORMATS)}"])
    try:
        check_format(fmt)
    except ResultsError as exc:
        _fail([str(exc)])
    if out.exists() and not out.is_dir():
        _fail([f"--out {out}: is a file; give a folder"])
    results = _results(study, endpoint, tls)
    try:
        paths = export_study(results, fmt, out)
    except ResultsError as exc:
        _fail([str(exc)])
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
        _fail(["give two or more studies to compare"])
    try:
        comparison = compare_studies([_results(s, endpoint, tls) for s in studies])
    except ResultsError as exc:
        _fail([str(exc)])
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
            f"{line.name}: {state}; {_plural(line.trainings, 'training')} succeeded; "
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
