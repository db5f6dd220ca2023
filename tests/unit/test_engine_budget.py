"""The budget a study keeps (``spec.budget.trainings``): at no moment are the trainings
charged plus those running more than it, with retries, ties, several slots, spec edits
and restarts; and the stages are sized from it by the default rule."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.engine import objective
from helpers.study import study_dict
from hpo.engine import Engine, Task, cost_line, stage_sizes
from hpo.study.contract import SeedResult
from hpo.study.spec import SpecError, StudySpec, parse_study


def _spec(budget: int | None, **kw: Any) -> StudySpec:
    base: dict[str, Any] = {
        "randomStage": {"seed": 3},
        "training": {"seedsPerConfig": 3},
        "bayesianStage": {"topK": 1},
        "failurePolicy": {"retries": 1, "maxFailedTrainings": 10_000},
    }
    if budget is not None:
        base["budget"] = {"trainings": budget}
    base.update(kw)
    return parse_study(study_dict(**base)).spec


class Run:
    """Drives an engine, checking the budget and "never twice" after every step."""

    def __init__(self, engine: Engine, *, fail: float = 0.0, tie: bool = False, seed: int = 0):
        self.engine = engine
        self.rng = random.Random(seed)
        self.fail, self.tie = fail, tie
        self.running: list[Task] = []
        self.recorded: set[tuple[str, int]] = set()
        self.now = 0.0

    def check(self) -> None:
        e = self.engine
        assert e.charged + len(e.running) <= e.budget, (e.charged, len(e.running), e.budget)
        keys = [t.config_key for t in e.trials.values()]
        assert len(keys) == len(set(keys)), "a configuration planned twice"

    def result(self, task: Task) -> SeedResult:
        if self.rng.random() < self.fail:
            return task.failed("t", "boom")
        mae = 0.5 if self.tie else objective(task.trial.config) + task.seed * 1e-3
        return task.succeeded("t", mae, mae)

    def step(self, slots: int) -> bool:
        """One hand-out and one result; False once the engine is finished."""
        if self.engine.finished:
            return False
        got = self.engine.next_tasks(slots - len(self.running), self.now)
        self.check()
        self.running += got
        if not self.running:
            due = self.engine.next_due()
            assert (due is not None and not self.engine.finished) or self.engine.finished, (
                "engine stalled: nothing running and not finished"
            )
            if due is not None:
                self.now = due
            return not self.engine.finished
        task = self.running.pop(self.rng.randrange(len(self.running)))
        r = self.result(task)
        if r.status == "succeeded":
            assert r.key not in self.recorded, "a training recorded twice"
            self.recorded.add(r.key)
        self.engine.record(r, self.now)
        self.now += 1.0
        self.check()
        return True

    def finish(self, slots: int, limit: int = 5_000) -> None:
        for _ in range(limit):
            if not self.step(slots):
                return
        raise AssertionError("engine did not finish")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    budget=st.integers(1, 40),
    seeds=st.integers(1, 3),
    racing=st.booleans(),
    slots=st.integers(1, 6),
    fail=st.sampled_from([0.0, 0.2]),
    tie=st.booleans(),
    size=st.integers(1, 4),
    seed=st.integers(0, 3),
)
def test_a_study_never_passes_its_budget(
    budget: int, seeds: int, racing: bool, slots: int, fail: float, tie: bool, size: int, seed: int
) -> None:
    spec = _spec(
        budget,
        training={"seedsPerConfig": seeds, "seedRacing": racing},
        result={"size": size},
        parallelism=slots,
    )
    run = Run(Engine(spec), fail=fail, tie=tie, seed=seed)
    run.finish(slots)
    assert run.engine.phase == "done" or run.engine.failed_reason
    assert run.engine.charged <= budget


def test_ties_do_not_cascade_past_the_budget() -> None:
    """Equal scores everywhere: racing gives every contender its seeds once, and stops."""
    spec = _spec(40, result={"size": 3})
    run = Run(Engine(spec), tie=True)
    run.finish(4)
    e = run.engine
    assert e.charged <= 40
    seeds = [len(e._seeds_of(t)) for t in e.trials]
    assert seeds.count(3) <= 3 + 1, "more contenders raced than the final group and one"


def test_without_a_budget_the_stage_sizes_are_a_cap() -> None:
    """Racing with ties used to run on until the final group was complete."""
    spec = _spec(
        None,
        randomStage={"seed": 1, "configurations": 6},
        bayesianStage={"topK": 1, "trialsPerConfig": 2},
        result={"size": 2},
    )
    e = Engine(spec)
    assert e.budget == (6 + 2) * 3
    run = Run(e, tie=True)
    run.finish(2)
    assert e.charged <= e.budget


def test_stages_are_sized_from_the_budget() -> None:
    sizes = stage_sizes(_spec(80))
    # 2.2 x sqrt(budget) for the random stage (1 seed each under racing), 5 x 2 seeds set aside.
    assert sizes.random == 20
    assert sizes.trials_per_config == 80 - 20 - 10
    assert stage_sizes(_spec(160)).random == 28
    explicit = stage_sizes(_spec(80, randomStage={"configurations": 7}))
    assert explicit.random == 7 and explicit.trials_per_config == 80 - 7 - 10
    line = cost_line(_spec(80))
    assert line.startswith("at most 80 trainings (budget.trainings): 20 random configurations")
    assert "raced to 3 seeds (10 more)" in line and "more contenders" not in line
    implicit = cost_line(_spec(None))
    assert implicit.startswith("at most 66 trainings (the stage sizes): 12 random")
    # the plan's parts sum to less than the cap: racing may use the rest, and retries come on top
    assert "more contenders raced while the cap allows" in implicit
    assert implicit.endswith("; plus up to 1 retry of each failure")


def test_budget_must_be_positive() -> None:
    with pytest.raises(SpecError, match=r"spec\.budget\.trainings"):
        parse_study(study_dict(budget={"trainings": 0}))


def test_spec_edits_mid_study_keep_the_new_budget() -> None:
    e = Engine(_spec(60))
    run = Run(e, seed=1)
    for _ in range(15):
        run.step(3)
    lower = max(e.charged, 20)
    e = e.with_spec(_spec(lower, randomStage={"seed": 3, "configurations": 15}))
    run.engine = e
    run.finish(3)
    assert e.charged <= lower
    assert e.phase == "done"


def _resume(spec: StudySpec, e: Engine, failed: dict[tuple[str, int], int]) -> Engine:
    """``e`` rebuilt as after a restart: its records, its running trainings and its last
    failed attempt of each training (``failures/``, as the session passes them)."""
    again = Engine(spec, e.recorded(), e.running.values())
    used: dict[tuple[str, int], tuple[int, str]] = {}
    for tid, k in failed.items():
        if tid in e.running and e.running[tid].attempt >= k:
            continue
        recorded = e.results.get(tid)
        key = e.trials[tid[0]].config_key
        used[tid] = (k + (recorded is not None and recorded.status != "failed"), key)
    again.resume_attempts(used)
    return again


def _started_across_a_restart(
    spec: StudySpec, slots: int, fail: Callable[[Task], bool], stop: int
) -> int:
    """Trainings handed out by a study restarted after ``stop`` results, in all."""
    e, started, now = Engine(spec), 0, 0.0
    running: list[Task] = []
    failed: dict[tuple[str, int], int] = {}
    for n in range(10_000):
        if n == stop:
            e = _resume(spec, e, failed)
        if e.finished:
            return started
        got = e.next_tasks(slots - len(running), now)
        started += len(got)
        running += got
        if not running:
            now = e.next_due() or now + 1.0
            continue
        task = running.pop(0)
        if fail(task):
            failed[task.id] = task.attempt
            e.record(task.failed("t", "boom"), now)
        else:
            e.record(task.succeeded("t", 0.5, 0.5), now)
        now += 1.0
    raise AssertionError("engine did not finish")


@pytest.mark.parametrize("slots", [1, 3])
def test_restart_counts_retried_attempts_of_recorded_trainings(slots: int) -> None:
    """Every first attempt fails; a restart midway must still know the retries it charged."""
    spec = _spec(12, parallelism=slots)
    started = _started_across_a_restart(spec, slots, lambda t: t.attempt == 1, stop=6)
    assert started <= 12


def test_restart_from_records_keeps_the_budget() -> None:
    spec = _spec(30, result={"size": 2})
    rng = random.Random(2)
    started = _started_across_a_restart(spec, 4, lambda t: rng.random() < 0.3, stop=12)
    assert started <= 30


def test_retries_are_charged_and_stop_at_the_budget() -> None:
    spec = _spec(12, failurePolicy={"retries": 3, "maxFailedTrainings": 100})
    run = Run(Engine(spec), fail=1.0)
    run.finish(2)
    e = run.engine
    assert len(e.results) < e.charged <= 12, "failed attempts retried are charged"
    assert e.finished


def test_parallel_slots_are_filled_before_the_random_stage_ends() -> None:
    """Eight slots: the narrow stage begins while the random stage's last trainings run."""
    spec = _spec(80, parallelism=8)
    e = Engine(spec)
    run = Run(e)
    idle = 0
    while not e.finished:
        if e.charged + len(e.running) < e.budget - 12 and len(run.running) < 8:
            got = e.next_tasks(8 - len(run.running), run.now)
            run.running += got
            idle += len(run.running) < 8
        if not run.step(8):
            break
    assert idle == 0, "a slot stayed idle while work existed"
    assert e.charged <= 80


def test_a_failure_past_a_lowered_budget_is_recorded() -> None:
    """The budget lowered below charged + running: a failure has no room for a retry, so it
    is the training's result (a retry that could never run would lose it)."""
    e = Engine(_spec(30, parallelism=4), retry_backoff_s=100)
    got = e.next_tasks(4, 0.0)
    assert len(got) == 4
    e.record(got[0].succeeded("t", 0.5, 0.5), 1.0)
    e = e.with_spec(_spec(2, parallelism=4), retry_backoff_s=100)
    assert e.budget - e.charged - len(e.running) < 0
    failed = got[1].failed("t", "boom")
    assert e.record(failed, 2.0) is None, "retried though the budget has no room"
    assert e.results[failed.key] == failed
    assert failed.key not in e.waiting


@pytest.mark.parametrize("lowered", [False, True])
def test_a_retry_waiting_when_the_budget_is_spent_ends_the_study(lowered: bool) -> None:
    """The queue spent the budget while a retry waited out its backoff: nothing runs, the
    retry can never be handed out; the study ends and the failure is its training's result."""
    spec = _spec(10, randomStage={"seed": 3, "configurations": 12}, parallelism=2)
    e = Engine(spec, retry_backoff_s=100)
    first, *rest = e.next_tasks(2, 0.0)
    failed = first.failed("t", "boom")
    assert e.record(failed, 0.0) is not None
    now = 1.0
    running = rest
    while running:
        task = running.pop()
        e.record(task.succeeded("t", 0.5, 0.5), now)
        running += e.next_tasks(2 - len(running), now)
        now += 1.0
    if lowered:
        e = e.with_spec(_spec(9, randomStage={"seed": 3, "configurations": 12}, parallelism=2))
    assert e.next_tasks(2, 1000.0) == []
    assert e.finished and not e.waiting, (e.phase, e.charged, e.waiting)
    assert e.results[failed.key] == failed, "the failed attempt is lost"
    assert e.charged <= 10


def _fails(task: Task, rate: float) -> bool:
    """A failure decided by the training and its attempt: the same before and after a cut."""
    digest = hashlib.sha256(f"{task.trial.config_key}|{task.seed}|{task.attempt}".encode())
    return digest.digest()[0] < rate * 256


def _restarted(spec: StudySpec, e: Engine, failures: dict[Any, tuple[int, SeedResult]]) -> Engine:
    """``e`` rebuilt as ``StudySession.start`` does after a kill with nothing in flight: the
    records, and each training's last failed attempt from ``failures/`` (none marked final:
    the kill came before the mark, the harder case)."""
    history, used, retried = e.recorded(), {}, []
    results = {r.key: r for r in history}
    for tid, (attempt, r) in failures.items():
        if tid in results:
            used[tid] = (attempt + (results[tid].status != "failed"), r.config_key)
        elif attempt > spec.failure_policy.retries:
            history.append(r)
        else:
            used[tid] = (attempt, r.config_key)
            retried.append(r)
    again = Engine(spec, history)
    again.resume_attempts(used, retried)
    return again


@pytest.mark.parametrize("budget", [10, 13, 16, 19, 25])
@pytest.mark.parametrize("racing", [True, False])
def test_a_restart_at_any_point_never_stalls_repeats_an_attempt_or_passes_the_budget(
    budget: int, racing: bool
) -> None:
    """One slot, failures retried under budget.trainings, a kill after every result in
    turn. Found by a review: a restart after a retried success handed out nothing with
    nothing to wait for (``hpo run`` stopped: "nothing to run but is not finished"), and a
    narrow-stage training known only from a failed attempt was forgotten, so that attempt
    ran again and the study passed its budget."""
    spec = _spec(
        budget,
        randomStage={"configurations": 8, "seed": 3},
        training={"seedsPerConfig": 3, "seedRacing": racing},
        bayesianStage={"topK": 2, "trialsPerConfig": 3},
        result={"size": 3},
    )

    def drive(cut: int | None) -> list[tuple[str, int, int]]:
        e, handed, failures = Engine(spec), [], {}
        for n in range(1000):
            if n == cut:
                e = _restarted(spec, e, failures)
            if e.finished:
                return handed
            (task,) = e.next_tasks(1, 1e9) or [None]
            assert task is not None, f"cut {cut}: nothing handed out, nothing to wait for"
            handed.append((task.trial.id, task.seed, task.attempt))
            result = task.failed("t", "boom") if _fails(task, 0.3) else None
            if result is not None:
                failures[task.id] = (task.attempt, result)
            else:
                mae = objective(task.trial.config) + task.seed * 1e-3
                result = task.succeeded("t", mae, mae)
            e.record(result, 1e9)
            assert e.charged + len(e.running) <= budget
        raise AssertionError("the study did not end")

    for cut in range(len(drive(None))):
        handed = drive(cut)
        assert len(handed) == len(set(handed)), f"cut {cut}: an attempt handed out twice"
        assert len(handed) <= budget, f"cut {cut}: {len(handed)} trainings on {budget}"
