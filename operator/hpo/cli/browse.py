"""``hpo report``, ``hpo ls``, ``hpo get`` and ``hpo dashboard``: looking at studies that ran
or are running, wherever they are stored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from hpo.cli.common import app, console, err, fail, plural
from hpo.cli.where import WHERE_HELP, Endpoint, Tls, study_location

if TYPE_CHECKING:
    from hpo.store import Store
    from hpo.study.contract import SeedResult


def _results_of(store: Store, root: str, where: str) -> list[SeedResult]:
    """The recorded results (``hpo.results.study.recorded_results``); with no ledger, or an
    unreadable one, those of the trainings' ``scores.json`` files, with a note saying so
    and what rewrites the ledger."""
    from hpo.results.study import recorded_results
    from hpo.study.layout import StudyPaths

    results, why = recorded_results(store, StudyPaths.at(root), fall_back=True)
    if why is None:
        return results
    if not results:
        fail([f"{where}: {why}, and no training's scores.json either: nothing to report"])
    err.print(
        f"[yellow]note:[/] {escape(why)}; this report is built from the "
        f"{plural(len(results), 'scores.json file')} of the trainings (failed trainings have "
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

    store, root = study_location(run_dir, endpoint, tls)
    paths = StudyPaths.at(root)
    try:
        if not store.exists(paths.study):
            fail([f"{run_dir}: no {STUDY_FILE} there: not a study (e.g. runs/quickstart)"])
        study = parse_study(load_yaml(store.get_bytes(paths.study).decode("utf-8")))
        results = _results_of(store, root, run_dir)
    except SpecError as exc:
        fail([f"{run_dir}/{STUDY_FILE}: {p}" for p in exc.problems])
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        fail([f"{run_dir}/{STUDY_FILE}: cannot be read: {exc}"])
    except StoreError as exc:
        fail([str(exc)])
    spec = study.spec
    best = final_group(
        results, spec.dataset.labels, spec.result.thresholds, spec.result.size, spec.racing
    )
    console.print(render_table(best, spec.dataset.labels))
    ok = sum(1 for r in results if r.status == "succeeded")
    console.print(
        f"{plural(ok, 'training')} succeeded, {len(results) - ok} failed", highlight=False
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

    store, prefix = study_location(where, endpoint, tls, study_folder=False)
    try:
        keys = list(store.list(prefix))
    except StoreError as exc:
        fail([str(exc)])
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
        count = plural(trainings.get(s, 0), "training")
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
        # queued: in pods that wait for the cluster's capacity (a local runner's is 0)
        return f", {st.running} running, {st.queued} queued ({st.stage}; {st.runner} runner live)"
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
        fail(["--what model needs --trial and --seed"])
    if what not in ("ledger", "plots", "model", "all"):
        fail([f"--what {what!r}: choose ledger, plots, model or all"])
    if to.exists() and not to.is_dir():
        fail([f"--to {to}: is a file; give a folder to download into"])
    store, root = study_location(study, endpoint, tls)
    name = root.rsplit("/", 1)[-1]
    try:
        keys = list(store.list(root))
        if not keys:
            fail([f"{study}: no such study (nothing stored under it)"])
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
                fail([_no_model(keys, f"{paths.trials}/", trial, seed, study)])
        wanted = [k for k in wanted if k in set(keys)]
        if not wanted:
            fail([f"{study}: nothing to fetch for --what {what}"])
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as bar:
            task = bar.add_task(f"{name}: {what}", total=len(wanted))
            for key in wanted:
                store.get_file(key, to / name / key.removeprefix(root).lstrip("/"))
                bar.advance(task)
    except StoreError as exc:
        fail([str(exc)])
    except OSError as exc:  # the local side: a file in the way, no permission, disk full
        fail([f"--to {to}: cannot write {exc.filename or to}: {exc.strerror or exc}"])
    console.print(f"{plural(len(wanted), 'file')} in {to / name}", highlight=False)


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
            fail([f"{where}: give --endpoint or set HPO_S3_ENDPOINT"])
    elif Path(where).exists() and not Path(where).is_dir():
        fail(
            [
                f"{where}: is a file, not a folder: give the run folder (e.g. "
                f"{Path(where).parent}) or a study folder, or s3://bucket/prefix"
            ]
        )
    elif not Path(where).is_dir():
        fail([f"{where}: no such folder (give a run folder, e.g. runs, or s3://bucket/prefix)"])
    if not 0 < port < 65536:
        fail([f"--port {port}: give a port between 1 and 65535"])
    if refresh <= 0:
        fail([f"--refresh {refresh}: give a positive number of seconds"])
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        fail([f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port"])
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
