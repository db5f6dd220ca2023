"""The engine's decisions, driven with a synthetic objective (the engine never trains).

Through the default narrow search (local search); the Gaussian-process strategy is
tested in test_search.py, and the seam between the engine and its strategy here."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence

import pytest

from helpers.engine import drive_engine, objective
from helpers.study import study_dict
from hpo.engine import Engine, NarrowSearch, Proposal, Records, Task
from hpo.engine.search import narrow_search
from hpo.engine.search.local import neighbours
from hpo.study.contract import SeedResult
from hpo.study.space import Config, config_key, normalise
from hpo.study.spec import StudySpec, parse_study
from hpo.study.summary import ConfigSummary


def _spec(**kw: object) -> StudySpec:
    base = {
        "randomStage": {"configurations": 8, "seed": 3},
        # The default narrow search with every seed for every configuration (seed
        # racing: test_search.py).
        "training": {"seedsPerConfig": 2, "seedRacing": False},
        "bayesianStage": {"topK": 2, "trialsPerConfig": 3},
        "parallelism": 3,
    }
    base.update(kw)
    return parse_study(study_dict(**base)).spec


def result(task: Task, fail: bool = False) -> SeedResult:
    if fail:
        return task.failed("t", "boom")
    mae = objective(task.trial.config) + task.seed * 1e-3
    return task.succeeded("t", mae, mae, per_label={"Id_mA": {"mae": mae, "pct": 100 * mae}})


def drive(
    engine: Engine, slots: int = 3, fails: frozenset[str] = frozenset(), limit: int = 10_000
) -> None:
    """The engine to its end, the trainings of the configurations in ``fails`` failing."""
    drive_engine(
        engine, lambda task: result(task, fail=task.trial.config_key in fails), slots, limit
    )


def check_study(engine: Engine, spec: StudySpec) -> None:
    rs = engine.recorded()
    n_seeds = spec.training.seeds_per_config
    per_key = Counter(r.config_key for r in rs)
    assert all(n == n_seeds for n in per_key.values()), "a configuration trained twice or partly"
    assert len({r.key for r in rs}) == len(rs), "a training recorded twice"
    assert {r.seed for r in rs} == set(spec.seeds)
    random_keys = {r.config_key for r in rs if r.stage == "random"}
    assert len(random_keys) == spec.random_stage.configurations
    narrow = [r for r in rs if r.stage == "bayesian"]
    for r in narrow:
        parent = engine.trials[r.parent or ""]
        found = neighbours(parent.config, spec.search_space, spec.narrow_stage)
        assert r.config_key in {config_key(c) for c in found}, f"{r.config_key} not near its parent"
    stage = spec.narrow_stage
    assert len({r.trial for r in narrow}) <= stage.top_k * stage.trials_per_config


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
    handed = engine.narrow_parents()
    assert len({s.config["hidden_layers"] for s in handed}) == len(handed)


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


# -- the seam: the engine drives any NarrowSearch, through the protocol alone -----------


class FixedSearch:
    """A tiny strategy: proposes the configurations it was given, in order, then none."""

    def __init__(self, configs: list[Config]) -> None:
        self.configs = configs
        self.parents: list[str] = []

    def start(self, parents: Sequence[ConfigSummary], records: Records) -> list[str]:
        self.parents = [p.trial for p in parents]
        return ["fixed list"]

    def _left(self, records: Records) -> list[Config]:
        return [c for c in self.configs if config_key(c) not in records.known]

    def propose(self, n: int, records: Records) -> list[Proposal]:
        return [Proposal(c, self.parents[0]) for c in self._left(records)[:n]]

    def remaining(self, records: Records) -> int:
        return len(self._left(records))


class Spy:
    """Stands for a strategy and notes every attribute the engine asks it for."""

    def __init__(self, inner: NarrowSearch) -> None:
        self.__dict__["_inner"] = inner
        self.__dict__["asked"] = set()

    def __getattr__(self, name: str) -> object:
        self.asked.add(name)
        return getattr(self._inner, name)


PROTOCOL = {"start", "propose", "remaining"}


def _fixed_configs(spec: StudySpec) -> list[Config]:
    """Three configurations no random trial has: the first random one, wider."""
    base = normalise(Engine(spec).trials["r0000"].config)
    widths = [{**base, "neurons": [w] * base["hidden_layers"]} for w in (200, 210, 220)]
    return [normalise(c) for c in widths]


def test_the_engine_drives_a_new_strategy_through_the_protocol() -> None:
    spec = _spec()
    fixed = _fixed_configs(spec)
    spies: list[Spy] = []

    def make(spec: StudySpec) -> NarrowSearch:
        spies.append(Spy(FixedSearch(fixed)))
        return spies[-1]  # type: ignore[return-value]  # a stand-in that delegates

    engine = Engine(spec, search=make)
    drive(engine)
    assert engine.phase == "done"
    narrow = [t for t in engine.trials.values() if t.stage == "bayesian"]
    assert [t.config_key for t in narrow] == [config_key(c) for c in fixed]
    assert [t.id for t in narrow] == ["b0000", "b0001", "b0002"]
    assert {t.parent for t in narrow} == {engine.parents[0]}
    assert "fixed list" in engine.notes
    assert len(spies) == 1 and spies[0].asked <= PROTOCOL
    # Rebuilt from its records, the study plans nothing more and keeps the strategy.
    again = Engine(spec, engine.recorded(), search=make)
    assert again.phase == "done" and len(again.recorded()) == len(engine.recorded())
    assert spies[-1].asked <= PROTOCOL


def test_the_engine_asks_the_default_strategy_only_through_the_protocol() -> None:
    spec = _spec()
    spies: list[Spy] = []

    def make(spec: StudySpec) -> NarrowSearch:
        spies.append(Spy(narrow_search(spec)))
        return spies[-1]  # type: ignore[return-value]  # a stand-in that delegates

    spied = Engine(spec, search=make)
    drive(spied)
    plain = Engine(spec)
    drive(plain)
    assert [r.key for r in spied.recorded()] == [r.key for r in plain.recorded()]
    assert spies and all(s.asked <= PROTOCOL for s in spies)
    assert spies[0].asked == PROTOCOL  # and it asks for all of it


def test_the_spec_method_picks_the_strategy() -> None:
    assert type(narrow_search(_spec())).__name__ == "LocalSearch"
    gp = _spec(bayesianStage={"method": "gaussianProcess"})
    assert type(narrow_search(gp)).__name__ == "GaussianSearch"
