"""Runs one study on a cluster: the session decides and records, trainer pods execute.

``KubeRunner.run`` is the loop of one study, started by the operator for
every HPOStudy (and again after an operator restart). Its own job is pods <->
tasks: create a pod per group of tasks, read pods back into results, sort
the cluster's refusals (try later, not an attempt) from a training's failure,
and adopt the pods it finds after a restart. ``hpo.kube.startup`` sets a
study up before its loop runs; the session (``hpo.session``) owns the engine,
the ledger and the failure records; ``hpo.kube.status`` says how the study
looks from ``kubectl``. It can be killed at any point: no pod
is created twice (names are deterministic), no configuration is trained
twice, no finished result is lost.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from hpo import crashpoints
from hpo.engine import Task
from hpo.kube import startup
from hpo.kube.api import Cluster, api_message, not_allowed, refusal, transient
from hpo.kube.disruption import DisruptionLog, stuck
from hpo.kube.mounts import MountWatch
from hpo.kube.pods import ANN_RECORDED, PodDefaults, build_pod, group_tasks, results_of, tasks_of
from hpo.kube.podstate import PodCondition, blocked_words, classify, disruption_words
from hpo.kube.startup import NotYet, Stalled
from hpo.kube.status import PHASES, Conditions, StudyStatus, age_s, now_stamp
from hpo.records.recorder import LedgerConflict
from hpo.session import StudySession
from hpo.store import StoreError, StoreRef
from hpo.study.contract import NARROW_STAGE, SeedResult
from hpo.study.spec import (
    SpecError,
    Study,
    parse_study,
    refused_changes,
    refused_message,
    study_resource,
)

log = logging.getLogger("hpo.operator")


class PodsForbidden(Exception):
    """The cluster refuses pods for now (quota, RBAC): not an attempt; its words."""


REVERTED = "the spec is back to the one the study runs with"


class KubeRunner:
    """The control loop of one HPOStudy: the session's tasks as trainer pods.

    ``store_ref`` replaces the spec's store (tests: a local folder the fake
    cluster's "pods" write to); by default the store must be s3, the only
    kind trainer pods and the operator share. ``clock`` (monotonic seconds)
    times retries and the cluster's refusals; tests pass their own.
    """

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        name: str,
        *,
        body: Callable[[], dict[str, Any]] | None = None,
        poll_s: float = 2.0,
        status_every_s: float = 3.0,
        store_ref: StoreRef | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self._body = body or (lambda: cluster.get_study(namespace, name) or {})
        self.poll_s = poll_s
        self.status_every_s = status_every_s
        self.wake = threading.Event()
        self.status = StudyStatus(cluster, namespace, name, self._body)
        #: Pods of this study by name, with their trainings the engine may still wait for.
        self.pods: dict[str, list[Task]] = {}
        self.session: StudySession | None = None
        self.study: Study | None = None
        self._store_ref = store_ref
        self.clock = clock
        self._accepted_spec: dict[str, Any] = {}
        self._best: Any = None
        #: Wait before trying again what the cluster refused for now (quota, RBAC).
        self.retry_s = 15.0
        #: What each of the study's pods was at the last step (``hpo.kube.podstate``).
        self.kinds: dict[str, PodCondition] = {}
        #: Pods deleted by this loop, until they are gone: the disruption that ended
        #: them, or None for a pod replaced after a fix (neither costs an attempt).
        self.ending: dict[str, str | None] = {}
        #: Disruptions per training: capped, and noted in the ledger's error column.
        self.disruptions = DisruptionLog()
        #: FailedMount events of pods that wait to start (a missing ConfigMap/Secret volume).
        self.mounts = MountWatch()

    @property
    def conditions(self) -> Conditions:
        return self.status.conditions

    # -- set-up ------------------------------------------------------------

    def start(self) -> bool:
        """Set the study up (``hpo.kube.startup``): spec, store, dataset, history, the pods
        of an earlier run.

        False when it has ended, or cannot run (a condition and an event say why);
        raises ``NotYet`` while its store is unreachable, ``Stalled`` while it waits for
        its user to fix something."""
        body = self._body()
        status = body.get("status") or {}
        self.conditions.load(status.get("conditions"))
        if startup.ended(status, self.status.failed_for):
            return False
        resource = startup.resource_as_run(body, status)
        study = startup.parse(resource, self.status)
        if study is None:
            return False
        again = f"checked again every {self.retry_s:.0f}s"
        ref: StoreRef
        credentials: tuple[str, str] | None = None
        if self._store_ref is not None:
            ref = self._store_ref
        else:
            ref, credentials = startup.store_for(self.cluster, self.namespace, study, again)
        session = startup.open_session(
            study, ref, credentials, self.status, self.status_every_s, again
        )
        self.study = study
        self._accept(resource["spec"] or {})
        self.pods = startup.resume(
            self.cluster, self.namespace, session, study, again, self.disruptions
        )
        self.session = session
        self.status.resolved()
        startup.announce(self.cluster, session, body, self.conditions)
        return True

    def _wait_to_start(self, stopped: Callable[[], bool], retry_s: float) -> bool:
        """Sleep ``retry_s`` or until the spec has a new generation; False once stopped."""
        generation = (self._body().get("metadata") or {}).get("generation")
        deadline = time.monotonic() + retry_s
        while time.monotonic() < deadline:
            if stopped():
                return False
            if (self._body().get("metadata") or {}).get("generation") != generation:
                return True
            self.wake.wait(0.2)
            self.wake.clear()
        return not stopped()

    # -- the loop ----------------------------------------------------------

    def run(self, stopped: Callable[[], bool], retry_s: float = 15.0) -> None:
        """Drive the study until it ends or the operator stops (then resume later)."""
        self.retry_s = retry_s
        self.status.starting()
        while True:
            try:
                if not self.start():
                    return
                break
            except NotYet as exc:
                self.status.waiting_for_store(f"{exc}; retrying every {retry_s:.0f}s")
            except Stalled as exc:
                self.status.stalled(exc.condition, exc.reason, exc.message)
            if not self._wait_to_start(stopped, retry_s):
                return
        session = self.session
        assert session is not None
        self.status.event("Normal", PHASES[session.engine.phase], "study started")
        while not stopped():
            try:
                self.step()
            except LedgerConflict as exc:
                # Another writer owns this ledger: stop here rather than overwrite it.
                self.status.fail("StoreReady", "LedgerConflict", str(exc))
                return
            except Exception as exc:
                # A flaky API server or store, or a foreign pod: count it, say it, go on.
                self.status.step_failed()
                log.warning(
                    "study %s/%s: step failed, retrying: %s", self.namespace, self.name, exc
                )
            if session.engine.finished and not self.pods:
                break
            self.wake.wait(self._wait_s())
            self.wake.clear()
        if stopped() or not self._finish_written(stopped):
            body = self._body()
            deleting = (body.get("metadata") or {}).get("deletionTimestamp")
            if not (deleting and self.study and not self.study.spec.storage.keep_on_delete):
                self._flush(force=True)  # else the deletion handler removes the results
                if self.session is not None:  # the live status: stopped, not stale
                    self.session.interrupted()
            return
        self._finish()

    def _wait_s(self) -> float:
        """Until the next step: the poll interval, or less when a retry is due sooner (one
        due already waits for a free slot, which a pod event announces)."""
        assert self.session is not None
        due = self.session.wait_s(self.clock())
        return self.poll_s if due is None or due <= 0 else max(0.05, min(self.poll_s, due))

    def _finish_written(self, stopped: Callable[[], bool]) -> bool:
        """Write the final ledger, group and plots; a terminal phase only once they are in."""
        assert self.session is not None
        delay = 1.0
        while not stopped():
            try:
                self._best = self.session.finish()
                return True
            except LedgerConflict as exc:
                self.status.fail("StoreReady", "LedgerConflict", str(exc))
                return True
            except StoreError as exc:
                self.status.store_unavailable(str(exc))
                self.status.patch(self._progress_status())
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        return False

    def _flush(self, force: bool = False) -> None:
        assert self.session is not None
        try:
            if self.session.flush(force):
                self.status.store_ready(self.session.store_ref.uri)
        except LedgerConflict:
            raise
        except StoreError as exc:  # kept in memory (and as scores.json) until the next write
            self.status.store_unavailable(str(exc))

    def step(self) -> None:
        """One reconciliation: read pods, record what finished, start what fits."""
        assert self.session is not None
        session = self.session
        self._apply_spec_changes()
        pods = {p["metadata"]["name"]: p for p in self.cluster.list_pods(self.namespace, self.name)}
        for name in list(self.pods):
            if name not in pods:
                self._pod_gone(name)
        waiting = any(
            c.kind == "starting" or c.reason == "FailedMount" for c in self.kinds.values()
        )
        self.mounts.refresh(self.cluster, self.namespace, waiting, self.clock())
        for name, pod in pods.items():
            self._reconcile_pod(name, pod)
        for name in list(self.kinds):
            if name not in self.pods:
                self.kinds.pop(name)
        blocked = self._waiting_conditions()
        if not blocked:  # one pod that cannot start says it for all: start no more
            self._start_pods()
        self._flush()
        if session.stage_changed() and not session.engine.finished:
            self._flush(force=True)
            phase = session.engine.phase
            stage = "narrow" if phase == NARROW_STAGE else phase
            self.status.event("Normal", PHASES[phase], f"{stage} stage started")
        self.status.patch(self._progress_status())

    def _pod_gone(self, name: str) -> None:
        """A pod that is no more: what it stored counts; the rest runs again without an
        attempt (disrupted: deleted by the infrastructure or someone else; or replaced)."""
        assert self.session is not None and self.study is not None
        tasks = self._current(self.pods[name])
        why = self.ending.pop(name, "Deleted")
        if tasks:
            scores = self.session.stored_scores(tasks)
            done = [r for t in tasks if (r := scores.get(t.seed)) and r.status == "succeeded"]
            self._record(done)
            rest = [t for t in tasks if self.session.engine.is_running(t)]
            if why is None:
                self.session.requeue(rest[::-1])  # each goes to the front: keep their order
            elif rest:
                self._disrupted(name, rest, why)
        crashpoints.reached("pod-reported:Deleted")
        self.pods.pop(name)

    def _disrupted(self, name: str, tasks: list[Task], reason: str) -> None:
        """Run disrupted trainings again, not as an attempt, up to ``trainer.maxDisruptions``
        (unset: the chart's trainerDefaults) times each; the next one is a failed attempt."""
        assert self.session is not None and self.study is not None
        defaults, trainer = PodDefaults.from_env(), self.study.spec.trainer
        cap, setting = defaults.disruption_cap(trainer), defaults.setting(trainer, "maxDisruptions")
        words = disruption_words(reason)
        again, over = self.disruptions.count(tasks, reason, cap)
        said = ""
        if again:
            self.session.requeue(again[::-1])  # each goes to the front: the same pod again
            seeds = ",".join(str(t.seed) for t in again)
            said = (
                f"pod {name} {words}: {again[0].trial.id} seed {seeds} requeued, not counted "
                f"as an attempt (disruption {self.disruptions.times(again)}, at most "
                f"{setting} {cap})"
            )
        self.status.disrupted(reason, len(tasks), said)
        if over:
            n = self.disruptions.times(over)
            error = f"{words}, disrupted {n} times, more than {setting} ({cap})"
            self._record(failed_attempts_from(over, self.study.name, error))

    def _current(self, tasks: list[Task]) -> list[Task]:
        """The tasks whose outcome the engine still waits for (this very attempt).

        A pod whose outcome was recorded stays until it is deleted or annotated; if
        that call failed, the pod is read again next step and must not count twice.
        """
        assert self.session is not None
        return [t for t in tasks if self.session.engine.is_running(t)]

    def _record(self, results: list[SeedResult]) -> None:
        assert self.session is not None
        results = [self.disruptions.noted(r) for r in results]
        self.status.recorded(self.session.record(results, self.clock()))

    def _gone(self, tasks: list[Task], error: str) -> list[SeedResult]:
        """Results of trainings whose pod is gone: what reached the store, else failures."""
        assert self.session is not None and self.study is not None
        scores = self.session.stored_scores(tasks)
        out = []
        for t in tasks:
            stored = scores.get(t.seed)
            ok = stored is not None and stored.status == "succeeded"
            out.append(stored if ok and stored is not None else t.failed(self.study.name, error))
        return out

    def _reconcile_pod(self, name: str, pod: dict[str, Any]) -> None:
        """Act on what one of the study's pods says: record, delete, adopt or wait."""
        assert self.study is not None and self.session is not None
        session = self.session
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            # On its way out: what it leaves is read once it is gone; why, if it says.
            state = classify(pod)
            if state.kind == "disrupted" and name in self.pods:
                self.ending.setdefault(name, state.reason)
            if name in self.pods and stuck(pod):  # its node lost: it would stay forever
                self.cluster.delete_pod(self.namespace, name, force=True)
            return
        annotations = meta.get("annotations") or {}
        if annotations.get(ANN_RECORDED):
            # A failed pod kept for debugging. Its failure was recorded before, but perhaps
            # by an operator that died before acting on it: record it again unless a later
            # attempt of the same training is already under way.
            self._record_pod(pod, self.pods.pop(name, []))
            ttl = self.study.spec.trainer.failed_pod_ttl_seconds
            if age_s(annotations[ANN_RECORDED]) >= ttl:
                self.cluster.delete_pod(self.namespace, name)
            return
        tasks = self.pods.get(name)
        if tasks is None:
            # A pod this loop did not know of: made by a create whose answer was lost.
            tasks = [t for t in tasks_of(pod) if not session.engine.is_recorded(t.id)]
            session.adopt(tasks)
            self.pods[name] = tasks
            self.disruptions.restore(tasks, annotations)
        state = self.mounts.state(pod, classify(pod))
        self.kinds[name] = state
        if state.kind == "finished":
            phase = (pod.get("status") or {}).get("phase")
            self._record_pod(pod, tasks)
            crashpoints.reached(f"pod-reported:{phase}")
            self.pods.pop(name, None)
            if phase == "Succeeded" or self.study.spec.trainer.failed_pod_ttl_seconds == 0:
                self.cluster.delete_pod(self.namespace, name)
            else:
                self.cluster.annotate_pod(self.namespace, name, {ANN_RECORDED: now_stamp()})
        elif state.kind == "disrupted":
            # Not the training's doing: delete the pod (preempted and evicted pods are deleted
            # by whoever disrupted them; a lost node's or a kubelet's are not), and once it is
            # gone its trainings run again under the same attempt (``_pod_gone``).
            self.ending.setdefault(name, state.reason)
            crashpoints.reached("pod-reported:Disrupted")
            self.cluster.delete_pod(self.namespace, name)
        elif state.kind == "starting":
            self._check_pending(name, state, tasks, pod)

    def _record_pod(self, pod: dict[str, Any], tasks: list[Task]) -> None:
        """Record what a finished pod says of those of its ``tasks`` still waited for."""
        assert self.study is not None and self.session is not None
        current = self._current(tasks)
        if current:
            keys = {t.id for t in current}
            scores = self.session.stored_scores(current)
            self._record([r for r in results_of(pod, self.study.name, scores) if r.key in keys])

    def _check_pending(
        self, name: str, state: PodCondition, tasks: list[Task], pod: dict[str, Any]
    ) -> None:
        """A pod bound to a node whose container has not started within
        ``spec.trainer.pendingTimeoutSeconds`` (a volume that never mounts, a node that never
        starts it): a failed attempt. Waiting for capacity or for a fix never is."""
        assert self.study is not None
        waited = age_s(state.since)
        if waited >= self.study.spec.trainer.pending_timeout_seconds:
            if self.mounts.recheck(self.cluster, self.namespace, pod, self.clock()):
                return  # a missing ConfigMap/Secret volume: blocked from the next step
            why = state.reason or "scheduled"
            error = f"pod stuck Pending ({why}, container not started) for {waited:.0f}s"
            # Only this pod's unrecorded trainings (after a restart some may be recorded).
            self._record(failed_attempts_from(self._current(tasks), self.study.name, error))
            crashpoints.reached("pod-reported:Pending")
            self.pods.pop(name, None)
            self.cluster.delete_pod(self.namespace, name)

    def _waiting_conditions(self) -> bool:
        """The conditions of pods that wait: ``PodsCanStart`` (and ``Stalled``) while one
        cannot start until fixed, ``QueuedTooLong`` past ``trainer.maxQueueSeconds`` (unset:
        the chart's trainerDefaults). True while pods cannot start (then no more are created)."""
        assert self.study is not None
        blocked = [(n, c) for n, c in self.kinds.items() if c.kind == "blocked"]
        if blocked:
            name, first = blocked[0]
            others = f" (and {len(blocked) - 1} more pods)" if len(blocked) > 1 else ""
            self.status.pods_blocked(
                first.reason,
                f"pod {name}{others}: {blocked_words(first)}; no new pods are started until "
                "it is fixed (e.g. spec.trainer.image), none is counted as a failed attempt",
            )
        else:
            self.status.pods_unblocked()
        defaults, trainer = PodDefaults.from_env(), self.study.spec.trainer
        limit, setting = defaults.queue_limit(trainer), defaults.setting(trainer, "maxQueueSeconds")
        queued = [c for c in self.kinds.values() if c.kind == "queued"]
        long = [c for c in queued if limit is not None and age_s(c.since) >= limit]
        self.status.queued_too_long(len(long), limit, long[0] if long else None, setting)
        return bool(blocked)

    def _replace_blocked(self) -> None:
        """After a spec change, pods that could not start are replaced by pods of the new
        spec (the same attempt: they never ran)."""
        for name, state in list(self.kinds.items()):
            if state.kind == "blocked" and name in self.pods and name not in self.ending:
                self.ending[name] = None
                self.cluster.delete_pod(self.namespace, name)

    def _start_pods(self) -> None:
        """A pod for every group of due tasks that fits under ``spec.parallelism``."""
        assert self.study is not None and self.session is not None
        session = self.session
        spec = self.study.spec
        per_pod = spec.trainer.seeds_per_pod
        now = self.clock()
        running = sum(len(ts) for ts in self.pods.values())
        # A waiting training keeps its slot: a retry in its backoff, a pod the cluster
        # refused for now (else every step would try, and be refused, once more).
        free = spec.parallelism * per_pod - running - session.engine.not_due(now)
        tasks = session.take(max(0, free), now)
        uid = self._body()["metadata"]["uid"]
        forbidden = ""
        made = 0
        for group in group_tasks(tasks, per_pod):
            if forbidden:  # the next create would be refused the same way: wait
                session.postpone(group, now + self.retry_s)
                continue
            if len(self.pods) >= spec.parallelism:
                session.postpone(group, now)
                continue
            manifest = build_pod(
                study=self.study.name,
                namespace=self.namespace,
                owner_uid=uid,
                spec=spec,
                request=session.request(group),
                attempt=group[0].attempt,
            )
            self.disruptions.annotate(manifest, group)
            try:
                made += self._create_pod(manifest, group, now)
            except PodsForbidden as exc:
                forbidden = str(exc)
        self.status.pods_allowed(forbidden, made > 0, self.retry_s)

    def _create_pod(self, manifest: dict[str, Any], group: list[Task], now: float) -> bool:
        """Create one group's pod; False if it was not made (tried again later, or recorded
        as a failed attempt); ``PodsForbidden`` if the cluster refuses pods for now."""
        assert self.study is not None and self.session is not None
        session = self.session
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
                session.postpone(group, now + self.poll_s)
                return False
            if not_allowed(exc):
                # Quota used up, or no RBAC for pods here: the cluster's doing, not the
                # training's. Not an attempt; say so, and try again in a while.
                message = f"pod {name} could not be created: {api_message(exc)}"
                log.warning("study %s/%s: %s", self.namespace, self.name, message)
                session.postpone(group, now + self.retry_s)
                raise PodsForbidden(message) from None
            # Refused by the API (admission, invalid): a failed attempt.
            error = f"pod {name} could not be created: {refusal(exc)}"
            try:
                self._record(failed_attempts_from(group, self.study.name, error))
            except StoreError:  # the failure cannot be stored now: try the pod again later
                session.postpone(group, now + self.poll_s)
            return False
        crashpoints.reached(f"pod-created:{stage}")
        self.pods[name] = group
        self.status.started(len(group))
        return True

    def _apply_spec_changes(self) -> None:
        assert self.study is not None and self.session is not None
        body = self._body()
        new_spec = body.get("spec") or {}
        if new_spec == self._accepted_spec:
            # A refused change undone: what the spec declares is what runs again.
            self.conditions.clear("SpecChangeRefused", "Reverted", REVERTED)
            return
        # The raw spec first: the user's own field names, and no parse of a refused spec.
        refused = refused_changes(self._accepted_spec, new_spec)
        study = self.study
        if not refused:
            resource = study_resource(body)
            try:
                study = parse_study(resource)
            except SpecError as exc:
                self.conditions.set(
                    "SpecChangeRefused", True, "InvalidSpec", "; ".join(exc.problems)
                )
                return
            refused = self.session.change_spec(study)
        if refused:
            self.conditions.set(
                "SpecChangeRefused",
                True,
                "ImmutableField",
                f"{refused_message(refused)}; the study goes on with its original spec "
                "(start a new study to change them)",
            )
            return
        self.conditions.set("SpecChangeRefused", False, "ChangesApplied")
        trainer_changed = new_spec.get("trainer") != self._accepted_spec.get("trainer")
        self._accept(new_spec)
        self.study = study
        if trainer_changed:
            self._replace_blocked()

    def _accept(self, spec: dict[str, Any]) -> None:
        self._accepted_spec = copy.deepcopy(spec)  # not a live view
        self.status.accepted_spec = self._accepted_spec

    # -- status --------------------------------------------------------------

    def _queued(self) -> int:
        """Trainings in pods that wait for capacity (their pods count towards parallelism)."""
        return sum(
            len(tasks)
            for name, tasks in self.pods.items()
            if (state := self.kinds.get(name)) is not None and state.kind == "queued"
        )

    def _progress_status(self) -> dict[str, Any]:
        assert self.session is not None
        session = self.session
        queued = self._queued()
        running = sum(len(t) for t in self.pods.values()) - queued
        session.status.queued = queued  # status.json's count
        return self.status.progress(session.engine, running, self._ledger_uri(), queued)

    def _ledger_uri(self) -> str:
        assert self.session is not None
        return f"{self.session.store_ref.uri}/{self.session.paths.ledger}"

    def _finish(self) -> None:
        assert self.session is not None
        if self.status.failed_for == "LedgerConflict":
            return
        running = sum(len(t) for t in self.pods.values())
        self.status.finished(
            self.session.engine, self._best, self.session.store_ref.uri, running, self._ledger_uri()
        )


def failed_attempts_from(tasks: list[Task], study: str, error: str) -> list[SeedResult]:
    """Failed results for trainings whose pod is gone or was refused."""
    return [t.failed(study, error) for t in tasks]
