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
from hpo.dataset_check import Prepared, check_dataset
from hpo.engine import Engine, Progress, Task
from hpo.layout import StudyPaths
from hpo.recorder import LedgerConflict, Recorder
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


Listener = Callable[[str, Progress, SeedResult | None], None]


def request_for(
    study: Study, prepared: Prepared, paths: StudyPaths, task: Task, store: StoreRef | None = None
) -> TrainingRequest:
    t = task.trial
    return TrainingRequest(
        study=study.name,
        trial=t.trial,
        stage=t.stage,
        config=t.config,
        config_key=t.config_key,
        seeds=[task.seed],
        dataset=prepared.dataset,
        training=prepared.training,
        output_prefix=paths.trial(t.trial),
        parent=t.parent,
        store=store,
    )


class LocalRunner:
    """Drives the engine with a pool of worker processes."""

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
        self.store = open_store(self.store_ref)
        self.paths = StudyPaths(study.name)
        self.parallelism = parallelism or study.spec.parallelism
        self.listener = listener or (lambda event, progress, result: None)
        self.ledger_batch = ledger_batch

    @property
    def location(self) -> str:
        return f"{self.store.uri}/{self.paths.root}"

    def _write(self, recorder: Recorder, engine: Engine) -> None:
        """Write the ledger; during an outage keep the results and try again later."""
        try:
            recorder.write(engine.recorded())
        except LedgerConflict:
            raise
        except StoreError as exc:
            self.listener(f"warning: ledger not written yet ({exc})", engine.progress(), None)

    def run(self) -> Outcome:
        prepared = check_dataset(self.study, self.store_ref)
        recorder = Recorder(
            self.store,
            self.paths,
            self.study,
            prepared.dataset.labels,
            batch_size=self.ledger_batch,
        )
        history = recorder.load()
        engine = Engine(self.study.spec, history)  # refuses records of another search space
        recorder.save_study()
        if prepared.rows_dropped:
            engine.notes.append(
                f"{prepared.rows_dropped} of {prepared.rows + prepared.rows_dropped} dataset rows "
                "have missing values and are left out"
            )
        self.listener("start", engine.progress(), None)
        if recorder.due or (history and not self.store.exists(self.paths.ledger)):
            self._write(recorder, engine)

        ctx = multiprocessing.get_context("spawn")
        threads = prepared.training.threads
        pool = self._pool(ctx, threads)
        running: dict[Future[str], Task] = {}
        phase = engine.phase
        try:
            while not engine.finished:
                for task in engine.next_tasks(self.parallelism - len(running)):
                    request = request_for(self.study, prepared, self.paths, task, self.store_ref)
                    running[pool.submit(_train, request.to_json(), task.seed)] = task
                if engine.phase != phase:
                    phase = engine.phase
                    self._write(recorder, engine)
                    self.listener("stage", engine.progress(), None)
                if not running:
                    if engine.finished:
                        break
                    raise RuntimeError("engine has nothing to run but is not finished")
                done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = running[fut]
                    result = self._result_of(fut, task)
                    if result is None:
                        for outcome, retried in self._restart_pool(pool, running, engine):
                            if not retried:
                                recorder.note()
                            event = "retry" if retried else "result"
                            self.listener(event, engine.progress(), outcome)
                        pool = self._pool(ctx, threads)
                        running.clear()
                        break
                    del running[fut]
                    retry = engine.report(result)
                    if retry is None:
                        recorder.note()
                    self.listener("retry" if retry else "result", engine.progress(), result)
                if recorder.due:
                    self._write(recorder, engine)
        except KeyboardInterrupt:
            self._kill(pool)
            for task in running.values():
                engine.requeue(task)
            self._write(recorder, engine)
            return Outcome(
                "interrupted",
                self.location,
                engine,
                message="interrupted; run the same command again to resume",
                notes=engine.notes,
            )
        finally:
            self._kill(pool)
        best = recorder.finish(engine.recorded())
        if engine.phase == "failed":
            reason = engine.failed_reason or ""
            return Outcome("failed", self.location, engine, best, reason, engine.notes)
        return Outcome("succeeded", self.location, engine, best, notes=engine.notes)

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
        engine: Engine,
    ) -> list[tuple[SeedResult, bool]]:
        """A worker died (killed, out of memory). Trainings that finished keep their result;
        the others count a failed attempt each. Returns each outcome and whether it retries."""
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
            outcomes.append((result, engine.report(result) is not None))
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
