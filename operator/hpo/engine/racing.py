"""The budget and seed racing, as the engine keeps them: what is charged, what a training
may be handed out against, and which contenders get their other seeds.

Part of ``Engine`` (a base class, so that each module stays readable): the state it
reads is the engine's, declared here for the type checker.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from hpo.engine.ranking import Ranking
from hpo.engine.trials import Phase, Task, TrainingId, Trial
from hpo.study.contract import NARROW_STAGE, RANDOM_STAGE, SeedResult
from hpo.study.spec import StudySpec
from hpo.study.summary import ConfigSummary, final_ranked

#: The narrow stage may begin before the random stage's last trainings are recorded (every
#: slot busy), once this share of its configurations is: parents chosen from the first
#: few to finish would favour whatever trains fast.
HANDOVER_FRACTION = 0.5


class BudgetedRacing:
    """Budget accounting and seed racing over the engine's queues."""

    spec: StudySpec
    seeds: list[int]
    budget: int
    racing: bool
    phase: Phase
    notes: list[str]
    trials: dict[str, Trial]
    results: dict[TrainingId, SeedResult]
    running: dict[TrainingId, Task]
    waiting: dict[TrainingId, tuple[float, Task]]
    attempts: dict[TrainingId, int]
    assigned: dict[str, int]
    queue: deque[Task]
    race_queue: deque[Task]
    _first: int
    _reserve: int
    _raced: int
    _retried: int
    _retry_of: dict[TrainingId, SeedResult]
    order: list[TrainingId]
    _ranking: Ranking
    _warm_n: int
    _next_narrow: int

    def top(self, n: int) -> list[ConfigSummary]:
        raise NotImplementedError

    def final_group(self, n: int) -> list[ConfigSummary]:
        """The ``n`` configurations the study hands back, in order (``final_ranked``, as
        ``best.json``): under seed racing, one-seed configurations that lost to the raced
        contenders on the first seed come after them. ``top`` is the order racing reads.
        Ranks those with several seeds and ``top(n)``, not every one: the one-seed
        configurations among the first ``n`` are in ``top(n)``."""
        if not self.racing:
            return self.top(n)
        live = self._ranking.live
        several = [live[t] for t in self._ranking.several]
        pool = {s.trial: s for s in [*several, *self.top(n)]}
        return final_ranked(pool.values(), racing=True)[:n]

    def _count(self, r: SeedResult) -> None:
        raise NotImplementedError

    def _wait(self, task: Task, due: float) -> None:
        raise NotImplementedError

    def _adopt_history_trial(self, r: SeedResult) -> None:
        raise NotImplementedError

    def _advance(self) -> None:
        raise NotImplementedError

    def _keep(self, r: SeedResult) -> None:
        """``r`` is its training's result."""
        self.results[r.key] = r
        self.order.append(r.key)
        self._ranking.add(r)
        self._count(r)

    def _seeds_of(self, trial: str) -> list[int]:
        raise NotImplementedError

    def _narrow_exhausted(self) -> bool:
        raise NotImplementedError

    def _is_race_seed(self, seed: int) -> bool:
        """A seed only racing gives (past a configuration's first ones)."""
        return seed in self.seeds and self.seeds.index(seed) >= self._first

    def _enqueue(self, task: Task, *, first: bool = False) -> None:
        """Into the race queue (a raced seed) or the stages' queue; ``first``: at its head."""
        queue = self.race_queue if self._is_race_seed(task.seed) else self.queue
        if first:
            queue.appendleft(task)
        else:
            queue.append(task)

    @property
    def _charge_retries(self) -> bool:
        """Retries of failures are charged to a ``budget.trainings`` the user set; the
        stage sizes' implicit budget counts trainings, and retries are stated beside it
        (a study without a budget must still get its planned trainings after a failure)."""
        return self.spec.budget.trainings is not None

    @property
    def charged(self) -> int:
        """Trainings charged to the budget: attempts that ended with a result (a warm
        start's results are not this study's; retried failures only under ``budget.trainings``)."""
        return len(self.results) - self._warm_n + (self._retried if self._charge_retries else 0)

    def _race_pending(self) -> int:
        """Raced seeds not handed out yet."""
        waiting = sum(1 for _, t in self.waiting.values() if self._is_race_seed(t.seed))
        return len(self.race_queue) + waiting

    def _reserve_left(self) -> int:
        """Trainings the final group may still need: its contenders' seeds not raced yet."""
        if not self.racing:
            return 0
        per = len(self.seeds) - self._first
        return max(0, self._reserve - self._raced * per) + self._race_pending()

    def _affordable(self, task: Task) -> bool:
        """Whether handing ``task`` out now keeps the budget: a raced seed or an attempt
        already started (a retry, a postponed one) needs one training of room; a stage's
        new training leaves the final group's reserve too."""
        room = self.budget - self.charged - len(self.running)
        if self._is_race_seed(task.seed) or task.attempt > 1 or task.id in self.attempts:
            return room >= 1
        return room - self._reserve_left() >= 1

    def _explore_room(self) -> int:
        """New stage trainings the budget still allows beside everything committed."""
        queued = sum(1 for t in self.queue if not self._handled(t))
        return (
            self.budget
            - self.charged
            - len(self.running)
            - len(self.waiting)
            - queued
            - self._reserve_left()
            + sum(1 for _, t in self.waiting.values() if self._is_race_seed(t.seed))
        )

    def _handled(self, task: Task) -> bool:
        """Recorded, running or waiting meanwhile (adopted, retried): never twice."""
        tid = task.id
        return tid in self.results or tid in self.running or tid in self.waiting

    def _pop(self, queue: deque[Task]) -> Task | None:
        """The queue's first task if the budget allows it now (stale ones dropped)."""
        return queue.popleft() if self._pop_peek(queue) else None

    def _pop_peek(self, queue: deque[Task]) -> bool:
        """Whether ``queue``'s first task could be handed out now (stale ones dropped)."""
        while queue and self._handled(queue[0]):
            queue.popleft()
        return bool(queue) and self._affordable(queue[0])

    def _finish(self) -> None:
        """The study is done; say what the budget left out."""
        left = len(self.queue) + len(self.race_queue) + len(self.waiting)
        if left and self.charged >= self.budget:
            self.notes.append(
                f"the budget of {self.budget} trainings is spent; {left} planned trainings "
                "were not run"
            )
        if self.racing:
            short = [
                s.trial
                for s in self.final_group(self.spec.result.size)
                if len(self._seeds_of(s.trial)) < len(self.seeds)
            ]
            if short:
                self.notes.append(
                    f"the budget ended before the final group had every seed: "
                    f"{', '.join(short)} were trained with fewer than {len(self.seeds)}; "
                    "the final group is formed from what was trained"
                )
        self.queue.clear()
        self.race_queue.clear()
        self._drop_waiting()
        self.phase = "done"

    def _drop_waiting(self) -> None:
        """Nothing waiting will run: a retry's failed attempt becomes the training's result
        (charged still, now as a result), so no failure is lost."""
        for tid, (_, task) in list(self.waiting.items()):
            failed = self._retry_of.get(tid)
            if failed is not None and tid not in self.results and task.attempt > 1:
                self._retried -= 1
                self._keep(failed)
        self.waiting.clear()
        self._retry_of.clear()

    def _race(self, slots: int) -> bool:
        """Give every seed to the best configurations that lack some, enough of them to
        fill ``slots`` trainings, as the budget allows.

        The final group is the ``result.size`` best by mean selection score; the best
        of them with only its first seeds get their other seeds, which may push them out
        and bring the next ones in, until the whole final group has every seed or the
        budget is spent. A contender is raced only if the budget can give it every seed
        (with little left, fewer are raced), and once (raced out and back in, it has them
        all already: ties do not cascade past the budget). In the order of the ranking,
        so a restarted study races the same ones. Returns whether trainings were queued.
        """
        if not self.racing:
            return False
        queued = False
        room = self.budget - self.charged - len(self.running) - self._race_pending()
        for s in self.top(self.spec.result.size):
            if len(self.race_queue) >= slots:
                break
            if len(self._seeds_of(s.trial)) == len(self.seeds):
                continue
            trial = self.trials[s.trial]
            missing = [
                Task(trial, seed, self.attempts.get((s.trial, seed), 0) + 1)
                for seed in self.seeds
                if (s.trial, seed) not in self.results and (s.trial, seed) not in self.running
            ]
            if len(missing) > room:
                break
            room -= len(missing)
            self.assigned[s.trial] = len(self.seeds)
            self._raced += 1
            for task in missing:
                self._enqueue(task)
            queued = queued or bool(missing)
        return queued

    def _recount_retried(self) -> None:
        """Failed attempts known to have been retried: a running attempt ``k`` or a result of
        attempt ``k`` had ``k - 1`` before it, a training waiting for attempt ``k + 1`` had
        ``k``. (A restart knows attempts only from what ``resume_attempts`` is given.)"""
        self._retried = sum(
            n - (1 if tid in self.running or tid in self.results else 0)
            for tid, n in self.attempts.items()
        )

    def resume_attempts(
        self, used: dict[TrainingId, tuple[int, str]], failed: Iterable[SeedResult] = ()
    ) -> None:
        """Count attempts used up before (``used[tid] = (attempt, config key)``; of a recorded
        training: its result's attempt), so that the next attempt of each training has the
        next number, the policy holds and retries stay charged. A ``failed`` attempt's
        training waits for its retry as before the restart: if the budget ends first, that
        failure is its result (``_drop_waiting``), not lost."""
        failed = list(failed)
        for r in failed:  # a narrow-stage trial known only from a failed attempt
            if r.trial not in self.trials:
                self._adopt_history_trial(r)
        for tid, (attempt, key) in used.items():
            trial = self.trials.get(tid[0])
            if trial is not None and trial.config_key == key and tid not in self.running:
                self.attempts[tid] = max(self.attempts.get(tid, 0), attempt)
        for r in failed:
            if r.key in self.attempts and r.key not in self.results and r.key not in self.running:
                self._retry_of[r.key] = r
                self._wait(Task(self.trials[r.trial], r.seed, self.attempts[r.key] + 1), 0.0)
                if self._is_race_seed(r.seed) and r.trial not in self.assigned:
                    self.assigned[r.trial] = len(self.seeds)  # it was raced
                    self._raced += 1
        for queue in (self.queue, self.race_queue):
            again = [
                Task(t.trial, t.seed, max(t.attempt, self.attempts.get(t.id, 0) + 1)) for t in queue
            ]
            queue.clear()
            queue.extend(again)
        self._recount_retried()
        self._advance()  # as the constructor did, now with the attempts charged

    def _may_begin_narrow(self) -> bool:
        """Whether the narrow stage may begin: it had begun before a restart, or the random
        stage has nothing left to hand out and either nothing of it runs or
        ``HANDOVER_FRACTION`` of its configurations have their first seeds recorded."""
        if self._next_narrow > 0:
            return True
        if any(t.trial.stage == RANDOM_STAGE for _, t in self.waiting.values()):
            return False
        if self._pop_peek(self.queue):
            return False
        if not any(t.trial.stage == RANDOM_STAGE for t in self.running.values()):
            return True
        first = self.seeds[: self._first]
        stage = [t for t in self.trials.values() if t.stage == RANDOM_STAGE]
        recorded = sum(1 for t in stage if all((t.id, s) in self.results for s in first))
        return recorded >= HANDOVER_FRACTION * len(stage)

    def _exploration_over(self) -> bool:
        """No new configuration will be tried: only racing may add trainings now."""
        if self.waiting or self._pop_peek(self.queue):
            return False
        if self.phase == NARROW_STAGE:
            return self._explore_room() < self._first or self._narrow_exhausted()
        return not self.spec.narrow_stage.enabled
