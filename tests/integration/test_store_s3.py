"""S3Store against a real S3 server (moto in its own process), outages included."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from minio import Minio

from helpers.s3 import new_s3_store
from hpo.store import LocalStore, PreconditionFailed, Store, StoreError
from hpo.store.s3 import S3Store, env_credentials
from support.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server, free_port


@pytest.fixture
def frozen(s3_server: S3Server) -> Iterator[Callable[[float | None], None]]:
    """``frozen(thaw_after_s)`` stops the server; it is always thawed at the end."""
    timers: list[threading.Timer] = []

    def freeze(thaw_after_s: float | None) -> None:
        s3_server.freeze()
        if thaw_after_s is not None:
            timer = threading.Timer(thaw_after_s, s3_server.thaw)
            timers.append(timer)
            timer.start()

    yield freeze
    for timer in timers:
        timer.cancel()
    s3_server.thaw()


def closed_port_store(**options: Any) -> S3Store:
    args: dict[str, Any] = {
        "access_key": TEST_ACCESS_KEY,
        "secret_key": TEST_SECRET_KEY,
        "secure": False,
        "retries": 2,
        "backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "timeout_s": 1,
    }
    args.update(options)
    return S3Store(f"127.0.0.1:{free_port()}", "nowhere", "p", **args)


# -- round trips --------------------------------------------------------------


def test_round_trip_under_the_prefix(
    s3_store: S3Store, s3_server: S3Server, tmp_path: Path
) -> None:
    etag = s3_store.put_bytes("study/ledger.xlsx", b"ledger v1")
    s3_store.put_bytes("study/trials/r0001/scores.json", b"{}")
    s3_store.put_bytes("study2/x.txt", b"x")

    assert s3_store.get_bytes("study/ledger.xlsx") == b"ledger v1"
    assert s3_store.etag("study/ledger.xlsx") == etag  # unquoted, comparable
    assert '"' not in etag
    assert s3_store.exists("study/ledger.xlsx")
    assert not s3_store.exists("study/nothing")
    assert s3_store.etag("study/nothing") is None
    assert list(s3_store.list("study")) == ["study/ledger.xlsx", "study/trials/r0001/scores.json"]
    assert list(s3_store.list("study/trials")) == ["study/trials/r0001/scores.json"]
    assert list(s3_store.list("")) == [
        "study/ledger.xlsx",
        "study/trials/r0001/scores.json",
        "study2/x.txt",
    ]
    assert list(s3_store.list("missing")) == []
    assert s3_store.uri == f"s3://{s3_store.bucket}/root"

    # What the bucket really holds: every object under "<prefix>/".
    raw = Minio(s3_server.endpoint, TEST_ACCESS_KEY, TEST_SECRET_KEY, secure=False)
    names = sorted(o.object_name for o in raw.list_objects(s3_store.bucket, recursive=True))
    assert names == [
        "root/study/ledger.xlsx",
        "root/study/trials/r0001/scores.json",
        "root/study2/x.txt",
    ]
    # The same ETag as LocalStore's for the same bytes (an MD5 of the data).
    assert etag == LocalStore(tmp_path).put_bytes("study/ledger.xlsx", b"ledger v1")


def test_prefix_is_normalised_and_keys_checked(make_s3_store: Callable[..., S3Store]) -> None:
    store = make_s3_store(prefix="/a//b/")
    assert store.prefix == "a/b"
    assert store.uri == f"s3://{store.bucket}/a/b"
    bare = make_s3_store(prefix="")
    assert bare.uri == f"s3://{bare.bucket}"
    bare.put_bytes("k", b"1")
    assert list(bare.list("")) == ["k"]
    for bad in ("../x", "/abs", "a//b", ""):
        with pytest.raises(StoreError, match="invalid store key"):
            store.put_bytes(bad, b"")


def test_put_and_get_a_large_file_multipart(s3_store: S3Store, tmp_path: Path) -> None:
    data = os.urandom(12 * 1024 * 1024)
    src = tmp_path / "model.keras"
    src.write_bytes(data)
    seen: list[tuple[int, int]] = []

    etag = s3_store.put_file(
        "study/trials/r0001/model.keras", src, progress=lambda d, t: seen.append((d, t))
    )

    assert etag.endswith("-3")  # three 5 MiB parts: the multipart path
    assert seen[-1] == (len(data), len(data))
    got: list[tuple[int, int]] = []
    out = s3_store.get_file(
        "study/trials/r0001/model.keras",
        tmp_path / "down" / "model.keras",
        progress=lambda d, t: got.append((d, t)),
    )
    assert out.read_bytes() == data
    assert got[-1] == (len(data), len(data))
    assert [p.name for p in out.parent.iterdir()] == ["model.keras"]  # no temporary left
    # The base-class put_dir goes through put_file.
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(b"png")
    assert s3_store.put_dir("study/plots", tmp_path / "plots") == ["study/plots/a.png"]
    assert s3_store.get_bytes("study/plots/a.png") == b"png"


# -- conditional writes: the same contract for a folder and a bucket -----------


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")


def test_conditional_write_contract(any_store: Store) -> None:
    key = "study/ledger.xlsx"
    first = any_store.put_bytes(key, b"v1", if_none_match=True)
    assert any_store.etag(key) == first

    with pytest.raises(PreconditionFailed, match=r"study/ledger\.xlsx.*another writer"):
        any_store.put_bytes(key, b"v1 again", if_none_match=True)
    assert any_store.get_bytes(key) == b"v1"

    second = any_store.put_bytes(key, b"v2", if_match=first)
    assert second != first
    assert any_store.etag(key) == second

    with pytest.raises(PreconditionFailed, match=r"study/ledger\.xlsx.*another writer"):
        any_store.put_bytes(key, b"stale", if_match=first)
    assert any_store.get_bytes(key) == b"v2"

    assert any_store.put_bytes(key, b"v3", if_match=second) == any_store.etag(key)
    assert any_store.get_bytes(key) == b"v3"


def test_if_match_tolerates_quotes_and_a_vanished_key(s3_store: S3Store) -> None:
    etag = s3_store.put_bytes("k", b"1")
    assert s3_store.put_bytes("k", b"2", if_match=f'"{etag}"')
    with pytest.raises(PreconditionFailed, match=r"no longer exists.*another writer"):
        s3_store.put_bytes("never-written", b"x", if_match=etag)


def test_conditional_put_sends_the_headers(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, str]] = []
    client = s3_store._client
    real = client._put_object

    def spy(bucket, name, data, headers=None, query_params=None):
        sent.append(dict(headers or {}))
        return real(bucket, name, data, headers, query_params)

    monkeypatch.setattr(client, "_put_object", spy)
    etag = s3_store.put_bytes("k", b"1", if_none_match=True)
    s3_store.put_bytes("k", b"2", if_match=etag)
    assert sent[0]["If-None-Match"] == "*"
    assert "If-Match" not in sent[0]
    assert sent[1]["If-Match"] == f'"{etag}"'


def _timing_out_first(store: S3Store, monkeypatch: pytest.MonkeyPatch, *, lands: bool) -> None:
    """The first PUT times out on the client; with ``lands`` the server applied it anyway."""
    real = store._put
    calls = [0]

    def put(name: str, data: bytes, conditions: dict[str, str]) -> str:
        calls[0] += 1
        if calls[0] == 1:
            if lands:
                real(name, data, conditions)
            raise urllib3.exceptions.ReadTimeoutError(None, "/", "Read timed out.")
        return real(name, data, conditions)

    monkeypatch.setattr(store, "_put", put)


@pytest.mark.parametrize("condition", ["if_none_match", "if_match"])
def test_retried_conditional_write_that_had_landed_is_ours(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch, condition: str
) -> None:
    before = s3_store.put_bytes("k", b"v1")
    if condition == "if_none_match":
        s3_store.put_bytes("k2", b"other")
        key, kwargs = "new", {"if_none_match": True}
    else:
        key, kwargs = "k", {"if_match": before}
    _timing_out_first(s3_store, monkeypatch, lands=True)
    # The retry gets 412 (its own first attempt wrote the object): not a conflict.
    etag = s3_store.put_bytes(key, b"mine", **kwargs)
    assert s3_store.get_bytes(key) == b"mine"
    assert s3_store.etag(key) == etag


def test_retried_conditional_write_still_loses_to_another_writer(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = s3_store.put_bytes("k", b"v1")
    real = s3_store._put
    calls = [0]

    def put(name: str, data: bytes, conditions: dict[str, str]) -> str:
        calls[0] += 1
        if calls[0] == 1:  # times out; meanwhile someone else writes the key
            real(name, b"theirs", {})
            raise urllib3.exceptions.ReadTimeoutError(None, "/", "Read timed out.")
        return real(name, data, conditions)

    monkeypatch.setattr(s3_store, "_put", put)
    with pytest.raises(PreconditionFailed, match="another writer"):
        s3_store.put_bytes("k", b"mine", if_match=before)
    assert s3_store.get_bytes("k") == b"theirs"


# -- outages -------------------------------------------------------------------


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "if-none-match"])
def test_put_survives_an_outage(
    make_s3_store: Callable[..., S3Store],
    frozen: Callable[[float | None], None],
    conditional: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = make_s3_store(timeout_s=1, retries=5, backoff_s=0.5, max_backoff_s=8)
    data = b"ledger after the outage" * 1000
    frozen(3.0)  # longer than one request's timeout; thawed by a timer
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="hpo.store.s3"):
        etag = store.put_bytes("study/ledger.xlsx", data, if_none_match=conditional)
    elapsed = time.monotonic() - started

    assert 2.5 < elapsed < 15, elapsed  # it did wait out the outage, and not forever
    assert "retrying" in caplog.text
    # A timed-out attempt the server answers after the thaw must not turn into a
    # false "another writer" on the retry: the write is ours.
    assert list(store.list("")) == ["study/ledger.xlsx"]
    assert store.get_bytes("study/ledger.xlsx") == data
    assert store.etag("study/ledger.xlsx") == etag
    print(f"outage recovery ({'conditional' if conditional else 'plain'}): {elapsed:.2f} s")


def test_gives_up_within_a_bounded_time(
    make_s3_store: Callable[..., S3Store], frozen: Callable[[float | None], None]
) -> None:
    store = make_s3_store(timeout_s=1, retries=2, backoff_s=0.2, max_backoff_s=0.5)
    frozen(None)
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.put_bytes("quickstart/ledger.xlsx", b"x")
    elapsed = time.monotonic() - started

    message = str(info.value)
    assert message.startswith(f"put quickstart/ledger.xlsx to {store.uri} failed after 3 attempts:")
    assert "no answer within 1s" in message
    assert not isinstance(info.value, PreconditionFailed)
    # 3 attempts x 1 s timeout + at most 0.2 + 0.4 s of backoff, plus slack.
    assert elapsed < 6, elapsed
    print(f"give-up time: {elapsed:.2f} s")


# -- bad input -------------------------------------------------------------------


def test_unreachable_endpoint() -> None:
    store = closed_port_store()
    started = time.monotonic()
    with pytest.raises(
        StoreError,
        match=rf"^cannot reach S3 endpoint {store.endpoint}: .*refused.*after 3 attempts",
    ):
        store.ensure_bucket()
    with pytest.raises(
        StoreError,
        match=rf"put k to s3://nowhere/p failed after 3 attempts: cannot reach S3 endpoint {store.endpoint}",
    ):
        store.put_bytes("k", b"1")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "bucket", ["My_Bucket", "ab", "-abc", "abc-", "a..b", "192.168.1.10", "x" * 64]
)
def test_invalid_bucket_name(bucket: str) -> None:
    with pytest.raises(StoreError, match=re.escape(f"invalid S3 bucket name '{bucket}'")):
        S3Store("127.0.0.1:9000", bucket, access_key="a", secret_key="b", secure=False)


def test_missing_bucket_without_create(make_s3_store: Callable[..., S3Store]) -> None:
    store = make_s3_store(bucket="not-there-bucket", create_bucket=False)
    with pytest.raises(
        StoreError,
        match=rf"^bucket 'not-there-bucket' does not exist at {store.endpoint} \(set storage\.createBucket: true to create it\)$",
    ):
        store.ensure_bucket()
    with pytest.raises(StoreError, match="bucket 'not-there-bucket' does not exist"):
        store.put_bytes("k", b"1")


def test_create_bucket_is_idempotent(make_s3_store: Callable[..., S3Store]) -> None:
    store = make_s3_store(bucket="made-twice")
    store.ensure_bucket()
    again = make_s3_store(bucket="made-twice")
    again.ensure_bucket()
    again._make_bucket()  # lost a creation race: the bucket exists, that is fine
    assert again.put_bytes("k", b"1")


def test_missing_key(s3_store: S3Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=rf"^study/none\.json: not found in {s3_store.uri}$"):
        s3_store.get_bytes("study/none.json")
    with pytest.raises(StoreError, match="not found"):
        s3_store.get_file("study/none.json", tmp_path / "none.json")
    assert not (tmp_path / "none.json").exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StoreError, match="is not a file"):
        s3_store.put_file("k", tmp_path / "absent")


def test_endpoint_with_scheme_and_other_arguments(s3_server: S3Server, tmp_path: Path) -> None:
    store = new_s3_store(s3_server, endpoint=f"http://{s3_server.endpoint}", secure=True)
    assert store.endpoint == s3_server.endpoint and not store.secure
    store.put_bytes("k", b"1")
    with pytest.raises(StoreError, match="both an access key and a secret key"):
        S3Store(s3_server.endpoint, "bucket", access_key="a", secret_key=None)
    with pytest.raises(StoreError, match="CA bundle"):
        S3Store(
            s3_server.endpoint,
            "bucket",
            access_key=None,
            secret_key=None,
            ca_bundle=str(tmp_path / "no.pem"),
        )


# -- credentials -------------------------------------------------------------------


def test_credentials_never_leak(
    make_s3_store: Callable[..., S3Store], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = make_s3_store()
    etag = store.put_bytes("k", b"1")
    errors: list[BaseException] = []

    def collect(call: Callable[[], object]) -> None:
        with pytest.raises(StoreError) as info:
            call()
        errors.append(info.value)

    collect(lambda: store.get_bytes("missing"))
    collect(lambda: store.put_bytes("k", b"2", if_none_match=True))
    collect(lambda: store.put_bytes("k", b"2", if_match=etag + "0"))
    collect(closed_port_store().ensure_bucket)
    collect(lambda: closed_port_store().put_bytes("k", b"1"))
    collect(make_s3_store(bucket="absent-bucket", create_bucket=False).ensure_bucket)
    collect(lambda: make_s3_store(bucket="absent-bucket", create_bucket=False).get_bytes("k"))
    collect(
        lambda: S3Store("h:1", "Bad_Bucket", access_key=TEST_ACCESS_KEY, secret_key=TEST_SECRET_KEY)
    )

    texts = [repr(store), str(store), store.uri, caplog.text]
    for exc in errors:
        texts.append("".join(traceback.format_exception(exc)))
        while exc is not None:
            texts += [str(exc), repr(exc)]
            exc = exc.__cause__ or exc.__context__
    joined = "\n".join(texts)
    assert TEST_SECRET_KEY not in joined
    assert TEST_ACCESS_KEY not in joined
    assert "not found" in joined and "cannot reach" in joined  # the errors did happen


def s3_store_from_env(
    endpoint: str, bucket: str, prefix: str, secure: bool, create_bucket: bool = False
) -> S3Store:
    """An ``S3Store`` with credentials from the environment, as ``open_store`` builds one."""
    access, secret = env_credentials()
    return S3Store(
        endpoint,
        bucket,
        prefix,
        access_key=access,
        secret_key=secret,
        secure=secure,
        create_bucket=create_bucket,
    )


def test_store_from_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "HPO_S3_ACCESS_KEY",
        "HPO_S3_SECRET_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    args = (s3_server.endpoint, "from-env", "p", False)
    with pytest.raises(
        StoreError,
        match=r"HPO_S3_ACCESS_KEY and HPO_S3_SECRET_KEY.*AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    ):
        s3_store_from_env(*args)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "aws-key")
    with pytest.raises(
        StoreError, match="AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"
    ):
        s3_store_from_env(*args)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
    store = s3_store_from_env(*args, create_bucket=True)
    store.ensure_bucket()
    store.put_bytes("k", b"env")
    assert store.get_bytes("k") == b"env"
    monkeypatch.setenv("HPO_S3_ACCESS_KEY", "hpo-key")
    with pytest.raises(StoreError, match="HPO_S3_ACCESS_KEY is set but HPO_S3_SECRET_KEY is not"):
        s3_store_from_env(*args)
    monkeypatch.setenv("HPO_S3_SECRET_KEY", "hpo-secret")
    assert s3_store_from_env(*args).get_bytes("k") == b"env"
    assert TEST_SECRET_KEY not in repr(store)


def test_minio_internal_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Conditional PUTs use Minio._put_object: a changed signature fails loudly."""

    def changed(self, bucket_name, object_name, data, headers=None, query_params=None, extra=None):
        raise AssertionError

    monkeypatch.setattr(Minio, "_put_object", changed)
    with pytest.raises(StoreError, match=r"needs minio 7\.2\.x"):
        S3Store("127.0.0.1:9000", "bucket", access_key="a", secret_key="b")


def test_delete_and_delete_prefix_contract(any_store: Store) -> None:
    for key in ("study/a.txt", "study/trials/r0000/seed-1/scores.json", "study2/a.txt"):
        any_store.put_bytes(key, b"x")
    any_store.delete("study/a.txt")
    assert not any_store.exists("study/a.txt")
    any_store.delete("study/a.txt")  # a missing object is not an error
    assert any_store.delete_prefix("study") == 1
    assert list(any_store.list("study")) == []
    assert list(any_store.list("study2")) == ["study2/a.txt"]  # a neighbour's prefix is not touched


def test_a_write_the_store_denies_is_unwritable_output(
    make_s3_store: Callable[..., S3Store],
) -> None:
    """S3's permission refusals (the server's own error codes, as minio raises them) on a
    write: the run's output cannot be written, as for a folder without permission, so a
    local run stops (resumable) instead of waiting for an answer that will not change or
    charging a training; a read keeps the plain error."""
    from minio.error import S3Error

    from hpo.store import OutputUnwritable

    store = make_s3_store()
    response = urllib3.HTTPResponse(status=403)
    for code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        denied = S3Error(response, code, "denied (test)", "/k", "req", "host")
        put = store._error("put", f"k to {store.uri}", denied, 1)
        assert isinstance(put, OutputUnwritable)
        assert str(put) == (
            f"cannot write k to {store.uri}: {store._describe(denied)} "
            "(check the S3 credentials and the bucket's policy)"
        )
        get = store._error("get", f"k from {store.uri}", denied, 1)
        assert not isinstance(get, OutputUnwritable)
        assert "check the S3 credentials" in str(get)
