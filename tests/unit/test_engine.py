"""The engine's decisions, driven with a synthetic objective (the engine never trains)."""

from __future__ import annotations

import copy
import math
from collections import Counter

import pytest

from helpers.study import study_dict
from hpo.engine import Engine, Task
from hpo.study.contract import SeedResult
from hpo.study.spec import StudySpec, parse_study


def _spec(**kw: object) -> StudySpec:
    base = {
        "randomStage": {"configurations": 8, "seed": 3},
        # The Gaussian-process stage with every seed for every configuration: the v0.1
        # behaviour these tests pin down (seed racing and local search: test_search.py).
        "training": {"seedsPerConfig": 2, "seedRacing": False},
        "bayesianStage": {
            "topK": 2,
            "trialsPerConfig": 3,
            "estimator": "ET",
            "method": "gaussianProcess",
        },
        "parallelism": 3,
    }
    base.update(kw)
    return parse_study(study_dict(**base)).spec


def objective(config: dict) -> float:
    """A smooth bowl: best near lr=3e-3 and 64 neurons per layer."""
    lr_term = abs(math.log10(config["learning_rate"]) + 2.5) * 0.1
    return lr_term + sum(abs(n - 64) for n in config["neurons"]) / 1000


def result(task: Task, fail: bool = False) -> SeedResult:
    t = task.trial
    mae = objective(t.config) + task.seed * 1e-3
    return SeedResult(
        study="t",
        trial=t.id,
        stage=t.stage,
        parent=t.parent,
        config=t.config,
        config_key=t.config_key,
        seed=task.seed,
        status="failed" if fail else "succeeded",
        mae=None if fail else mae,
        per_label={} if fail else {"Id_mA": {"mae": mae, "pct": 100 * mae}},
        error="boom" if fail else None,
    )


def drive(
    engine: Engine, slots: int = 3, fails: frozenset[str] = frozenset(), limit: int = 10_000
) -> None:
    running: list[Task] = []
    for _ in range(limit):
        if engine.finished:
            return
        running += engine.next_tasks(slots - len(running))
        assert running, "engine stalled: nothing running and not finished"
        task = running.pop(0)
        engine.record(result(task, fail=task.trial.config_key in fails))
    raise AssertionError("engine did not finish")


def check_study(engine: Engine, spec: StudySpec) -> None:
    rs = engine.recorded()
    n_seeds = spec.training.seeds_per_config
    per_key = Counter(r.config_key for r in rs)
    assert all(n == n_seeds for n in per_key.values()), "a configuration trained twice or partly"
    assert len({r.key for r in rs}) == len(rs), "a training recorded twice"
    assert {r.seed for r in rs} == set(spec.seeds)
    random_keys = {r.config_key for r in rs if r.stage == "random"}
    assert len(random_keys) == spec.random_stage.configurations
    bayes = [r for r in rs if r.stage == "bayesian"]
    parents = {p.summary.trial: p for p in engine.parents}
    for r in bayes:
        assert r.parent in parents
        assert parents[r.parent].space.contains(r.config), (
            f"{r.config_key} outside {r.parent}'s bounds"
        )
    by_parent = Counter(r.parent for r in bayes)
    assert all(n <= spec.bayesian_stage.trials_per_config * n_seeds for n in by_parent.values())


def test_two_stages_end_to_end() -> None:
    spec = _spec()
    engine = Engine(spec)
    drive(engine)
    assert engine.phase == "done"
    check_study(engine, spec)
    rs = engine.recorded()
    assert sum(r.stage == "random" for r in rs) == 8 * 2
    assert sum(r.stage == "bayesian" for r in rs) == 2 * 3 * 2
    # Hand-over picks the best of each depth first.
    handed = engine.handed_over()
    assert len({s.config["hidden_layers"] for s in handed}) == len(handed)


def test_gp_estimator_works() -> None:
    spec = _spec(
        bayesianStage={
            "method": "gaussianProcess",
            "topK": 1,
            "trialsPerConfig": 3,
            "estimator": "GP",
        }
    )
    engine = Engine(spec)
    drive(engine)
    assert engine.phase == "done"
    check_study(engine, spec)


@pytest.fixture(scope="module")
def uncut() -> list[SeedResult]:
    """What a study of ``_spec()`` records without a restart (the same for every cut)."""
    full = Engine(_spec())
    drive(full)
    return full.recorded()


@pytest.mark.parametrize("cut", [0, 5, 15, 16, 17, 20, 27, 28])
def test_restart_at_any_point_completes_exactly(cut: int, uncut: list[SeedResult]) -> None:
    spec = _spec()
    history = copy.deepcopy(uncut[:cut])  # the engine may keep what it is given
    again = Engine(spec, history)
    drive(again)
    check_study(again, spec)
    assert len(again.recorded()) == len(uncut)
    # Nothing recorded before the restart is trained again.
    keys = [r.key for r in again.recorded()]
    assert keys[:cut] == [r.key for r in history]
    random_now = {r.trial: r.config_key for r in again.recorded() if r.stage == "random"}
    random_before = {r.trial: r.config_key for r in uncut if r.stage == "random"}
    assert random_now == random_before


def test_in_flight_trainings_are_not_started_twice() -> None:
    spec = _spec()
    first = Engine(spec)
    started = first.next_tasks(3)
    again = Engine(spec, in_flight=started)
    new = again.next_tasks(10)
    assert not {t.id for t in new} & {t.id for t in started}
    assert again.progress().running == 3 + len(new)


def test_failed_training_is_retried_then_recorded() -> None:
    spec = _spec(failurePolicy={"retries": 2, "maxFailedTrainings": 10})
    engine = Engine(spec)
    bad = engine.trials["r0002"].config_key
    attempts = Counter()
    running: list[Task] = []
    while not engine.finished:
        running += engine.next_tasks(3 - len(running))
        task = running.pop(0)
        if task.trial.config_key == bad:
            attempts[task.seed] += 1
            assert task.attempt == attempts[task.seed]
        engine.record(result(task, fail=task.trial.config_key == bad))
    assert attempts == {1: 3, 2: 3}
    failed = [r for r in engine.recorded() if r.status == "failed"]
    assert [(r.trial, r.error) for r in failed] == [("r0002", "boom"), ("r0002", "boom")]
    assert engine.phase == "done"


def test_an_edited_spec_keeps_the_attempts_already_used() -> None:
    """A spec edit (here parallelism) rebuilds the engine; a failed training waiting for
    its retry must keep its attempt number, or the policy's retries start over."""
    spec = _spec(failurePolicy={"retries": 2, "maxFailedTrainings": 10})
    edited = _spec(failurePolicy={"retries": 2, "maxFailedTrainings": 10}, parallelism=5)
    engine = Engine(spec)
    bad = engine.trials["r0002"].config_key
    seen: dict[int, list[int]] = {}
    running: list[Task] = []
    edits = 0
    for _ in range(100):  # without the attempts carried over, the retries never end
        if engine.finished:
            break
        running += engine.next_tasks(3 - len(running))
        task = running.pop(0)
        fail = task.trial.config_key == bad
        if fail:
            seen.setdefault(task.seed, []).append(task.attempt)
        retry = engine.record(result(task, fail=fail))
        if retry is not None:  # queued, not yet started: edit the spec now
            engine = engine.with_spec(edited)
            edits += 1
    assert edits == 4  # after attempts 1 and 2 of each seed
    assert seen == {1: [1, 2, 3], 2: [1, 2, 3]}
    assert sum(r.status == "failed" for r in engine.recorded()) == 2


def test_too_many_failures_fail_the_study_with_a_reason() -> None:
    spec = _spec(failurePolicy={"retries": 0, "maxFailedTrainings": 3})
    engine = Engine(spec)
    everything = frozenset(t.config_key for t in engine.trials.values())
    drive(engine, fails=everything)
    assert engine.phase == "failed"
    assert "more than failurePolicy.maxFailedTrainings (3)" in (engine.failed_reason or "")
    # The 4th failure stops new work; the two trainings still running finish and are recorded.
    assert 4 <= sum(r.status == "failed" for r in engine.recorded()) <= 6
    assert engine.progress().running == 0


def test_a_tiny_narrow_space_ends_without_duplicates() -> None:
    spec = _spec(
        # One hidden layer: each parent's narrow grid holds 3 x 3 configurations, so the
        # stage runs into the grid's end after a few (costly) Gaussian-process suggestions.
        searchSpace={"hiddenLayers": {"min": 1, "max": 1}},
        bayesianStage={
            "method": "gaussianProcess",
            "topK": 2,
            "trialsPerConfig": 50,
            "neuronsRadius": 8,
            "neuronsStep": 8,
            "learningRateRadius": 0.1,
            "learningRateStep": 0.1,
            "estimator": "ET",
        },
    )
    engine = Engine(spec)
    drive(engine)
    assert engine.phase == "done"
    check_study(engine, spec)
    for p in engine.parents:
        # Never more new configurations than the narrow grid holds besides the parent.
        assert len(p.trials) <= p.space.size - 1
    # The budget (50 per parent) is beyond the grid: the stage ended at the grid's end.
    assert any(len(p.trials) == p.space.size - 1 for p in engine.parents)


def test_random_only_study_stops_after_random_stage() -> None:
    spec = _spec(bayesianStage={"enabled": False})
    engine = Engine(spec)
    drive(engine)
    assert engine.phase == "done"
    assert {r.stage for r in engine.recorded()} == {"random"}


def _retrying_engine(**kw: object) -> Engine:
    spec = _spec(failurePolicy={"retries": 2, "maxFailedTrainings": 10}, **kw)
    return Engine(spec, retry_backoff_s=10.0)


def test_a_retry_is_handed_out_only_once_its_backoff_is_due() -> None:
    engine = _retrying_engine()
    [task] = engine.next_tasks(1, now=0.0)
    retry = engine.record(result(task, fail=True), now=100.0)
    assert retry is not None and (retry.id, retry.attempt) == (task.id, 2)
    assert not engine.is_recorded(task.id)
    assert engine.due_at(task.id) == engine.next_due() == 110.0
    assert engine.not_due(109.0) == 1 and engine.not_due(110.0) == 0
    early = engine.next_tasks(3, now=109.0)
    assert task.id not in {t.id for t in early}, "a retry ran before its backoff"
    [again] = engine.next_tasks(1, now=110.0)
    assert (again.id, again.attempt) == (task.id, 2), "the due retry comes before the queue"
    assert engine.is_running(again) and not engine.is_running(task)
    # The backoff doubles for each further attempt.
    engine.record(result(again, fail=True), now=200.0)
    assert engine.due_at(task.id) == 220.0
    [third] = engine.next_tasks(1, now=220.0)
    assert third.attempt == 3
    assert engine.record(result(third, fail=True), now=300.0) is None  # retries used up
    assert engine.is_recorded(task.id) and engine.next_due() is None


def test_no_backoff_retries_at_once() -> None:
    engine = Engine(_spec(failurePolicy={"retries": 1, "maxFailedTrainings": 10}))
    [task] = engine.next_tasks(1, now=5.0)
    engine.record(result(task, fail=True), now=5.0)
    assert [(t.id, t.attempt) for t in engine.next_tasks(1, now=5.0)] == [(task.id, 2)]


def test_a_postponed_task_keeps_its_attempt_and_waits() -> None:
    engine = _retrying_engine()
    [task] = engine.next_tasks(1, now=0.0)
    engine.postpone([task], until=50.0)
    assert not engine.is_running(task) and engine.progress().queued >= 1
    assert task.id not in {t.id for t in engine.next_tasks(2, now=49.0)}
    [again] = engine.next_tasks(1, now=50.0)
    assert again == task, "postponing is not an attempt"


def test_an_adopted_task_is_running_and_never_handed_out_again() -> None:
    engine = _retrying_engine()
    [task] = engine.next_tasks(1, now=0.0)
    engine.postpone([task], until=50.0)
    engine.adopt([task])  # its pod was there after all
    assert engine.is_running(task) and engine.next_due() is None
    assert task.id not in {t.id for t in engine.next_tasks(100, now=100.0)}
    # A pod of an attempt older than the engine's own is not adopted.
    retry = engine.record(result(task, fail=True), now=0.0)
    assert retry is not None
    engine.adopt([task])
    assert not engine.is_running(task) and engine.due_at(task.id) == 10.0


def test_an_edited_spec_keeps_a_waiting_retrys_due_time() -> None:
    engine = _retrying_engine()
    [task] = engine.next_tasks(1, now=0.0)
    engine.record(result(task, fail=True), now=0.0)
    edited = engine.with_spec(_spec(failurePolicy={"retries": 2, "maxFailedTrainings": 10}))
    assert edited.retry_backoff_s == 10.0
    assert edited.due_at(task.id) == 10.0
    assert task.id not in {t.id for t in edited.next_tasks(100, now=9.0)}
    [again] = edited.next_tasks(1, now=10.0)
    assert (again.id, again.attempt) == (task.id, 2)


def test_past_the_failure_budget_no_retry_waits() -> None:
    spec = _spec(failurePolicy={"retries": 1, "maxFailedTrainings": 0})
    engine = Engine(spec, retry_backoff_s=10.0)
    a, b = engine.next_tasks(2, now=0.0)
    engine.record(result(a, fail=True), now=0.0)  # a retry waits
    assert engine.next_due() == 10.0
    engine.record(result(b, fail=True), now=0.0)
    again = engine.next_tasks(1, now=10.0)
    engine.record(result(again[0], fail=True), now=10.0)  # a's second failure: over budget
    assert engine.failed_reason is not None
    assert engine.next_due() is None and engine.next_tasks(5, now=100.0) == []
