"""``hpo operator``, ``hpo status`` and ``hpo crd``: the study on a Kubernetes cluster.

kopf and kubernetes load only inside these commands (``hpo.kube``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hpo.cli.common import app, console, fail, spread, version


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
    if log_format not in ("plain", "json"):
        fail([f"--log-format {log_format!r}: choose plain or json"])
    if liveness_window <= 0:
        fail([f"--liveness-window {liveness_window:g}: must be more than 0 seconds"])
    from hpo.kube.operator import run_operator

    run_operator(
        namespaces=list(namespace or []),
        liveness=liveness,
        liveness_window_s=liveness_window,
        json_logs=log_format == "json",
        poll_s=poll,
        metrics_port=metrics_port,
        verbose=verbose,
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
    study = Cluster(client.ApiClient(), user_agent=f"hpo-cli/{version()}").get_study(
        namespace, name
    )
    if study is None:
        fail([f"HPOStudy {namespace}/{name} not found"])
    st = study.get("status") or {}
    counts = st.get("counts") or {}
    console.print(
        f"{namespace}/{name}: {st.get('phase', 'Pending')} ({st.get('stage', '-')}), "
        f"trainings {st.get('trainings', '-')}, running {counts.get('running', 0)}, "
        f"queued {counts.get('queued', 0)} (waiting for capacity), "
        f"pending {counts.get('pending', 0)}, failed {counts.get('failed', 0)}",
        highlight=False,
    )
    best = st.get("best")
    if best:
        mae = spread(best["maeMean"], best.get("maeStd"), best.get("seeds"))
        console.print(f"best: {best['trial']} {best['configKey']} MAE {mae}", highlight=False)
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
