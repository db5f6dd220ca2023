"""Starting the operator (``hpo operator``): kopf's logging and settings, login, the
liveness probe and the metrics endpoint around the study handlers (``hpo.kube.handlers``)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from hpo.kube.handlers import QuietPodEvents, default_api_client, make_registry
from hpo.kube.pods import PodDefaults

#: The finalizer kopf puts on a study whose deletion it must see.
FINALIZER = "hpo-operator.dev/finalizer"
#: Warnings and up become Kubernetes events.
EVENT_LEVEL = logging.WARNING


def run_operator(
    *,
    namespaces: list[str],
    liveness: str,
    liveness_window_s: float,
    json_logs: bool,
    poll_s: float,
    metrics_port: int,
    verbose: bool,
) -> None:
    """Run kopf until stopped, on every namespace or only ``namespaces``; ``liveness``: the
    kubelet's probe URL ('' for none), red once the API server has not answered for
    ``liveness_window_s``; ``metrics_port``: Prometheus' port (0: none)."""
    try:  # the chart's trainerDefaults: a wrong one stops the operator here, by name
        PodDefaults.from_env()
    except ValueError as exc:
        raise SystemExit(f"hpo operator: {exc}") from None
    kopf.configure(
        verbose=verbose, log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL
    )
    if not verbose:
        logging.getLogger("kopf.objects").addFilter(QuietPodEvents())
    registry = make_registry(default_api_client, poll_s=poll_s)
    if metrics_port:
        from prometheus_client import start_http_server

        from hpo.kube.metrics import REGISTRY

        start_http_server(metrics_port, registry=REGISTRY)
    kopf.on.login(registry=registry)(_login)
    if liveness:
        _probe_api_server(registry, namespaces, liveness_window_s)
    kopf.on.startup(registry=registry)(_settings)
    kopf.run(
        registry=registry,
        standalone=True,  # one replica (Deployment strategy Recreate): no peering needed
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness or None,
    )


def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # A registry of our own has none of kopf's default login handlers.
    return kopf.login_via_client(**kwargs)


def _settings(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = EVENT_LEVEL


def _probe_api_server(
    registry: kopf.OperatorRegistry, namespaces: list[str], window_s: float
) -> None:
    """The ``apiServer`` probe: kopf's ``/healthz`` turns red (a 500) once the API server
    has not answered a study list for ``window_s``."""
    from hpo.kube.liveness import ApiContact, ApiUnreachable, study_list_ping

    contact = ApiContact(
        study_list_ping(default_api_client, namespaces, timeout_s=5.0), window_s=window_s
    ).start()

    @kopf.on.probe(id="apiServer", registry=registry)
    def _api_server(**_: Any) -> dict[str, Any]:
        # A failed probe handler turns kopf's /healthz into a 500.
        try:
            return contact.check()
        except ApiUnreachable as exc:
            raise kopf.PermanentError(str(exc)) from None
