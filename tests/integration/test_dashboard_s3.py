"""The dashboard's studies on a real S3 server (plain http, as a development MinIO): the
same page data as from a folder, a refresh that reads nothing, and one study whose
ledger is corrupt beside a good one. No browser (tests/e2e/test_dashboard.py drives one)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers.s3 import new_s3_store
from helpers.study import REPO
from hpo.dashboard import views
from hpo.dashboard.source import Source
from support.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server

sys.path.insert(0, str(REPO / "benchmarks"))
from dashboard import write_study  # benchmarks/ is no package


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_S3_ACCESS_KEY", TEST_ACCESS_KEY)
    monkeypatch.setenv("HPO_S3_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("HPO_S3_RETRIES", "0")


def test_a_bucket_shows_what_a_folder_shows(
    s3_server: S3Server, tmp_path: Path, s3_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    write_study(runs, "big", 40)
    store = new_s3_store(s3_server, prefix="")
    for f in (runs / "big").rglob("*"):
        if f.is_file():
            store.put_file(f"hpo/default/big/{f.relative_to(runs / 'big').as_posix()}", f)
    store.put_file("hpo/default/bad/study.yaml", runs / "big" / "study.yaml")
    store.put_bytes("hpo/default/bad/ledger.xlsx", b"PK\x03\x04 torn")

    local = Source(str(runs))
    remote = Source(f"s3://{store.bucket}/hpo", endpoint=s3_server.endpoint, tls=False)
    remote.discover()
    assert remote.ids() == ["default/bad", "default/big"]
    mine = remote.read(remote.entry("default/big")).detail
    theirs = local.read(local.entry("big")).detail
    assert mine is not None and theirs is not None
    assert mine["trainings"] == theirs["trainings"]
    assert mine["final"] == theirs["final"]
    assert {k: v for k, v in mine["summary"].items() if k not in ("id", "where")} == {
        k: v for k, v in theirs["summary"].items() if k not in ("id", "where")
    }
    trial = views.unpack(mine["trainings"])[0]["trial"]
    page = views.configuration(
        remote.entry("default/big").handle, mine, trial, endpoint=s3_server.endpoint, tls=False
    )
    assert page is not None
    assert page["load_cli"].startswith(
        f"hpo get s3://{store.bucket}/hpo/default/big --endpoint {s3_server.endpoint} --no-tls "
    )
    assert f'endpoint="{s3_server.endpoint}", tls=False)' in page["load_api"]
    bad = remote.read(remote.entry("default/bad"))
    assert bad.detail is None and "cannot be read" in (bad.error or "")

    builds = []
    real = views.build
    monkeypatch.setattr(views, "build", lambda s: builds.append(1) or real(s))
    entry = remote.entry("default/big")
    for _ in range(3):
        remote.read(entry)  # HEADs only: unchanged
    assert builds == []
    store.put_file("hpo/default/big/best.json", runs / "big" / "best.json")  # same bytes: same ETag
    remote.read(entry)
    store.put_bytes("hpo/default/big/best.json", b"[]")
    remote.read(entry)
    assert builds == [1] and entry.detail["final"]["rows"] == []
