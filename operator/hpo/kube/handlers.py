"""kopf handlers: thin glue from Kubernetes events to one ``KubeRunner`` per study.

A daemon per HPOStudy runs the study's loop in a thread (the engine and
scikit-optimize never block kopf's event loop). Pod events only wake the
daemon of their study, so a finished pod is followed by the next one at once
instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes import client

from hpo.kube import metrics
from hpo.kube.api import Cluster, pooled_api_client
from hpo.kube.crd import PLURAL, VERSION
from hpo.kube.pods import LABEL_STUDY
from hpo.kube.runner import REVERTED, KubeRunner
from hpo.kube.status import Conditions
from hpo.study.spec import API_GROUP, refused_changes

log = logging.getLogger("hpo.operator")
#: How long the deletion handler waits for a study's loop to stop (then kopf retries it).
DAEMON_STOP_TIMEOUT_S = 60.0
#: How long kopf waits for a stopped daemon to end before it falls back to re-checking
#: (then the finalizer waits for that re-check): a loop between steps ends in
#: milliseconds, one in a ledger write takes that write's time.
DAEMON_EXIT_WAIT_S = 5.0
#: How long a stopped daemon may take before kopf gives up waiting for it.
DAEMON_GRACE_S = 10.0
#: Handler threads, for pod events, deletions and finished studies' events (each running
#: study's loop has a thread of its own, outside this pool): kopf's default pool
#: (min(32, CPUs + 4)) is small for many studies' pod events at once.
HANDLER_THREADS = 256


def make_registry(
    api_client: Callable[[], client.ApiClient],
    *,
    poll_s: float = 2.0,
    retry_s: float = 15.0,
    status_every_s: float = 3.0,
    registry: kopf.OperatorRegistry | None = None,
) -> kopf.OperatorRegistry:
    """Register the operator's handlers on ``registry`` (a fresh one per test);
    ``status_every_s``: at most this often a study's ``status.json`` (``records.livestatus``)."""
    handlers = StudyHandlers(
        api_client, poll_s=poll_s, retry_s=retry_s, status_every_s=status_every_s
    )
    return handlers.register(registry or kopf.OperatorRegistry())


def _handler_id(name: str) -> str:
    """The id kopf knows a handler by: the name it had as a function nested in
    ``make_registry``. A deletion being retried carries it in the study's annotations
    (kopf's progress), so a study deleted across an upgrade finds its handler again."""
    return f"make_registry.<locals>.{name}"


class StudyHandlers:
    """The operator's kopf handlers (its methods) and what they share: per running study
    (by uid) its ``KubeRunner``, the event that halts its loop and the one set once the
    loop has stopped; the uids whose deletion was carried out; one ``Cluster``, made when
    first needed. One lock guards them: handlers run in kopf's threads and the loops in
    their own."""

    def __init__(
        self,
        api_client: Callable[[], client.ApiClient],
        *,
        poll_s: float = 2.0,
        retry_s: float = 15.0,
        status_every_s: float = 3.0,
    ) -> None:
        self.api_client = api_client
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.status_every_s = status_every_s
        self.runners: dict[str, KubeRunner] = {}
        # Per study uid: set to make its loop stop; set by the loop once it has stopped.
        self.halts: dict[str, threading.Event] = {}
        self.ended: dict[str, threading.Event] = {}
        # Uids whose deletion this process has carried out (a uid is never reused).
        self.deleted: set[str] = set()
        self.lock = threading.Lock()
        self._cluster: Cluster | None = None

    def register(self, registry: kopf.OperatorRegistry) -> kopf.OperatorRegistry:
        """Every handler on ``registry``, with the ids and options kopf has always had."""
        kopf.on.startup(registry=registry, id=_handler_id("_threads"))(self.threads)
        kopf.daemon(
            API_GROUP,
            VERSION,
            PLURAL,
            registry=registry,
            id=_handler_id("study_daemon"),
            initial_delay=0,
            backoff=self.retry_s,  # a loop that failed (the API server down at its start) restarts
            # kopf asks the daemon to stop and waits this long before it gives up on it; the
            # loop exits at its next step (``halt``), a few seconds at most.
            cancellation_backoff=DAEMON_GRACE_S,
            cancellation_timeout=1,
        )(self.study_daemon)
        kopf.on.event(
            "",
            "v1",
            "pods",
            labels={LABEL_STUDY: kopf.PRESENT},
            registry=registry,
            id=_handler_id("pod_event"),
        )(self.pod_event)
        kopf.on.event(
            API_GROUP,
            VERSION,
            PLURAL,
            registry=registry,
            id=_handler_id("finished_study"),
            when=lambda type, status, **_: type == "DELETED" or _finished(status),
        )(self.finished_study)
        # Two registrations of one handler. Results to remove need a finalizer on
        # the study for its whole life (a finished study's daemon no longer holds
        # one, and without a finalizer kopf never sees the deletion); results kept
        # need none, so such a study never blocks on an operator that is gone.
        kopf.on.delete(
            API_GROUP,
            VERSION,
            PLURAL,
            registry=registry,
            id=_handler_id("study_deleted_removing_results"),
            when=lambda spec, **_: _removes_results(spec),
        )(self.study_deleted)
        kopf.on.delete(
            API_GROUP,
            VERSION,
            PLURAL,
            registry=registry,
            id=_handler_id("study_deleted_keeping_results"),
            optional=True,
            when=lambda spec, **_: not _removes_results(spec),
        )(self.study_deleted)
        return registry

    def cluster(self) -> Cluster:
        with self.lock:
            if self._cluster is None:
                self._cluster = Cluster(self.api_client())
            return self._cluster

    def threads(self, settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.execution.max_workers = HANDLER_THREADS
        settings.background.instant_exit_timeout = DAEMON_EXIT_WAIT_S

    async def study_daemon(
        self,
        name: str,
        namespace: str | None,
        uid: str,
        body: kopf.Body,
        stopped: kopf.DaemonStopped,
        **_: Any,
    ) -> None:
        """The study's loop in a thread of its own; kopf's stop request halts it at once.

        A sync daemon could only poll ``stopped`` between steps; kopf would then see it
        still running, hold the finalizer for ``cancellation_timeout`` and run the
        deletion handler a second time. Here the stop wakes the loop, and the task ends
        when the loop has (within kopf's instant-exit wait, ``DAEMON_EXIT_WAIT_S``).
        """
        assert namespace is not None  # HPOStudy is a namespaced resource
        runner = KubeRunner(
            self.cluster(),
            namespace,
            name,
            body=lambda: dict(body),
            poll_s=self.poll_s,
            status_every_s=self.status_every_s,
        )
        halt = threading.Event()
        done = threading.Event()
        with self.lock:
            self.runners[uid] = runner
            self.halts[uid] = halt
            self.ended[uid] = done
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def loop_thread() -> None:
            error: BaseException | None = None
            try:
                runner.run(stopped=halt.is_set, retry_s=self.retry_s)
            except Exception as exc:  # raised in the daemon: kopf starts it again later
                error = exc
            finally:
                with self.lock:
                    if self.runners.get(uid) is runner:
                        self.runners.pop(uid)
                done.set()
                with contextlib.suppress(RuntimeError):  # the event loop is gone (exit)
                    loop.call_soon_threadsafe(_settle, exited, error)

        threading.Thread(target=loop_thread, name=f"study {namespace}/{name}", daemon=True).start()
        stop: asyncio.Future[Any] = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait([exited, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            halt.set()
            runner.wake.set()
            stop.cancel()
        await asyncio.shield(exited)

    def pod_event(self, meta: kopf.Meta, **_: Any) -> None:
        """A study's pod changed: wake its loop (its owner is the study)."""
        for owner in meta.get("ownerReferences") or []:
            with self.lock:
                runner = self.runners.get(owner.get("uid", ""))
            if runner is not None:
                runner.wake.set()

    def finished_study(
        self,
        type: str | None,
        name: str,
        namespace: str | None,
        meta: kopf.Meta,
        spec: kopf.Spec,
        status: kopf.Status,
        body: kopf.Body,
        **_: Any,
    ) -> None:
        """A finished study has no loop. Its phase still counts in ``hpo_studies`` after a
        restart (kopf lists every study at start); a change of its spec is flagged as a
        running study's refused change is (``SpecChangeRefused``, an event: it ran with
        what ``status.acceptedSpec`` says, and runs no more), and undone it clears the
        condition (else Argo CD shows it Degraded for good)."""
        assert namespace is not None  # HPOStudy is a namespaced resource
        if type == "DELETED":
            metrics.forget(namespace, name)
            return
        metrics.finished(namespace, name, dict(status))
        conditions = Conditions()
        conditions.load(status.get("conditions"))
        accepted = status.get("acceptedSpec")
        if meta.get("deletionTimestamp") or not isinstance(accepted, dict):
            return
        generation = meta.get("generation")
        refused = refused_changes(dict(accepted), dict(spec))
        if refused:
            message = (
                f"{', '.join(refused)} changed after the study ended: it ran with its "
                "original spec (status.acceptedSpec) and runs no more, so the change has no "
                "effect; to run with it, start a new study (another metadata.name), or put "
                "the spec back"
            )
            before = conditions.items.get("SpecChangeRefused") or {}
            if before.get("message") == message and status.get("observedGeneration") == generation:
                return  # flagged already (this handler sees its own status patch)
            conditions.set("SpecChangeRefused", True, "StudyEnded", message)
        elif not conditions.clear("SpecChangeRefused", "Reverted", REVERTED):
            return
        self.cluster().patch_status(
            namespace,
            name,
            {"conditions": conditions.as_list(), "observedGeneration": generation},
        )
        if refused:
            self.cluster().event(dict(body), "Warning", "SpecChangeRefused", message)

    def study_deleted(
        self, name: str, namespace: str | None, uid: str, body: kopf.Body, **_: Any
    ) -> None:
        """Pods go with their study (ownerReferences do it too); results stay unless
        ``spec.storage.keepOnDelete`` is false.

        The study's loop is stopped and waited for first, so no write of its lands after
        the removal. Done once per study: kopf calls this again if its finalizer had to
        wait for the daemon (a re-check cycle), and a second run has nothing to do.
        """
        assert namespace is not None  # HPOStudy is a namespaced resource
        with self.lock:
            if uid in self.deleted:
                return
            halt = self.halts.get(uid)
            done = self.ended.get(uid)
            runner = self.runners.get(uid)
        if halt is not None:
            halt.set()
        if runner is not None:
            runner.wake.set()
        if done is not None and not done.wait(DAEMON_STOP_TIMEOUT_S):
            raise kopf.TemporaryError("the study's loop has not stopped yet", delay=5)
        n = self.cluster().delete_study_pods(namespace, name)
        if _removes_results(body.get("spec") or {}):
            removed = delete_results(self.cluster(), dict(body))
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
        with self.lock:
            self.halts.pop(uid, None)
            self.ended.pop(uid, None)
            self.deleted.add(uid)


class QuietPodEvents(logging.Filter):
    """Drops kopf's "Handler 'pod_event' succeeded." lines (several per training) and those
    of ``finished_study`` (one per finished study at each start): no news."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.endswith((".pod_event' succeeded.", ".finished_study' succeeded."))


def _finished(status: Any) -> bool:
    return (status or {}).get("phase") in ("Succeeded", "Failed")


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _removes_results(spec: Any) -> bool:
    return ((spec or {}).get("storage") or {}).get("keepOnDelete", True) is False


def delete_results(cluster: Cluster, body: dict[str, Any]) -> int:
    """Remove a deleted study's ledger, artifacts and plots from its store."""
    from hpo.store import open_store
    from hpo.study.layout import StudyPaths
    from hpo.study.spec import SpecError, parse_study, study_resource
    from hpo.study.storage import store_ref_for

    try:
        study = parse_study(study_resource(body))
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
    return pooled_api_client(client.Configuration.get_default_copy())
