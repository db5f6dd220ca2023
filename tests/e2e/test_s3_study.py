"""Studies on an S3 server (moto, a real HTTP process): layout, outage, two writers,
bad input and a scan for the secret key."""

from __future__ import annotations

import io
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import yaml

from helpers.s3 import new_s3_store
from helpers.study import (
    ARTIFACTS,
    EXAMPLE_CSV,
    GP_NARROW,
    HPO_ENV,
    SMALL_SPACE,
    run_hpo,
    start_hpo,
    study_dict,
    study_file,
)
from hpo.records.ledger import read_ledger
from hpo.records.recorder import LedgerConflict, Recorder
from hpo.store import StoreRef
from hpo.study.layout import StudyPaths
from hpo.study.spec import parse_study
from support.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server

SMALL: dict[str, Any] = {
    "searchSpace": SMALL_SPACE,
    "training": {"epochs": 3, "patience": 2, "seedsPerConfig": 2, "seedRacing": False},
    "randomStage": {"configurations": 3},
    "bayesianStage": GP_NARROW,
    "parallelism": 2,
}
TRAININGS = (3 + 1) * 2


def env(**extra: str) -> dict[str, str]:
    return {
        **HPO_ENV,
        "HPO_S3_ACCESS_KEY": TEST_ACCESS_KEY,
        "HPO_S3_SECRET_KEY": TEST_SECRET_KEY,
        "HPO_S3_TIMEOUT": "2",
        **extra,
    }


def upload_dataset(server: S3Server) -> str:
    bucket = f"data-{uuid.uuid4().hex[:12]}"
    store = new_s3_store(server, bucket=bucket, prefix="")
    store.put_file("sets/transistor.csv", EXAMPLE_CSV)
    return f"s3://{bucket}/sets/transistor.csv"


def s3_study(
    folder: Path, server: S3Server, name: str, dataset: str, **storage: Any
) -> tuple[Path, str]:
    bucket = storage.pop("bucket", f"results-{uuid.uuid4().hex[:12]}")
    raw = study_dict(**SMALL)
    raw["spec"]["dataset"]["path"] = dataset
    raw["spec"]["storage"] = {
        "type": "s3",
        "endpoint": server.endpoint,
        "bucket": bucket,
        "prefix": "hpo",
        "tls": False,
        "createBucket": True,
        **storage,
    }
    return study_file(folder, name, raw), bucket


def results_store(server: S3Server, bucket: str) -> Any:
    return new_s3_store(server, bucket=bucket, prefix="", create_bucket=False)


@pytest.fixture(scope="module")
def s3_run(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("s3run")
    dataset = upload_dataset(s3_server)
    study, bucket = s3_study(folder, s3_server, "on-s3", dataset)
    proc = run_hpo("run", str(study), env=env(), timeout=600)
    return {"proc": proc, "bucket": bucket, "folder": folder, "study": study, "dataset": dataset}


def test_study_on_s3_lands_at_the_documented_keys(
    s3_run: dict[str, Any], s3_server: S3Server
) -> None:
    proc = s3_run["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = results_store(s3_server, s3_run["bucket"])
    root = "hpo/default/on-s3"
    keys = set(store.list(root))
    for key in (
        "ledger.xlsx",
        "study.yaml",
        "best.json",
        "plots/mae_vs_hidden_layers.png",
        "plots/best_seeds_boxplot.png",
        "plots/convergence.png",
    ):
        assert f"{root}/{key}" in keys, key
    rows = read_ledger(store, f"{root}/ledger.xlsx")
    assert len(rows) == TRAININGS and all(r.status == "succeeded" for r in rows)
    assert len({r.key for r in rows}) == TRAININGS
    for r in rows:
        assert r.artifacts == f"on-s3/trials/{r.trial}/seed-{r.seed}"
        for name in ARTIFACTS:
            assert f"hpo/default/{r.artifacts}/{name}" in keys
    assert f"results in s3://{s3_run['bucket']}/hpo/default/on-s3" in proc.stdout


def test_ls_get_and_report_read_the_bucket(
    s3_run: dict[str, Any], s3_server: S3Server, tmp_path: Path
) -> None:
    where = f"s3://{s3_run['bucket']}/hpo"
    opts = ["--endpoint", s3_server.endpoint, "--no-tls"]
    ls = run_hpo("ls", where, *opts, env=env())
    assert ls.returncode == 0, ls.stderr
    assert "default/on-s3" in ls.stdout and f"{TRAININGS} trainings  finished" in ls.stdout
    rep = run_hpo("report", f"{where}/default/on-s3", *opts, env=env())
    assert rep.returncode == 0, rep.stderr
    assert f"{TRAININGS} trainings succeeded, 0 failed" in rep.stdout
    get = run_hpo(
        "get",
        f"{where}/default/on-s3",
        "--what",
        "model",
        "--trial",
        "r0000",
        "--seed",
        "1",
        "--to",
        str(tmp_path),
        *opts,
        env=env(),
    )
    assert get.returncode == 0, get.stderr
    got = tmp_path / "on-s3" / "trials" / "r0000" / "seed-1"
    assert sorted(p.name for p in got.iterdir()) == sorted(ARTIFACTS)


def test_outage_mid_study_loses_nothing_and_counts_nothing_twice(
    s3_server: S3Server, tmp_path: Path
) -> None:
    dataset = upload_dataset(s3_server)
    study, bucket = s3_study(tmp_path, s3_server, "outage", dataset)
    proc = start_hpo("run", str(study), env=env())
    assert proc.stdout is not None
    frozen = False
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if ": val MAE " in line and not frozen:
            # Longer than one request's timeout (2 s): requests in flight time out and retry.
            s3_server.freeze()
            threading.Timer(5.0, s3_server.thaw).start()
            frozen = True
    _, err = proc.communicate(timeout=600)
    assert frozen
    assert proc.returncode == 0, "".join(lines) + err
    store = results_store(s3_server, bucket)
    rows = read_ledger(store, "hpo/default/outage/ledger.xlsx")
    assert len(rows) == TRAININGS
    assert len({r.key for r in rows}) == TRAININGS, "a training counted twice"
    assert len({r.config_key for r in rows}) == TRAININGS // 2
    for r in rows:
        assert store.exists(f"hpo/default/{r.artifacts}/scores.json")


def test_two_writers_on_one_ledger_the_second_gets_a_clear_error(s3_server: S3Server) -> None:
    store = new_s3_store(s3_server)
    study = parse_study(study_dict())
    first = Recorder(store, StudyPaths("twice"), study, ["Id_mA"])
    second = Recorder(store, StudyPaths("twice"), study, ["Id_mA"])
    assert first.load() == [] and second.load() == []
    first.write([])
    with pytest.raises(
        LedgerConflict, match=r"written by someone else.*is the same study running twice"
    ):
        second.write([])
    first.write([])  # the owner goes on writing


def test_unreachable_endpoint_is_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = study_dict(**SMALL)
    raw["spec"]["storage"] = {
        "type": "s3",
        "endpoint": f"127.0.0.1:{port}",
        "bucket": "results",
        "tls": False,
    }
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(raw))
    proc = run_hpo("run", str(study), env=env(HPO_S3_RETRIES="1"), timeout=120)
    assert proc.returncode == 1
    assert f"cannot reach S3 endpoint 127.0.0.1:{port}" in proc.stderr


def test_missing_bucket_is_created_only_when_allowed(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = f"absent-{uuid.uuid4().hex[:10]}"
    study, _ = s3_study(
        tmp_path, s3_server, "nobucket", str(EXAMPLE_CSV), bucket=bucket, createBucket=False
    )
    proc = run_hpo("run", str(study), env=env(), timeout=120)
    assert proc.returncode == 1
    assert (
        f"bucket '{bucket}' does not exist" in proc.stderr and "createBucket: true" in proc.stderr
    )


def test_missing_dataset_key_is_named(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = f"data-{uuid.uuid4().hex[:12]}"
    new_s3_store(s3_server, bucket=bucket, prefix="")
    url = f"s3://{bucket}/nope/missing.csv"
    study, results = s3_study(tmp_path, s3_server, "nodata", url)
    proc = run_hpo("run", str(study), env=env(), timeout=120)
    assert proc.returncode == 2
    assert f"spec.dataset.path: dataset not found: {url}" in proc.stderr
    assert not list(results_store(s3_server, results).list("hpo"))  # nothing half-written


def test_dataset_changed_mid_study_is_reported(s3_server: S3Server, tmp_path: Path) -> None:
    from hpo.data.checks import check_dataset
    from hpo.engine import Engine
    from hpo.session import training_request
    from hpo_trainer.train import train_one

    dataset = upload_dataset(s3_server)
    study_file, bucket = s3_study(tmp_path, s3_server, "changed", dataset)
    from hpo.study.spec import load_study

    study = load_study(study_file)
    ref = StoreRef(
        kind="s3",
        endpoint=s3_server.endpoint,
        bucket=bucket,
        prefix="hpo/default",
        tls=False,
        create_bucket=True,
    )
    os.environ.update(HPO_S3_ACCESS_KEY=TEST_ACCESS_KEY, HPO_S3_SECRET_KEY=TEST_SECRET_KEY)
    prepared = check_dataset(study, ref)
    assert prepared.dataset.etag
    data_bucket, key = dataset.removeprefix("s3://").split("/", 1)
    source = new_s3_store(s3_server, bucket=data_bucket, prefix="", create_bucket=False)
    source.put_bytes(key, EXAMPLE_CSV.read_bytes().replace(b"\n1.", b"\n2.", 5))
    task = Engine(study.spec).next_tasks(1)[0]
    request = training_request(study, prepared, [task], ref)
    from hpo.store import open_store

    result = train_one(request, task.seed, open_store(ref))
    assert result.status == "failed"
    assert f"dataset {dataset} changed since the study started" in (result.error or "")


def test_the_secret_key_is_nowhere(s3_run: dict[str, Any], s3_server: S3Server) -> None:
    proc = s3_run["proc"]
    secret = TEST_SECRET_KEY
    assert secret not in proc.stdout and secret not in proc.stderr
    store = results_store(s3_server, s3_run["bucket"])
    keys = list(store.list(""))
    assert len(keys) > 50
    for key in keys:
        data = store.get_bytes(key)
        assert secret.encode() not in data, key
        if key.endswith(".xlsx"):
            book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
            for sheet in book.worksheets:
                for row in sheet.iter_rows(values_only=True):
                    assert not any(secret in str(v) for v in row if v is not None), (key, row)
    (study_yaml,) = [k for k in keys if k.endswith("study.yaml")]
    copy = store.get_bytes(study_yaml).decode()
    assert TEST_ACCESS_KEY not in copy and "credentialsSecret: null" in copy
