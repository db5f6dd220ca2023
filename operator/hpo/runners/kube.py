"""Runs one study on a cluster: the engine decides, trainer pods execute.

``StudyDriver.run`` is the loop of one study, started by the operator for
every HPOStudy (and again after an operator restart). It rebuilds its state
from the store (ledger + every ``scores.json``) and from the study's pods,
so it can be killed at any point: no pod is created twice (names are
deterministic), no configuration is trained twice, no finished result is lost.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpo import crashpoints, metrics
from hpo.contract import SeedResult
from hpo.dataset_check import DatasetProblem, Prepared, check_dataset
from hpo.engine import Engine, HistoryConflict, Task, TrainingId
from hpo.kubeapi import Cluster, SecretProblem, transient
from hpo.layout import StudyPaths
from hpo.pods import (
    ANN_RECORDED,
    build_pod,
    group_tasks,
    pod_state,
    results_of,
    tasks_of,
)
from hpo.recorder import LedgerConflict, Recorder
from hpo.runners.local import request_for
from hpo.spec import SpecError, Study, parse_study
from hpo.store import Store, StoreError, open_store, store_ref_for

log = logging.getLogger("hpo.operator")

PHASES = {
    "random": "RandomSearch",
    "bayesian": "BayesianSearch",
    "done": "Succeeded",
    "failed": "Failed",
}
#: Spec fields that may change while a study runs; anything else is refused.
MUTABLE = {
    ("parallelism",),
    ("failurePolicy",),
    ("randomStage", "configurations"),
    ("bayesianStage", "trialsPerConfig"),
    ("result",),
    ("trainer",),
}
TOP_N = 5


class _NotYet(Exception):
    """The study cannot start yet (its store is unreachable); try again later."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age_s(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    then = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - then).total_seconds()


def refused_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Paths of spec fields that changed and may not change while the study runs."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: tuple[str, ...]) -> None:
        if path in MUTABLE or any(path[: len(m)] == m for m in MUTABLE):
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), (*path, key))
        elif a != b:
            out.append("spec." + ".".join(path))

    walk(old, new, ())
    return out


@dataclass
class Conditions:
    """Kubernetes-style conditions; a transition time changes only with the status."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        value = "True" if status else "False"
        old = self.items.get(type_)
        since = old["lastTransitionTime"] if old and old["status"] == value else _now()
        self.items[type_] = {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message[:1000],
            "lastTransitionTime": since,
        }

    def load(self, raw: list[dict[str, Any]] | None) -> None:
        for c in raw or []:
            if "type" in c:
                self.items[c["type"]] = dict(c)

    def as_list(self) -> list[dict[str, Any]]:
        return list(self.items.values())


class StudyDriver:
    """The control loop of one HPOStudy."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        name: str,
        *,
        body: Callable[[], dict[str, Any]] | None = None,
        poll_s: float = 2.0,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self._body = body or (lambda: cluster.get_study(namespace, name) or {})
        self.poll_s = poll_s
        self.wake = threading.Event()
        self.conditions = Conditions()
        self.pods: dict[str, list[Task]] = {}
        self.delayed: list[tuple[float, Task]] = []
        self.study: Study | None = None
        self.engine: Engine | None = None
        self.recorder: Recorder | None = None
        self.store: Store | None = None
        self.prepared: Prepared | None = None
        self._status: dict[str, Any] = {}
        self._phase = ""
        self._accepted_spec: dict[str, Any] = {}
        self._last_running_phase = PHASES["random"]
        self._best: Any = None
        self.credentials: tuple[str, str] | None = None
        #: Wait before trying again what the cluster refused for now (quota, RBAC).
        self.retry_s = 15.0
        self._forbidden = ""

    # -- set-up ------------------------------------------------------------

    def _fail(self, condition: str, reason: str, message: str) -> None:
        """A problem the user must fix: a condition and an event, and no pod."""
        self.conditions.set(condition, False, reason, message)
        self.conditions.set("Failed", True, reason, message)
        self.conditions.set("Progressing", False, reason, message)
        self._patch({"phase": "Failed", "message": message})
        self.cluster.event(self._body(), "Warning", reason, message)

    def _start(self) -> bool:
        body = self._body()
        status = body.get("status") or {}
        self.conditions.load(status.get("conditions"))
        if status.get("phase") in ("Succeeded", "Failed"):
            return False
        resource = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
        try:
            study = parse_study(resource)
        except SpecError as exc:
            self._fail("Valid", "InvalidSpec", "; ".join(exc.problems))
            return False
        self.conditions.set("Valid", True, "SpecValid")
        storage = study.spec.storage
        if storage.type != "s3":
            self._fail(
                "Valid",
                "InvalidSpec",
                "spec.storage.type: trainer pods share no disk with the operator; "
                "use an s3 store (MinIO) on a cluster",
            )
            return False
        if storage.credentials_secret is None:
            self._fail(
                "Valid",
                "InvalidSpec",
                "spec.storage.credentialsSecret: is required on a cluster (a Secret with the "
                "store's access and secret keys)",
            )
            return False
        secret = storage.credentials_secret
        try:
            self.credentials = self.cluster.read_credentials(
                self.namespace, secret.name, secret.access_key_key, secret.secret_key_key
            )
        except SecretProblem as exc:
            self._fail("StoreReady", "CredentialsMissing", str(exc))
            return False
        ref = store_ref_for(study)
        try:
            self.store = open_store(ref, credentials=self.credentials)
            self.prepared = check_dataset(study, ref, credentials=self.credentials)
        except StoreError as exc:
            # Perhaps an outage, perhaps a missing bucket: say so and try again later.
            raise _NotYet(str(exc)) from None
        except DatasetProblem as exc:
            self._fail("DatasetReady", "InvalidDataset", str(exc))
            return False
        self.conditions.set("StoreReady", True, "StoreReachable", ref.uri)
        self.conditions.set(
            "DatasetReady",
            True,
            "DatasetChecked",
            f"{self.prepared.rows} rows usable, {self.prepared.rows_dropped} with missing values",
        )
        self.study = study
        self.store_ref = ref
        self._accepted_spec = resource["spec"] or {}
        self.recorder = Recorder(
            self.store, StudyPaths(study.name), study, self.prepared.dataset.labels
        )
        try:
            history = self.recorder.load()
        except StoreError as exc:
            raise _NotYet(str(exc)) from None
        recorded = {r.key for r in history}
        in_flight: dict[tuple[str, int], Task] = {}
        for pod in self.cluster.list_pods(self.namespace, study.name):
            tasks = [t for t in tasks_of(pod) if t.id not in recorded]
            self.pods[pod["metadata"]["name"]] = tasks
            for t in tasks:  # a failed attempt's pod may be kept beside its retry's
                if t.id not in in_flight or in_flight[t.id].attempt < t.attempt:
                    in_flight[t.id] = t
        # Failed attempts whose pod is gone: a final one is a result (the ledger may not
        # have it yet), an earlier one is an attempt used up. Else a restart would
        # forget them and train the configuration again.
        try:
            failures = self._stored_failures()
        except StoreError as exc:
            raise _NotYet(str(exc)) from None
        retries = study.spec.failure_policy.retries
        used: dict[TrainingId, tuple[int, str]] = {}
        for tid, (attempt, result) in failures.items():
            if tid in recorded or (tid in in_flight and in_flight[tid].attempt >= attempt):
                continue  # recorded already, or its pod (or a later attempt's) says it all
            if attempt > retries:
                history.append(result)
                recorded.add(tid)
                self.recorder.note()
            else:
                used[tid] = (attempt, result.config_key)
        try:
            self.engine = Engine(study.spec, history, list(in_flight.values()))
        except HistoryConflict as exc:
            self._fail("Valid", "RecordsConflict", str(exc))
            return False
        self.engine.resume_attempts(used)
        self.recorder.save_study()
        for note in self.engine.notes:
            self.cluster.event(body, "Normal", "Note", note)
        return True

    def _failure_key(self, task_id: TrainingId, attempt: int) -> str:
        trial, seed = task_id
        return StudyPaths(self.name).failure(trial, seed, attempt)

    def _stored_failures(self) -> dict[TrainingId, tuple[int, SeedResult]]:
        """The last failed attempt of each training, from the store (see ``_report``)."""
        assert self.store is not None
        out: dict[TrainingId, tuple[int, SeedResult]] = {}
        for key in self.store.list(StudyPaths(self.name).failures):
            try:
                raw = json.loads(self.store.get_bytes(key).decode())
                attempt = int(raw["attempt"])
                result = SeedResult.from_json(json.dumps(raw["result"]))
            except (ValueError, TypeError, KeyError):
                continue  # torn or foreign: at worst one more attempt
            if result.status == "failed" and attempt > out.get(result.key, (0, result))[0]:
                out[result.key] = (attempt, result)
        return out

    # -- the loop ----------------------------------------------------------

    def run(self, stopped: Callable[[], bool], retry_s: float = 15.0) -> None:
        """Drive the study until it ends or the operator stops (then resume later)."""
        self.retry_s = retry_s
        while True:
            try:
                if not self._start():
                    return
                break
            except _NotYet as exc:
                message = f"{exc}; retrying every {retry_s:.0f}s"
                self.conditions.set("StoreReady", False, "StoreUnavailable", message)
                self.conditions.set("Progressing", False, "WaitingForStore", message)
                self._patch({"phase": "Pending", "message": message})
                self.cluster.event(self._body(), "Warning", "StoreUnavailable", message)
                deadline = time.monotonic() + retry_s
                while time.monotonic() < deadline:
                    if stopped():
                        return
                    time.sleep(0.2)
        assert self.engine is not None and self.recorder is not None
        self._phase = self.engine.phase
        self.cluster.event(self._body(), "Normal", PHASES[self._phase], "study started")
        while not stopped():
            try:
                self.step()
            except LedgerConflict as exc:
                # Another writer owns this ledger: stop here rather than overwrite it.
                self._fail("StoreReady", "LedgerConflict", str(exc))
                return
            except Exception as exc:
                # A flaky API server or store, or a foreign pod: count it, say it, go on.
                metrics.RECONCILE_ERRORS.labels(self.namespace, self.name).inc()
                log.warning(
                    "study %s/%s: step failed, retrying: %s", self.namespace, self.name, exc
                )
            if self.engine.finished and not self.pods:
                break
            self.wake.wait(self.poll_s)
            self.wake.clear()
        if stopped() or not self._finish_written(stopped):
            body = self._body()
            deleting = (body.get("metadata") or {}).get("deletionTimestamp")
            if not (deleting and self.study and not self.study.spec.storage.keep_on_delete):
                self._flush()  # else the deletion handler removes the results: write nothing
            return
        self._finish()

    def _finish_written(self, stopped: Callable[[], bool]) -> bool:
        """Write the final ledger, group and plots; a terminal phase only once they are in."""
        assert self.engine is not None and self.recorder is not None
        delay = 1.0
        while not stopped():
            try:
                self._best = self.recorder.finish(self.engine.recorded())
                return True
            except LedgerConflict as exc:
                self._fail("StoreReady", "LedgerConflict", str(exc))
                return True
            except StoreError as exc:
                self.conditions.set("StoreReady", False, "StoreUnavailable", str(exc))
                self._patch(self._progress_status())
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        return False

    def _flush(self) -> None:
        assert self.engine is not None and self.recorder is not None
        try:
            self.recorder.write(self.engine.recorded())
            self.conditions.set("StoreReady", True, "StoreReachable", self.store_ref.uri)
        except LedgerConflict:
            raise
        except StoreError as exc:  # kept in memory (and as scores.json) until the next write
            self.conditions.set("StoreReady", False, "StoreUnavailable", str(exc))

    def step(self) -> None:
        """One reconciliation: read pods, record what finished, start what fits."""
        assert self.engine is not None and self.recorder is not None and self.study is not None
        self._apply_spec_changes()
        pods = {p["metadata"]["name"]: p for p in self.cluster.list_pods(self.namespace, self.name)}
        for name in list(self.pods):
            if name not in pods:
                tasks = self._current(self.pods[name])
                self._report(self._gone(tasks, f"pod {name} was deleted before it finished"))
                crashpoints.reached("pod-reported:Deleted")
                self.pods.pop(name)
        for name, pod in pods.items():
            self._reconcile_pod(name, pod)
        self._start_pods()
        if self.recorder.due:
            self._flush()
        if self.engine.phase != self._phase:
            self._phase = self.engine.phase
            if not self.engine.finished:
                self._flush()
                self.cluster.event(
                    self._body(), "Normal", PHASES[self._phase], f"stage {self._phase} started"
                )
        self._patch(self._progress_status())

    def _current(self, tasks: list[Task]) -> list[Task]:
        """The tasks whose outcome the engine still waits for (this very attempt).

        A pod whose outcome was reported stays until it is deleted or annotated; if
        that call failed, the pod is read again next step and must not count twice.
        """
        assert self.engine is not None
        out = []
        for t in tasks:
            running = self.engine.running.get(t.id)
            if running is not None and running.attempt == t.attempt:
                out.append(t)
        return out

    def _report(self, results: list[SeedResult]) -> None:
        assert self.engine is not None and self.recorder is not None and self.store is not None
        # A failed attempt is stored before the engine (and then the pod) lets go of it:
        # the store, not memory or the ledger's next batch, is what survives a restart.
        for r in results:
            if r.status == "failed" and r.key not in self.engine.results:
                task = self.engine.running.get(r.key)
                attempt = task.attempt if task else self.engine.attempts.get(r.key, 1)
                record = {"attempt": attempt, "result": json.loads(r.to_json())}
                self.store.put_bytes(self._failure_key(r.key, attempt), json.dumps(record).encode())
        if any(r.status == "failed" for r in results):
            crashpoints.reached("failure-stored")
        for r in results:
            if r.status == "succeeded":
                metrics.SUCCEEDED.labels(self.namespace, self.name).inc()
                metrics.DURATION.observe(r.runtime_s)
            else:
                metrics.FAILED.labels(self.namespace, self.name).inc()
            retry = self.engine.report(r)
            if retry is not None:
                backoff = self.study.spec.trainer.retry_backoff_seconds * 2 ** (retry.attempt - 2)
                self.delayed.append((time.monotonic() + backoff, retry))
                self.engine.running[retry.id] = retry
                self.engine.queue.remove(retry)
                self.cluster.event(
                    self._body(),
                    "Warning",
                    "TrainingFailed",
                    f"{r.trial} seed {r.seed} failed ({r.error}); retry {retry.attempt - 1} "
                    f"in {backoff:.0f}s",
                )
            else:
                self.recorder.note()
                if r.status == "failed":
                    self.cluster.event(
                        self._body(),
                        "Warning",
                        "TrainingFailed",
                        f"{r.trial} seed {r.seed} failed for good: {r.error}",
                    )

    def _scores(self, tasks: list[Task]) -> dict[int, SeedResult | None]:
        assert self.store is not None
        out: dict[int, SeedResult | None] = {}
        paths = StudyPaths(self.name)
        for t in tasks:
            key = paths.scores(t.trial.trial, t.seed)
            # An unreachable store raises (the pod is read again next step); only a
            # missing or unreadable file means "no scores".
            if self.store.etag(key) is None:
                out[t.seed] = None
                continue
            try:
                out[t.seed] = SeedResult.from_json(self.store.get_bytes(key).decode())
            except (ValueError, TypeError):
                out[t.seed] = None
        return out

    def _gone(self, tasks: list[Task], error: str) -> list[SeedResult]:
        """Results of trainings whose pod is gone: what reached the store, else failures."""
        scores = self._scores(tasks)
        out = []
        for t in tasks:
            stored = scores.get(t.seed)
            ok = stored is not None and stored.status == "succeeded"
            out.append(stored if ok and stored is not None else t.failed(self.study.name, error))
        return out

    def _reconcile_pod(self, name: str, pod: dict[str, Any]) -> None:
        assert self.study is not None and self.engine is not None
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            return
        state = pod_state(pod)
        annotations = meta.get("annotations") or {}
        if annotations.get(ANN_RECORDED):
            # A failed pod kept for debugging. Its failure was reported before, but perhaps
            # by an operator that died before acting on it: report it again unless a later
            # attempt of the same training is already under way.
            unreported = [
                t for t in self.pods.pop(name, None) or [] if self.engine.running.get(t.id) == t
            ]
            if unreported:
                keys = {t.id for t in unreported}
                scores = self._scores(unreported)
                self._report([r for r in results_of(pod, self.study.name, scores) if r.key in keys])
            ttl = self.study.spec.trainer.failed_pod_ttl_seconds
            if _age_s(annotations[ANN_RECORDED]) >= ttl:
                self.cluster.delete_pod(self.namespace, name)
            return
        tasks = self.pods.get(name)
        if tasks is None:
            tasks = [t for t in tasks_of(pod) if t.id not in self.engine.results]
            self.pods[name] = tasks
        if state.phase in ("Succeeded", "Failed"):
            current = self._current(tasks)
            if current:
                keys = {t.id for t in current}
                results = [
                    r
                    for r in results_of(pod, self.study.name, self._scores(current))
                    if r.key in keys
                ]
                self._report(results)
            crashpoints.reached(f"pod-reported:{state.phase}")
            self.pods.pop(name, None)
            if state.phase == "Succeeded" or self.study.spec.trainer.failed_pod_ttl_seconds == 0:
                self.cluster.delete_pod(self.namespace, name)
            else:
                self.cluster.annotate_pod(self.namespace, name, {ANN_RECORDED: _now()})
        elif state.phase == "Unknown":
            self._report(self._gone(self._current(tasks), "node lost: pod status Unknown"))
            crashpoints.reached("pod-reported:Unknown")
            self.pods.pop(name, None)
            self.cluster.delete_pod(self.namespace, name)
        elif state.phase == "Pending":
            waited = _age_s(meta.get("creationTimestamp"))
            if waited >= self.study.spec.trainer.pending_timeout_seconds:
                why = state.waiting_reason or "unschedulable"
                detail = f": {state.message}" if state.message else ""
                error = f"pod stuck Pending ({why}{detail}) for {waited:.0f}s"
                # Only this pod's unrecorded trainings (after a restart some may be recorded).
                self._report(failed_attempts_from(self._current(tasks), self.study.name, error))
                crashpoints.reached("pod-reported:Pending")
                self.pods.pop(name, None)
                self.cluster.delete_pod(self.namespace, name)

    def _start_pods(self) -> None:
        assert self.study is not None and self.engine is not None and self.prepared is not None
        spec = self.study.spec
        per_pod = spec.trainer.seeds_per_pod
        now = time.monotonic()
        ready = [t for at, t in self.delayed if at <= now]
        self.delayed = [(at, t) for at, t in self.delayed if at > now]
        # A create that looked failed may have made its pod, since adopted and maybe
        # finished: such a task is no longer wanted, and must not train a second time.
        in_pods = {(t.id, t.attempt) for ts in self.pods.values() for t in ts}
        ready = [t for t in self._current(ready) if (t.id, t.attempt) not in in_pods]
        running = sum(len(ts) for ts in self.pods.values())
        free = spec.parallelism * per_pod - running - len(self.delayed) - len(ready)
        tasks = ready + self.engine.next_tasks(max(0, free))
        paths = StudyPaths(self.study.name)
        body = self._body()
        uid = body["metadata"]["uid"]
        forbidden = ""
        made = 0
        for group in group_tasks(tasks, per_pod):
            if forbidden:  # the next create would be refused the same way: wait
                self.delayed.extend((now + self.retry_s, t) for t in group)
                continue
            if len(self.pods) >= spec.parallelism:
                for t in group:
                    self.delayed.append((now, t))
                continue
            request = request_for(self.study, self.prepared, paths, group[0], self.store_ref)
            request = request.__class__(**{**request.__dict__, "seeds": [t.seed for t in group]})
            manifest = build_pod(
                study=self.study.name,
                namespace=self.namespace,
                owner_uid=uid,
                spec=spec,
                request=request,
                attempt=group[0].attempt,
            )
            name = manifest["metadata"]["name"]
            stage = group[0].trial.stage
            crashpoints.reached(f"pod-create:{stage}")
            try:
                # Idempotent: if an earlier try made the pod (its answer lost), it is adopted.
                self.cluster.create_pod(self.namespace, manifest)
            except Exception as exc:
                if transient(exc):
                    # No answer, or "try later": the pod may or may not exist. Not a failed
                    # attempt; the same name is tried again (and adopted if it exists).
                    log.warning("pod %s: create failed, trying again: %s", name, exc)
                    self.delayed.extend((now + self.poll_s, t) for t in group)
                    continue
                if getattr(exc, "status", None) in (401, 403):
                    # Quota used up, or no RBAC for pods here: the cluster's doing, not the
                    # training's. Not an attempt; say so, and try again in a while.
                    forbidden = f"pod {name} could not be created: {_api_message(exc)}"
                    log.warning("study %s/%s: %s", self.namespace, self.name, forbidden)
                    self.delayed.extend((now + self.retry_s, t) for t in group)
                    continue
                # Refused by the API (admission, invalid): a failed attempt.
                reason = getattr(exc, "reason", None) or type(exc).__name__
                body_text = getattr(exc, "body", "") or str(exc)
                try:
                    self._report(
                        failed_attempts_from(
                            group,
                            self.study.name,
                            f"pod {name} could not be created: {reason}: {str(body_text)[:300]}",
                        )
                    )
                except StoreError:  # the failure cannot be stored now: try the pod again later
                    self.delayed.extend((now + self.poll_s, t) for t in group)
                continue
            crashpoints.reached(f"pod-created:{stage}")
            self.pods[name] = group
            made += 1
            metrics.STARTED.labels(self.namespace, self.name).inc(len(group))
        self._pods_allowed(forbidden, made > 0)

    def _pods_allowed(self, forbidden: str, created: bool) -> None:
        """The ``PodsAllowed`` condition: set once the cluster refused a pod, until one is made."""
        if forbidden and forbidden != self._forbidden:
            message = f"{forbidden}; not counted as a failed attempt, trying again every "
            message += f"{self.retry_s:.0f}s"
            self.conditions.set("PodsAllowed", False, "PodCreateForbidden", message)
            self.cluster.event(self._body(), "Warning", "PodCreateForbidden", message)
        elif created and self._forbidden:
            self.conditions.set("PodsAllowed", True, "PodsCreated", "pods are created again")
            self.cluster.event(self._body(), "Normal", "PodsCreated", "pods are created again")
        if forbidden or created:
            self._forbidden = forbidden

    def _apply_spec_changes(self) -> None:
        assert self.study is not None and self.engine is not None
        body = self._body()
        new_spec = body.get("spec") or {}
        if new_spec == self._accepted_spec:
            return
        refused = refused_changes(self._accepted_spec, new_spec)
        if refused:
            self.conditions.set(
                "SpecChangeRefused",
                True,
                "ImmutableField",
                f"{', '.join(refused)} cannot change while the study runs; the study goes on "
                "with its original spec (start a new study to change them)",
            )
            return
        resource = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
        try:
            study = parse_study(resource)
        except SpecError as exc:
            self.conditions.set("SpecChangeRefused", True, "InvalidSpec", "; ".join(exc.problems))
            return
        self.conditions.set("SpecChangeRefused", False, "ChangesApplied")
        self._accepted_spec = new_spec
        self.study = study
        self.engine = self.engine.with_spec(study.spec)
        self.recorder.study = study

    # -- status --------------------------------------------------------------

    def _progress_status(self) -> dict[str, Any]:
        assert self.engine is not None and self.study is not None
        p = self.engine.progress()
        phase = PHASES[p.phase]
        failing = self.engine.failed_reason is not None
        self.conditions.set(
            "Progressing",
            not self.engine.finished,
            phase if not failing else "Failing",
            self.engine.failed_reason or f"{p.done + p.failed} of {p.total} trainings recorded",
        )
        # The engine keeps its ranking up to date: no re-ranking of every result per step.
        summaries = self.engine.top(TOP_N)
        top = [
            {
                "trial": s.trial,
                "configKey": s.config_key,
                "maeMean": round(s.mean or 0, 6),
                "maeStd": round(s.std or 0, 6),
                "seeds": s.n,
            }
            for s in summaries[:TOP_N]
        ]
        if self.engine.finished:
            # Terminal only once _finish has written the ledger, plots and conditions.
            phase = self._last_running_phase
        else:
            self._last_running_phase = phase
        return {
            "phase": phase,
            "stage": p.phase if p.phase in ("random", "bayesian") else "done",
            "trainings": f"{p.done + p.failed}/{p.total}",
            "counts": {
                "pending": p.queued + len(self.delayed),
                "running": sum(len(t) for t in self.pods.values()),
                "succeeded": p.done,
                "failed": p.failed,
            },
            "best": top[0] if top else None,
            "top": top,
            "ledger": f"{self.store_ref.uri}/{StudyPaths(self.study.name).ledger}",
            "message": self.engine.failed_reason or self._waiting_for_pods(),
        }

    def _waiting_for_pods(self) -> str:
        allowed = self.conditions.items.get("PodsAllowed")
        return allowed["message"] if allowed and allowed["status"] == "False" else ""

    def _patch(self, status: dict[str, Any]) -> None:
        body = self._body()
        status = {
            **status,
            "observedGeneration": (body.get("metadata") or {}).get("generation"),
            "conditions": self.conditions.as_list(),
        }
        if status == self._status:
            return
        self.cluster.patch_status(self.namespace, self.name, status)
        self._status = status
        metrics.set_phase(self.namespace, self.name, status.get("phase", "Pending"))
        best = status.get("best")
        if best:
            metrics.BEST_MAE.labels(self.namespace, self.name).set(best["maeMean"])

    def _finish(self) -> None:
        assert self.engine is not None and self.recorder is not None
        if self.conditions.items.get("Failed", {}).get("reason") == "LedgerConflict":
            return
        best = self._best
        self.conditions.set("StoreReady", True, "StoreReachable", self.store_ref.uri)
        failed = self.engine.phase == "failed"
        status = self._progress_status()
        status["phase"] = "Failed" if failed else "Succeeded"
        self.conditions.set("Progressing", False, status["phase"])
        if failed:
            self.conditions.set("Failed", True, "TooManyFailures", self.engine.failed_reason or "")
            self.cluster.event(
                self._body(), "Warning", "StudyFailed", self.engine.failed_reason or ""
            )
        else:
            self.conditions.set(
                "Succeeded",
                True,
                "StudyComplete",
                f"final group of {len(best) if best is not None else 0}",
            )
            top = status.get("best") or {}
            message = (
                f"best {top['trial']} {top['configKey']}: MAE {top['maeMean']:.4g} "
                f"± {top['maeStd']:.2g} over {top['seeds']} seeds"
                if top
                else "no configuration succeeded"
            )
            self.cluster.event(self._body(), "Normal", "StudySucceeded", message)
        self._patch(status)


def _api_message(exc: BaseException) -> str:
    """The API server's own words (``Status.message``), else the exception's text."""
    body = getattr(exc, "body", None)
    try:
        message = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError):
        message = None
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return f"{reason}: {message or str(body or exc)[:300]}"


def failed_attempts_from(tasks: list[Task], study: str, error: str) -> list[SeedResult]:
    """Failed results for trainings whose pod is gone or was refused."""
    return [t.failed(study, error) for t in tasks]
