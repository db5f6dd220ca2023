"""Runs a study on this machine: long-lived worker processes and a local store.

Workers keep TensorFlow loaded between trainings (importing it costs
seconds, more than a small model's fit), so a training's overhead is only
building, saving and scoring its model.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from hpo.contract import SeedResult, StoreRef, TrainingRequest
from hpo.engine import Engine, StudyProgress, Task
from hpo.recorder import LedgerConflict
from hpo.session import Recorded, StudySession
from hpo.spec import Study
from hpo.store import Store, StoreError, open_store, store_ref_for

_worker_store: Store | None = None

#: What the worker processes run (``pip install '.[trainer]'``). Named, not imported:
#: ``hpo`` never depends on ``hpo_trainer`` (the operator image does not ship it), just
#: as the Kubernetes runner names the trainer image instead of importing it.
TRAINER = "hpo_trainer.train"


def _trainer() -> ModuleType:
    """The trainer module, loaded in a worker process (it brings TensorFlow)."""
    return importlib.import_module(TRAINER)


def _worker_init(store_ref: str, threads: int) -> None:
    """Runs once per worker process: the parent handles Ctrl-C, workers just stop."""
    global _worker_store
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    ref = StoreRef.from_json(store_ref)
    # Keras and matplotlib write to the home folder otherwise.
    cache = Path(ref.root) / ".cache" if ref.kind == "local" else Path(tempfile.gettempdir())
    os.environ.setdefault("KERAS_HOME", str(cache / "hpo-keras"))
    os.environ.setdefault("MPLCONFIGDIR", str(cache / "hpo-matplotlib"))
    _worker_store = open_store(ref)
    # Load TensorFlow now, not inside the first training (it would count in its runtime).
    _trainer().configure_runtime(threads)


def _train(request_json: str, seed: int) -> str:
    assert _worker_store is not None
    request = TrainingRequest.from_json(request_json)
    return _trainer().train_one(request, seed, _worker_store).to_json()


@dataclass
class Outcome:
    """How a run ended, for the CLI's summary and exit code."""

    status: str  # succeeded | failed | interrupted
    location: str
    engine: Engine
    best: Any = None
    message: str = ""
    notes: list[str] = field(default_factory=list)


Listener = Callable[[str, StudyProgress, SeedResult | None], None]


class LocalRunner:
    """Executes a study session's tasks in a pool of worker processes."""

    def __init__(
        self,
        study: Study,
        out: Path | StoreRef,
        *,
        parallelism: int | None = None,
        listener: Listener | None = None,
        ledger_batch: int = 20,
    ) -> None:
        self.study = study
        self.store_ref = out if isinstance(out, StoreRef) else store_ref_for(study, out)
        self.parallelism = parallelism or study.spec.parallelism
        self.listener = listener or (lambda event, progress, result: None)
        self.ledger_batch = ledger_batch

    def _write(self, session: StudySession, force: bool = False) -> None:
        """Write the ledger if due; during an outage keep the results and try again later."""
        try:
            session.flush(force)
        except LedgerConflict:
            raise
        except StoreError as exc:
            self.listener(
                f"warning: ledger not written yet ({exc})", session.engine.progress(), None
            )

    def _told(self, session: StudySession, recorded: list[Recorded]) -> None:
        for r in recorded:
            event = "retry" if r.retry else "result"
            self.listener(event, session.engine.progress(), r.result)

    def run(self) -> Outcome:
        # A retry starts at once here: trainer.retryBackoffSeconds is for pods.
        session = StudySession.open(
            self.study, self.store_ref, ledger_batch=self.ledger_batch, retry_backoff_s=0.0
        )
        session.start()  # refuses records of another search space
        engine = session.engine
        location = session.location
        self.listener("start", engine.progress(), None)
        self._write(session, force=session.ledger_missing)

        ctx = multiprocessing.get_context("spawn")
        threads = session.prepared.training.threads
        pool = self._pool(ctx, threads)
        running: dict[Future[str], Task] = {}
        try:
            while not engine.finished:
                tasks = session.take(self.parallelism - len(running))
                for i, task in enumerate(tasks):
                    request = session.request([task])
                    try:
                        running[pool.submit(_train, request.to_json(), task.seed)] = task
                    except BrokenProcessPool:  # a worker died since the last wait
                        session.requeue(tasks[i:])  # these never started: not an attempt
                        self._told(session, self._restart_pool(pool, running, session))
                        pool = self._pool(ctx, threads)
                        running.clear()
                        break
                if session.stage_changed():
                    self._write(session, force=True)
                    self.listener("stage", engine.progress(), None)
                if not running:
                    if engine.finished:
                        break
                    wait_s = session.wait_s()
                    if wait_s is None:
                        raise RuntimeError("engine has nothing to run but is not finished")
                    time.sleep(min(wait_s, 1.0))  # a retry's backoff
                    continue
                done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = running[fut]
                    result = self._result_of(fut, task)
                    if result is None:
                        self._told(session, self._restart_pool(pool, running, session))
                        pool = self._pool(ctx, threads)
                        running.clear()
                        break
                    del running[fut]
                    self._told(session, session.record([result]))
                self._write(session)
        except KeyboardInterrupt:
            self._kill(pool)
            session.requeue(running.values())
            self._write(session, force=True)
            return Outcome(
                "interrupted",
                location,
                engine,
                message="interrupted; run the same command again to resume",
                notes=session.notes,
            )
        finally:
            self._kill(pool)
        best = session.finish()
        if engine.phase == "failed":
            reason = engine.failed_reason or ""
            return Outcome("failed", location, engine, best, reason, session.notes)
        return Outcome("succeeded", location, engine, best, notes=session.notes)

    def _pool(self, ctx: Any, threads: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.parallelism,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(self.store_ref.to_json(), threads),
        )

    def _result_of(self, fut: Future[str], task: Task) -> SeedResult | None:
        """The training's result; None when the pool broke and every running task must rerun."""
        try:
            return SeedResult.from_json(fut.result())
        except BrokenProcessPool:
            return None
        except Exception as exc:  # an error outside the trainer's own handling
            return task.failed(self.study.name, f"{type(exc).__name__}: {exc}")

    def _restart_pool(
        self,
        pool: ProcessPoolExecutor,
        running: dict[Future[str], Task],
        session: StudySession,
    ) -> list[Recorded]:
        """A worker died (killed, out of memory). Trainings that finished keep their result;
        the others count a failed attempt each."""
        self._kill(pool)
        outcomes = []
        for fut, task in list(running.items()):
            result: SeedResult | None = None
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                result = SeedResult.from_json(fut.result())
            else:
                result = task.failed(
                    self.study.name, "worker process died (killed or out of memory)"
                )
            outcomes.extend(session.record([result]))
        return outcomes

    @staticmethod
    def _kill(pool: ProcessPoolExecutor) -> None:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + 5
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
