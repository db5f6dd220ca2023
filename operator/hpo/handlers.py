"""kopf handlers: thin glue from Kubernetes events to one ``KubeRunner`` per study.

A daemon per HPOStudy runs the study's loop in a thread (the engine and
scikit-optimize never block kopf's event loop). Pod events only wake the
daemon of their study, so a finished pod is followed by the next one at once
instead of at the next poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes import client

from hpo.crd import PLURAL, VERSION
from hpo.kubeapi import Cluster
from hpo.pods import LABEL_STUDY
from hpo.runners.kube import KubeRunner
from hpo.spec import API_GROUP

log = logging.getLogger("hpo.operator")
#: How long the deletion handler waits for a study's loop to stop (then kopf retries it).
DAEMON_STOP_TIMEOUT_S = 60.0
#: Handler threads. Every running study's daemon holds one for the study's whole life:
#: kopf's default pool (min(32, CPUs + 4)) would leave the seventh study on a 2-CPU node,
#: and every pod event, waiting.
HANDLER_THREADS = 256


def make_registry(
    api_client: Callable[[], client.ApiClient],
    *,
    poll_s: float = 2.0,
    retry_s: float = 15.0,
    registry: kopf.OperatorRegistry | None = None,
) -> kopf.OperatorRegistry:
    """Register the operator's handlers on ``registry`` (a fresh one per test)."""
    registry = registry or kopf.OperatorRegistry()
    runners: dict[str, KubeRunner] = {}
    # Per study uid: set to make its daemon stop; set by the daemon once it has stopped.
    halts: dict[str, threading.Event] = {}
    ended: dict[str, threading.Event] = {}
    lock = threading.Lock()
    cluster_box: dict[str, Cluster] = {}

    @kopf.on.startup(registry=registry)
    def _threads(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.execution.max_workers = HANDLER_THREADS

    def cluster() -> Cluster:
        with lock:
            if "c" not in cluster_box:
                cluster_box["c"] = Cluster(api_client())
            return cluster_box["c"]

    @kopf.daemon(
        API_GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        cancellation_timeout=30,
        initial_delay=0,
    )
    def study_daemon(
        name: str,
        namespace: str,
        uid: str,
        body: kopf.Body,
        stopped: kopf.DaemonStopped,
        **_: Any,
    ) -> None:
        runner = KubeRunner(
            cluster(),
            namespace,
            name,
            body=lambda: dict(body),
            poll_s=poll_s,
        )
        with lock:
            runners[uid] = runner
            halt = halts.setdefault(uid, threading.Event())
            done = ended[uid] = threading.Event()
        try:
            runner.run(stopped=lambda: bool(stopped) or halt.is_set(), retry_s=retry_s)
        finally:
            with lock:
                runners.pop(uid, None)
            done.set()

    @kopf.on.event("", "v1", "pods", labels={LABEL_STUDY: kopf.PRESENT}, registry=registry)
    def pod_event(meta: kopf.Meta, **_: Any) -> None:
        for owner in meta.get("ownerReferences") or []:
            with lock:
                runner = runners.get(owner.get("uid", ""))
            if runner is not None:
                runner.wake.set()

    def study_deleted(name: str, namespace: str, uid: str, body: kopf.Body) -> None:
        """Pods go with their study (ownerReferences do it too); results stay unless
        ``spec.storage.keepOnDelete`` is false.

        kopf stops the study's daemon in parallel with this handler: the daemon is
        stopped and waited for first, so no write of its lands after the removal.
        """
        with lock:
            halt = halts.setdefault(uid, threading.Event())
            done = ended.get(uid)
            runner = runners.get(uid)
        halt.set()
        if runner is not None:
            runner.wake.set()
        if done is not None and not done.wait(DAEMON_STOP_TIMEOUT_S):
            raise kopf.TemporaryError("the study's loop has not stopped yet", delay=5)
        n = cluster().delete_study_pods(namespace, name)
        if _removes_results(body.get("spec") or {}):
            removed = delete_results(cluster(), dict(body))
            log.info(
                "study %s/%s deleted; %d pods and %d stored objects removed",
                namespace,
                name,
                n,
                removed,
            )
        else:
            log.info(
                "study %s/%s deleted; %d pods removed, results kept in the store",
                namespace,
                name,
                n,
            )
        with lock:
            halts.pop(uid, None)
            ended.pop(uid, None)

    # Two registrations of one handler. Results to remove need a finalizer on
    # the study for its whole life (a finished study's daemon no longer holds
    # one, and without a finalizer kopf never sees the deletion); results kept
    # need none, so such a study never blocks on an operator that is gone.
    @kopf.on.delete(
        API_GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        when=lambda spec, **_: _removes_results(spec),
    )
    def study_deleted_removing_results(
        name: str, namespace: str, uid: str, body: kopf.Body, **_: Any
    ) -> None:
        study_deleted(name, namespace, uid, body)

    @kopf.on.delete(
        API_GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        optional=True,
        when=lambda spec, **_: not _removes_results(spec),
    )
    def study_deleted_keeping_results(
        name: str, namespace: str, uid: str, body: kopf.Body, **_: Any
    ) -> None:
        study_deleted(name, namespace, uid, body)

    return registry


class QuietPodEvents(logging.Filter):
    """Drops kopf's "Handler 'pod_event' succeeded." lines: several per training, no news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().endswith(".pod_event' succeeded.")


def _removes_results(spec: Any) -> bool:
    return ((spec or {}).get("storage") or {}).get("keepOnDelete", True) is False


def delete_results(cluster: Cluster, body: dict[str, Any]) -> int:
    """Remove a deleted study's ledger, artifacts and plots from its store."""
    from hpo.layout import StudyPaths
    from hpo.spec import SpecError, parse_study
    from hpo.store import open_store, store_ref_for

    resource = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
    try:
        study = parse_study(resource)
    except SpecError:
        return 0  # an invalid study never wrote anything
    secret = study.spec.storage.credentials_secret
    if study.spec.storage.type != "s3" or secret is None:
        return 0
    credentials = cluster.read_credentials(
        study.metadata.namespace, secret.name, secret.access_key_key, secret.secret_key_key
    )
    store = open_store(store_ref_for(study), credentials=credentials)
    return store.delete_prefix(StudyPaths(study.name).root)


def default_api_client() -> client.ApiClient:
    """In a pod: the service account; elsewhere: the kubeconfig."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()
