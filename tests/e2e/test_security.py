"""Security (issue 7), one place per promise:

1. No secret value anywhere: the operator path is scanned end to end here (logs, Events,
   status, every pod the operator created, every request body it sent, ledger cells,
   every stored object, trainer output). The local ``hpo run`` path is scanned in
   ``e2e/test_s3_study.py::test_the_secret_key_is_nowhere``; ``unit/test_pods.py::test_pod_manifest``
   checks one pod's secretKeyRef.
2. Keys and local paths built from names and ids stay under the study's prefix or folder:
   tests/unit/test_security_keys.py and tests/integration/test_security_s3.py.
3. A study reaches only its own namespace: Secrets, pods and stored data.
4. Nothing from a spec reaches a shell: pods carry argument lists, spec strings arrive as data.
5. Every pod the operator created in the end-to-end run passes the "restricted" Pod Security
   Standard checker of ``support/podsecurity.py`` (also used by ``unit/test_pods.py`` and the
   chart tests).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
import yaml

from helpers.operator import operator, study_body, wait_for
from helpers.s3 import new_s3_store
from helpers.study import EXAMPLE_CSV, run_hpo, study_dict
from helpers.synthetic import synthetic as synthetic_trainer
from hpo.kube.pods import LABEL_STUDY
from hpo.records.ledger import read_ledger
from hpo.store import open_store
from hpo.study.contract import TrainingRequest
from support.kube.kubelet import TestKubelet
from support.kube.server import KubeServer
from support.leaks import find_leaks
from support.podsecurity import restricted_violations
from support.s3server import S3Server

GROUP, VERSION, PLURAL = "hpo-operator.dev", "v1alpha1", "hpostudies"

ACCESS_KEY = "AKIALEAKCHECK7F3A0ACCESS"

SECRET_KEY = "leakcheck-SECRET-9c1e2b7d-never-logged"

NS_A, NS_B = "sec-a", "sec-b"

CREDS = "s3-creds"

ONLY_IN_B = "only-in-b"

OPERATOR_AGENTS = ("kopf/", "hpo-operator/")

ENDED = ("Succeeded", "Failed")


def _stalled(status: dict[str, Any]) -> bool:
    """The study waits for its user to fix something (a Secret, the dataset)."""
    return any(
        c["type"] == "Stalled" and c["status"] == "True" for c in status.get("conditions") or []
    )


HOSTILE_LABEL = "x; rm -rf / #"

HOSTILE_ENV = "$(id) `id` ; echo pwned | cat > /tmp/p && true"


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
    """``study_body`` in namespace ``ns``, trainings of two epochs (the hostile one is real);
    ``spec["dataset"]`` is merged into the dataset section, like the other sections."""
    training = {"epochs": 2, **spec.pop("training", {})}
    dataset = spec.pop("dataset", {})
    body = study_body(name, s3, data_url, bucket, namespace=ns, training=training, **spec)
    body["spec"]["dataset"].update(dataset)
    return body


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
            # kopf's own events too (post_events): they are scanned.
            with operator(kube, retry_s=1.0, status_every_s=3.0, post_events=True) as runner:
                for (ns, _), body in studies.items():
                    api.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
                for ns, name in [(NS_A, "twin"), (NS_B, "twin"), (NS_B, "hostile")]:
                    wait_for(lambda ns=ns, name=name: status(ns, name).get("phase") in ENDED, 120)
                for ns, name in [(NS_A, "crossref"), (NS_A, "nodata")]:
                    # Waiting for its user to fix it (Stalled), re-checked meanwhile.
                    wait_for(lambda ns=ns, name=name: _stalled(status(ns, name)), 90)
                wait_for(
                    lambda: "does not exist" in status(NS_A, "nobucket").get("message", ""), 90
                )
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


def test_a_secret_of_another_namespace_is_not_used(run: dict[str, Any]) -> None:
    status = run["statuses"][(NS_A, "crossref")]
    assert status["phase"] == "Pending" and _stalled(status)
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
    proc = run_hpo("run", str(study), "--out", str(tmp_path / "runs"), timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "spec.dataset" in proc.stderr and label in proc.stderr
    assert not marker.exists()


def test_every_pod_the_operator_created_is_restricted(run: dict[str, Any]) -> None:
    assert len(run["pods"]) >= 10
    for pod in run["pods"]:
        assert restricted_violations(pod["spec"]) == [], pod["metadata"]["name"]
        assert pod["spec"]["automountServiceAccountToken"] is False
