"""The study's brain: from what is recorded and what is running, decide what to train next.

Pure: no TensorFlow, kopf or kubernetes. The local runner, the operator and
the benchmarks drive the very same engine (through ``hpo.session``); they only
differ in how a ``Task`` is executed. The engine also decides retries and when
they are due: times are the caller's ``now`` (monotonic seconds), so a runner
asks ``next_tasks(n, now)`` and never schedules anything itself. Nothing outside
the engine changes its state. A training is ``(trial id, seed)``; a trial is one
configuration; what the narrow stage tries is a ``NarrowSearch`` strategy's.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

from hpo.engine.budget import (
    budget_of,
    first_seeds,
    planned_configurations,
    reserve,
    stage_sizes,
    warm_extra,
)
from hpo.engine.racing import BudgetedRacing
from hpo.engine.ranking import Ranking, choose_parents
from hpo.engine.search import NarrowSearch, Records, SearchFactory, narrow_search
from hpo.engine.trials import (
    TRIAL_ID,
    HistoryConflict,
    Phase,
    StudyProgress,
    Task,
    TrainingId,
    Trial,
    WarmStart,
    narrow_trial_id,
    random_trial_id,
)
from hpo.study.contract import NARROW_STAGE, RANDOM_STAGE, SeedResult, Stage
from hpo.study.space import Config, config_key, normalise, sample_unique
from hpo.study.spec import StudySpec
from hpo.study.summary import ConfigSummary, ranked, selection_score, summarise


class Engine(BudgetedRacing):
    """State machine of one study: random stage, hand-over, narrow stage, done.

    What every step asks (progress, the best configurations, the failure count)
    is kept up to date result by result, so a step costs the same at the 5,000th
    training as at the 10th.

    Trainings charged plus running never exceed the budget (``hpo.engine.racing``).
    Work is handed out whenever a slot is free and work can exist: the narrow stage
    starts from the best so far once the random stage has nothing left to hand out,
    and racing gives several contenders their seeds at once.
    """

    def __init__(
        self,
        spec: StudySpec,
        history: Iterable[SeedResult] = (),
        in_flight: Iterable[Task] = (),
        *,
        retry_backoff_s: float = 0.0,
        warm: WarmStart | None = None,
        search: SearchFactory = narrow_search,
    ) -> None:
        self.spec = spec
        self.sizes = stage_sizes(spec)
        #: Trainings the study may be charged (``charged`` + running never exceed it).
        self.budget = budget_of(spec)
        self._first = first_seeds(spec)
        # The final group's seeds, within what the random stage leaves of the budget.
        self._reserve = min(reserve(spec), max(0, self.budget - self.sizes.random * self._first))
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
        #: First seeds of the random and narrow stages' configurations, in the order planned.
        self.queue: deque[Task] = deque()
        #: Raced seeds (the final group's contenders'): handed out before ``queue``.
        self.race_queue: deque[Task] = deque()
        #: Failed attempts that were retried (charged, though not results).
        self._retried = 0
        #: The failed result of each training whose retry waits: its result if never run.
        self._retry_of: dict[TrainingId, SeedResult] = {}
        #: Results a warm start brought in (in ``results``, never charged).
        self._warm_n = 0
        #: Trials racing gave every seed.
        self._raced = 0
        #: Trainings interrupted by the infrastructure (requeued, postponed): not charged.
        self.interrupted = 0
        #: Trainings not to hand out before a time: retries (backoff) and postponed tasks.
        self.waiting: dict[TrainingId, tuple[float, Task]] = {}
        #: The narrow stage's strategy, chosen by the spec's method at the hand-over.
        self._make_search = search
        self.search: NarrowSearch | None = None
        self._next_narrow = 0
        self._by_key: dict[str, str] = {}
        # Kept up to date by _absorb, one result at a time.
        self._ranking = Ranking()
        self._failed = 0
        self._last_error: str | None = None
        self._worst_mae: float | None = None
        #: How many of ``seeds`` each trial is given (a prefix): 1 at first under seed
        #: racing, all of them for the final group's contenders.
        self.assigned: dict[str, int] = {}
        self.racing = spec.racing
        #: Trials the narrow stage started from (the random stage's best at hand-over).
        self.parents: list[str] = []

        self._plan_random_stage()
        self._rebuild(list(history), in_flight)
        if spec.budget.trainings is None:  # a warm start's missing seeds are in the plan
            self.budget += warm_extra({r.key for r in self.warm.results}, self._seeds_of)
        self._queue_missing(RANDOM_STAGE)
        self.phase: Phase = RANDOM_STAGE
        self._check_failures(None)
        self._advance()

    # -- building up state -------------------------------------------------

    def _plan_random_stage(self) -> None:
        """The random stage's trials: a warm start's configurations first, then sampled ones
        (never one a warm start brought in with results)."""
        budget = self.sizes.random
        known = {r.config_key for r in self.warm.results}
        first: list[Config] = []
        for config in self.warm.first:
            key = config_key(config)
            if key not in known and len(first) < budget:
                known.add(key)
                first.append(normalise(config))
        plan = sample_unique(
            self.spec.search_space,
            budget - len(first),
            self.spec.random_stage.seed,
            frozenset(known),
        )
        if plan.shortfall:
            self.notes.append(plan.shortfall)
        for i, config in enumerate([*first, *plan.configs]):
            self._add_trial(
                Trial(random_trial_id(i), RANDOM_STAGE, normalise(config), config_key(config))
            )

    def _rebuild(self, history: list[SeedResult], in_flight: Iterable[Task]) -> None:
        """Take what was recorded and what is still running, as after a restart."""
        # A warm start's results come first, as if recorded before anything else; the
        # study's own records of the same trainings (their copies) are the same results.
        own = {r.key for r in history}
        warm = {r.key for r in self.warm.results}
        history = [*(r for r in self.warm.results if r.key not in own), *history]
        for r in history:
            self._adopt_history_trial(r)
        for r in history:
            if r.key not in self.results:
                self._warm_n += r.key in warm
            self.results[r.key] = r
            self.order.append(r.key)
        for tid in self.order:
            self._ranking.add(self.results[tid])
        for task in in_flight:
            if task.trial.id not in self.trials:
                self._add_trial(task.trial)
            self.running[task.id] = task
            self.attempts[task.id] = max(self.attempts.get(task.id, 0), task.attempt)
        # A trial keeps the seeds it was given before: a seed past its first ones is
        # recorded or running only if it was raced, and a raced trial gets them all.
        for trial, seed in [*self.results, *self.running]:
            if self._is_race_seed(seed) and trial not in self.assigned:
                self.assigned[trial] = len(self.seeds)
                self._raced += 1
        self._recount_retried()
        for r in self.results.values():
            self._count(r)

    def _first_seeds(self) -> int:
        return self._first

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
        m = TRIAL_ID.match(trial.id)
        if m and m.group(1) == "b":
            self._next_narrow = max(self._next_narrow, int(m.group(2)) + 1)

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
        if r.stage == RANDOM_STAGE:
            # A budget was lowered: keep what was trained, it is recorded anyway.
            self._add_trial(Trial(r.trial, RANDOM_STAGE, normalise(r.config), r.config_key))
            return
        self._add_trial(Trial(r.trial, NARROW_STAGE, normalise(r.config), r.config_key, r.parent))

    def _queue_missing(self, stage: Stage) -> None:
        for trial in self.trials.values():
            if trial.stage != stage:
                continue
            for seed in self._seeds_of(trial.id):
                tid = (trial.id, seed)
                if tid not in self.results and tid not in self.running:
                    self._enqueue(Task(trial, seed, self.attempts.get(tid, 0) + 1))

    # -- queries -------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "failed")

    def with_spec(self, spec: StudySpec, *, retry_backoff_s: float | None = None) -> Engine:
        """This study under an edited spec (new budgets, policy): same results, same
        trainings in flight, the attempts already used still count and a waiting retry
        keeps its due time. ``retry_backoff_s`` None keeps this engine's backoff."""
        backoff = self.retry_backoff_s if retry_backoff_s is None else retry_backoff_s
        new = Engine(
            spec,
            self.recorded(),
            self.running.values(),
            retry_backoff_s=backoff,
            warm=self.warm,
            search=self._make_search,
        )
        new.resume_attempts(
            {tid: (n, self.trials[tid[0]].config_key) for tid, n in self.attempts.items()}
        )
        for due, task in self.waiting.values():
            if task.id not in new.results and task.id not in new.running:
                new._wait(task, due)
        new._retry_of = {k: r for k, r in self._retry_of.items() if k in new.waiting}
        new._retried, new.interrupted = self._retried, self.interrupted
        new._advance()  # a lower budget may end the study, a higher one resume it
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
        return self._ranking.top(n)

    def _trial_complete(self, trial: str) -> bool:
        """Every seed the trial was given is recorded."""
        return all((trial, s) in self.results for s in self._seeds_of(trial))

    def _objective(self, trial: str) -> float:
        """Mean selection score over seeds; no successful seed: twice the worst seen."""
        maes = [
            score
            for s in self.seeds
            if (trial, s) in self.results and self.results[(trial, s)].status == "succeeded"
            if (score := selection_score(self.results[(trial, s)])) is not None
        ]
        if maes:
            return statistics.fmean(maes)
        return self._worst_mae * 2 if self._worst_mae is not None else 10.0

    def progress(self) -> StudyProgress:
        failed = self._failed
        best = self.final_group(1)
        per_config = self._first_seeds()
        total = sum(len(self._seeds_of(t)) for t in self.trials)
        if self.phase == RANDOM_STAGE:
            total += planned_configurations(self.spec, NARROW_STAGE) * per_config
        elif self.phase == NARROW_STAGE:
            total += self._narrow_remaining() * per_config
        if self.racing and not self.finished:
            # The final group's contenders get their other seeds at the end.
            total += self._reserve_left() - self._race_pending()
        return StudyProgress(
            phase=self.phase,
            done=len(self.results) - failed,
            failed=failed,
            running=len(self.running),
            queued=len(self.queue) + len(self.race_queue) + len(self.waiting),
            total=min(total, self.budget + self._warm_n),
            best_trial=best[0].trial if best else None,
            best_mae=best[0].score if best else None,
            best_std=best[0].score_std if best else None,
            best_seeds=len(best[0].scores) if best else None,
            budget=self.budget,
            charged=self.charged,
        )

    def _narrow_remaining(self) -> int:
        """Configurations the narrow stage may still plan (its strategy says)."""
        assert self.search is not None, "the narrow stage has not begun"
        return self.search.remaining(self._records())

    def _narrow_exhausted(self) -> bool:
        return self._narrow_remaining() == 0

    # -- the loop ----------------------------------------------------------

    def next_tasks(self, free_slots: int, now: float | None = None) -> list[Task]:
        """Up to ``free_slots`` trainings to start at ``now`` (``time.monotonic()`` if None):
        waiting ones that are due first, then raced seeds, then the stages' queue, then
        new narrow-stage configurations, then more contenders raced. They count as
        running; none passes the budget."""
        if self.finished or free_slots <= 0:
            return []
        now = time.monotonic() if now is None else now
        out: list[Task] = []
        due = sorted((d, i, t) for i, (d, t) in enumerate(self.waiting.values()) if d <= now)
        for _, _, task in due:
            if len(out) < free_slots and self._affordable(task):
                del self.waiting[task.id]
                self._hand(task, out)
        while len(out) < free_slots and not self.finished:
            queued = self._pop(self.race_queue) or self._pop(self.queue)
            if queued is not None:
                self._hand(queued, out)
                continue
            self._advance()  # the narrow stage may begin (and queue or race trainings)
            if self._pop_peek(self.race_queue) or self._pop_peek(self.queue):
                continue
            if self.phase == NARROW_STAGE and self._plan_narrow(free_slots - len(out)):
                continue
            if not (self._exploration_over() and self._race(free_slots - len(out))):
                break
        if not out:
            self._advance()  # the strategy found itself exhausted: the study may be done
        return out

    def _hand(self, task: Task, out: list[Task]) -> None:
        self.running[task.id] = task
        self.attempts[task.id] = task.attempt
        out.append(task)

    def _wait(self, task: Task, due: float) -> None:
        """Hold ``task`` back until ``due`` (it replaces any queued copy of the training)."""
        for queue in (self.queue, self.race_queue):
            if any(t.id == task.id for t in queue):
                kept = [t for t in queue if t.id != task.id]
                queue.clear()
                queue.extend(kept)
        self.waiting[task.id] = (due, task)

    def record(self, result: SeedResult, now: float | None = None) -> Task | None:
        """Take one attempt's outcome at ``now``. A failure the policy retries is not
        recorded (though charged): its next attempt waits (``retry_backoff_s``, doubling per
        attempt) and is returned; ``due_at`` says until when."""
        tid = result.key
        task = self.running.pop(tid, None)
        if tid in self.results:
            return None  # a duplicate report (e.g. after a restart): the first one stands
        attempt = task.attempt if task else self.attempts.get(tid, 1)
        # A retry only while budget.trainings has room for it beside this failed attempt.
        room = self.budget - self.charged - 1 - len(self.running) if self._charge_retries else 1
        if result.status == "failed" and attempt <= self.spec.failure_policy.retries and room > 0:
            trial = task.trial if task else self.trials[result.trial]
            retry = Task(trial, result.seed, attempt + 1)
            now = time.monotonic() if now is None else now
            self._retried += 1
            self._retry_of[tid] = result
            self._wait(retry, now + self.retry_backoff_s * 2 ** (attempt - 1))
            return retry
        self.waiting.pop(tid, None)
        self._keep(result)
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
        """A training was interrupted, not failed (e.g. Ctrl-C, its worker lost): run it
        again; not charged, counted in ``interrupted``."""
        if self.running.pop(task.id, None) is not None:
            self.interrupted += 1
        if task.id not in self.results and task.id not in self.waiting:
            self._enqueue(task, first=True)

    def postpone(self, tasks: Iterable[Task], until: float) -> None:
        """Handed-out trainings that could not start (the cluster refused or did not answer):
        not an attempt, not charged; hand the same attempt out again at ``until``."""
        for task in tasks:
            if self.is_running(task):
                del self.running[task.id]
                self.interrupted += 1
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
            for queue in (self.queue, self.race_queue):
                if any(t.id == tid for t in queue):
                    kept = [t for t in queue if t.id != tid]
                    queue.clear()
                    queue.extend(kept)
            self.running[tid] = task
            self.attempts[tid] = task.attempt

    def _advance(self) -> None:
        """Change stage when due: the narrow stage begins, the study ends."""
        if self.failed_reason is not None:
            if not self.running:
                self.phase = "failed"
            self.queue.clear()
            self.race_queue.clear()
            self._drop_waiting()
            return
        if self.finished:
            return
        if not self.running and self.charged >= self.budget:
            self._finish()  # before the hand-over: a waiting retry could not run anyway
            return
        if self.phase == RANDOM_STAGE and self.spec.narrow_stage.enabled:
            if not self._may_begin_narrow() or not self._begin_narrow_stage():
                return
            self.phase = NARROW_STAGE
        if self.running:
            return
        if self.charged >= self.budget:
            self._finish()
            return
        if self.waiting or self._pop_peek(self.race_queue) or self._pop_peek(self.queue):
            return
        if self._exploration_over() and not self._race(1):
            self._finish()

    # -- the narrow stage ----------------------------------------------------

    def narrow_parents(self) -> list[ConfigSummary]:
        """The random stage's configurations the narrow stage searches around.

        Under seed racing they are ranked on the first seed only, what every random
        configuration has when the stage ends: seeds raced later (the final group's)
        must not change the hand-over of a restarted study.
        """
        first = self.seeds[: self._first_seeds()]
        rs = [r for r in self.recorded() if r.stage == RANDOM_STAGE and r.seed in first]
        return choose_parents(ranked(summarise(rs).values()), self.spec.narrow_stage)

    def _begin_narrow_stage(self) -> bool:
        parents = self.narrow_parents()
        if not parents:
            if self.running:
                return False  # the random stage's last trainings may yet succeed
            self.failed_reason = "no configuration of the random stage trained successfully"
            self.phase = "failed"
            return False
        self.parents = [p.trial for p in parents]
        self.search = self._make_search(self.spec)
        self.notes += self.search.start(parents, self._records())
        self._queue_missing(NARROW_STAGE)  # after a restart: what was planned before
        return True

    def _records(self) -> Records:
        """The study as the narrow stage's strategy sees it (read-only)."""
        return Records(
            trials=MappingProxyType(self.trials),
            known=MappingProxyType(self._by_key),
            ranked=lambda: self.top(len(self._ranking)),
            complete=self._trial_complete,
            objective=self._objective,
            in_progress=len(self.queue)
            + len(self.race_queue)
            + len(self.running)
            + len(self.waiting),
        )

    def _plan_narrow(self, slots: int) -> bool:
        """Ask the strategy for enough configurations to fill ``slots`` trainings, as many
        as the budget allows. Returns whether trainings were queued."""
        assert self.search is not None, "the narrow stage has not begun"
        configs = min(-(-slots // self._first), self._explore_room() // self._first)
        if configs <= 0 or self._narrow_exhausted():
            return False
        queued = False
        for proposal in self.search.propose(configs, self._records()):
            key = config_key(proposal.config)
            if key in self._by_key:
                continue  # a strategy must not propose a trial again: never twice
            trial = Trial(
                narrow_trial_id(self._next_narrow),
                NARROW_STAGE,
                proposal.config,
                key,
                proposal.parent,
            )
            self._add_trial(trial)
            for seed in self._seeds_of(trial.id):
                self.queue.append(Task(trial, seed))
                queued = True
        return queued

    def describe(self) -> dict[str, Any]:
        """Numbers for the end-of-run summary (``hpo.engine.describe``)."""
        from hpo.engine.describe import describe

        return describe(self)
