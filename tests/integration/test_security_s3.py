"""Security against a real S3 server: hostile keys are refused before any request,
and ``hpo get`` never writes outside ``--to`` whatever keys a bucket holds."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.s3 import new_s3_store
from hpo.store import StoreError
from hpo.store.s3 import S3Store
from support.hostile import HOSTILE_KEYS
from support.s3server import S3Server

HPO = [sys.executable, "-m", "hpo.cli"]


def test_s3_keys_stay_under_the_prefix_and_are_refused_before_any_request(
    s3_store: S3Store,
) -> None:
    for key in HOSTILE_KEYS:
        with pytest.raises(StoreError, match="invalid store key"):
            s3_store.put_bytes(key, b"x")
    assert list(s3_store.list("")) == []


def test_hpo_get_refuses_planted_keys_that_climb_out(s3_server: S3Server, tmp_path: Path) -> None:
    """A bucket written by someone else may hold ``..`` keys; nothing lands outside --to."""
    store = new_s3_store(s3_server, prefix="")
    store.put_bytes("hpo/default/s/ledger.xlsx", b"x")
    conn = http.client.HTTPConnection(s3_server.endpoint, timeout=10)
    for path in ("hpo/default/s/trials/../../../../../../escape.txt",):
        conn.request("PUT", f"/{store.bucket}/{path}", body=b"planted")
        assert conn.getresponse().read() is not None
    assert any(".." in k for k in store.list("")), "the planted key did not land"
    to = tmp_path / "to"
    proc = subprocess.run(
        [
            *HPO,
            "get",
            f"s3://{store.bucket}/hpo/default/s",
            "--to",
            str(to),
            "--endpoint",
            s3_server.endpoint,
            "--no-tls",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HPO_S3_ACCESS_KEY": "a", "HPO_S3_SECRET_KEY": "b"},
    )
    assert proc.returncode != 0 and "invalid store key" in proc.stderr, proc.stderr
    assert not list(tmp_path.rglob("escape.txt"))
    assert all(p.resolve().is_relative_to(to.resolve()) for p in to.rglob("*"))
