"""Runs a study on this machine: long-lived worker processes and a local store.

Workers keep TensorFlow loaded between trainings (importing it costs
seconds, more than a small model's fit), so a training's overhead is only
building, saving and scoring its model.

Workers die with the run: on Linux the kernel kills each one when the run's
process dies (``PR_SET_PDEATHSIG``, so a SIGKILLed run leaves no 700 MB
TensorFlow process behind), and a worker whose run is gone writes nothing.
SIGTERM and SIGHUP stop a run as Ctrl-C does (``Stopped``): running trainings
are dropped and redone next time. Output that cannot be written
(``OutputUnwritable``: disk full, read-only) stops the run; it is not a failed
training.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from hpo import crashpoints
from hpo.engine import Engine, StudyProgress, Task
from hpo.local.lock import folders_to_make, remove_empty, study_lock
from hpo.local.worker_store import ParentGuard
from hpo.records.recorder import LedgerConflict
from hpo.session import Recorded, StudySession
from hpo.store import OutputUnwritable, Store, StoreError, StoreRef, open_store
from hpo.study.contract import SeedResult, TrainingRequest
from hpo.study.layout import StudyPaths
from hpo.study.spec import Study
from hpo.study.storage import store_ref_for

_worker_store: Store | None = None
_PR_SET_PDEATHSIG = 1
#: Signals that stop a run as Ctrl-C does; the exit code is 128 + the signal's number.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

#: What the worker processes run (``pip install '.[trainer]'``). Named, not imported:
#: ``hpo`` never depends on ``hpo_trainer`` (the operator image does not ship it), just
#: as the Kubernetes runner names the trainer image instead of importing it.
TRAINER = "hpo_trainer.train"


def _trainer() -> ModuleType:
    """The trainer module, loaded in a worker process (it brings TensorFlow)."""
    return importlib.import_module(TRAINER)


def user_cache() -> Path:
    """Per-user cache of the tools the workers load (Keras' config, matplotlib's font
    list): ``$HPO_CACHE``, else ``$XDG_CACHE_HOME/hpo``, else ``~/.cache/hpo``. Not the
    run folder: it is the user's, shared by every study, and no result."""
    if os.environ.get("HPO_CACHE"):
        return Path(os.environ["HPO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hpo"


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this worker when the run's process dies (Linux)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the run died before the line above took effect
        os._exit(1)


def _worker_init(store_ref: str, threads: int, parent: int) -> None:
    """Runs once per worker process: the parent handles the signals, workers just stop."""
    global _worker_store
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    ref = StoreRef.from_json(store_ref)
    # Keras and matplotlib write to the home folder otherwise.
    cache = user_cache()
    with contextlib.suppress(OSError):
        cache.mkdir(parents=True, exist_ok=True)
    if not os.access(cache, os.W_OK):
        cache = Path(tempfile.gettempdir()) / f"hpo-cache-{os.getuid()}"
    os.environ.setdefault("KERAS_HOME", str(cache / "keras"))
    os.environ.setdefault("MPLCONFIGDIR", str(cache / "matplotlib"))
    _worker_store = ParentGuard(open_store(ref), parent)
    # Load TensorFlow now, not inside the first training (it would count in its runtime).
    _trainer().configure_runtime(threads)


def _train(request_json: str, seed: int, attempt: int = 1) -> str:
    """One training; ``OutputUnwritable`` travels to the runner as the future's error."""
    assert _worker_store is not None
    request = TrainingRequest.from_json(request_json)
    # The worker has the training (the runner counts it running): a fault test kills it here.
    crashpoints.reached(f"local-train:{request.trial}:{seed}:{attempt}")
    return _trainer().train_one(request, seed, _worker_store).to_json()


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled as Ctrl-C is (a ``KeyboardInterrupt``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP raise ``Stopped`` in the main thread while the loop runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    before = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """While a stopped run cleans up (the ledger's last write), a second Ctrl-C or
    SIGTERM does not cut it short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _act_on(signum: int, handler: Any) -> None:
    """What ``handler`` (a saved disposition) does with ``signum``, done now."""
    if callable(handler):  # Python's Ctrl-C handler, or _stop_signals' Stopped
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """A stop signal arriving while the ledger is written takes effect once the write
    ends (raised in the middle, it left openpyxl's writer half-way: a traceback at exit),
    also when the write fails. A second one while held acts at once: a write stalled by
    an outage does not keep a user's repeated Ctrl-C waiting."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    watched = (signal.SIGINT, *STOP_SIGNALS)
    before: dict[int, Any] = {}

    def hold(signum: int, _frame: object) -> None:
        if held:
            _act_on(signum, before[signum])
        held.append(signum)

    # Swapped with the signals blocked: one arriving half-way waits for the swap.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        before.update({sig: signal.signal(sig, hold) for sig in watched})
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    try:
        yield
    finally:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        try:
            for sig, handler in before.items():
                signal.signal(sig, handler)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if held:  # replaces an error of the write on its way out: the stop comes first
            _act_on(held[0], before[held[0]])


@dataclass
class Outcome:
    """How a run ended, for the CLI's summary and exit code."""

    status: str  # succeeded | failed | interrupted
    location: str
    engine: Engine
    best: Any = None
    message: str = ""
    notes: list[str] = field(default_factory=list)
    #: The signal that stopped an interrupted run (SIGINT for Ctrl-C).
    signum: int = signal.SIGINT


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
        when_held: Callable[[], None] | None = None,
    ) -> None:
        """``when_held`` runs once the study is this run's (its lock taken), before
        anything is read: e.g. ``--rebuild-ledger`` moving a damaged ledger aside, which
        must not happen under another run's feet."""
        self.study = study
        self.when_held = when_held
        self.store_ref = out if isinstance(out, StoreRef) else store_ref_for(study, out)
        self.parallelism = parallelism or study.spec.parallelism
        self.listener = listener or (lambda event, progress, result: None)
        self.ledger_batch = ledger_batch

    def _write(self, session: StudySession, force: bool = False) -> None:
        """Write the ledger if due; during an outage keep the results and try again later."""
        try:
            with _signals_held():
                session.flush(force)
        except (LedgerConflict, OutputUnwritable):
            raise
        except StoreError as exc:
            self.listener(
                f"warning: ledger not written yet ({exc})", session.engine.progress(), None
            )

    def _told(self, session: StudySession, recorded: list[Recorded]) -> None:
        for r in recorded:
            event = "retry" if r.retry else "result"
            self.listener(event, session.engine.progress(), r.result)

    def _recorded(self, session: StudySession, result: SeedResult) -> bool:
        """Record one result; False when the store refused a failed attempt's record (an
        outage): the engine has not seen it then, and it is handed in again later."""
        try:
            self._told(session, session.record([result]))
        except OutputUnwritable:
            raise
        except StoreError as exc:
            self.listener(
                f"warning: failed attempt not recorded yet ({exc})", session.engine.progress(), None
            )
            return False
        return True

    def run(self) -> Outcome:
        """Run the study to its end, or until stopped.

        Raises ``StudyBusy`` (another run has the study), ``HistoryConflict`` (records
        of other data, another search space or other training settings),
        ``OutputUnwritable`` (disk full: stopped, resumable), ``StoreError``."""
        held: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        made: list[Path] = []
        if self.store_ref.kind == "local":
            folder = Path(self.store_ref.root) / StudyPaths(self.study.name).root
            made = folders_to_make(folder)  # before the store makes its root
            held = study_lock(folder, made)
        try:
            # A retry starts at once here: trainer.retryBackoffSeconds is for pods. Failed
            # attempts are stored as on a cluster: a restart goes on with the next attempt,
            # and under budget.trainings the retries charged before it stay charged.
            session = StudySession.open(
                self.study,
                self.store_ref,
                ledger_batch=self.ledger_batch,
                retry_backoff_s=0.0,
                keep_failures=True,
            )
        except BaseException:
            remove_empty(made)  # a refused dataset leaves no folder either
            raise
        with held:
            if self.when_held is not None:
                self.when_held()
            return self._run(session)

    def _run(self, session: StudySession) -> Outcome:
        # Refuses records of another search space, other data, other training settings.
        session.start(refuse_spec_changes=True)
        engine = session.engine
        location = session.location
        self.listener("start", engine.progress(), None)
        for note in session.notes:  # at the start: a long run's log must not bury them
            self.listener(f"note: {note}", engine.progress(), None)
        self._write(session, force=session.ledger_missing)

        ctx = multiprocessing.get_context("spawn")
        threads = session.prepared.training.threads
        pools: list[ProcessPoolExecutor] = []  # the last one is in use
        running: dict[Future[str], Task] = {}
        try:
            with _stop_signals():
                self._loop(session, lambda: self._pool(ctx, threads), pools, running)
        except KeyboardInterrupt as exc:  # Ctrl-C, or Stopped by SIGTERM/SIGHUP
            with _signals_deferred():
                self._kill(pools)
                session.requeue(running.values())
                self._write(session, force=True)
                session.interrupted()
            signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
            what = "interrupted" if signum == signal.SIGINT else f"stopped by {exc}"
            return Outcome(
                "interrupted",
                location,
                engine,
                message=f"{what}; run the same command again to resume",
                notes=session.notes,
                signum=signum,
            )
        except OutputUnwritable:
            # Stopped for the place, not the trainings: what is recorded in memory (failed
            # attempts have no scores.json) goes to the ledger if anything still fits.
            self._kill(pools)
            session.requeue(running.values())
            with contextlib.suppress(StoreError):
                session.flush(force=True)
            session.interrupted()  # the live status: stopped, resumable (best-effort)
            raise
        finally:
            self._kill(pools)
        try:
            best = session.finish()
        except OutputUnwritable:
            raise
        except OSError as exc:  # a plot or summary staged in the temporary folder
            raise OutputUnwritable.of(exc, tempfile.gettempdir()) from exc
        if engine.phase == "failed":
            reason = engine.failed_reason or ""
            return Outcome("failed", location, engine, best, reason, session.notes)
        return Outcome("succeeded", location, engine, best, notes=session.notes)

    def _loop(
        self,
        session: StudySession,
        new_pool: Callable[[], ProcessPoolExecutor],
        pools: list[ProcessPoolExecutor],
        running: dict[Future[str], Task],
    ) -> None:
        """Until the engine is finished: submit what is due, record what finished.

        ``pools`` and ``running`` are the caller's, so that a stop kills the pool in
        use and requeues what was running."""
        engine = session.engine
        pools.append(new_pool())
        while not engine.finished:
            pool = pools[-1]
            tasks = session.take(self.parallelism - len(running))
            broken = False
            for i, task in enumerate(tasks):
                request = session.request([task])
                try:
                    future = pool.submit(_train, request.to_json(), task.seed, task.attempt)
                    running[future] = task
                except BrokenProcessPool:  # a worker died since the last wait
                    session.requeue(tasks[i:])  # these never started: not an attempt
                    self._told(session, self._restart_pool(pools, running, session))
                    pools.append(new_pool())
                    broken = True
                    break
            if broken:  # hand the requeued trainings to the new pool (they are not waiting)
                continue
            if session.stage_changed():
                self._write(session, force=True)
                self.listener("stage", engine.progress(), None)
            if not running:
                # Read anew (``take`` may have ended the study): mypy would keep the loop
                # condition's narrowing of ``engine.finished`` and call this unreachable.
                if session.engine.finished:
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
                    self._told(session, self._restart_pool(pools, running, session))
                    pools.append(new_pool())
                    break
                if not self._recorded(session, result):
                    time.sleep(1.0)  # kept in ``running`` (its slot too): tried again
                    break
                del running[fut]
            self._write(session)

    def _pool(self, ctx: Any, threads: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.parallelism,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(self.store_ref.to_json(), threads, os.getpid()),
        )

    def _result_of(self, fut: Future[str], task: Task) -> SeedResult | None:
        """The training's result; None when the pool broke and every running task must rerun."""
        try:
            return SeedResult.from_json(fut.result())
        except BrokenProcessPool:
            return None
        except OutputUnwritable:
            raise  # the run's output, not the training: stop the run
        except Exception as exc:  # an error outside the trainer's own handling
            return task.failed(self.study.name, f"{type(exc).__name__}: {exc}")

    def _restart_pool(
        self,
        pools: list[ProcessPoolExecutor],
        running: dict[Future[str], Task],
        session: StudySession,
    ) -> list[Recorded]:
        """A worker died (killed, out of memory). Trainings that finished keep their result;
        the others count a failed attempt each (one the store cannot record now is run
        again, not charged); ``running`` is emptied."""
        self._kill(pools)
        outcomes = []
        for fut, task in list(running.items()):
            result: SeedResult | None = None
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                result = SeedResult.from_json(fut.result())
            else:
                result = task.failed(
                    self.study.name, "worker process died (killed or out of memory)"
                )
            try:
                outcomes.extend(session.record([result]))
            except OutputUnwritable:
                raise
            except StoreError as exc:
                self.listener(
                    f"warning: failed attempt not recorded, run again ({exc})",
                    session.engine.progress(),
                    None,
                )
                session.requeue([task])
        running.clear()
        return outcomes

    @staticmethod
    def _kill(pools: list[ProcessPoolExecutor]) -> None:
        procs = [p for pool in pools for p in (getattr(pool, "_processes", None) or {}).values()]
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + 5
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
