"""`hpo run`'s failure records (``<study>/failures/``) when the store refuses one: the
failed attempt is not charged before its record is stored, as on a cluster. No training
runs: the real session and the real runner's recording steps, on a folder store that
refuses the failure records' keys while ``down`` (an outage of an ``s3://`` run's store)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from helpers.study import EXAMPLE_CSV, study_dict
from helpers.synthetic import synthetic_success
from hpo.data.checks import check_dataset
from hpo.engine import StudyProgress, Task
from hpo.local.runner import LocalRunner
from hpo.session import FailureRecords, StudySession
from hpo.store import LocalStore, StoreError, StoreRef
from hpo.study.contract import SeedResult
from hpo.study.layout import StudyPaths
from hpo.study.spec import Study, parse_study

NAME = "refused"


class FailuresDown(LocalStore):
    """A folder store whose ``failures/`` writes fail while ``down``."""

    down = True

    def put_bytes(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        if self.down and "/failures/" in key:
            raise StoreError(f"{key}: the store does not answer (test)")
        return super().put_bytes(key, data, if_match=if_match, if_none_match=if_none_match)


@pytest.fixture
def study(tmp_path: Path) -> Study:
    data = tmp_path / "data.csv"
    shutil.copyfile(EXAMPLE_CSV, data)
    raw = study_dict(
        training={"epochs": 2, "patience": 2, "seedsPerConfig": 1, "seedRacing": False},
        randomStage={"configurations": 6},
        bayesianStage={"enabled": False},
        budget={"trainings": 4},
        failurePolicy={"retries": 1, "maxFailedTrainings": 5},
        parallelism=1,
    )
    raw["metadata"]["name"] = NAME
    raw["spec"]["dataset"]["path"] = str(data)
    return parse_study(raw)


def _started(study: Study, store: LocalStore, in_flight: Iterable[Task] = ()) -> StudySession:
    ref = StoreRef(kind="local", root=str(store.root))
    session = StudySession(
        study, ref, store, check_dataset(study), retry_backoff_s=0.0, keep_failures=True
    )
    session.start(in_flight)
    return session


def _runner(study: Study, store: LocalStore, events: list[str]) -> LocalRunner:
    def listen(event: str, _progress: StudyProgress, _result: SeedResult | None) -> None:
        events.append(event)

    return LocalRunner(study, StoreRef(kind="local", root=str(store.root)), listener=listen)


def test_a_failure_the_store_refuses_is_charged_only_once_stored(
    study: Study, tmp_path: Path
) -> None:
    store = FailuresDown(tmp_path / "out")
    session = _started(study, store)
    events: list[str] = []
    runner = _runner(study, store, events)
    (task,) = session.take(1)
    failed = task.failed(NAME, "boom")
    assert not runner._recorded(session, failed)
    assert session.engine.is_running(task) and session.engine.charged == 0
    assert [e for e in events if e.startswith("warning: failed attempt not recorded yet")]
    store.down = False
    assert runner._recorded(session, failed)  # handed in again once the store answers
    assert session.engine.charged == 1 and session.engine.due_at(task.id) is not None
    assert FailureRecords(store, NAME).load()[task.id][0] == 1
    assert events[-1] == "retry"


def test_a_lost_workers_failure_the_store_refuses_is_run_again_uncharged(
    study: Study, tmp_path: Path
) -> None:
    store = FailuresDown(tmp_path / "out")
    session = _started(study, store)
    events: list[str] = []
    runner = _runner(study, store, events)
    (task,) = session.take(1)
    running: dict[Future[str], Any] = {Future(): task}  # its worker died: no result
    assert runner._restart_pool([], running, session) == []
    assert running == {} and session.engine.charged == 0 and session.engine.interrupted == 1
    assert any(e.startswith("warning: failed attempt not recorded, run again") for e in events)
    assert session.take(1) == [task]  # the same attempt again
    assert FailureRecords(store, NAME).load() == {}


def _three_successes_then_a_failure(
    study: Study, store: LocalStore
) -> tuple[StudySession, SeedResult]:
    """Budget 4, retries 1: three successes, then a first attempt fails with no room left in
    the budget for its retry, so the engine makes it the training's result."""
    session = _started(study, store)
    for _ in range(3):
        (task,) = session.take(1)
        result = synthetic_success(task, NAME, study.spec.dataset.labels)
        store.put_bytes(
            StudyPaths(NAME).scores(task.trial.id, task.seed), result.to_json().encode()
        )
        session.record([result])
    (task,) = session.take(1)
    failed = task.failed(NAME, "boom")
    (recorded,) = session.record([failed])
    assert recorded.retry is None and session.engine.finished
    return session, failed


def test_a_failure_the_budget_left_no_retry_for_is_final_after_a_restart(
    study: Study, tmp_path: Path
) -> None:
    """Killed before the last ledger write: the restart reads the failure back as the
    training's result (it was final), not as attempt 1 of 2 used up (then its row was lost)."""
    store = LocalStore(tmp_path / "out")
    _, failed = _three_successes_then_a_failure(study, store)
    assert FailureRecords(store, NAME).load()[failed.key][2]  # marked final
    again = _started(study, store).engine  # no ledger was written: all from the store
    assert again.finished and again.charged == 4
    assert [r.key for r in again.recorded() if r.status == "failed"] == [failed.key]


def test_an_unmarked_failure_is_the_result_once_the_budget_ends(
    study: Study, tmp_path: Path
) -> None:
    """Killed between storing the failed attempt and marking it final: the restart lets it
    wait for its retry, and with no room in the budget the failure is its result."""
    store = LocalStore(tmp_path / "out")
    _, failed = _three_successes_then_a_failure(study, store)
    FailureRecords(store, NAME).put(failed, 1)  # the record as it was before the mark
    assert not FailureRecords(store, NAME).load()[failed.key][2]
    session = _started(study, store)
    assert session.take(1) == []
    again = session.engine
    assert again.finished and again.charged == 4
    assert [r.key for r in again.recorded() if r.status == "failed"] == [failed.key]


def test_a_final_failure_stays_final_while_its_failed_pod_is_still_there(
    study: Study, tmp_path: Path
) -> None:
    """On a cluster a failed pod may be kept (``failedPodTtlSeconds``) and comes back as in
    flight after a restart: a failure marked final is the result, not decided again (with
    other trainings gone from the slots, the budget could have room for a retry now)."""
    store = LocalStore(tmp_path / "out")
    first, failed = _three_successes_then_a_failure(study, store)
    (kept,) = [t for t in first.engine.trials.values() if t.id == failed.trial]
    engine = _started(study, store, in_flight=[Task(kept, failed.seed, 1)]).engine
    assert not engine.running and engine.finished
    assert [r.key for r in engine.recorded() if r.status == "failed"] == [failed.key]
