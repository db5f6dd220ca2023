"""One study on one store: the engine, the ledger and the failure records, for every runner.

The local runner, the Kubernetes runner and the benchmarks drive this very
object; they differ only in how a ``Task`` is executed. A runner opens the
session (store and dataset checked), starts it (history read back, engine
built, spec saved), then loops: ``take`` tasks that are due, execute them,
``record`` their results, ``flush`` the ledger when due; and ``finish``.

What the session keeps in the store, not in memory, is what survives a
restart: every result (the trainer's ``scores.json``, then the ledger) and
every failed attempt (``failures/``, both runners), written before the
engine lets go of the training, so a restart neither forgets a final failure
nor gives a training more attempts than the policy allows, nor forgets the
retries ``budget.trainings`` was charged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from hpo import crashpoints
from hpo.data.checks import Prepared, check_dataset
from hpo.data.dataset import short_fingerprint
from hpo.engine import Engine, HistoryConflict, Task, TrainingId
from hpo.records.livestatus import Phase, StatusWriter
from hpo.records.recorder import Recorder
from hpo.records.warmstart import Taken, check_unchanged, copy_artifacts, load_taken, take
from hpo.store import Store, StoreError, StoreRef, open_store
from hpo.study.contract import SeedResult, TrainingRequest
from hpo.study.layout import StudyPaths
from hpo.study.matching import changed_settings, same_data, settings_values
from hpo.study.spec import Study, refused_changes, refused_message

log = logging.getLogger("hpo.session")


class DatasetChanged(HistoryConflict):
    """The dataset is not the one the study's recorded trainings were trained on."""


class SpecChanged(HistoryConflict):
    """Spec fields that give a training its meaning differ from the study's saved spec."""


def training_request(
    study: Study, prepared: Prepared, tasks: list[Task], store: StoreRef | None = None
) -> TrainingRequest:
    """The trainer's request for ``tasks``: seeds of one trial, trained by one process or pod."""
    t = tasks[0].trial
    return TrainingRequest(
        study=study.name,
        trial=t.id,
        stage=t.stage,
        config=t.config,
        config_key=t.config_key,
        seeds=[task.seed for task in tasks],
        dataset=prepared.dataset,
        training=prepared.training,
        output_prefix=StudyPaths(study.name).trial(t.id),
        parent=t.parent,
        store=store,
    )


class FailureRecords:
    """Failed attempts, one object each: ``<study>/failures/<trial>/seed-<n>/attempt-<k>.json``.

    The ledger is written in batches and a failed pod may be deleted, so a
    failed attempt is kept here first; on resume the last one of each training
    is either its final result or an attempt already used.
    """

    def __init__(self, store: Store, study: str) -> None:
        self.store = store
        self.paths = StudyPaths(study)
        self.prefix = self.paths.failures

    def key(self, tid: TrainingId, attempt: int) -> str:
        trial, seed = tid
        return self.paths.failure(trial, seed, attempt)

    def put(self, result: SeedResult, attempt: int, *, final: bool = False) -> None:
        """Store a failed attempt; again with ``final`` once the engine made it the
        training's result (retries used up, or no room left in ``budget.trainings``)."""
        record = {"attempt": attempt, "result": json.loads(result.to_json()), "final": final}
        self.store.put_bytes(self.key(result.key, attempt), json.dumps(record).encode())

    def load(self) -> dict[TrainingId, tuple[int, SeedResult, bool]]:
        """The last failed attempt of each training and whether it was final (a torn or
        foreign file is skipped)."""
        out: dict[TrainingId, tuple[int, SeedResult, bool]] = {}
        for key in self.store.list(self.prefix):
            try:
                raw = json.loads(self.store.get_bytes(key).decode())
                attempt = int(raw["attempt"])
                result = SeedResult.from_json(json.dumps(raw["result"]))
                final = raw.get("final") is True
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # at worst one more attempt
            if result.status == "failed" and attempt > out.get(result.key, (0,))[0]:
                out[result.key] = (attempt, result, final)
        return out


@dataclass(frozen=True)
class Recorded:
    """What became of one result: final (``retry`` None), or a retry due in ``retry_in_s``."""

    result: SeedResult
    retry: Task | None = None
    retry_in_s: float = 0.0


class StudySession:
    """One study on one store, driven by a runner.

    ``retry_backoff_s`` None takes the spec's ``trainer.retryBackoffSeconds``
    (a cluster); the local runner passes 0 (a retry starts at once).
    ``keep_failures`` stores failed attempts (both runners: pods, the operator or
    ``hpo run`` may go away between a failure and the next ledger write; the
    benchmarks, which never restart, leave it off).
    ``folders`` False (the operator) refuses a folder as a warm-start source: it would
    be one on the operator pod's filesystem.
    ``runner`` (``local``, ``operator``) and ``status_every_s`` are for the live status
    (``<study>/status.json``, ``hpo.records.livestatus``), written at each ``flush``.
    """

    def __init__(
        self,
        study: Study,
        store_ref: StoreRef,
        store: Store,
        prepared: Prepared,
        *,
        ledger_batch: int = 20,
        retry_backoff_s: float | None = None,
        keep_failures: bool = False,
        credentials: tuple[str, str] | None = None,
        folders: bool = True,
        runner: str = "local",
        status_every_s: float = 3.0,
    ) -> None:
        self.study = study
        #: The store's credentials, for warm-start sources in other buckets (never logged).
        self._credentials = credentials
        self._folders = folders
        self.store_ref = store_ref
        self.store = store
        self.prepared = prepared
        self.paths = StudyPaths(study.name)
        self.recorder = Recorder(
            store, self.paths, study, prepared.dataset.labels, batch_size=ledger_batch
        )
        self.failures = FailureRecords(store, study.name) if keep_failures else None
        #: The live status: best-effort, never fails the study.
        self.status = StatusWriter(
            store, self.paths.status, study.name, runner, every_s=status_every_s
        )
        self._fixed_backoff = retry_backoff_s
        self._engine: Engine | None = None
        self._phase = ""
        #: True when results were read back but the store has no ledger yet.
        self.ledger_missing = False
        #: What a warm start took (``hpo.records.warmstart``), None without one.
        self.warm_start: Taken | None = None
        #: What the user should know of the warm start (sources not counted, left out).
        self.warm_notes: list[str] = []

    @classmethod
    def open(
        cls,
        study: Study,
        store_ref: StoreRef,
        *,
        credentials: tuple[str, str] | None = None,
        ledger_batch: int = 20,
        retry_backoff_s: float | None = None,
        keep_failures: bool = False,
        folders: bool = True,
        runner: str = "local",
        status_every_s: float = 3.0,
    ) -> StudySession:
        """Open the store and check the dataset (raises ``StoreError``, ``DatasetProblem``)."""
        store = open_store(store_ref, credentials=credentials)
        prepared = check_dataset(study, store_ref, credentials=credentials)
        return cls(
            study,
            store_ref,
            store,
            prepared,
            ledger_batch=ledger_batch,
            retry_backoff_s=retry_backoff_s,
            keep_failures=keep_failures,
            credentials=credentials,
            folders=folders,
            runner=runner,
            status_every_s=status_every_s,
        )

    def _backoff(self, study: Study) -> float:
        if self._fixed_backoff is not None:
            return self._fixed_backoff
        return study.spec.trainer.retry_backoff_seconds

    # -- start -----------------------------------------------------------------

    def start(self, in_flight: Iterable[Task] = (), *, refuse_spec_changes: bool = False) -> None:
        """Read back what the study recorded, build the engine, save the spec as run.

        ``in_flight``: trainings found running (a cluster's pods after a restart);
        recorded ones are left out, and of one training the latest attempt counts.
        Raises ``StoreError`` (try later) and ``HistoryConflict`` (records of another
        search space; ``DatasetChanged``: other data than the records were trained
        on; ``SpecChanged``, with ``refuse_spec_changes``: the saved spec differs in a
        field ``hpo.study.spec.MUTABLE_WHILE_RUNNING`` does not list) and ``WarmStartProblem``
        (a warm-start source missing, unreadable or of other labels; a warm start
        added or changed after the study started). Nothing is written then.
        """
        history = self.recorder.load()
        taken = load_taken(self.store, self.paths)
        check_unchanged(self.study, taken, bool(history))
        new_warm_start = taken is None and self.study.spec.warm_start is not None
        if new_warm_start:
            taken = take(
                self.study, self.prepared, self.store, self._credentials, folders=self._folders
            )
        recorded = {r.key for r in history}
        running: dict[TrainingId, Task] = {}
        for t in in_flight:  # a failed attempt's pod may be kept beside its retry's
            if t.id not in recorded and (t.id not in running or running[t.id].attempt < t.attempt):
                running[t.id] = t
        used, retried = self._restore_failures(history, recorded, running)
        engine = Engine(
            self.study.spec,
            history,
            list(running.values()),
            retry_backoff_s=self._backoff(self.study),
            warm=taken.warm if taken is not None else None,
        )
        engine.resume_attempts(used, retried)
        self._check_dataset(bool(history))
        if refuse_spec_changes and history:
            self._check_spec()
        self.recorder.save_study()
        self._record_dataset()
        if taken is not None:
            if new_warm_start:
                # Written before the copies: a restart decides from it, not the sources.
                self.store.put_bytes(self.paths.warm_start, taken.to_json().encode())
            # Rows the ledger lacks yet: the next write adds them.
            self.recorder.note(sum(1 for r in taken.warm.results if r.key not in recorded))
            self.warm_notes = [
                *taken.notes,
                *copy_artifacts(
                    taken, self.study, self.store, self._credentials, folders=self._folders
                ),
            ]
            self.warm_start = taken
            self.status.taken = len(taken.warm.results)
        self.ledger_missing = bool(history) and not self.store.exists(self.paths.ledger)
        self._engine = engine
        self._phase = engine.phase
        self.status.update(engine.progress(), force=True)

    def _restore_failures(
        self, history: list[SeedResult], recorded: set[TrainingId], running: dict[TrainingId, Task]
    ) -> tuple[dict[TrainingId, tuple[int, str]], list[SeedResult]]:
        """Failed attempts whose pod is gone: a final one is a result (the ledger may not
        have it yet; added to ``history``), an earlier one is an attempt used up, its retry
        waiting. Else a restart would forget them and train the configuration again.
        Returns the attempts used and the failed attempts to retry (``resume_attempts``)."""
        used: dict[TrainingId, tuple[int, str]] = {}
        retried: list[SeedResult] = []
        if self.failures is None:
            return used, retried
        retries = self.study.spec.failure_policy.retries
        results = {r.key: r for r in history}
        for tid, (attempt, result, final) in self.failures.load().items():
            if tid in results:  # its result came of this attempt or (a success) the next
                used[tid] = (attempt + (results[tid].status != "failed"), result.config_key)
            elif final and not (tid in running and running[tid].attempt > attempt):
                # Decided before (even with its failed pod still there): not again now.
                running.pop(tid, None)
                history.append(result)
                recorded.add(tid)
                self.recorder.note()
            elif tid in running and running[tid].attempt >= attempt:
                continue  # its pod (or a later attempt's) says it all
            elif attempt > retries:
                history.append(result)
                recorded.add(tid)
                self.recorder.note()
            else:
                used[tid] = (attempt, result.config_key)
                retried.append(result)
        return used, retried

    def _recorded_dataset(self) -> dict[str, Any] | None:
        try:
            raw = json.loads(self.store.get_bytes(self.paths.dataset).decode())
        except StoreError:
            if self.store.exists(self.paths.dataset):
                raise
            return None
        except (ValueError, UnicodeDecodeError):
            return None  # torn or foreign: recorded again below
        return raw if isinstance(raw, dict) else None

    def _check_dataset(self, has_records: bool) -> None:
        """Refuse other data than the study's records were trained on (a file edited,
        replaced or pointed elsewhere; an object replaced in its bucket)."""
        then = self._recorded_dataset()
        now = self.prepared.dataset
        if not has_records or then is None or same_data(then, now):
            return
        where = (
            f"the file {then.get('path')}"
            if then.get("path") == self.study.spec.dataset.path
            else f"{then.get('path')} (now {self.study.spec.dataset.path})"
        )
        raise DatasetChanged(
            f"spec.dataset.path: the data changed since this study started: its trainings "
            f"were trained on {where} with {short_fingerprint(then.get('fingerprint'))}, "
            f"{then.get('size')} bytes; it now has {short_fingerprint(now.etag)}, "
            f"{now.size} bytes. Not mixing two datasets in one study: restore the file, or "
            "start a new study (another metadata.name) on the new data"
        )

    def _record_dataset(self) -> None:
        now = self.prepared.dataset
        record = {"path": self.study.spec.dataset.path, "fingerprint": now.etag, "size": now.size}
        if self._recorded_dataset() != record:
            self.store.put_bytes(self.paths.dataset, json.dumps(record, indent=1).encode())

    def _check_spec(self) -> None:
        """Refuse what the operator refuses on a running study (``refused_changes``):
        the records were trained under the saved spec."""
        try:
            saved = yaml.safe_load(self.store.get_bytes(self.paths.study))
        except StoreError:
            if self.store.exists(self.paths.study):
                raise
            return
        except yaml.YAMLError:
            return
        old = (saved or {}).get("spec") if isinstance(saved, dict) else None
        if not isinstance(old, dict):
            return
        new = self.study.as_resource()["spec"]
        # The same bytes (checked above) under another path are the same data; the warm
        # start's sources are checked as written (``check_unchanged``), not as resolved.
        refused = changed_settings(old, new, ignore=[("warmStart", "studies")])
        if not refused:
            return
        values = settings_values(old, new, refused)
        raise SpecChanged(
            f"{refused_message(refused)} ({values}): the study's recorded trainings were "
            f"run with {self.store.uri}/{self.paths.study}; restore those values, or start a new "
            "study (another metadata.name) to change them"
        )

    @property
    def engine(self) -> Engine:
        """The study's engine: read it (progress, phase, ranking), never change it."""
        if self._engine is None:
            raise RuntimeError("the session is not started")
        return self._engine

    @property
    def notes(self) -> list[str]:
        """What the user should know about this run: the dataset's and the engine's notes."""
        p = self.prepared
        dropped = (
            [
                f"{p.rows_dropped} of {p.rows + p.rows_dropped} dataset rows have missing "
                "(empty, NaN) or infinite values and are left out"
            ]
            if p.rows_dropped
            else []
        )
        return [*p.notes, *dropped, *self.warm_notes, *self.engine.notes]

    @property
    def location(self) -> str:
        return f"{self.store.uri}/{self.paths.root}"

    # -- the loop --------------------------------------------------------------

    def take(self, n: int, now: float | None = None) -> list[Task]:
        """Up to ``n`` trainings to start now (due retries first); they count as running."""
        return self.engine.next_tasks(n, now)

    def request(self, tasks: list[Task]) -> TrainingRequest:
        """The trainer's request for seeds of one trial (one process or pod)."""
        return training_request(self.study, self.prepared, tasks, self.store_ref)

    def wait_s(self, now: float | None = None) -> float | None:
        """Seconds until a waiting training is due (None: nothing waits)."""
        due = self.engine.next_due()
        if due is None:
            return None
        return max(0.0, due - (time.monotonic() if now is None else now))

    def record(self, results: Iterable[SeedResult], now: float | None = None) -> list[Recorded]:
        """Hand results to the engine; a failed attempt is stored first (``keep_failures``):
        the store, not memory or the ledger's next batch, is what survives a restart.

        Raises ``StoreError`` before the engine saw any of them if that store write fails.
        """
        results = list(results)
        engine = self.engine
        now = time.monotonic() if now is None else now
        stored: dict[TrainingId, int] = {}
        if self.failures is not None:
            for r in results:
                if r.status == "failed" and not engine.is_recorded(r.key):
                    stored[r.key] = engine.attempt_of(r.key)
                    self.failures.put(r, stored[r.key])
            if any(r.status == "failed" for r in results):
                crashpoints.reached("failure-stored")
        out = []
        for r in results:
            retry = engine.record(r, now)
            if retry is None:
                if r.key in stored:
                    self._final_failure(r, stored[r.key])
                self.recorder.note()
                out.append(Recorded(r))
            else:
                due = engine.due_at(retry.id)
                out.append(Recorded(r, retry, max(0.0, (due or now) - now)))
        return out

    def _final_failure(self, result: SeedResult, attempt: int) -> None:
        """Mark a failure final (retries used up under the policy of that moment, or no
        room left in ``budget.trainings``): a restart must not decide it again, under an
        edited policy or with other trainings in flight. Best effort: without the mark a
        restart decides from ``failurePolicy.retries``, and a waiting retry that does not
        fit in the budget makes the failure the result."""
        assert self.failures is not None
        try:
            self.failures.put(result, attempt, final=True)
        except StoreError as exc:
            log.warning("%s: %s not marked final: %s", self.study.name, result.key, exc)

    def postpone(self, tasks: Iterable[Task], until: float) -> None:
        """Taken tasks that could not start (refused, no answer): not an attempt; again at
        ``until``."""
        self.engine.postpone(tasks, until)

    def adopt(self, tasks: Iterable[Task]) -> None:
        """Trainings found running that the engine did not know of (a lost create answer)."""
        self.engine.adopt(tasks)

    def requeue(self, tasks: Iterable[Task]) -> None:
        """Interrupted trainings (Ctrl-C, a lost worker pool): not failed, run again."""
        for task in tasks:
            self.engine.requeue(task)

    def stored_scores(self, tasks: list[Task]) -> dict[int, SeedResult | None]:
        """Each seed's ``scores.json`` (None when missing or unreadable).

        An unreachable store raises ``StoreError``: then nothing is concluded now."""
        out: dict[int, SeedResult | None] = {}
        for t in tasks:
            key = self.paths.scores(t.trial.id, t.seed)
            if self.store.etag(key) is None:
                out[t.seed] = None
                continue
            try:
                out[t.seed] = SeedResult.from_json(self.store.get_bytes(key).decode())
            except (ValueError, TypeError):
                out[t.seed] = None
        return out

    def stage_changed(self) -> bool:
        """Whether the engine's phase moved since the last call (then flush and tell)."""
        if self.engine.phase == self._phase:
            return False
        self._phase = self.engine.phase
        return True

    def flush(self, force: bool = False) -> bool:
        """Write the ledger if a batch is due (or ``force``); True if written. The live
        status first, when due (or ``force``: a stage change, a stop): it never raises.

        Raises ``StoreError`` (the results stay in memory and as ``scores.json``
        until the next try) and ``LedgerConflict`` (another writer).
        """
        if force or self.status.due():
            self.status.update(self.engine.progress(), force=force)
        if not (force or self.recorder.due):
            return False
        self.recorder.write(self.engine.recorded())
        return True

    def change_spec(self, study: Study) -> list[str]:
        """Run on under an edited spec: returns the changed fields that may not change
        (then nothing changes), else applies it (budgets, policy, backoff)."""
        refused = refused_changes(self.study.as_resource()["spec"], study.as_resource()["spec"])
        if refused:
            return refused
        self.study = study
        self.recorder.study = study
        self._engine = self.engine.with_spec(study.spec, retry_backoff_s=self._backoff(study))
        return []

    def finish(self) -> Any:
        """Final group, last ledger write, plots, then the final live status; returns the
        final group (a DataFrame)."""
        best = self.recorder.finish(self.engine.recorded())
        phase: Phase = "failed" if self.engine.phase == "failed" else "succeeded"
        self.status.update(self.engine.progress(), force=True, phase=phase)
        return best

    def interrupted(self) -> None:
        """Say in the live status that this run stopped before the end (resumable)."""
        self.status.update(self.engine.progress(), force=True, phase="interrupted")
