"""The dashboard's server side without a browser: what a refresh rebuilds, what a bad
ledger does to the page data, and the command's refusals. A synthetic study (a real
ledger and best.json, benchmarks/dashboard.py's), no training.

The pages themselves are driven in a real browser by tests/e2e/test_dashboard.py.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from helpers.study import REPO
from hpo.cli import app
from hpo.dashboard import views
from hpo.dashboard.source import Source
from hpo.records.ledger import read_ledger, write_ledger
from hpo.results.study import StudyResults
from hpo.store import LocalStore
from hpo.study.contract import SeedResult
from hpo.study.layout import StudyPaths

sys.path.insert(0, str(REPO / "benchmarks"))
from dashboard import LABELS, study_resource, synthetic, write_study  # benchmarks/: no package


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    write_study(root, "big", 60)
    return root


def test_the_page_data_is_the_ledgers_and_is_built_once_per_revision(
    runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = []
    real = views.build
    monkeypatch.setattr(views, "build", lambda s: builds.append(1) or real(s))
    source = Source(str(runs))
    source.discover()
    assert source.ids() == ["big"]
    entry = source.read(source.entry("big"))
    detail = entry.detail
    rows = read_ledger(LocalStore(runs), "big/ledger.xlsx")
    table = views.unpack(detail["trainings"])
    by_key = {(r.trial, r.seed): r for r in rows}
    assert sorted((r["trial"], r["seed"]) for r in table) == sorted(by_key)
    for shown in table:
        r = by_key[(shown["trial"], shown["seed"])]
        assert shown["val_mae"] == (
            None if r.val_mae is None else pytest.approx(r.val_mae, rel=1e-14)
        )
    failed = [r for r in rows if r.status != "succeeded"]
    s = detail["summary"]
    assert (s["done"], s["failed"], s["phase"]) == (
        len(rows) - len(failed),
        len(failed),
        "Finished",
    )
    assert sum(g["count"] for g in detail["failures"]) == len(failed)
    best = json.loads((runs / "big" / "best.json").read_text())
    assert [r["trial"] for r in detail["final"]["rows"]] == [b["trial"] for b in best]
    for _ in range(5):  # refreshes of an unchanged study rebuild nothing
        source.read(entry)
    assert len(builds) == 1
    tag, body = entry.encoded()
    assert entry.encoded() == (tag, body)  # encoded once too


def test_a_torn_ledger_keeps_the_last_good_read_with_the_reason(runs: Path) -> None:
    source = Source(str(runs))
    entry = source.read(source.entry("big"))
    good = entry.detail
    ledger = runs / "big" / "ledger.xlsx"
    whole = ledger.read_bytes()
    ledger.write_bytes(whole[: len(whole) // 3])
    source.read(entry)
    assert entry.detail is good and "cannot be read" in (entry.error or "")
    ledger.write_bytes(whole)
    source.read(entry)
    assert entry.error is None


def test_a_corrupt_study_beside_good_ones(runs: Path) -> None:
    (runs / "bad").mkdir()
    shutil.copy(runs / "big" / "study.yaml", runs / "bad" / "study.yaml")
    (runs / "bad" / "ledger.xlsx").write_bytes(b"not a workbook")
    source = Source(str(runs))
    source.discover()
    bad, big = source.read(source.entry("bad")), source.read(source.entry("big"))
    assert bad.detail is None and "ledger" in (bad.error or "")
    assert big.error is None and big.detail is not None


def test_the_command_refuses_bad_input(tmp_path: Path) -> None:
    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["dashboard", *args])
        return result.exit_code, result.output

    code, out = run(str(tmp_path / "nowhere"))
    assert code == 2 and "no such folder" in out
    a_file = tmp_path / "study.yaml"
    a_file.write_text("kind: HPOStudy\n")
    code, out = run(str(a_file))
    assert code == 2 and "is a file, not a folder" in " ".join(out.split())
    assert "no such folder" not in out
    code, out = run("s3://bucket/prefix")
    assert code == 2 and "--endpoint" in out
    code, out = run(str(tmp_path), "--port", "0")
    assert code == 2 and "--port 0" in out
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, out = run(str(tmp_path), "--port", str(taken.getsockname()[1]))
    assert code == 2 and "cannot listen" in out


def test_a_study_folder_itself_is_its_only_study(runs: Path) -> None:
    source = Source(str(runs / "big"))
    assert source.discover() is None
    assert source.ids() == ["big"]
    assert source.read(source.entry("big")).detail["summary"]["name"] == "big"


class CountingStore(LocalStore):
    """A real folder store that remembers which keys were downloaded."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.got: list[str] = []

    def get_bytes(self, key: str) -> bytes:
        self.got.append(key)
        return super().get_bytes(key)


def test_a_rebuild_downloads_only_the_scores_the_ledger_lacks(runs: Path) -> None:
    store = CountingStore(runs)
    held = StudyResults(store, "big", "big").results()
    assert len(held) == 60
    assert [k for k in store.got if k.endswith("scores.json")] == []  # all in the ledger
    new = replace(next(r for r in held if r.status == "succeeded"), trial="r09999", seed=1)
    key = "big/trials/r09999/seed-1/scores.json"
    store.put_bytes(key, new.to_json().encode())
    store.got.clear()
    again = StudyResults(store, "big", "big").results()
    assert [k for k in store.got if k.endswith("scores.json")] == [key]
    assert (new.trial, new.seed) in {r.key for r in again} and len(again) == 61


def _warm_started(root: Path) -> tuple[list[SeedResult], SeedResult]:
    """benchmarks' 60-training study, unfinished, with 4 rows a warm start took and one
    random training (a late retry) that finished after the narrow stage's first."""
    results = synthetic("warm", 60)
    late = max(i for i, r in enumerate(results) if r.stage == "random")
    results[late] = replace(results[late], finished_at=max(r.finished_at for r in results) + 9)
    taken = [
        replace(
            results[0],
            trial=f"w{i // 2:04d}",
            seed=1 + i % 2,
            status="succeeded",
            val_mae=0.5,
            mae=0.5,
            error=None,
            finished_at=1.7e9 + i,
            source="runs/old",
            source_trial=f"r{i // 2:05d}",
        )
        for i in range(4)
    ]
    store, paths = LocalStore(root), StudyPaths("warm")
    resource = study_resource("warm", 60)
    store.put_bytes(paths.study, yaml.safe_dump(resource).encode())
    write_ledger(store, paths.ledger, taken + results, LABELS, None, resource)
    return results, results[late]


def test_progress_counts_warm_start_rows_apart_and_trainings_come_in_finish_order(
    runs: Path,
) -> None:
    own, late = _warm_started(runs)
    detail = views.build(StudyResults(LocalStore(runs), "warm", "runs/warm"))
    random = [r for r in own if r.stage == "random"]
    ok = sum(r.status == "succeeded" for r in random)
    assert detail["progress"][0] == {
        "stage": "random",
        "done": ok,
        "failed": len(random) - ok,
        "planned": 20,  # 10 configurations x 2 seeds, the study's own
        "taken": 4,
    }
    s = detail["summary"]
    assert s["done"] == sum(r.status == "succeeded" for r in own) and s["taken"] == 4
    assert s["total"] == 60 and "running" not in s
    assert s["stage"] == "bayesian"  # though a random training finished last
    table = views.unpack(detail["trainings"])
    finished = [r["finished"] for r in table]
    assert finished == sorted(finished)  # the ledger's order is by stage first
    assert (table[-1]["trial"], table[-1]["seed"]) == (late.trial, late.seed)
    assert [r["trial"] for r in table[:4]] == ["w0000", "w0000", "w0001", "w0001"]


def test_the_load_command_is_the_servers_own_location(runs: Path) -> None:
    study = StudyResults(LocalStore(runs), "big", str(runs / "big"))
    detail = views.build(study)
    trial = views.unpack(detail["trainings"])[0]["trial"]
    page = views.configuration(study, detail, trial, endpoint="minio:9000", tls=False)
    assert page is not None  # a folder: no S3 options
    assert page["load_cli"].startswith(f"hpo get {runs / 'big'} --what model --trial {trial}")


def test_running_and_the_runners_state_come_from_the_live_status(
    runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpo.engine import StudyProgress
    from hpo.records import livestatus
    from hpo.records.livestatus import StatusWriter

    (runs / "big" / "best.json").unlink()  # not finished: its runner is at work
    builds = []
    real = views.build
    monkeypatch.setattr(views, "build", lambda s: builds.append(1) or real(s))
    source = Source(str(runs))
    source.discover()
    entry = source.read(source.entry("big"))
    derived = entry.detail["summary"]
    assert (derived["running"], derived["queued"], derived["live"]) == (None, None, None)
    assert derived["phase"] == "In progress"
    listed = source.list_revision()

    store, key = LocalStore(runs), StudyPaths("big").status
    writer = StatusWriter(store, key, "big", "local", every_s=0.0)
    ahead = derived["done"] + 2  # the ledger is written in batches: the runner is ahead
    progress = StudyProgress(
        phase="bayesian", done=ahead, failed=derived["failed"], running=3, queued=1,
        total=80, best_trial="r0001", best_mae=0.1, best_std=None,
    )  # fmt: skip
    assert writer.update(progress)
    assert source.list_revision() != listed  # the studies page refreshes
    s = source.read(entry).detail["summary"]
    assert (s["running"], s["live"], s["stage"], s["phase"]) == (
        3,
        "live",
        "bayesian",
        "In progress",
    )
    assert (s["done"], s["total"]) == (ahead, 80)
    # the best from the same source as the phase and counts beside it, not the lagging ledger
    assert (s["best_val"], s["best_trial"]) == (0.1, "r0001") != (derived["best_val"], None)
    assert s["queued"] == 0  # a local runner has no queue (a cluster's: test_cluster_waiting)
    assert len(builds) == 1  # only the summary changed: the ledger's frames are not rebuilt

    # the runner died: time passes, the file does not change, the page says so
    listed = source.list_revision()
    later = livestatus.utcnow() + timedelta(hours=1)
    monkeypatch.setattr(livestatus, "utcnow", lambda: later)
    assert source.list_revision() != listed
    s = source.read(entry).detail["summary"]
    assert (s["live"], s["running"], s["done"]) == ("stale", None, derived["done"])
    assert s["queued"] is None  # a dead runner's count is a guess

    assert writer.update(progress, phase="succeeded")  # a finished study's last word
    s = source.read(entry).detail["summary"]
    assert (s["live"], s["running"], s["queued"], s["phase"]) == ("finished", 0, 0, "Finished")


def test_a_cluster_studys_queued_trainings_are_shown_beside_the_running(runs: Path) -> None:
    """status.json of the operator's runner: of its 5 trainings in pods, 2 wait for capacity."""
    from hpo.engine import StudyProgress
    from hpo.records.livestatus import StatusWriter

    (runs / "big" / "best.json").unlink()
    writer = StatusWriter(LocalStore(runs), StudyPaths("big").status, "big", "operator")
    writer.queued = 2
    progress = StudyProgress(
        phase="random", done=1, failed=0, running=5, queued=4, total=80,
        best_trial=None, best_mae=None, best_std=None,
    )  # fmt: skip
    assert writer.update(progress)
    source = Source(str(runs))
    source.discover()
    s = source.read(source.entry("big")).detail["summary"]
    assert (s["running"], s["queued"], s["live"]) == (3, 2, "live")


def test_a_study_with_an_empty_ledger_serialises_its_times_as_numbers(tmp_path: Path) -> None:
    """A study whose ledger has no row yet (a cluster study whose pods all wait): its empty
    date-time columns still go to the browser as numbers, without pandas' warning that
    ``to_json`` will write them as ISO strings (an error here: the page would change)."""
    import warnings

    import pandas as pd

    write_study(tmp_path, "waiting", 0)
    source = Source(str(tmp_path))
    source.discover()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        entry = source.read(source.entry("waiting"))
    assert entry.error is None and entry.detail is not None, entry.error
    assert entry.detail["trainings"]["data"] == []
    frame = pd.DataFrame({"finished": pd.to_datetime(["2026-12-08T01:00:00Z", None])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = views.columns_of(views.epochs(frame))
    assert out["data"] == [[1796691600.0], [None]]
