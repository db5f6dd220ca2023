"""What one study tells the cluster: its status, conditions, events and metrics.

Kept apart from the Kubernetes runner (pods <-> tasks) so that how a study
looks from ``kubectl`` can change without touching how it runs. The status
stays bounded: counts, the best and the top few; the history is in the ledger.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpo.engine import Engine
from hpo.kube import metrics
from hpo.kube.api import Cluster
from hpo.session import Recorded
from hpo.study.contract import NARROW_STAGE, RANDOM_STAGE

#: The engine's phases as the study's ``status.phase``. The narrow stage's was
#: ``BayesianSearch`` before (its default is a local search, not Bayesian optimisation);
#: every reader of a status accepts that name too (``metrics.RENAMED``, the Argo CD health
#: check), so a study that ran across the upgrade reads the same. ``status.stage`` keeps the
#: stored name (``NARROW_STAGE``).
PHASES = {
    RANDOM_STAGE: "RandomSearch",
    NARROW_STAGE: "NarrowSearch",
    "done": "Succeeded",
    "failed": "Failed",
}
#: Configurations listed in ``status.top``.
TOP_N = 5


def now_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def age_s(timestamp: str | None) -> float:
    """Seconds since a Kubernetes timestamp (0 if none)."""
    if not timestamp:
        return 0.0
    try:  # seconds as the API writes them; fractions and offsets as some clients do
        then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - then).total_seconds()


@dataclass
class Conditions:
    """Kubernetes-style conditions; a transition time changes only with the status."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        value = "True" if status else "False"
        old = self.items.get(type_)
        since = old["lastTransitionTime"] if old and old["status"] == value else now_stamp()
        self.items[type_] = {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message[:1000],
            "lastTransitionTime": since,
        }

    def clear(self, type_: str, reason: str, message: str = "") -> bool:
        """Set ``type_`` False if it is True (its cause is gone); True if it was."""
        if (self.items.get(type_) or {}).get("status") != "True":
            return False
        self.set(type_, False, reason, message)
        return True

    def drop(self, type_: str) -> None:
        self.items.pop(type_, None)

    def load(self, raw: list[dict[str, Any]] | None) -> None:
        for c in raw or []:
            if "type" in c:
                self.items[c["type"]] = dict(c)

    def as_list(self) -> list[dict[str, Any]]:
        return list(self.items.values())


class StudyStatus:
    """The status subresource, conditions, events and metrics of one HPOStudy."""

    def __init__(
        self, cluster: Cluster, namespace: str, name: str, body: Callable[[], dict[str, Any]]
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self._body = body
        self.conditions = Conditions()
        self._status: dict[str, Any] = {}
        self._last_running_phase = PHASES["random"]
        self._forbidden = ""
        self._blocked = ""
        self._queued_long = 0
        #: The message of the last warning while the study waits to start.
        self._stalled = ""
        #: The spec the study runs with (``status.acceptedSpec``): what a restarted loop
        #: runs, and what a refused change is undone to, also once the study has ended.
        self.accepted_spec: dict[str, Any] = {}

    def starting(self) -> None:
        """A study the operator has not written a phase for yet: ``Pending`` at once, before
        the Secret, store and dataset are read (seconds on a large dataset)."""
        if ((self._body().get("status") or {}).get("phase")) is None:
            message = "checking the spec, the store and the dataset"
            self.conditions.set("Progressing", False, "Starting", message)
            self.patch({"phase": "Pending", "message": message})

    def event(self, type_: str, reason: str, message: str) -> None:
        self.cluster.event(self._body(), type_, reason, message)

    def fail(self, condition: str, reason: str, message: str) -> None:
        """A problem the user must fix: a condition and an event, and no pod."""
        self.conditions.set(condition, False, reason, message)
        self.conditions.set("Failed", True, reason, message)
        self.conditions.set("Progressing", False, reason, message)
        self.patch({"phase": "Failed", "message": message})
        self.event("Warning", reason, message)

    def stalled(self, condition: str, reason: str, message: str) -> None:
        """A problem the user can fix in place: ``Pending`` with the condition and ``Stalled``
        (kstatus' name for "waits for someone"), the message saying what to do; one event
        per new problem, not one per re-check."""
        self.conditions.set(condition, False, reason, message)
        self.conditions.set("Stalled", True, reason, message)
        self.conditions.set("Progressing", False, reason, message)
        self.conditions.drop("Failed")  # from an operator that gave up on it
        self.patch({"phase": "Pending", "message": message})
        if message != self._stalled:
            self.event("Warning", reason, message)
        self._stalled = message

    def resolved(self) -> None:
        """The study could start: what stalled it is fixed."""
        self.conditions.clear("Stalled", "Resolved", "the study started")
        self.conditions.drop("Failed")
        self._stalled = ""

    @property
    def failed_for(self) -> str:
        """The reason of the ``Failed`` condition, if set."""
        return str(self.conditions.items.get("Failed", {}).get("reason", ""))

    def waiting_for_store(self, message: str) -> None:
        self.conditions.set("StoreReady", False, "StoreUnavailable", message)
        self.conditions.set("Progressing", False, "WaitingForStore", message)
        self.patch({"phase": "Pending", "message": message})
        if message != self._stalled:  # one event per new problem, not one per retry
            self.event("Warning", "StoreUnavailable", message)
        self._stalled = message

    def store_ready(self, uri: str) -> None:
        self.conditions.set("StoreReady", True, "StoreReachable", uri)

    def store_unavailable(self, message: str) -> None:
        self.conditions.set("StoreReady", False, "StoreUnavailable", message)

    # -- trainings ---------------------------------------------------------------

    def started(self, n: int) -> None:
        metrics.STARTED.labels(self.namespace, self.name).inc(n)

    def step_failed(self) -> None:
        metrics.RECONCILE_ERRORS.labels(self.namespace, self.name).inc()

    def recorded(self, outcomes: list[Recorded]) -> None:
        """Metrics per attempt; an event per failure (retried or final)."""
        for o in outcomes:
            r = o.result
            if r.status == "succeeded":
                metrics.SUCCEEDED.labels(self.namespace, self.name).inc()
                metrics.DURATION.observe(r.runtime_s)
            else:
                metrics.FAILED.labels(self.namespace, self.name).inc()
            if o.retry is not None:
                self.event(
                    "Warning",
                    "TrainingFailed",
                    f"{r.trial} seed {r.seed} failed ({r.error}); retry {o.retry.attempt - 1} "
                    f"in {o.retry_in_s:.0f}s",
                )
            elif r.status == "failed":
                message = f"{r.trial} seed {r.seed} failed for good: {r.error}"
                self.event("Warning", "TrainingFailed", message)

    def pods_allowed(self, forbidden: str, created: bool, retry_s: float) -> None:
        """The ``PodsAllowed`` condition: set once the cluster refused a pod, until one is made."""
        if forbidden and forbidden != self._forbidden:
            message = f"{forbidden}; not counted as a failed attempt, trying again every "
            message += f"{retry_s:.0f}s"
            self.conditions.set("PodsAllowed", False, "PodCreateForbidden", message)
            self.event("Warning", "PodCreateForbidden", message)
        elif created and self._forbidden:
            self.conditions.set("PodsAllowed", True, "PodsCreated", "pods are created again")
            self.event("Normal", "PodsCreated", "pods are created again")
        if forbidden or created:
            self._forbidden = forbidden

    def disrupted(self, reason: str, n: int, message: str = "") -> None:
        """``n`` trainings' pod was disrupted (``reason``): counted, and said when they are
        requeued (not an attempt)."""
        metrics.DISRUPTED.labels(self.namespace, self.name, reason).inc(n)
        if message:
            self.event("Warning", "TrainingDisrupted", message)

    def pods_blocked(self, reason: str, message: str) -> None:
        """Pods cannot start until the user fixes something: ``PodsCanStart`` False and
        ``Stalled`` (fixable, so not Failed), one event per new problem."""
        self.conditions.set("PodsCanStart", False, reason, message)
        self.conditions.set("Stalled", True, reason, message)
        if message != self._blocked:
            self.event("Warning", reason, message)
        self._blocked = message

    def pods_unblocked(self) -> None:
        """No pod is blocked now (fixed, or replaced after a spec change)."""
        if (self.conditions.items.get("PodsCanStart") or {}).get("status") == "False":
            self.conditions.set("PodsCanStart", True, "PodsStart", "trainer pods start again")
            self.conditions.clear("Stalled", "Resolved", "trainer pods start again")
            self.event("Normal", "PodsStart", "trainer pods start again")
        self._blocked = ""

    def queued_too_long(
        self, n: int, limit: int | None, first: Any, setting: str = "trainer.maxQueueSeconds"
    ) -> None:
        """``QueuedTooLong`` while ``n`` pods waited for capacity past the limit (from
        ``setting``): said, never a failure."""
        if n and limit is not None:
            why = f" ({first.reason}: {first.message})" if first and first.message else ""
            message = (
                f"{n} trainer pods waited for capacity longer than {setting} "
                f"({limit}s){why}; they keep waiting, none is counted as failed"
            )
            self.conditions.set("QueuedTooLong", True, "QueuedTooLong", message)
            if not self._queued_long:
                self.event("Warning", "QueuedTooLong", message)
        elif self._queued_long:
            self.conditions.clear("QueuedTooLong", "Scheduled", "no pod waits that long now")
        self._queued_long = n

    # -- the status subresource -------------------------------------------------

    def progress(
        self, engine: Engine, running: int, ledger: str, queued: int = 0
    ) -> dict[str, Any]:
        """The status of a study in progress (``running``: trainings in pods that run or
        start now; ``queued``: in pods that wait for capacity)."""
        p = engine.progress()
        phase = PHASES[p.phase]
        metrics.QUEUED.labels(self.namespace, self.name).set(queued)
        failing = engine.failed_reason is not None
        blocked = self.conditions.items.get("PodsCanStart", {})
        if blocked.get("status") == "False" and not engine.finished:
            self.conditions.set("Progressing", False, blocked["reason"], blocked["message"])
        else:
            self.conditions.set(
                "Progressing",
                not engine.finished,
                phase if not failing else "Failing",
                engine.failed_reason or f"{p.done + p.failed} of {p.total} trainings recorded",
            )
        # The engine keeps its ranking up to date: no re-ranking of every result per step.
        top = [
            {
                "trial": s.trial,
                "configKey": s.config_key,
                # The selection score the ranking read, and the test MAE (reported only).
                "valMaeMean": round(s.score or 0, 6),
                "maeMean": round(s.mean or 0, 6),
                "maeStd": round(s.std or 0, 6),
                "seeds": s.n,
            }
            for s in engine.final_group(TOP_N)
        ]
        if engine.finished:
            # Terminal only once ``finished`` has written the ledger, plots and conditions.
            phase = self._last_running_phase
        else:
            self._last_running_phase = phase
        return {
            "phase": phase,
            "stage": p.phase if p.phase in (RANDOM_STAGE, NARROW_STAGE) else "done",
            "trainings": f"{p.done + p.failed}/{p.total}",
            # What the study may cost and what it was charged (spec.budget).
            "budget": {"trainings": p.budget, "charged": p.charged},
            "counts": {
                # Not handed out yet, and waiting (a retry's backoff, a pod refused for now).
                "pending": max(0, p.queued),
                # In pods waiting for capacity (unschedulable, held by a queue): no attempt.
                "queued": queued,
                "running": running,
                "succeeded": p.done,
                "failed": p.failed,
            },
            "best": top[0] if top else None,
            "top": top,
            "ledger": ledger,
            "message": engine.failed_reason or self._waiting_for_pods(),
        }

    def _waiting_for_pods(self) -> str:
        for type_ in ("PodsCanStart", "PodsAllowed"):
            c = self.conditions.items.get(type_)
            if c and c["status"] == "False":
                return str(c["message"])
        return ""

    def patch(self, status: dict[str, Any]) -> None:
        """Patch the status subresource when it changed (and the phase and best metrics)."""
        body = self._body()
        status = {
            **status,
            "observedGeneration": (body.get("metadata") or {}).get("generation"),
            "conditions": self.conditions.as_list(),
        }
        if self.accepted_spec:
            status["acceptedSpec"] = self.accepted_spec
        if status == self._status:
            return
        self.cluster.patch_status(self.namespace, self.name, status)
        self._status = status
        metrics.set_phase(self.namespace, self.name, status.get("phase", "Pending"))
        best = status.get("best")
        if best:
            metrics.BEST_MAE.labels(self.namespace, self.name).set(best["maeMean"])

    def finished(
        self, engine: Engine, best: Any, store_uri: str, running: int, ledger: str
    ) -> None:
        """The terminal status, once the ledger, group and plots are written."""
        self.store_ready(store_uri)
        status = self.progress(engine, running, ledger)
        failed = engine.phase == "failed"
        status["phase"] = "Failed" if failed else "Succeeded"
        self.conditions.set("Progressing", False, status["phase"])
        if failed:
            self.conditions.set("Failed", True, "TooManyFailures", engine.failed_reason or "")
            self.event("Warning", "StudyFailed", engine.failed_reason or "")
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
            self.event("Normal", "StudySucceeded", message)
        self.patch(status)
