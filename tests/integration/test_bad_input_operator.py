"""The bad-input catalogue, the operator's side: each wrong storage, credential, name
or dataset gets a condition on the study naming the problem, and no pod is started
(the emulated cluster, a kopf operator and a real S3 server). The command line's side
is tests/unit/test_bad_input.py.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers.operator import NS, credentials_secret, operator
from helpers.study import study_dict
from hpo.kube.pods import LABEL_STUDY
from support.kube.server import KubeServer
from support.s3server import TEST_SECRET_KEY, S3Server, free_port

# -- the operator: a condition naming the problem, and no pod --------------------------


@pytest.fixture(scope="module")
def kube(hpo_crd: dict[str, Any]) -> Iterator[KubeServer]:
    server = KubeServer(crds=(hpo_crd,)).start()
    api = server.api()
    api.core.create_namespaced_secret(NS, credentials_secret("only-access-key", secret_key=False))
    api.core.create_namespaced_secret(NS, credentials_secret("s3-creds"))
    api.close()
    yield server
    server.stop()


def _body(name: str, s3: S3Server, dataset: str, **storage: Any) -> dict[str, Any]:
    raw = study_dict(
        storage={
            "type": "s3",
            "endpoint": s3.endpoint,
            "tls": False,
            "bucket": f"results-{uuid.uuid4().hex[:8]}",
            "createBucket": True,
            "credentialsSecret": {"name": "s3-creds"},
            **storage,
        },
        trainer={"image": "test/trainer:dev"},
    )
    raw["spec"]["dataset"]["path"] = dataset
    raw["metadata"] = {"name": name, "namespace": NS}
    return raw


def _status(kube: KubeServer, name: str) -> dict[str, Any]:
    obj = kube.api().custom.get_namespaced_custom_object(
        "hpo-operator.dev", "v1alpha1", NS, "hpostudies", name
    )
    return obj.get("status") or {}


def _condition(kube: KubeServer, name: str, type_: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in _status(kube, name).get("conditions") or []:
            if c["type"] == type_ and c["status"] == "False":
                return c
        time.sleep(0.2)
    raise AssertionError(f"no {type_}=False condition on {name}: {_status(kube, name)}")


def _pods(kube: KubeServer, name: str) -> list[dict[str, Any]]:
    raw = kube.api().core.list_namespaced_pod(
        NS, label_selector=f"{LABEL_STUDY}={name}", _preload_content=False
    )
    return json.loads(raw.data)["items"]


# (case, name, body changes, condition type, reason, message, phase)
OPERATOR_CASES: list[tuple[str, str, Callable[[dict[str, Any], str], None], str, str, str, str]] = [
    (
        # A DNS subdomain, so an API server without CEL stores it; the CRD's CEL rule
        # refuses it at admission where CEL runs (the emulator runs none).
        "name not a DNS label",
        "dotted.name",
        lambda body, port: None,
        "Valid",
        "InvalidName",
        "metadata.name: 'dotted.name' is not a valid Kubernetes name",
        "Failed",
    ),
    (
        "missing key in the Secret",
        "nokey",
        lambda body, port: body["spec"]["storage"].update(
            credentialsSecret={"name": "only-access-key"}
        ),
        "StoreReady",
        "CredentialsMissing",
        "spec.storage.credentialsSecret: Secret default/only-access-key has no key 'secretKey' "
        "(keys: accessKey)",
        "Pending",
    ),
    (
        "endpoint not host:port",
        "badendpoint",
        lambda body, port: body["spec"]["storage"].update(endpoint="http://minio:9000"),
        "Valid",
        "InvalidSpec",
        "spec.storage.endpoint: 'http://minio:9000' must be host[:port] without a scheme",
        "Pending",
    ),
    (
        "endpoint unreachable",
        "nowhere",
        lambda body, port: body["spec"]["storage"].update(endpoint=f"127.0.0.1:{port}"),
        "StoreReady",
        "StoreUnavailable",
        "127.0.0.1:{port}",
        "Pending",
    ),
    (
        "dataset key missing",
        "nodata",
        lambda body, port: body["spec"]["dataset"].update(
            path=body["spec"]["dataset"]["path"].replace("transistor.csv", "transistr.csv")
        ),
        "DatasetReady",
        "InvalidDataset",
        "spec.dataset.path: dataset not found: s3://",
        "Pending",
    ),
]


@pytest.fixture(scope="module")
def operator_outcomes(
    kube: KubeServer, s3_server: S3Server, dataset: str
) -> dict[str, tuple[dict[str, Any], dict[str, Any], int]]:
    """All studies of OPERATOR_CASES under one operator: (condition, status, pods) each."""
    port = free_port()  # nothing listens there: connection refused at once
    before = os.environ.get("HPO_S3_RETRIES")
    os.environ["HPO_S3_RETRIES"] = "0"
    outcomes = {}
    try:
        with operator(kube, retry_s=30, status_every_s=3.0, stop_timeout=60):
            for _, name, change, *_ in OPERATOR_CASES:
                body = _body(name, s3_server, dataset)
                change(body, port)
                kube.api().custom.create_namespaced_custom_object(
                    "hpo-operator.dev", "v1alpha1", NS, "hpostudies", body
                )
            for _, name, _, type_, *_ in OPERATOR_CASES:
                cond = _condition(kube, name, type_)
                outcomes[name] = (cond, _status(kube, name), port)
            time.sleep(1)  # a pod created late would show up now
            outcomes = {n: (c, s, p, len(_pods(kube, n))) for n, (c, s, p) in outcomes.items()}
    finally:
        if before is None:
            os.environ.pop("HPO_S3_RETRIES", None)
        else:
            os.environ["HPO_S3_RETRIES"] = before
    return outcomes


@pytest.mark.parametrize(
    ("name", "type_", "reason", "message", "phase"),
    [c[1:2] + c[3:] for c in OPERATOR_CASES],
    ids=[c[0] for c in OPERATOR_CASES],
)
def test_operator_names_the_problem_in_a_condition_and_starts_no_pod(
    operator_outcomes: dict[str, Any], name: str, type_: str, reason: str, message: str, phase: str
) -> None:
    cond, status, port, pods = operator_outcomes[name]
    assert cond["reason"] == reason, cond
    assert message.format(port=port) in cond["message"], cond
    assert status["phase"] == phase, status
    assert pods == 0
    if phase == "Pending" and reason != "StoreUnavailable":
        # The user can fix it in place: the study waits, and says what to do.
        stalled = {c["type"]: c for c in status["conditions"]}["Stalled"]
        assert stalled["status"] == "True" and stalled["message"] == cond["message"]
        assert "correct the spec" in cond["message"] or "checked again every" in cond["message"]
    assert TEST_SECRET_KEY not in json.dumps(status)
