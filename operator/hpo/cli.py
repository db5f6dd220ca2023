"""The ``hpo`` command: run a study locally, validate a study file, report on a run."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpo.spec import SpecError, load_study

if TYPE_CHECKING:  # the engine pulls in scikit-optimize: keep `--help` fast
    from hpo.contract import SeedResult
    from hpo.engine import StudyProgress
    from hpo.store import Store

#: Exit codes: documented in the README, relied on by scripts.
EXIT_OK, EXIT_STUDY_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    help="Two-stage hyperparameter optimisation for Keras MLPs, locally or on Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Logs and pipes get wide lines rather than a table folded to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def _fail(messages: list[str], code: int = EXIT_BAD_INPUT) -> None:
    err.print("[bold red]error:[/] " + messages[0], highlight=False, soft_wrap=True)
    for m in messages[1:]:
        err.print("       " + m, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _best(p: StudyProgress) -> str:
    if p.best_mae is None:
        return "best -"
    return f"best val MAE {p.best_mae:.4f} ± {p.best_std or 0:.4f} ({p.best_trial})"


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
            err.print(f"[yellow]{event}[/]", highlight=False, soft_wrap=True)
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
                f"[{p.done + p.failed}/{p.total}] {p.phase} {result.trial} seed {result.seed}: "
                f"{what}{retry}  running {p.running}  {_best(p)}",
                highlight=False,
                soft_wrap=True,
            )


@app.command()
def run(
    study_file: Annotated[Path, typer.Argument(help="An HPOStudy YAML file.")],
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Run folder, or s3://bucket/prefix (default: spec.storage).",
        ),
    ] = None,
    parallelism: Annotated[
        int | None, typer.Option(min=1, help="Trainings at once (default: spec.parallelism).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Run a study on this machine; running it again resumes where it stopped."""
    from hpo.dataset_check import DatasetProblem
    from hpo.engine import HistoryConflict
    from hpo.recorder import LedgerConflict
    from hpo.report import render_table
    from hpo.runners.local import LocalRunner
    from hpo.runners.study_lock import StudyBusy
    from hpo.store import OutputUnwritable, StoreError, store_ref_for

    try:
        study = load_study(study_file)
    except SpecError as exc:
        _fail([f"{study_file}: {p}" for p in exc.problems])
    try:
        with _Display(quiet) as display:
            runner = LocalRunner(
                study, store_ref_for(study, out), parallelism=parallelism, listener=display
            )
            outcome = runner.run()
    except DatasetProblem as exc:
        _fail([f"{study_file}: {exc}"])
    except HistoryConflict as exc:
        _fail([f"{study_file}: {exc}"])
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
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if outcome.status == "interrupted":
        err.print(f"[yellow]{outcome.message}[/]")
        raise typer.Exit(128 + outcome.signum)  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
    labels = study.spec.dataset.labels
    if outcome.best is not None and len(outcome.best):
        console.print(render_table(outcome.best, labels))
    d = outcome.engine.describe()
    console.print(
        f"{d['trainings']} trainings ({d['failed']} failed): {d['random_configs']} random and "
        f"{d['bayesian_configs']} Bayesian configurations; handed over: "
        f"{', '.join(d['handed_over']) or '-'}",
        highlight=False,
    )
    console.print(f"results in {outcome.location}", highlight=False)
    if outcome.status == "failed":
        err.print(f"[bold red]study failed:[/] {outcome.message}", highlight=False)
        raise typer.Exit(EXIT_STUDY_FAILED)


@app.command()
def validate(
    study_file: Annotated[Path, typer.Argument(help="An HPOStudy YAML file.")],
) -> None:
    """Check a study file and its dataset without training anything."""
    from hpo.dataset_check import DatasetProblem, check_dataset
    from hpo.space import space_size

    try:
        study = load_study(study_file)
        prepared = check_dataset(study)
    except SpecError as exc:
        _fail([f"{study_file}: {p}" for p in exc.problems])
    except DatasetProblem as exc:
        _fail([f"{study_file}: {exc}"])
    spec = study.spec
    console.print(
        f"{study.name}: valid; {prepared.rows} rows ({prepared.rows_dropped} dropped), "
        f"{len(prepared.dataset.features)} features, {len(prepared.dataset.labels)} labels; "
        f"search space of {space_size(spec.search_space):,} configurations",
        highlight=False,
    )


@app.command()
def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch only these namespaces (repeatable)."),
    ] = None,
    liveness: Annotated[
        str, typer.Option(help="Liveness endpoint for the kubelet's probe ('' for none).")
    ] = "http://0.0.0.0:8080/healthz",
    log_format: Annotated[str, typer.Option(help="plain or json.")] = "plain",
    poll: Annotated[float, typer.Option(help="Seconds between reconciliations (at most).")] = 2.0,
    metrics_port: Annotated[
        int, typer.Option(help="Port of the Prometheus metrics endpoint (0: none).")
    ] = 9090,
    verbose: Annotated[bool, typer.Option(help="Debug logs.")] = False,
) -> None:
    """Run the operator: every HPOStudy in the watched namespaces is run as trainer pods."""
    import kopf

    from hpo.handlers import QuietPodEvents, default_api_client, make_registry

    if log_format not in ("plain", "json"):
        _fail([f"--log-format {log_format!r}: choose plain or json"])
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    if not verbose:
        logging.getLogger("kopf.objects").addFilter(QuietPodEvents())
    registry = make_registry(default_api_client, poll_s=poll)
    if metrics_port:
        from prometheus_client import start_http_server

        from hpo.metrics import REGISTRY

        start_http_server(metrics_port, registry=REGISTRY)

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A registry of our own has none of kopf's default login handlers.
        return kopf.login_via_client(**kwargs)

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
    name: Annotated[str, typer.Argument(help="The HPOStudy's name.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    kubeconfig: Annotated[Path | None, typer.Option(envvar="KUBECONFIG")] = None,
) -> None:
    """Where a study on the cluster stands: phase, counts, best, conditions."""
    from kubernetes import client, config

    from hpo.kubeapi import Cluster

    config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None)
    study = Cluster(client.ApiClient(), user_agent="hpo-cli/0.1.0").get_study(namespace, name)
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
        console.print(
            f"best: {best['trial']} {best['configKey']} MAE {best['maeMean']:.4f} ± "
            f"{best['maeStd']:.4f}",
            highlight=False,
        )
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
    from hpo.crd import crd_yaml

    sys.stdout.write(crd_yaml())


Endpoint = Annotated[
    str | None,
    typer.Option(envvar="HPO_S3_ENDPOINT", help="S3 endpoint host:port, for s3:// locations."),
]
Tls = Annotated[bool, typer.Option("--tls/--no-tls", help="HTTPS to the S3 endpoint.")]


def _open(where: str, endpoint: str | None, tls: bool) -> tuple[Store, str]:
    from hpo.store import StoreError, open_location

    try:
        return open_location(where, endpoint=endpoint, tls=tls)
    except SpecError as exc:
        _fail(exc.problems)
    except StoreError as exc:
        _fail([str(exc)])
    raise AssertionError("unreachable")


@app.command()
def report(
    run_dir: Annotated[
        str, typer.Argument(help="A study: runs/NAME, or s3://bucket/prefix/namespace/NAME.")
    ],
    plots: Annotated[bool, typer.Option(help="Redraw the plots into the study's plots/.")] = False,
    endpoint: Endpoint = None,
    tls: Tls = True,
) -> None:
    """Print a study's final group from its ledger (and optionally redraw its plots)."""
    import tempfile

    import yaml

    from hpo.layout import LEDGER_FILE, STUDY_FILE, StudyPaths
    from hpo.ledger import read_ledger
    from hpo.report import final_group, make_plots, render_table
    from hpo.spec import parse_study
    from hpo.store import StoreError

    store, root = _study_location(run_dir, endpoint, tls)
    try:
        paths = StudyPaths.at(root)
        if not store.exists(paths.ledger):
            _fail([f"{run_dir}: no {LEDGER_FILE} there; give a study (e.g. runs/quickstart)"])
        study = parse_study(yaml.safe_load(store.get_bytes(paths.study)))
        results = read_ledger(store, paths.ledger)
    except SpecError as exc:
        _fail([f"{run_dir}/{STUDY_FILE}: {p}" for p in exc.problems])
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
    console.print(f"{ok} trainings succeeded, {len(results) - ok} failed", highlight=False)
    if plots:
        with tempfile.TemporaryDirectory() as tmp:
            for png in make_plots(results, best, Path(tmp)):
                store.put_file(paths.plot(png.name), png)
                console.print(f"wrote {store.uri}/{paths.plot(png.name)}", highlight=False)


def _study_location(study: str, endpoint: str | None, tls: bool) -> tuple[Store, str]:
    """The store holding a study and the study's key prefix in it."""
    if study.startswith("s3://"):
        return _open(study, endpoint, tls)
    path = Path(study).resolve()
    store, _ = _open(str(path.parent), endpoint, tls)
    return store, path.name


@app.command("ls")
def ls(
    where: Annotated[str, typer.Argument(help="A run folder or s3://bucket/prefix.")] = "runs",
    endpoint: Endpoint = None,
    tls: Tls = True,
) -> None:
    """List the studies in a run folder or a bucket."""
    from hpo.layout import study_of_best, study_of_ledger, study_of_scores
    from hpo.store import StoreError

    store, prefix = _open(where, endpoint, tls)
    try:
        keys = list(store.list(prefix))
    except StoreError as exc:
        _fail([str(exc)])
    studies = sorted(s for s in map(study_of_ledger, keys) if s is not None)
    finished = {s for s in map(study_of_best, keys) if s is not None}
    trainings: dict[str, int] = {}
    for k in keys:
        study = study_of_scores(k)
        if study is not None:
            trainings[study] = trainings.get(study, 0) + 1
    if not studies:
        console.print(f"no studies in {store.uri}/{prefix}".rstrip("/"), highlight=False)
        return
    for s in studies:
        state = "finished" if s in finished else "in progress"
        shown = s.removeprefix(prefix).lstrip("/") if prefix else s
        console.print(f"{shown:<40} {trainings.get(s, 0):>6} trainings  {state}", highlight=False)


@app.command()
def get(
    study: Annotated[str, typer.Argument(help="A study: runs/NAME or s3://bucket/prefix/ns/NAME.")],
    to: Annotated[Path, typer.Option("--to", help="Local folder to download into.")] = Path("."),
    what: Annotated[
        str, typer.Option(help="ledger, plots, model (with --trial and --seed), or all.")
    ] = "all",
    trial: Annotated[str | None, typer.Option(help="Trial of the model, e.g. b0002.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the model.")] = None,
    endpoint: Endpoint = None,
    tls: Tls = True,
) -> None:
    """Fetch a study's ledger, plots or a model from its store, with progress."""
    from hpo.layout import StudyPaths
    from hpo.store import StoreError

    if what == "model" and (trial is None or seed is None):
        _fail(["--what model needs --trial and --seed"])
    if what not in ("ledger", "plots", "model", "all"):
        _fail([f"--what {what!r}: choose ledger, plots, model or all"])
    store, root = _study_location(study, endpoint, tls)
    name = root.rsplit("/", 1)[-1]
    try:
        keys = list(store.list(root))
        if not keys:
            _fail([f"{study}: no such study (nothing stored under it)"])
        wanted = keys
        if what != "all":
            paths = StudyPaths.at(root)
        if what == "ledger":
            wanted = [paths.ledger, paths.study, paths.best]
        elif what == "plots":
            wanted = [k for k in keys if k.startswith(f"{paths.plots}/")]
        elif what == "model":
            assert trial is not None and seed is not None
            wanted = [k for k in keys if k.startswith(f"{paths.seed(trial, seed)}/")]
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
    console.print(f"{len(wanted)} files in {to / name}", highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
