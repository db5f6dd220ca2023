"""Security (issue 7), one place per promise:

1. No secret value anywhere: the operator path is scanned end to end here (logs, Events,
   status, every pod the operator created, every request body it sent, ledger cells,
   every stored object, trainer output). The local ``hpo run`` path is scanned in
   ``test_s3_study.py::test_the_secret_key_is_nowhere``; ``test_pods.py::test_pod_manifest``
   checks one pod's secretKeyRef.
2. Keys and local paths built from names and ids stay under the study's prefix or folder
   (hostile inputs and hypothesis properties over every function that builds them).
3. A study reaches only its own namespace: Secrets, pods and stored data.
4. Nothing from a spec reaches a shell: pods carry argument lists, spec strings arrive as data.
5. Every pod the operator created in the end-to-end run passes the "restricted" Pod Security
   Standard checker of ``test_chart.py`` (also used by ``test_pods.py`` and the chart tests).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import unicodedata
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

import kopf
import openpyxl
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kopf.testing import KopfRunner

from helpers.s3 import new_s3_store
from helpers.study import EXAMPLE_CSV, REPO, study_dict
from helpers.synthetic import synthetic as synthetic_trainer
from hpo.contract import DatasetRef, TrainingOptions, TrainingRequest
from hpo.handlers import make_registry
from hpo.ledger import read_ledger
from hpo.pods import LABEL_STUDY
from hpo.recorder import StudyPaths
from hpo.spec import SpecError, parse_study
from hpo.store import LocalStore, StoreError, check_key, join_key, key_segment
from hpo.store_s3 import S3Store
from hpo.stores import open_store, store_ref_for
from hpo_trainer.data import DatasetError
from hpo_trainer.fetch import cache_dir, cached_copy, split_s3_url
from support.kube.kubelet import TestKubelet
from support.kube.server import KubeServer
from support.podsecurity import restricted_violations
from support.s3server import S3Server

HPO = [sys.executable, "-m", "hpo.cli"]
GROUP, VERSION, PLURAL = "hpo-operator.dev", "v1alpha1", "hpostudies"

# Distinctive values: the scan looks for them (and their encodings) everywhere.
ACCESS_KEY = "AKIALEAKCHECK7F3A0ACCESS"
SECRET_KEY = "leakcheck-SECRET-9c1e2b7d-never-logged"
NS_A, NS_B = "sec-a", "sec-b"
CREDS = "s3-creds"
ONLY_IN_B = "only-in-b"
OPERATOR_AGENTS = ("kopf/", "hpo-operator/")
ENDED = ("Succeeded", "Failed")

# Spec strings a shell would act on; the trainer must treat them as column names.
HOSTILE_LABEL = "x; rm -rf / #"
HOSTILE_ENV = "$(id) `id` ; echo pwned | cat > /tmp/p && true"

HOSTILE_KEYS = [
    "..",
    ".",
    "",
    "../x",
    "/abs",
    "/etc/passwd",
    "a/../../b",
    "a/./b",
    "a//b",
    "a/",
    "%2e%2e",
    "a/%2e%2e/b",
    "%2E%2E/x",
    "..%2fx",
    "\u2024\u2024",
    "a/\u2024\u2024/b",
    "\uff0e\uff0e/x",
    "\uff05\uff12\uff45\uff05\uff12\uff45",
    "a\x00b",
    "a\nb",
    "a\\..\\..\\b",
    "..\\x",
    "C:\\x",
    "x" * 300,
    "a/" * 600,
    "\ud800",
]
#: Single segments (names, ids): the keys above plus anything with a separator in it.
HOSTILE_SEGMENTS = [*HOSTILE_KEYS, "a/b", "a\uff0fb", "a%2fb", "a%2Fb", "x/../.."]


# -- the scanner -------------------------------------------------------------------------


def _needles(secrets: list[str]) -> list[bytes]:
    """A secret as it may appear: raw, base64 (as in a Secret), URL-quoted, JSON-escaped."""
    out = []
    for s in secrets:
        raw = s.encode()
        out += [
            raw,
            base64.b64encode(raw),
            quote(s, safe="").encode(),
            json.dumps(s)[1:-1].encode(),
        ]
    return list(dict.fromkeys(out))


def _readable(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """``data`` and, for zip containers (xlsx, .keras), each member uncompressed."""
    yield name, data
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for member in z.namelist():
                    yield f"{name}!{member}", z.read(member)
        except zipfile.BadZipFile:
            pass


def find_leaks(blobs: dict[str, bytes | str], secrets: list[str]) -> list[str]:
    """Where any of ``secrets`` shows up in ``blobs`` (name -> content)."""
    needles = _needles(secrets)
    found = []
    for name, blob in blobs.items():
        data = blob.encode("utf-8", "replace") if isinstance(blob, str) else blob
        for where, text in _readable(name, data):
            found += [f"{where}: {n[:12]!r}..." for n in needles if n in text]
    return found


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


# -- the end-to-end operator run ---------------------------------------------------------


class _Capture(logging.Handler):
    """Every log record of the process, formatted with its arguments and traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _secret(ns: str, name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "data": {
            "accessKey": base64.b64encode(ACCESS_KEY.encode()).decode(),
            "secretKey": base64.b64encode(SECRET_KEY.encode()).decode(),
        },
    }


def _study(
    name: str, ns: str, s3: S3Server, data_url: str, bucket: str, **spec: Any
) -> dict[str, Any]:
    raw = study_dict(
        searchSpace={
            "hiddenLayers": {"min": 1, "max": 2},
            "neurons": {"min": 8, "max": 32, "step": 8},
            "activations": ["relu", "tanh"],
            "learningRate": {"min": 0.003, "max": 0.03},
            "batchSizes": [64],
        },
        training={"epochs": 2, "patience": 2, "seedsPerConfig": 2},
        randomStage={"configurations": 3},
        bayesianStage={"topK": 1, "trialsPerConfig": 1, "estimator": "ET", "neuronsRadius": 8},
        parallelism=2,
        failurePolicy={"retries": 1, "maxFailedTrainings": 3},
        storage={
            "type": "s3",
            "endpoint": s3.endpoint,
            "tls": False,
            "bucket": bucket,
            "prefix": "hpo",
            "createBucket": True,
            "credentialsSecret": {"name": CREDS},
        },
        trainer={"image": "test/trainer:dev", "retryBackoffSeconds": 0, "seedsPerPod": 2},
    )
    raw["spec"]["dataset"]["path"] = data_url
    raw["metadata"] = {"name": name, "namespace": ns}
    for key, value in spec.items():
        raw["spec"][key] = {**raw["spec"].get(key, {}), **value}
    return raw


def _request_of(pod: dict[str, Any]) -> TrainingRequest:
    args = pod["spec"]["containers"][0]["args"]
    return TrainingRequest.from_json(args[args.index("--request") + 1])


def _hostile_csv(folder: Path, markers: list[Path]) -> tuple[Path, list[str], list[str]]:
    """The example data with columns named like shell commands (that would touch markers)."""
    frame = pd.read_csv(EXAMPLE_CSV).head(300)
    names = {
        "Id_mA": HOSTILE_LABEL,
        "W_um": f"$(touch {markers[0]})",
        "L_um": f"`touch {markers[1]}`",
    }
    frame = frame.rename(columns=names)
    path = folder / "hostile.csv"
    frame.to_csv(path, index=False)
    features = [names["W_um"], names["L_um"], "tox_nm", "Vth_V", "Vgs_V", "Vds_V"]
    return path, features, [HOSTILE_LABEL, "gm_mS"]


@contextmanager
def _operator(kube: KubeServer) -> Iterator[KopfRunner]:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kube.connection_info()

    make_registry(kube.api_client, poll_s=0.3, retry_s=1.0, registry=registry)
    settings_ = kopf.OperatorSettings()
    settings_.peering.standalone = True
    settings_.posting.enabled = True  # kopf's own events too: they are scanned
    with KopfRunner(
        ["run", "--standalone", "--all-namespaces"],
        registry=registry,
        settings=settings_,
        timeout=120,
    ) as runner:
        yield runner


def _wait(what: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def run(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory, hpo_crd: dict[str, Any]
) -> dict[str, Any]:
    """Six studies in two namespaces through one operator; everything it left behind.

    - ``sec-a/twin`` and ``sec-b/twin``: the same name in two namespaces, one bucket
      (synthetic trainers; one planted trainer failure in ``sec-a``).
    - ``sec-a/crossref``: its credentialsSecret exists only in ``sec-b``.
    - ``sec-a/nobucket`` (a missing bucket) and ``sec-a/nodata`` (a missing dataset):
      error messages from the store.
    - ``sec-b/hostile``: the real trainer, on columns named like shell commands.
    """
    folder = tmp_path_factory.mktemp("security")
    markers = [folder / "pwned-1", folder / "pwned-2"]
    csv, features, labels = _hostile_csv(folder, markers)
    data_bucket = f"data-{uuid.uuid4().hex[:10]}"
    data = new_s3_store(s3_server, bucket=data_bucket, prefix="")
    data.put_file("transistor.csv", EXAMPLE_CSV)
    data.put_file("hostile.csv", csv)
    dataset = f"s3://{data_bucket}/transistor.csv"
    bucket = f"shared-{uuid.uuid4().hex[:10]}"

    studies = {
        (NS_A, "twin"): _study("twin", NS_A, s3_server, dataset, bucket),
        (NS_B, "twin"): _study("twin", NS_B, s3_server, dataset, bucket),
        (NS_A, "crossref"): _study(
            "crossref",
            NS_A,
            s3_server,
            dataset,
            bucket,
            storage={"credentialsSecret": {"name": ONLY_IN_B}},
        ),
        (NS_A, "nobucket"): _study(
            "nobucket",
            NS_A,
            s3_server,
            dataset,
            f"absent-{uuid.uuid4().hex[:8]}",
            storage={"createBucket": False},
        ),
        (NS_A, "nodata"): _study(
            "nodata", NS_A, s3_server, f"s3://{data_bucket}/missing/x.csv", bucket
        ),
        (NS_B, "hostile"): _study(
            "hostile",
            NS_B,
            s3_server,
            f"s3://{data_bucket}/hostile.csv",
            bucket,
            dataset={"features": features, "labels": labels},
            randomStage={"configurations": 1},
            bayesianStage={"enabled": False},
            training={"seedsPerConfig": 1, "epochs": 2},
            trainer={"env": [{"name": "HOSTILE", "value": HOSTILE_ENV}]},
        ),
    }
    with KubeServer(namespaces=("default", "kube-system", NS_A, NS_B), crds=(hpo_crd,)) as kube:
        api = kube.api()
        for ns in (NS_A, NS_B):
            api.core.create_namespaced_secret(ns, _secret(ns, CREDS))
        api.core.create_namespaced_secret(NS_B, _secret(NS_B, ONLY_IN_B))

        seen: dict[str, dict[str, Any]] = {}  # every pod the kubelet saw, as first created
        lock = threading.Lock()

        def behaviour(pod: dict[str, Any]) -> str:
            with lock:
                seen.setdefault(pod["metadata"]["uid"], json.loads(json.dumps(pod)))
            meta = pod["metadata"]
            if meta["labels"][LABEL_STUDY] == "hostile":
                return "run"
            first = meta["annotations"]["hpo-operator.dev/attempt"] == "1"
            if meta["namespace"] == NS_A and "-r0001-" in meta["name"] and first:
                return f"fail:1:RuntimeError: planted failure in {meta['name']}"
            return "instant"

        def result(pod: dict[str, Any]) -> tuple[int, str]:
            # Where the operator told the trainer to write (the request's store), nowhere else.
            request = _request_of(pod)
            assert request.store is not None
            store = open_store(request.store, credentials=(ACCESS_KEY, SECRET_KEY))
            return synthetic_trainer(lambda: store, 0.05)(pod)

        capture = _Capture()
        root = logging.getLogger()
        root.addHandler(capture)

        def status(ns: str, name: str) -> dict[str, Any]:
            obj = api.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            return obj.get("status") or {}

        kubelet = TestKubelet(
            kube.api_client(), behaviour=behaviour, result=result, max_running=2
        ).start()
        try:
            with _operator(kube) as runner:
                for (ns, _), body in studies.items():
                    api.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
                for ns, name in [(NS_A, "twin"), (NS_B, "twin"), (NS_B, "hostile")]:
                    _wait(lambda ns=ns, name=name: status(ns, name).get("phase") in ENDED, 120)
                for ns, name in [(NS_A, "crossref"), (NS_A, "nodata")]:
                    _wait(lambda ns=ns, name=name: status(ns, name).get("phase") == "Failed")
                _wait(lambda: "does not exist" in status(NS_A, "nobucket").get("message", ""))
                statuses = {key: status(*key) for key in studies}
                keys = set(
                    new_s3_store(s3_server, bucket=bucket, prefix="", create_bucket=False).list("")
                )
        finally:
            kubelet.stop()
            root.removeHandler(capture)

        raw = api.core.list_event_for_all_namespaces(_preload_content=False)
        events = json.loads(raw.data)["items"]
        pods_left = json.loads(api.core.list_pod_for_all_namespaces(_preload_content=False).data)
        bodies = kube.call(
            lambda: [
                (r.headers.get("User-Agent", ""), r.method, str(r.url), r.text)
                for r in kube.emulator
            ]
        )
        requests = list(kube.requests)
        out = {
            "kube": kube,
            "api": api,
            "runner": runner,
            "logs": capture.lines,
            "events": events,
            "statuses": statuses,
            "studies": studies,
            "pods": list(seen.values()),
            "pods_left": pods_left["items"],
            "bodies": bodies,
            "requests": requests,
            "kubelet": kubelet,
            "bucket": bucket,
            "data_bucket": data_bucket,
            "keys": keys,
            "markers": markers,
            "features": features,
            "labels": labels,
        }
        yield out
        api.close()


def _all_objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    store = new_s3_store(s3, bucket=bucket, prefix="", create_bucket=False)
    return {key: store.get_bytes(key) for key in store.list("")}


def test_the_secret_is_nowhere_on_the_operator_path(
    run: dict[str, Any], s3_server: S3Server
) -> None:
    st_ = run["statuses"]
    assert st_[(NS_A, "twin")]["phase"] == "Succeeded", st_[(NS_A, "twin")]
    assert st_[(NS_B, "twin")]["phase"] == "Succeeded", st_[(NS_B, "twin")]
    runner = run["runner"]
    operator_bodies = [
        f"{method} {url}\n{text}"
        for agent, method, url, text in run["bodies"]
        if agent.startswith(OPERATOR_AGENTS)
    ]
    stored = _all_objects(s3_server, run["bucket"])
    kubelet: TestKubelet = run["kubelet"]
    blobs: dict[str, bytes | str] = {
        "operator log records": "\n".join(run["logs"]),
        "kopf runner output": runner.output,
        "events": json.dumps(run["events"]),
        "statuses": json.dumps({"/".join(k): v for k, v in run["statuses"].items()}),
        "pods": json.dumps(run["pods"]),
        "pods left": json.dumps(run["pods_left"]),
        "operator requests": "\n".join(operator_bodies),
        **{f"s3://{run['bucket']}/{k}": v for k, v in stored.items()},
        **{
            f"trainer {r.name}": f"{r.output}\n{r.message}\n{' '.join(r.argv)}"
            for r in kubelet.records.values()
        },
    }
    # The scan has real material: error messages among it.
    text = "\n".join(str(b) for b in blobs.values() if isinstance(b, str))
    assert len(run["logs"]) > 20 and len(run["events"]) > 10 and len(operator_bodies) > 50
    assert len(stored) > 40 and any(k.endswith("ledger.xlsx") for k in stored)
    for message in (
        "planted failure",
        "Secret sec-a/only-in-b not found",
        "does not exist",
        "dataset not found",
    ):
        assert message in text, message
    assert find_leaks(blobs, [SECRET_KEY, ACCESS_KEY]) == []


def test_ledger_cells_hold_no_secret(run: dict[str, Any], s3_server: S3Server) -> None:
    books = {k: v for k, v in _all_objects(s3_server, run["bucket"]).items() if k.endswith(".xlsx")}
    assert books
    cells = 0
    for key, data in books.items():
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
        for sheet in book.worksheets:
            for row in sheet.iter_rows(values_only=True):
                for value in row:
                    if value is not None:
                        cells += 1
                        assert SECRET_KEY not in str(value) and ACCESS_KEY not in str(value), key
    assert cells > 100


def test_pods_take_credentials_by_reference_only(run: dict[str, Any]) -> None:
    assert len(run["pods"]) >= 10
    for pod in run["pods"]:
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        for var, key in (("HPO_S3_ACCESS_KEY", "accessKey"), ("HPO_S3_SECRET_KEY", "secretKey")):
            assert "value" not in env[var], pod["metadata"]["name"]
            assert env[var]["valueFrom"] == {"secretKeyRef": {"name": CREDS, "key": key}}
    # The trainer got them at run time through the Secret of its own namespace.
    (hostile,) = [r for r in run["kubelet"].records.values() if r.mode == "run"]
    assert hostile.env["HPO_S3_SECRET_KEY"] == SECRET_KEY and hostile.namespace == NS_B


# -- 3. namespaces -------------------------------------------------------------------------


def test_a_secret_of_another_namespace_is_not_used(run: dict[str, Any]) -> None:
    status = run["statuses"][(NS_A, "crossref")]
    assert status["phase"] == "Failed"
    cond = {c["type"]: c for c in status["conditions"]}["StoreReady"]
    assert cond["status"] == "False" and cond["reason"] == "CredentialsMissing"
    assert "Secret sec-a/only-in-b not found" in cond["message"]
    reads = {
        (r.namespace, r.name, r.verb)
        for r in run["requests"]
        if r.resource == "secrets" and r.user_agent.startswith(OPERATOR_AGENTS)
    }
    assert (NS_B, ONLY_IN_B, "get") not in reads
    assert {v for _, _, v in reads} == {"get"}  # never a list or watch of Secrets
    # Each read is of a Secret some study of that same namespace names.
    named = {
        (ns, body["spec"]["storage"]["credentialsSecret"]["name"])
        for (ns, _), body in run["studies"].items()
    }
    assert {(ns, name) for ns, name, _ in reads} <= named
    assert not [p for p in run["pods"] if p["metadata"]["labels"][LABEL_STUDY] == "crossref"]


def test_pods_are_created_only_in_their_study_namespace(run: dict[str, Any]) -> None:
    creates = [
        r
        for r in run["requests"]
        if r.resource == "pods" and r.verb == "create" and r.user_agent.startswith(OPERATOR_AGENTS)
    ]
    assert creates and {r.namespace for r in creates} == {NS_A, NS_B}
    # The kubelet saw (and the checks below cover) every pod the operator created.
    assert len([r for r in creates if r.status == 201]) == len(run["pods"])
    for pod in run["pods"]:
        meta = pod["metadata"]
        study = meta["labels"][LABEL_STUDY]
        assert (meta["namespace"], study) in run["studies"], meta["name"]
        assert meta["ownerReferences"][0]["name"] == study
        request = _request_of(pod)
        # ...and its trainer writes under that namespace's prefix only.
        assert request.store is not None and request.store.prefix == f"hpo/{meta['namespace']}"
        assert request.output_prefix.startswith(f"{study}/trials/")
    assert {p["metadata"]["namespace"] for p in run["pods_left"]} <= {NS_A, NS_B}


def test_same_name_in_two_namespaces_never_touch_each_others_keys(
    run: dict[str, Any], s3_server: S3Server
) -> None:
    keys = run["keys"]
    store = new_s3_store(s3_server, bucket=run["bucket"], prefix="", create_bucket=False)
    for ns in (NS_A, NS_B):
        own = {k for k in keys if k.startswith(f"hpo/{ns}/twin/")}
        assert len([k for k in own if k.endswith("/scores.json")]) == 8
        rows = read_ledger(store, f"hpo/{ns}/twin/ledger.xlsx")
        assert len(rows) == 8 and all(r.status == "succeeded" for r in rows)
        copy = yaml.safe_load(store.get_bytes(f"hpo/{ns}/twin/study.yaml"))
        assert copy["metadata"]["namespace"] == ns
    # Every key in the shared bucket lies under <prefix>/<namespace>/<study>/ of a study.
    for key in keys:
        ns, name = key.split("/")[1:3]
        assert key.startswith("hpo/") and (ns, name) in run["studies"], key


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
    raw = study_dict(
        storage={
            "type": "s3",
            "endpoint": "minio:9000",
            "bucket": "hpo",
            "credentialsSecret": {"name": "c"},
        }
    )
    raw["spec"][section] = {**raw["spec"].get(section, {}), **value}
    with pytest.raises(SpecError) as err:
        parse_study(raw)
    assert message in str(err.value)


# -- 4. no shell -------------------------------------------------------------------------


def test_spec_strings_reach_the_trainer_as_data(run: dict[str, Any], s3_server: S3Server) -> None:
    status = run["statuses"][(NS_B, "hostile")]
    assert status["phase"] == "Succeeded", status
    (pod,) = [p for p in run["pods"] if p["metadata"]["labels"][LABEL_STUDY] == "hostile"]
    (container,) = pod["spec"]["containers"]
    request = _request_of(pod)
    assert request.dataset.labels == run["labels"] and request.dataset.features == run["features"]
    assert {"name": "HOSTILE", "value": HOSTILE_ENV} in container["env"]
    # The kubelet ran exactly that argument list (no shell in between), and the trainer
    # saw the value verbatim.
    (record,) = [r for r in run["kubelet"].records.values() if r.mode == "run"]
    # (the kubelet maps the termination-log path to a file of its own)
    assert record.argv[1:5] == [*container["command"][1:], *container["args"][:2]]
    assert record.env["HOSTILE"] == HOSTILE_ENV
    for marker in run["markers"]:
        assert not marker.exists(), f"a column name was run as a command: {marker}"
    store = new_s3_store(s3_server, bucket=run["bucket"], prefix="", create_bucket=False)
    (row,) = read_ledger(store, f"hpo/{NS_B}/hostile/ledger.xlsx")
    assert row.status == "succeeded" and HOSTILE_LABEL in row.per_label


def test_every_pod_runs_an_argument_list_without_a_shell(run: dict[str, Any]) -> None:
    shells = {"sh", "bash", "/bin/sh", "/bin/bash", "ash", "dash", "zsh"}
    for pod in run["pods"]:
        for c in pod["spec"]["containers"]:
            assert c["command"] == ["python", "-m", "hpo_trainer"]
            assert isinstance(c["args"], list) and all(isinstance(a, str) for a in c["args"])
            assert not shells & {Path(a).name for a in c["command"] + c["args"]}
            assert "-c" not in c["command"] + c["args"]
            assert c["args"][0] == "--request" and json.loads(c["args"][1])["study"]


def test_a_local_run_takes_a_shell_like_column_as_a_name(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    label = f"$(touch {marker}); `touch {marker}` | touch {marker}"
    raw = study_dict()
    raw["spec"]["dataset"]["labels"] = [label]
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [*HPO, "run", str(study), "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "spec.dataset" in proc.stderr and label in proc.stderr
    assert not marker.exists()


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


# -- 5. Pod Security Standard ------------------------------------------------------------


def test_every_pod_the_operator_created_is_restricted(run: dict[str, Any]) -> None:
    assert len(run["pods"]) >= 10
    for pod in run["pods"]:
        assert restricted_violations(pod["spec"]) == [], pod["metadata"]["name"]
        assert pod["spec"]["automountServiceAccountToken"] is False


# -- 2. keys and paths -------------------------------------------------------------------


def _readings(key: str) -> set[str]:
    nfkc = unicodedata.normalize("NFKC", key)
    return {key, nfkc, unquote(key), unquote(nfkc), unicodedata.normalize("NFKC", unquote(key))}


def _safe_under(key: str) -> bool:
    """A key that, however a server reads it, names something under its root."""
    for form in _readings(key):
        if PurePosixPath(form).is_absolute() or "\\" in form or "\x00" in form:
            return False
        if any(part in ("", ".", "..") for part in form.split("/")):
            return False
    return True


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
def test_hostile_keys_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="invalid store key"):
        check_key(key)
    store = LocalStore(tmp_path / "root")
    for call in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.delete(key),
        lambda: store.local_path(key),
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


def test_s3_keys_stay_under_the_prefix_and_are_refused_before_any_request(
    s3_store: S3Store,
) -> None:
    for key in HOSTILE_KEYS:
        with pytest.raises(StoreError, match="invalid store key"):
            s3_store.put_bytes(key, b"x")
    assert list(s3_store.list("")) == []


def test_prefixes_of_a_study_are_checked() -> None:
    raw = study_dict(storage={"type": "s3", "endpoint": "minio:9000", "bucket": "hpo"})
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


# -- 2. properties (hypothesis, bounded and derandomised) ---------------------------------

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
    assert _safe_under(key)
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
    assert _safe_under(key)
    assert not any("/" in form for form in _readings(study) | _readings(trial))


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
    assert name.startswith("hpo/ns/") and _safe_under(name)


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
