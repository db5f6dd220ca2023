"""``<study>/status.json``: the study's live status, written by its own runner into its store.

Neither a run folder nor a bucket records which trainings are running, and the
ledger is written in batches; a reader without API access (the dashboard's pod)
still wants phase, stage, counts with ``running``, best, and whether a runner is
alive. The study session writes this small document when its progress changes
(at most every ``every_s``), at every stage change and at the end, and at least
every ``heartbeat_s`` while it runs, so a reader tells a live study from one whose
runner died (``LiveStatus.state``). Best-effort: a failed write is logged, tried
again after ``retry_s`` and never fails or stalls the study.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from hpo.engine import StudyProgress
from hpo.store.base import Store

log = logging.getLogger("hpo.status")

#: Of the document; a reader refuses a newer major one by name.
VERSION = 1
#: A running study's status older than this many heartbeats is ``stale``.
STALE_HEARTBEATS = 6

Phase = Literal["running", "succeeded", "failed", "interrupted"]
State = Literal["live", "stale", "finished", "interrupted"]


class LiveStatus(BaseModel):
    """The document: what the runner knew at ``heartbeat``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = VERSION
    study: str
    #: ``local`` (``hpo run``) or ``operator``.
    runner: str
    #: The run's: running, succeeded, failed, or interrupted (stopped, resumable).
    phase: Phase
    #: The engine's: random, bayesian, done, failed.
    stage: str
    #: This study's own successful trainings (not the ``taken`` ones).
    done: int
    #: Of this study's own trainings, as the engine plans them now.
    planned: int
    #: Trainings in pods that run (``running``) or wait for the cluster's capacity
    #: (``queued``: unschedulable, held by a queue; cluster only), and trainings not
    #: handed out yet (``pending``).
    running: int
    failed: int
    queued: int = 0
    pending: int = 0
    #: Results a warm start took from other studies (not trained here).
    taken: int = 0
    best_val: float | None = None
    best_trial: str | None = None
    #: When this runner started the study (a resumed study: when it was resumed).
    started: datetime
    #: When the counts last changed.
    updated: datetime
    #: When this document was written.
    heartbeat: datetime
    #: The runner writes at least this often while it runs.
    heartbeat_s: float

    @field_validator("started", "updated", "heartbeat")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        """A time without a zone (a foreign writer's) is UTC, so ages can be taken."""
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    def stale_after_s(self) -> float:
        return STALE_HEARTBEATS * self.heartbeat_s

    def state(self, now: datetime | None = None) -> State:
        """``finished`` (succeeded or failed), ``interrupted``, else ``live`` while the
        heartbeat is recent and ``stale`` once ``STALE_HEARTBEATS`` were missed (the
        runner died, or cannot reach the store)."""
        if self.phase in ("succeeded", "failed"):
            return "finished"
        if self.phase == "interrupted":
            return "interrupted"
        now = now or utcnow()
        age = (now - self.heartbeat).total_seconds()
        return "live" if age <= self.stale_after_s() else "stale"


def utcnow() -> datetime:
    """The time a reader judges a heartbeat by (one place, so a test can move it)."""
    return datetime.now(UTC)


def _counts(p: StudyProgress, queued: int) -> tuple[object, ...]:
    return (
        p.phase,
        p.done,
        p.failed,
        p.running,
        p.queued,
        queued,
        p.total,
        p.best_trial,
        p.best_mae,
    )


class StatusWriter:
    """Writes one study's ``status.json``, throttled and best-effort (see the module)."""

    def __init__(
        self,
        store: Store,
        key: str,
        study: str,
        runner: str,
        *,
        every_s: float = 3.0,
        heartbeat_s: float = 10.0,
        retry_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.key, self.study, self.runner = store, key, study, runner
        self.every_s, self.heartbeat_s, self.retry_s = every_s, heartbeat_s, retry_s
        self.clock = clock
        self.started = datetime.now(UTC)
        self.updated = self.started
        self._last: tuple[object, ...] | None = None  # the counts last seen
        self._written: tuple[object, ...] | None = None  # and last written
        self._written_at: float | None = None
        self._retry_at = 0.0
        #: Writes that failed (for tests and logs; never raised).
        self.failures = 0
        #: Results a warm start took: counted by the engine, not trained here.
        self.taken = 0
        #: Of the engine's running trainings, those whose pods wait for capacity (set by
        #: the cluster runner).
        self.queued = 0

    def due(self) -> bool:
        """Whether ``update`` may write now without ``force`` (so a caller computes the
        progress only then: a runner's loop asks many times a second)."""
        now = self.clock()
        if now < self._retry_at:
            return False
        return self._written_at is None or now - self._written_at >= self.every_s

    def update(
        self, progress: StudyProgress, *, force: bool = False, phase: Phase = "running"
    ) -> bool:
        """Write if the counts changed and ``every_s`` passed, if ``heartbeat_s`` passed,
        or if ``force``; True if written. Never raises. Within ``retry_s`` of a failed
        write nothing is tried (a store in an outage would hold the study up on each),
        except the last word: a ``phase`` other than running."""
        now = self.clock()
        counts = _counts(progress, self.queued)
        if counts != self._last:
            self._last = counts
            self.updated = datetime.now(UTC)
        changed = counts != self._written  # since the last write, not the last call
        since = None if self._written_at is None else now - self._written_at
        due = since is None or (changed and since >= self.every_s) or since >= self.heartbeat_s
        if phase == "running" and (now < self._retry_at or not (due or force)):
            return False
        doc = LiveStatus(
            study=self.study,
            runner=self.runner,
            phase=phase,
            stage=progress.phase,
            done=max(0, progress.done - self.taken),
            planned=max(progress.total, progress.done + progress.failed) - self.taken,
            running=max(0, progress.running - self.queued),
            failed=progress.failed,
            queued=self.queued,
            pending=progress.queued,
            taken=self.taken,
            best_val=progress.best_mae,
            best_trial=progress.best_trial,
            started=self.started,
            updated=self.updated,
            heartbeat=datetime.now(UTC),
            heartbeat_s=self.heartbeat_s,
        )
        try:
            self.store.put_bytes(self.key, doc.model_dump_json(indent=1).encode())
        except Exception as exc:  # best-effort: the study goes on without it
            self.failures += 1
            self._retry_at = now + self.retry_s
            log.warning(
                "%s: live status not written (%s); retrying in %gs", self.key, exc, self.retry_s
            )
            return False
        self._written_at, self._written = now, counts
        return True
