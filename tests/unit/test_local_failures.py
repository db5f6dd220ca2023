"""`hpo run`'s failure records (``<study>/failures/``) when the store refuses one: the
failed attempt is not charged before its record is stored, as on a cluster. No training
runs: the real session and the real runner's recording steps, on a folder store that
refuses the failure records' keys while ``down`` (an outage of an ``s3://`` run's store)."""

from __future__ import annotations

import shutil
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from helpers.study import EXAMPLE_CSV, study_dict
from hpo.data.checks import check_dataset
from hpo.engine import StudyProgress
from hpo.local.runner import LocalRunner
from hpo.session import FailureRecords, StudySession
from hpo.store import LocalStore, StoreError, StoreRef
from hpo.study.contract import SeedResult
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


def _started(study: Study, store: LocalStore) -> StudySession:
    ref = StoreRef(kind="local", root=str(store.root))
    session = StudySession(
        study, ref, store, check_dataset(study), retry_backoff_s=0.0, keep_failures=True
    )
    session.start()
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
