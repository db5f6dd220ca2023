"""The live status (``<study>/status.json``): written by the study session as trainings
start and finish, read back through ``hpo.results``, never failing the study.

No training runs: the real session is driven with synthetic scores
(``helpers.synthetic``), as tests/unit/test_warmstart.py does; results are read back
with ``open_study`` as the dashboard reads them.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.study import EXAMPLE_CSV, SMALL_SPACE, study_dict
from helpers.study import study_file as write_study
from helpers.synthetic import synthetic_success
from hpo.engine import StudyProgress, Task
from hpo.records.ledger import read_ledger
from hpo.records.livestatus import STALE_HEARTBEATS, StatusWriter
from hpo.results import LiveStatus, open_study
from hpo.session import StudySession
from hpo.store import LocalStore, StoreRef
from hpo.study.contract import SeedResult
from hpo.study.layout import StudyPaths
from hpo.study.spec import load_study

NAME = "live"
SPEC: dict[str, Any] = {
    "searchSpace": SMALL_SPACE,
    "training": {"epochs": 3, "patience": 2, "seedsPerConfig": 1, "seedRacing": False},
    "randomStage": {"configurations": 4, "seed": 0},
    "bayesianStage": {"enabled": True, "topK": 1, "trialsPerConfig": 2},
    "failurePolicy": {"retries": 0},
    "result": {"size": 2},
}
PLANNED = 4 + 1 * 2


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    shutil.copyfile(EXAMPLE_CSV, tmp_path / "data.csv")
    raw = study_dict(**SPEC)
    raw["spec"]["dataset"]["path"] = str(tmp_path / "data.csv")
    return write_study(tmp_path, NAME, raw)


def _result(session: StudySession, task: Task, fail: bool) -> SeedResult:
    """A training's outcome as the trainer leaves it (a success's ``scores.json`` stored)."""
    study, paths = session.study, session.paths
    if fail:
        return task.failed(study.name, "synthetic failure")
    result = synthetic_success(task, study.name, study.spec.dataset.labels)
    session.store.put_bytes(paths.scores(task.trial.id, task.seed), result.to_json().encode())
    return result


def _run(session: StudySession, seen: list[LiveStatus] | None = None, reader: Any = None) -> None:
    """Two trainings at a time to the end, the first one failing; after each step the
    status as a reader sees it goes to ``seen``."""
    first = True
    while not session.engine.finished:
        tasks = session.take(2)
        session.flush()
        if reader is not None and seen is not None:
            seen.append(reader.status())
        for task in tasks:
            session.record([_result(session, task, fail=first)])
            first = False
            session.flush()
            if reader is not None and seen is not None:
                seen.append(reader.status())
    session.finish()


def test_the_status_follows_trainings_as_they_start_and_finish(
    study_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    session = StudySession.open(
        load_study(study_file), StoreRef(kind="local", root=str(out)), status_every_s=0.0
    )
    session.start(refuse_spec_changes=True)
    reader = open_study(out / NAME)
    start = reader.status()
    assert start is not None and start.state() == "live"
    assert (start.phase, start.stage, start.runner) == ("running", "random", "local")
    assert (start.done, start.running, start.failed, start.planned) == (0, 0, 0, PLANNED)
    before = reader.revisions()

    seen: list[LiveStatus] = []
    _run(session, seen, reader)

    # taken trainings show as running before any finished; the counts add up at each step
    assert seen[0].running == 2 and seen[0].done == 0
    assert reader.revisions()[1] != before[1]  # the status's version: readers refresh
    for s in seen:
        assert s.done + s.failed + s.running + s.queued <= PLANNED
        assert s.running >= 0
    dones = [s.done for s in seen]
    assert dones == sorted(dones)
    assert {s.stage for s in seen} >= {"random", "bayesian"}
    assert any(s.running and s.stage == "bayesian" for s in seen)
    assert any(s.failed == 1 for s in seen) and seen[1].failed == 1  # the first, failed

    end = reader.status()
    rows = read_ledger(LocalStore(out), StudyPaths(NAME).ledger)
    ok = [r for r in rows if r.status == "succeeded"]
    assert end is not None and end.state() == "finished"
    assert (end.phase, end.stage, end.running) == ("succeeded", "done", 0)
    assert (end.done, end.failed) == (len(ok), len(rows) - len(ok)) == (PLANNED - 1, 1)
    assert end.best_trial == session.engine.final_group(1)[0].trial
    assert end.heartbeat >= end.updated >= end.started
    assert session.status.failures == 0


def test_a_status_that_cannot_be_written_neither_fails_nor_holds_up_the_study(
    study_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    (out / NAME / "status.json").mkdir(parents=True)  # every write of it fails (EISDIR)
    session = StudySession.open(
        load_study(study_file), StoreRef(kind="local", root=str(out)), status_every_s=0.0
    )
    session.start(refuse_spec_changes=True)
    _run(session)
    rows = read_ledger(LocalStore(out), StudyPaths(NAME).ledger)
    assert session.engine.phase == "done"
    assert len(rows) == PLANNED and sum(r.status == "failed" for r in rows) == 1  # ours only
    # tried at the start, then not again for retry_s (a store in an outage is not asked
    # at every step), and once more for the last word
    assert session.status.failures == 2


def _progress(**counts: Any) -> StudyProgress:
    base: dict[str, Any] = dict(
        phase="random", done=0, failed=0, running=0, queued=0, total=10,
        best_trial=None, best_mae=None, best_std=None,
    )  # fmt: skip
    return StudyProgress(**{**base, **counts})


def test_writes_are_throttled_with_a_heartbeat(tmp_path: Path) -> None:
    now = [0.0]
    store = LocalStore(tmp_path)
    writer = StatusWriter(store, "s/status.json", "s", "local", clock=lambda: now[0])
    wrote = []
    for t, running in [(0, 0), (1, 1), (2, 2), (3.5, 2), (5, 2), (9, 2), (13.6, 2), (14, 3)]:
        now[0] = t
        if writer.update(_progress(running=running)):
            wrote.append((t, json.loads(store.get_bytes("s/status.json"))["running"]))
    # the first, a change after every_s (3 s), the heartbeat (10 s) without a change
    assert wrote == [(0, 0), (3.5, 2), (13.6, 2)]
    now[0] = 14.5
    assert writer.update(_progress(running=3), force=True)  # a stage change, the end


def test_the_results_api_reads_it_and_survives_a_torn_or_newer_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    paths = StudyPaths(NAME)
    store.put_bytes(paths.study, yaml.safe_dump(study_dict(**SPEC)).encode())
    study = open_study(tmp_path / NAME)
    assert study.status() is None and study.status_note is None  # a study from before
    no_status = study.revision()

    StatusWriter(store, paths.status, NAME, "operator").update(_progress(running=3, done=2))
    s = study.status()
    assert s is not None and (s.runner, s.running, s.done, s.planned) == ("operator", 3, 2, 10)
    assert study.revision() != no_status
    assert s.state(s.heartbeat + timedelta(seconds=1)) == "live"
    late = s.heartbeat + timedelta(seconds=STALE_HEARTBEATS * s.heartbeat_s + 1)
    assert s.state(late) == "stale"

    raw = store.get_bytes(paths.status)
    old = {**json.loads(raw), "heartbeat": "2020-01-01T00:00:00"}  # a time without a zone
    store.put_bytes(paths.status, json.dumps(old).encode())
    s = study.status()
    assert s is not None and s.state() == "stale"
    store.put_bytes(paths.status, raw[: len(raw) // 2])  # torn
    assert study.status() is None
    assert study.status_note and "status.json: cannot be read" in study.status_note
    newer = {**json.loads(raw), "version": 99}
    store.put_bytes(paths.status, json.dumps(newer).encode())
    assert study.status() is None and "version 99 is newer" in (study.status_note or "")
