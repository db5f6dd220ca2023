"""Security, the in-process half (issue 7; the end-to-end half is tests/e2e/test_security.py):

1. The secret scanner finds a planted secret in every encoding.
2. Keys and local paths built from names and ids stay under the study's prefix or folder
   (hostile inputs and hypothesis properties over every function that builds them).
3. No spec field points at another namespace.
4. No shell calls in the sources; the Dockerfiles use exec form.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.study import REPO, s3_storage, study_dict
from hpo.data.dataset import DatasetError, cache_dir, cached_copy, split_s3_url
from hpo.store import LocalStore, StoreError, check_key, join_key, key_segment
from hpo.store.s3 import S3Store
from hpo.study.contract import DatasetRef, TrainingOptions, TrainingRequest
from hpo.study.layout import StudyPaths
from hpo.study.spec import SpecError, parse_study
from hpo.study.storage import store_ref_for
from support.hostile import HOSTILE_KEYS, HOSTILE_SEGMENTS, readings, safe_under
from support.leaks import find_leaks

ACCESS_KEY = "AKIALEAKCHECK7F3A0ACCESS"

SECRET_KEY = "leakcheck-SECRET-9c1e2b7d-never-logged"


def test_the_scanner_finds_a_planted_secret() -> None:
    """The scan below would catch a leak: raw, base64, inside a zipped workbook, in JSON."""
    book = io.BytesIO()
    wb = openpyxl.Workbook()
    wb.active["A1"] = f"error: bad key {SECRET_KEY}"
    wb.save(book)
    assert SECRET_KEY.encode() not in book.getvalue()  # compressed: a raw scan misses it
    pod = {"env": [{"name": "HPO_S3_SECRET_KEY", "value": SECRET_KEY}]}
    planted = {
        "log": f"INFO connecting with {ACCESS_KEY}",
        "secret-data": base64.b64encode(SECRET_KEY.encode()),
        "ledger.xlsx": book.getvalue(),
        "pod.json": json.dumps(pod),
        "url": f"https://x/?k={quote(SECRET_KEY)}",
    }
    for name, blob in planted.items():
        assert find_leaks({name: blob}, [ACCESS_KEY, SECRET_KEY]), name
    assert find_leaks({"clean": "nothing here", "zip": b"PK not a zip"}, [SECRET_KEY]) == []


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        (
            "storage",
            {"credentialsSecret": {"name": "creds", "namespace": "other"}},
            "spec.storage.credentialsSecret.namespace: is not a known field",
        ),
        ("storage", {"prefix": "hpo/other-ns"}, "spec.storage.prefix: 'hpo/other-ns' must be one"),
        ("storage", {"prefix": "hpo/other-ns/victim/trials"}, "must be one path segment"),
        ("storage", {"prefix": ""}, "spec.storage.prefix: '' must be one path segment"),
        ("storage", {"prefix": "a\\..\\b"}, "must be one path segment"),
        (
            "trainer",
            {"serviceAccountName": "system:serviceaccount:other:admin"},
            "serviceAccountName",
        ),
        ("trainer", {"serviceAccountName": "other/admin"}, "serviceAccountName"),
    ],
)
def test_no_spec_field_points_at_another_namespace(
    section: str, value: dict[str, Any], message: str
) -> None:
    raw = study_dict(storage=s3_storage(credentialsSecret={"name": "c"}))
    raw["spec"][section] = {**raw["spec"].get(section, {}), **value}
    with pytest.raises(SpecError) as err:
        parse_study(raw)
    assert message in str(err.value)


def test_no_shell_calls_in_the_sources() -> None:
    banned = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|commands\.getoutput|pty\.spawn")
    sources = [*(REPO / "operator").rglob("*.py"), *(REPO / "trainer-image").rglob("*.py")]
    assert len(sources) > 20
    hits = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sources
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if banned.search(line)
    ]
    assert hits == []
    for dockerfile in (REPO / "Dockerfile", REPO / "trainer-image" / "Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith(("ENTRYPOINT", "CMD")):
                assert line.split(None, 1)[1].startswith("["), f"{dockerfile}: shell form {line}"


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
def test_hostile_keys_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="invalid store key"):
        check_key(key)
    store = LocalStore(tmp_path / "root")
    for call in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.delete(key),
        lambda: store.etag(key),
    ):
        with pytest.raises(StoreError, match="invalid store key"):
            call()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["root"]


@pytest.mark.parametrize("value", HOSTILE_SEGMENTS, ids=repr)
def test_hostile_names_and_ids_are_refused_where_keys_are_built(value: str) -> None:
    with pytest.raises(StoreError, match="invalid study name"):
        StudyPaths(value)
    with pytest.raises(StoreError, match="invalid trial id"):
        StudyPaths("study").trial(value)
    with pytest.raises(StoreError):
        key_segment(value, "name")


def test_prefixes_of_a_study_are_checked() -> None:
    raw = study_dict(storage=s3_storage())
    study = parse_study(raw)
    assert store_ref_for(study).prefix == "hpo/default"
    for out in ("s3://b/a/../../x", "s3://b/\u2024\u2024/x", "s3://b/a\\b", "s3://b/%2e%2e/x"):
        with pytest.raises(SpecError, match="invalid store key"):
            store_ref_for(study, out)
    assert store_ref_for(study, "s3://b/team/hpo/").prefix == "team/hpo/default"


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket/../x.csv",
        "s3://bucket/a/../../x.csv",
        "s3://bucket//etc/passwd",
        "s3://bucket/a/%2e%2e/x.csv",
        "s3://bucket/\u2024\u2024/x.csv",
        "s3://bucket/a\\..\\x.csv",
        "s3://bucket/x\x00.csv",
        "s3://bucket/x/",
    ],
)
def test_dataset_urls_cannot_reach_outside_the_cache(url: str) -> None:
    with pytest.raises(DatasetError, match="dataset URL"):
        split_s3_url(url)
    with pytest.raises(DatasetError):
        cached_copy(url, "etag")
    ok = cached_copy("s3://bucket/sets/data.csv", "etag")
    assert ok.is_relative_to(cache_dir()) and ok.name == "data.csv"


def _request(**changes: Any) -> TrainingRequest:
    base = {
        "study": "demo",
        "trial": "r0001",
        "stage": "random",
        "config": {},
        "config_key": "k",
        "seeds": [1],
        "dataset": DatasetRef(path="/nonexistent.csv", features=["a"], labels=["b"]),
        "training": TrainingOptions(epochs=1),
        "output_prefix": "demo/trials/r0001",
    }
    return TrainingRequest(**{**base, **changes})


@pytest.mark.parametrize(
    "changes",
    [
        {"output_prefix": "other/trials/r0001"},
        {"output_prefix": "demo/trials/r0001/../../../other"},
        {"output_prefix": "/abs/demo/trials/r0001"},
        {"trial": "../r0001", "output_prefix": "demo/trials/../r0001"},
        {"study": "..", "output_prefix": "../trials/r0001"},
        {"study": "demo/../x", "output_prefix": "demo/../x/trials/r0001"},
    ],
)
def test_the_trainer_refuses_an_output_outside_its_trial(
    changes: dict[str, Any], tmp_path: Path
) -> None:
    from hpo_trainer.train import train_one

    store = LocalStore(tmp_path / "store")
    result = train_one(_request(**changes), 1, store)
    assert result.status == "failed"
    assert "invalid" in (result.error or "")
    assert list(store.list("")) == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["store"]


_ALPHABET = st.sampled_from(
    [".", "/", "\\", "%", "2", "e", "E", "f", "F", "a", "\x00", "\u2024", "\uff0f", "\uff0e", "~"]
)

_KEYS = st.text(_ALPHABET, min_size=0, max_size=12)

_PROPERTY = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@_PROPERTY
@given(key=_KEYS)
def test_property_a_checked_key_never_leaves_its_root(key: str) -> None:
    try:
        check_key(key)
    except StoreError:
        return
    assert safe_under(key)
    root = Path("/srv/store")
    assert Path(os.path.normpath(root / key)).is_relative_to(root)


@_PROPERTY
@given(key=_KEYS)
def test_property_local_store_writes_only_inside_its_root(key: str, tmp_path: Path) -> None:
    base = tmp_path / uuid.uuid4().hex
    store = LocalStore(base / "root")
    try:
        store.put_bytes(key, b"x")
    except StoreError:
        written = []
    else:
        written = [p for p in base.rglob("*") if p.is_file()]
        assert len(written) == 1
    for path in written:
        assert path.resolve().is_relative_to((base / "root").resolve())


@_PROPERTY
@given(study=_KEYS, trial=_KEYS)
def test_property_trial_keys_stay_in_the_study_folder(study: str, trial: str) -> None:
    try:
        key = StudyPaths(study).trial(trial)
    except StoreError:
        return
    assert key == f"{study}/trials/{trial}" and len(key.split("/")) == 3
    assert safe_under(key)
    assert not any("/" in form for form in readings(study) | readings(trial))


@_PROPERTY
@given(key=_KEYS)
def test_property_s3_object_names_start_with_the_prefix(key: str) -> None:
    store = S3Store(
        "127.0.0.1:9", "bucket-x", "hpo/ns", access_key="a", secret_key="b", secure=False
    )
    try:
        name = store._name(key)
    except StoreError:
        return
    assert name.startswith("hpo/ns/") and safe_under(name)


@_PROPERTY
@given(name=_KEYS)
def test_property_dataset_copies_stay_in_the_cache(name: str) -> None:
    url = f"s3://bucket/sets/{name}"
    try:
        path = cached_copy(url, "etag")
    except DatasetError:
        return
    assert Path(os.path.normpath(path)).is_relative_to(cache_dir())


def test_join_key_is_the_checked_way_to_build_keys() -> None:
    assert join_key("s", "trials", "r0001") == "s/trials/r0001"
    with pytest.raises(StoreError):
        join_key("s", "..", "x")
