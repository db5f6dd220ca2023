"""The study's brain: from what is recorded and what is running, decide what to train next.

Pure: no TensorFlow, kopf or kubernetes. The local runner, the operator and
the benchmarks drive the very same engine (through ``hpo.session``); they only
differ in how a ``Task`` is executed. The engine also decides retries and when
they are due: times are the caller's ``now`` (monotonic seconds), so a runner
asks ``next_tasks(n, now)`` and never schedules anything itself. Nothing outside
the engine changes its state. A training is identified by ``(trial id, seed)``;
a trial is one configuration.
"""

from __future__ import annotations

import heapq
import re
import statistics
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from hpo.engine.search import local
from hpo.engine.search.surrogate import Surrogate
from hpo.study.contract import SeedResult
from hpo.study.space import Config, NarrowSpace, config_key, narrow, normalise, sample_unique
from hpo.study.spec import StudySpec
from hpo.study.summary import ConfigSummary, ranked, selection_score, summarise

if TYPE_CHECKING:  # scikit-optimize costs seconds to import: only the GP stage needs it
    from hpo.engine.search.gaussian import ParentSearch

Phase = Literal["random", "bayesian", "done", "failed"]
TrainingId = tuple[str, int]


class HistoryConflict(ValueError):
    """Recorded results do not fit this study (its search space or seed changed)."""


@dataclass(frozen=True)
class Trial:
    """One configuration of the study, trained once per seed."""

    id: str
    stage: Literal["random", "bayesian"]
    config: Config
    config_key: str
    parent: str | None = None


@dataclass(frozen=True)
class Task:
    """One training to run: a trial and one seed; ``attempt`` counts from 1."""

    trial: Trial
    seed: int
    attempt: int = 1

    @property
    def id(self) -> TrainingId:
        return (self.trial.id, self.seed)

    def _result(self, study: str, **fields: Any) -> SeedResult:
        t = self.trial
        return SeedResult(
            study=study,
            trial=t.id,
            stage=t.stage,
            parent=t.parent,
            config=t.config,
            config_key=t.config_key,
            seed=self.seed,
            **fields,
        )

    def succeeded(self, study: str, mae: float, val_mae: float, **more: Any) -> SeedResult:
        """This training's result with its scores (stand-in trainers: benchmarks, tests)."""
        return self._result(study, status="succeeded", mae=mae, val_mae=val_mae, **more)

    def failed(self, study: str, error: str) -> SeedResult:
        """This training's result when it could not run or finish (one failed attempt)."""
        return self._result(study, status="failed", error=error)


@dataclass(frozen=True)
class WarmStart:
    """What earlier studies give this one (``hpo.records.warmstart`` reads them; fixed for the
    study's life, so a restart decides the same).

    ``results``: successful trainings that count as this study's (trial ids
    ``w0000``..., stage ``random``, their ``source`` set); their configurations are
    never sampled again, and they rank and hand over like any result. ``first``:
    configurations to train first, anew: the first of the random stage's budget.
    """

    results: tuple[SeedResult, ...] = ()
    first: tuple[Config, ...] = ()


@dataclass
class StudyProgress:
    """Counts of one study at one moment, for displays and the cluster status."""

    phase: Phase
    done: int
    failed: int
    running: int
    queued: int
    total: int
    best_trial: str | None
    best_mae: float | None
    best_std: float | None
    #: Seeds behind ``best_mae``: a spread of one seed is no spread at all.
    best_seeds: int | None = None


@dataclass
class _Parent:
    summary: ConfigSummary
    space: NarrowSpace
    search: ParentSearch
    trials: list[str] = field(default_factory=list)


_TRIAL_ID = re.compile(r"^([rbw])(\d+)$")


def random_trial_id(i: int) -> str:
    return f"r{i:04d}"


def warm_trial_id(i: int) -> str:
    """A configuration a warm start brought in with its results."""
    return f"w{i:04d}"


def bayes_trial_id(i: int) -> str:
    return f"b{i:04d}"


class Engine:
    """State machine of one study: random stage, hand-over, Bayesian stage, done.

    What every step asks (progress, the best configurations, whether the random
    stage is complete, the failure count) is kept up to date result by result,
    so a step costs the same at the 5,000th training as at the 10th.
    """

    def __init__(
        self,
        spec: StudySpec,
        history: Iterable[SeedResult] = (),
        in_flight: Iterable[Task] = (),
        *,
        retry_backoff_s: float = 0.0,
        warm: WarmStart | None = None,
    ) -> None:
        self.spec = spec
        self.warm = warm or WarmStart()
        self.seeds = spec.seeds
        #: The first retry of a training waits this long, each further one twice as long.
        self.retry_backoff_s = retry_backoff_s
        self.notes: list[str] = []
        self.failed_reason: str | None = None
        self.trials: dict[str, Trial] = {}
        self.results: dict[TrainingId, SeedResult] = {}
        self.order: list[TrainingId] = []
        self.attempts: dict[TrainingId, int] = {}
        self.running: dict[TrainingId, Task] = {}
        self.queue: deque[Task] = deque()
        #: Trainings not to hand out before a time: retries (backoff) and postponed tasks.
        self.waiting: dict[TrainingId, tuple[float, Task]] = {}
        self.parents: list[_Parent] = []
        self._next_bayes = 0
        self._by_key: dict[str, str] = {}
        # Kept up to date by _absorb, one result at a time.
        self._live: dict[str, ConfigSummary] = {}
        self._rank: list[tuple[float, float, str, int]] = []  # a heap; stale entries skipped
        self._rank_version: dict[str, int] = {}
        self._failed = 0
        self._last_error: str | None = None
        self._worst_mae: float | None = None
        self._random_incomplete = 0
        #: How many of ``seeds`` each trial is given (a prefix): 1 at first under seed
        #: racing, all of them for the final group's contenders.
        self.assigned: dict[str, int] = {}
        self.racing = spec.training.seed_racing and len(self.seeds) > 1
        self.local = spec.bayesian_stage.method == "localSearch"
        #: Trials the narrow stage started from (the random stage's best at hand-over).
        self.handed: list[str] = []
        self._local_exhausted = False
        self._racing_done = False

        budget = spec.random_stage.configurations
        known = {r.config_key for r in self.warm.results}
        first: list[Config] = []
        for config in self.warm.first:
            key = config_key(config)
            if key not in known and len(first) < budget:
                known.add(key)
                first.append(normalise(config))
        plan = sample_unique(
            spec.search_space, budget - len(first), spec.random_stage.seed, frozenset(known)
        )
        if plan.shortfall:
            self.notes.append(plan.shortfall)
        for i, config in enumerate([*first, *plan.configs]):
            self._add_trial(
                Trial(random_trial_id(i), "random", normalise(config), config_key(config))
            )

        # A warm start's results come first, as if recorded before anything else; the
        # study's own records of the same trainings (their copies) are the same results.
        history = list(history)
        own = {r.key for r in history}
        history = [*(r for r in self.warm.results if r.key not in own), *history]
        for r in history:
            self._adopt_history_trial(r)
        for r in history:
            self.results[r.key] = r
            self.order.append(r.key)
        for key in self.order:
            self._absorb(self.results[key])
        for task in in_flight:
            self._adopt_history_trial_from_task(task)
            self.running[task.id] = task
            self.attempts[task.id] = max(self.attempts.get(task.id, 0), task.attempt)
        # A trial keeps the seeds it was given before: a seed past its first ones is
        # recorded or running only if it was raced, and a raced trial gets them all.
        for trial, seed in [*self.results, *self.running]:
            if seed in self.seeds and self.seeds.index(seed) >= self._first_seeds():
                self.assigned[trial] = len(self.seeds)
        self._random_incomplete = sum(
            1
            for t in self.trials.values()
            if t.stage == "random" and not self._trial_complete(t.id)
        )
        for r in self.results.values():
            self._count(r)

        self._queue_missing("random")
        self.phase: Phase = "random"
        self._check_failures(None)
        self._advance()

    # -- building up state -------------------------------------------------

    def _first_seeds(self) -> int:
        return 1 if self.racing else len(self.seeds)

    def _seeds_of(self, trial: str) -> list[int]:
        return self.seeds[: self.assigned.get(trial, self._first_seeds())]

    def _add_trial(self, trial: Trial) -> None:
        other = self._by_key.get(trial.config_key)
        if other is not None and other != trial.id:
            raise HistoryConflict(
                f"configuration {trial.config_key} appears as both {other} and {trial.id}"
            )
        self.trials[trial.id] = trial
        self._by_key[trial.config_key] = trial.id
        m = _TRIAL_ID.match(trial.id)
        if m and m.group(1) == "b":
            self._next_bayes = max(self._next_bayes, int(m.group(2)) + 1)

    def _absorb(self, r: SeedResult) -> None:
        """Add one recorded result to the live summaries and the ranking."""
        s = self._live.get(r.trial)
        if s is None:
            s = self._live[r.trial] = ConfigSummary(
                trial=r.trial,
                stage=r.stage,
                parent=r.parent,
                config_key=r.config_key,
                config=r.config,
            )
        ranked_before = s.n
        s.add(r)
        if s.n != ranked_before:
            version = self._rank_version.get(r.trial, 0) + 1
            self._rank_version[r.trial] = version
            assert s.score is not None and s.score_std is not None
            heapq.heappush(self._rank, (s.score, s.score_std, r.trial, version))

    def _count(self, r: SeedResult) -> None:
        """Failures and the worst MAE seen, for the failure budget and ``_objective``."""
        if r.status == "failed":
            self._failed += 1
            self._last_error = r.error
        score = selection_score(r)
        if score is not None:
            self._worst_mae = score if self._worst_mae is None else max(self._worst_mae, score)

    def _adopt_history_trial(self, r: SeedResult) -> None:
        known = self.trials.get(r.trial)
        if known is not None:
            if known.config_key != r.config_key:
                raise HistoryConflict(
                    f"recorded trial {r.trial} has configuration {r.config_key}, but this study "
                    f"plans {known.config_key} for it: the search space or the sampling seed "
                    "changed since the study started; use a new study name"
                )
            return
        if r.stage == "random":
            # A budget was lowered: keep what was trained, it is recorded anyway.
            self._add_trial(Trial(r.trial, "random", normalise(r.config), r.config_key))
            return
        self._add_trial(Trial(r.trial, "bayesian", normalise(r.config), r.config_key, r.parent))

    def _adopt_history_trial_from_task(self, task: Task) -> None:
        if task.trial.id not in self.trials:
            self._add_trial(task.trial)

    def _queue_missing(self, stage: str) -> None:
        for trial in self.trials.values():
            if trial.stage != stage:
                continue
            for seed in self._seeds_of(trial.id):
                tid = (trial.id, seed)
                if tid not in self.results and tid not in self.running:
                    self.queue.append(Task(trial, seed, self.attempts.get(tid, 0) + 1))

    # -- queries -------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "failed")

    def resume_attempts(self, used: dict[TrainingId, tuple[int, str]]) -> None:
        """Count attempts used up before (``used[tid] = (attempt, config key)``), so that
        the next attempt of each training has the next number and the policy holds."""
        for tid, (attempt, key) in used.items():
            trial = self.trials.get(tid[0])
            if trial is not None and trial.config_key == key and tid not in self.running:
                self.attempts[tid] = max(self.attempts.get(tid, 0), attempt)
        self.queue = deque(
            Task(t.trial, t.seed, max(t.attempt, self.attempts.get(t.id, 0) + 1))
            for t in self.queue
        )

    def with_spec(self, spec: StudySpec, *, retry_backoff_s: float | None = None) -> Engine:
        """This study under an edited spec (new budgets, policy): same results, same
        trainings in flight, the attempts already used still count and a waiting retry
        keeps its due time. ``retry_backoff_s`` None keeps this engine's backoff."""
        backoff = self.retry_backoff_s if retry_backoff_s is None else retry_backoff_s
        new = Engine(
            spec, self.recorded(), self.running.values(), retry_backoff_s=backoff, warm=self.warm
        )
        new.resume_attempts(
            {tid: (n, self.trials[tid[0]].config_key) for tid, n in self.attempts.items()}
        )
        for due, task in self.waiting.values():
            if task.id not in new.results and task.id not in new.running:
                new._wait(task, due)
        return new

    def is_recorded(self, tid: TrainingId) -> bool:
        """Whether this training has its final result (it will never run again)."""
        return tid in self.results

    def is_running(self, task: Task) -> bool:
        """Whether the engine waits for the outcome of this very attempt."""
        running = self.running.get(task.id)
        return running is not None and running.attempt == task.attempt

    def attempt_of(self, tid: TrainingId) -> int:
        """The number of the training's current (or last handed out) attempt."""
        task = self.running.get(tid)
        return task.attempt if task else self.attempts.get(tid, 1)

    def due_at(self, tid: TrainingId) -> float | None:
        """When a waiting training (a retry, a postponed task) may be handed out."""
        entry = self.waiting.get(tid)
        return entry[0] if entry else None

    def not_due(self, now: float) -> int:
        """How many waiting trainings are not due yet at ``now`` (a runner that keeps
        their slots for them subtracts these)."""
        return sum(1 for due, _ in self.waiting.values() if due > now)

    def next_due(self) -> float | None:
        """The earliest time a waiting training becomes due (None: nothing waits).

        A runner with nothing running sleeps until then instead of polling."""
        return min((due for due, _ in self.waiting.values()), default=None)

    def recorded(self) -> list[SeedResult]:
        """Every final result, in the order it was recorded."""
        return [self.results[k] for k in self.order]

    def summaries(self, stage: str | None = None) -> dict[str, ConfigSummary]:
        rs = self.recorded()
        if stage is not None:
            rs = [r for r in rs if r.stage == stage]
        return summarise(rs)

    def top(self, n: int) -> list[ConfigSummary]:
        """The ``n`` best configurations, in ``ranked`` order, without ranking them all."""
        found: list[ConfigSummary] = []
        kept = []
        while self._rank and len(found) < n:
            entry = heapq.heappop(self._rank)
            if self._rank_version.get(entry[2]) == entry[3]:  # else a superseded score
                found.append(self._live[entry[2]])
                kept.append(entry)
        for entry in kept:
            heapq.heappush(self._rank, entry)
        return found

    def _trial_complete(self, trial: str) -> bool:
        """Every seed the trial was given is recorded."""
        return all((trial, s) in self.results for s in self._seeds_of(trial))

    def _objective(self, trial: str) -> float | None:
        """Mean selection score over seeds; no successful seed: twice the worst seen."""
        maes = [
            selection_score(self.results[(trial, s)])
            for s in self.seeds
            if (trial, s) in self.results and self.results[(trial, s)].status == "succeeded"
        ]
        maes = [m for m in maes if m is not None]
        if maes:
            return statistics.fmean(maes)
        return self._worst_mae * 2 if self._worst_mae is not None else 10.0

    def progress(self) -> StudyProgress:
        failed = self._failed
        best = self.top(1)
        per_config = self._first_seeds()
        total = sum(len(self._seeds_of(t)) for t in self.trials)
        stage = self.spec.bayesian_stage
        if self.phase == "random" and stage.enabled:
            total += stage.top_k * stage.trials_per_config * per_config
        elif self.phase == "bayesian":
            total += self._narrow_remaining() * per_config
        if self.racing and not self._racing_done:
            # The final group's contenders get their other seeds at the end.
            full = sum(1 for t in self.trials if len(self._seeds_of(t)) == len(self.seeds))
            total += max(0, self.spec.result.size - full) * (len(self.seeds) - 1)
        return StudyProgress(
            phase=self.phase,
            done=len(self.results) - failed,
            failed=failed,
            running=len(self.running),
            queued=len(self.queue) + len(self.waiting),
            total=total,
            best_trial=best[0].trial if best else None,
            best_mae=best[0].score if best else None,
            best_std=best[0].score_std if best else None,
            best_seeds=len(best[0].scores) if best else None,
        )

    def _narrow_remaining(self) -> int:
        """Configurations the narrow stage may still plan."""
        if self.local:
            if self._local_exhausted:
                return 0
            return max(0, self._narrow_budget() - self._narrow_planned())
        if all(p.search.exhausted for p in self.parents):
            return 0
        return sum(max(0, p.search.budget - p.search.planned) for p in self.parents)

    def _narrow_budget(self) -> int:
        stage = self.spec.bayesian_stage
        return stage.top_k * stage.trials_per_config

    def _narrow_planned(self) -> int:
        return sum(1 for t in self.trials.values() if t.stage == "bayesian")

    def _narrow_exhausted(self) -> bool:
        return self._narrow_remaining() == 0

    def lookup(self, key: str) -> float | None:
        trial = self._by_key.get(key)
        if trial is None or not self._trial_complete(trial):
            return None
        return self._objective(trial)

    # -- the loop ----------------------------------------------------------

    def next_tasks(self, free_slots: int, now: float | None = None) -> list[Task]:
        """Up to ``free_slots`` trainings to start at ``now`` (``time.monotonic()`` if None):
        waiting ones that are due first, then the queue. They count as running."""
        if self.finished or free_slots <= 0:
            return []
        now = time.monotonic() if now is None else now
        out = []
        due = sorted((d, i, t) for i, (d, t) in enumerate(self.waiting.values()) if d <= now)
        for _, _, task in due[:free_slots]:
            del self.waiting[task.id]
            out.append(task)
        if (
            self.phase == "bayesian"
            and len(self.queue) < free_slots - len(out)
            and not self._narrow_exhausted()
        ):
            self._plan_bayesian(free_slots - len(out) - len(self.queue))
        while self.queue and len(out) < free_slots:
            task = self.queue.popleft()
            if task.id in self.results or task.id in self.running or task.id in self.waiting:
                continue  # adopted or recorded meanwhile: never twice
            out.append(task)
        for task in out:
            self.running[task.id] = task
            self.attempts[task.id] = task.attempt
        return out

    def _wait(self, task: Task, due: float) -> None:
        """Hold ``task`` back until ``due`` (it replaces any queued copy of the training)."""
        if any(t.id == task.id for t in self.queue):
            self.queue = deque(t for t in self.queue if t.id != task.id)
        self.waiting[task.id] = (due, task)

    def record(self, result: SeedResult, now: float | None = None) -> Task | None:
        """Take one attempt's outcome at ``now``. A failure the policy retries is not
        recorded: its next attempt waits (``retry_backoff_s``, doubling per attempt) and
        is returned; ``due_at`` says until when."""
        tid = result.key
        task = self.running.pop(tid, None)
        if tid in self.results:
            return None  # a duplicate report (e.g. after a restart): the first one stands
        attempt = task.attempt if task else self.attempts.get(tid, 1)
        if result.status == "failed" and attempt <= self.spec.failure_policy.retries:
            trial = task.trial if task else self.trials[result.trial]
            retry = Task(trial, result.seed, attempt + 1)
            now = time.monotonic() if now is None else now
            self._wait(retry, now + self.retry_backoff_s * 2 ** (attempt - 1))
            return retry
        self.waiting.pop(tid, None)
        self.results[tid] = result
        self.order.append(tid)
        self._absorb(result)
        self._count(result)
        trial = self.trials.get(result.trial)
        random = trial is not None and trial.stage == "random"
        # Complete just now (results are never replaced): one random trial less to wait for.
        if (
            random
            and result.seed in self._seeds_of(result.trial)
            and self._trial_complete(result.trial)
        ):
            self._random_incomplete -= 1
        if result.status == "failed":
            self._check_failures(result.error)
        self._advance()
        return None

    def _check_failures(self, last_error: str | None) -> None:
        """Past the failure budget the study stops scheduling (also when rebuilt from records)."""
        limit = self.spec.failure_policy.max_failed_trainings
        if self._failed > limit:
            error = last_error if last_error is not None else self._last_error
            self.failed_reason = (
                f"{self._failed} trainings failed, more than failurePolicy.maxFailedTrainings "
                f"({limit}); last error: {error}"
            )

    def requeue(self, task: Task) -> None:
        """A training was interrupted, not failed (e.g. Ctrl-C, its worker lost): run it again."""
        self.running.pop(task.id, None)
        if task.id not in self.results:
            self.queue.appendleft(task)

    def postpone(self, tasks: Iterable[Task], until: float) -> None:
        """Handed-out trainings that could not start (the cluster refused or did not answer):
        not an attempt; hand the same attempt out again at ``until``."""
        for task in tasks:
            if self.is_running(task):
                del self.running[task.id]
                self._wait(task, until)

    def adopt(self, tasks: Iterable[Task]) -> None:
        """Trainings found running (a pod whose creation looked failed): wait for them, and
        never hand them out again. An older attempt than the engine's own is ignored."""
        for task in tasks:
            tid = task.id
            if tid in self.results or task.attempt < self.attempts.get(tid, 0):
                continue
            running = self.running.get(tid)
            if running is not None and running.attempt >= task.attempt:
                continue
            waiting = self.waiting.get(tid)
            if waiting is not None and waiting[1].attempt > task.attempt:
                continue  # a retry of it is due later: this pod is of the failed attempt
            self.waiting.pop(tid, None)
            if any(t.id == tid for t in self.queue):
                self.queue = deque(t for t in self.queue if t.id != tid)
            self.running[tid] = task
            self.attempts[tid] = task.attempt

    def _advance(self) -> None:
        if self.failed_reason is not None:
            if not self.running:
                self.phase = "failed"
            self.queue.clear()
            self.waiting.clear()
            return
        if self.phase == "random":
            if self._random_incomplete:
                return
            if not self.spec.bayesian_stage.enabled:
                if not self._race():
                    self.phase = "done"
                return
            if not self._hand_over():
                return
            self.phase = "bayesian"
        if self.phase == "bayesian":
            busy = self.queue or self.running or self.waiting
            if not busy and self._narrow_exhausted() and not self._race():
                self.phase = "done"

    # -- seed racing ---------------------------------------------------------

    def _race(self) -> bool:
        """Give every seed to the best configuration that lacks some, one at a time.

        The final group is the ``result.size`` best by mean selection score; the
        best of them with only its first seed gets its other seeds, which may push
        it out and bring the next one in. Repeated until the whole final group has
        every seed. One configuration per round keeps the decision a function of
        what is recorded, so a restarted study races the same ones. Returns whether
        trainings were queued.
        """
        if not self.racing:
            self._racing_done = True
            return False
        for s in self.top(self.spec.result.size):
            if len(self._seeds_of(s.trial)) == len(self.seeds):
                continue
            trial = self.trials[s.trial]
            self.assigned[s.trial] = len(self.seeds)
            for seed in self.seeds:
                tid = (s.trial, seed)
                if tid not in self.results and tid not in self.running:
                    self.queue.append(Task(trial, seed, self.attempts.get(tid, 0) + 1))
            if trial.stage == "random" and not self._trial_complete(s.trial):
                self._random_incomplete += 1
            return True
        self._racing_done = True
        return False

    # -- the Bayesian stage ------------------------------------------------

    def handed_over(self) -> list[ConfigSummary]:
        """The random stage's configurations the Bayesian stage searches around.

        Under seed racing they are ranked on the first seed only, what every random
        configuration has when the stage ends: seeds raced later (the final group's)
        must not change the hand-over of a restarted study.
        """
        stage = self.spec.bayesian_stage
        first = self.seeds[: self._first_seeds()]
        rs = [r for r in self.recorded() if r.stage == "random" and r.seed in first]
        best = ranked(summarise(rs).values())
        if stage.selection == "overall":
            return best[: stage.top_k]
        chosen: list[ConfigSummary] = []
        depths: set[int] = set()
        for s in best:
            if s.config["hidden_layers"] not in depths:
                chosen.append(s)
                depths.add(s.config["hidden_layers"])
        chosen.sort(key=lambda s: (s.score, s.score_std, s.trial))
        chosen = chosen[: stage.top_k]
        for s in best:
            if len(chosen) >= stage.top_k:
                break
            if s not in chosen:
                chosen.append(s)
        return chosen

    def _hand_over(self) -> bool:
        parents = self.handed_over()
        if not parents:
            self.failed_reason = "no configuration of the random stage trained successfully"
            self.phase = "failed"
            return False
        stage = self.spec.bayesian_stage
        self.handed = [p.trial for p in parents]
        if self.local:
            self._queue_missing("bayesian")  # after a restart: what was planned before
            return True
        for j, s in enumerate(parents):
            space = narrow(s.config, self.spec.search_space, stage)
            from hpo.engine.search.gaussian import ParentSearch

            search = ParentSearch(
                space,
                budget=stage.trials_per_config,
                estimator=stage.estimator,
                initial_points=stage.initial_points,
                random_state=self.spec.random_stage.seed * 1009 + j,
            )
            self.parents.append(_Parent(s, space, search))
        self._rebuild_bayesian()
        return True

    def _rebuild_bayesian(self) -> None:
        """Count what each optimiser planned already (after a restart); what it was told
        needs no rebuilding: every ask reads the records afresh (``hpo.engine.search.gaussian``)."""
        by_parent = {p.summary.trial: p for p in self.parents}
        bayes = sorted(
            (t for t in self.trials.values() if t.stage == "bayesian"), key=lambda t: t.id
        )
        for t in bayes:
            p = by_parent.get(t.parent or "")
            if p is None:
                self.notes.append(f"trial {t.id} has an unknown parent {t.parent}; kept as is")
                continue
            p.trials.append(t.id)
            p.search.planned += 1
        self._queue_missing("bayesian")

    def _observed(self) -> list[tuple[Config, float]]:
        """Every configuration with all its seeds recorded, and its objective."""
        out = []
        for t in self.trials.values():
            if self._trial_complete(t.id):
                objective = self._objective(t.id)
                assert objective is not None
                out.append((t.config, objective))
        return out

    def _plan_local(self, configs_needed: int) -> None:
        """Untried neighbours of the best configurations so far (``hpo.engine.search.local``)."""
        n = min(configs_needed, self._narrow_budget() - self._narrow_planned())
        if n <= 0:
            return
        best = [
            (s.trial, s.config) for s in self.top(len(self._live)) if self._trial_complete(s.trial)
        ]
        rng = local.study_rng(self.spec.random_stage.seed, self._narrow_planned())
        predict = None
        if self.spec.bayesian_stage.surrogate:
            seen = [s for s in self.top(len(self._live))]
            model = Surrogate([s.config for s in seen], [s.score or 0.0 for s in seen])
            predict = model.predict
        chosen = local.propose(
            n,
            best,
            lambda key: key in self._by_key,
            self.spec.search_space,
            self.spec.bayesian_stage,
            rng,
            predict,
        )
        # Every neighbour of every result is known, unless a training is still to come
        # (a retry handed out in this very call is in neither running nor waiting).
        idle = not chosen and not self.running and not self.waiting and not self.queue
        if idle and all(self._trial_complete(t) for t in self.trials):
            self._local_exhausted = True
        for parent, config in chosen:
            trial = Trial(
                bayes_trial_id(self._next_bayes), "bayesian", config, config_key(config), parent
            )
            self._add_trial(trial)
            for seed in self._seeds_of(trial.id):
                self.queue.append(Task(trial, seed))

    def _plan_bayesian(self, slots: int) -> None:
        """Ask the optimisers for enough configurations to fill ``slots`` trainings."""
        n_seeds = self._first_seeds()
        configs_needed = -(-slots // n_seeds)
        if self.local:
            self._plan_local(configs_needed)
            self._advance()
            return
        active = [p for p in self.parents if not p.search.exhausted]
        if not active:
            return
        share, extra = divmod(configs_needed, len(active))
        observed = self._observed()
        for i, p in enumerate(active):
            n = share + (1 if i < extra else 0)
            if n == 0:
                continue
            pending = sum(1 for t in p.trials if not self._trial_complete(t))
            for config in p.search.ask(n, observed, lambda key: key in self._by_key, pending):
                if config_key(config) in self._by_key:
                    continue  # planned by another parent's search meanwhile: not twice
                trial = Trial(
                    bayes_trial_id(self._next_bayes),
                    "bayesian",
                    config,
                    config_key(config),
                    p.summary.trial,
                )
                self._add_trial(trial)
                p.trials.append(trial.id)
                for seed in self._seeds_of(trial.id):
                    self.queue.append(Task(trial, seed))
        self._advance()

    def describe(self) -> dict[str, Any]:
        """Numbers for the end-of-run summary."""
        prog = self.progress()
        return {
            "phase": prog.phase,
            "trainings": prog.done + prog.failed,
            "failed": prog.failed,
            "random_configs": sum(
                1 for t in self.trials.values() if t.stage == "random" and t.id[0] != "w"
            ),
            "warm_configs": sum(1 for t in self.trials.values() if t.id[0] == "w"),
            "warm_trainings": len(self.warm.results),
            "bayesian_configs": sum(1 for t in self.trials.values() if t.stage == "bayesian"),
            "handed_over": list(self.handed),
            "notes": list(self.notes),
            "failed_reason": self.failed_reason,
        }
