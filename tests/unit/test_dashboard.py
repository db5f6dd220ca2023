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
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers.study import REPO
from hpo.cli import app
from hpo.dashboard import views
from hpo.dashboard.source import Source
from hpo.ledger import read_ledger
from hpo.store import LocalStore

sys.path.insert(0, str(REPO / "benchmarks"))
from dashboard import write_study  # benchmarks/ is no package


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
