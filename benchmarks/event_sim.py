"""The exact benchmark in parallel: a discrete-event simulation of P training slots.

A training's duration is the table's recorded training time for the configuration
and the seed it answers for, so fast configurations finish first, as on a cluster.
Ours runs the real engine: ``engine.next_tasks(free_slots, now)`` at every event with
the simulated clock, ``engine.record(result, now)`` at each completion. A peer is an
ask/tell object driven the same way (``AskTell``); or any function
``run(table, budget, seed, parallel) -> Outcome`` registered in ``PEERS`` (``register``),
e.g. one that runs a peer in its own environment.

Reported per study: the pick's rank (its true mean over seeds), the makespan, slot
utilisation (busy slot-time / (P x makespan)), total compute (sum of durations) and
the trainings used against the budget.
"""

from __future__ import annotations

import heapq
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from fcnet.table import Table

from hpo.engine import Engine, Task
from hpo.study.spec import StudySpec

#: A peer's single training of a configuration uses a study's first seed.
FIRST_SEED = 1


@dataclass(frozen=True)
class Outcome:
    """One study's result in the simulation."""

    pick: int  # the table row handed back
    trainings: int  # trainings started
    budget: int
    makespan: float  # simulated seconds until the last training finished
    utilisation: float  # busy slot-time / (parallel x makespan)
    compute: float  # sum of all durations (simulated seconds)
    seconds: float = 0.0  # wall-clock seconds the method itself took

    @property
    def over_budget(self) -> bool:
        return self.trainings > self.budget

    def as_dict(self, table: Table) -> dict[str, Any]:
        return {**asdict(self), "rank_pct": table.rank_pct(self.pick)}


class _Slots:
    """Running trainings by finish time, with the busy time they add up to."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Any]] = []
        self.compute = 0.0
        self.started = 0
        self.makespan = 0.0

    def start(self, now: float, duration: float, item: Any) -> None:
        self.started += 1
        self.compute += duration
        heapq.heappush(self.heap, (now + duration, self.started, item))

    def finish(self) -> tuple[float, Any]:
        end, _, item = heapq.heappop(self.heap)
        self.makespan = max(self.makespan, end)
        return end, item

    def __len__(self) -> int:
        return len(self.heap)

    def outcome(self, pick: int, budget: int, parallel: int, started: float) -> Outcome:
        span = self.makespan
        used = self.compute / (parallel * span) if span > 0 else 0.0
        return Outcome(
            pick, self.started, budget, span, used, self.compute, time.perf_counter() - started
        )


def run_ours(
    table: Table,
    spec: StudySpec,
    to_params: Callable[[dict[str, Any]], dict[str, object]],
    budget: int,
    parallel: int,
) -> Outcome:
    """One study of ours through the real engine, ``parallel`` slots, the table's clock."""
    started = time.perf_counter()
    engine = Engine(spec)
    slots = _Slots()
    now = 0.0
    while True:
        free = parallel - len(slots)
        if free > 0 and not engine.finished:
            for task in engine.next_tasks(free, now):
                row = table.row(to_params(task.trial.config))
                slots.start(now, table.duration(row, task.seed), (task, row))
        if not len(slots):
            if engine.finished:
                break
            due = engine.next_due()
            if due is None or due <= now:
                raise RuntimeError("engine stalled: nothing running, nothing handed out")
            now = due
            continue
        now, (task, row) = slots.finish()
        score = table.score(row, task.seed)
        engine.record(_result(task, score), now)
    best = engine.final_group(1)[0]
    return slots.outcome(table.row(to_params(best.config)), budget, parallel, started)


def _result(task: Task, score: float) -> Any:
    return task.succeeded("bench", mae=score, val_mae=score)


class AskTell(Protocol):
    """A peer as its users drive it asynchronously: ask when a slot frees, tell when done."""

    def ask(self) -> tuple[Any, int]:
        """A token for the proposal and its table row."""
        ...

    def tell(self, token: Any, loss: float) -> None: ...


def simulate(table: Table, peer: AskTell, budget: int, parallel: int) -> Outcome:
    """``budget`` trainings of ``peer``'s proposals on ``parallel`` slots (seed 1 each); the
    pick is the best score it saw (every proposal counts, repeats included)."""
    started = time.perf_counter()
    slots = _Slots()
    now = 0.0
    best = (float("inf"), -1)
    while slots.started < budget or len(slots):
        while slots.started < budget and len(slots) < parallel:
            token, row = peer.ask()
            slots.start(now, table.duration(row, FIRST_SEED), (token, row))
        now, (token, row) = slots.finish()
        loss = table.score(row, FIRST_SEED)
        peer.tell(token, loss)
        best = min(best, (loss, row))
    return slots.outcome(best[1], budget, parallel, started)


class RandomPeer:
    """Unique configurations uniformly at random."""

    def __init__(self, table: Table, budget: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.rows = [int(r) for r in rng.choice(table.size, size=budget, replace=False)]

    def ask(self) -> tuple[Any, int]:
        return None, self.rows.pop(0)

    def tell(self, token: Any, loss: float) -> None:
        pass


class OptunaPeer:
    """Optuna's ask/tell interface; running trials stay RUNNING, as with parallel workers."""

    def __init__(self, table: Table, sampler: object) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.table = table
        self.study = optuna.create_study(sampler=sampler)  # type: ignore[arg-type]

    def ask(self) -> tuple[Any, int]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask()
            params: dict[str, object] = {
                n: trial.suggest_categorical(n, v)  # type: ignore[arg-type]  # table values
                for n, v in self.table.space.items()
            }
        return trial, self.table.row(params)

    def tell(self, token: Any, loss: float) -> None:
        self.study.tell(token, loss)


def _tpe(table: Table, budget: int, seed: int) -> AskTell:
    import optuna

    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    return OptunaPeer(table, sampler)


def _gp(table: Table, budget: int, seed: int) -> AskTell:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = optuna.samplers.GPSampler(seed=seed)
    return OptunaPeer(table, sampler)


PeerRun = Callable[[Table, int, int, int], Outcome]
#: Peers by name: ``run(table, budget, seed, parallel) -> Outcome``.
PEERS: dict[str, PeerRun] = {}


def register(name: str, run: PeerRun) -> None:
    """Add a peer (e.g. an adapter that runs SMAC3 or HEBO in its own environment)."""
    PEERS[name] = run


def ask_tell(factory: Callable[[Table, int, int], AskTell]) -> PeerRun:
    """A ``run`` function from an ask/tell factory ``(table, budget, seed) -> AskTell``."""

    def run(table: Table, budget: int, seed: int, parallel: int) -> Outcome:
        return simulate(table, factory(table, budget, seed), budget, parallel)

    return run


register("random", ask_tell(RandomPeer))
register("tpe", ask_tell(_tpe))
register("optuna-gp", ask_tell(_gp))
