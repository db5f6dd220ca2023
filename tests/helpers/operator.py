"""Driving the operator in tests: a kopf runner with the product's handlers against the
emulated cluster, a test kubelet, study bodies on the test S3 server, and the reads
the assertions need (status, pods, events, ledger rows). Fixtures that use these
(``kube``, ``dataset``) are in tests/e2e/conftest.py.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import kopf
from kopf.testing import KopfRunner

from helpers.s3 import new_s3_store
from helpers.study import GP_NARROW, SMALL_SPACE, study_dict
from helpers.synthetic import synthetic as synthetic_trainer
from hpo.kube.handlers import make_registry
from hpo.kube.pods import LABEL_STUDY
from hpo.records.ledger import read_ledger
from hpo.store.s3 import S3Store
from hpo.study.contract import SeedResult
from support.kube.kubelet import TestKubelet
from support.kube.server import KubeServer
from support.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server

NS = "default"
HPO_OPERATOR = [sys.executable, "-m", "hpo.cli", "operator", "--liveness", "", "--poll", "0.3"]


@contextmanager
def operator(
    kube: KubeServer,
    retry_s: float = 15.0,
    *,
    status_every_s: float = 0.3,
    post_events: bool = False,
    stop_timeout: float = 120,
) -> Iterator[KopfRunner]:
    """A real kopf operator with our handlers, talking HTTP to the emulator
    (``post_events``: kopf's own events too, as in production; ``stop_timeout``: how long
    it may take to stop at the end of the block)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kube.connection_info()

    make_registry(
        kube.api_client,
        poll_s=0.3,
        retry_s=retry_s,
        status_every_s=status_every_s,
        registry=registry,
    )
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.posting.enabled = post_events
    with KopfRunner(
        ["run", "--standalone", "--all-namespaces"],
        registry=registry,
        settings=settings,
        timeout=stop_timeout,
    ) as runner:
        yield runner


@contextmanager
def kubelet(kube: KubeServer, **options: Any) -> Iterator[TestKubelet]:
    node = TestKubelet(kube.api_client(), **options).start()
    try:
        yield node
    finally:
        node.stop()


def study_body(
    name: str, s3: S3Server, dataset: str, bucket: str, *, namespace: str = NS, **spec: Any
) -> dict[str, Any]:
    """A small study in ``namespace`` on ``dataset``, its results in ``bucket``; a section of
    ``spec`` that is a dict is merged into the one here, anything else replaces it."""
    raw = study_dict(
        searchSpace=SMALL_SPACE,
        # Every seed for every configuration and the Gaussian-process stage: the counts the
        # operator tests check are exact (the default search: tests/unit/test_search.py,
        # tests/e2e/test_default_search_run.py).
        training={"epochs": 3, "patience": 2, "seedsPerConfig": 2, "seedRacing": False},
        randomStage={"configurations": 3},
        bayesianStage=GP_NARROW,
        parallelism=2,
        failurePolicy={"retries": 1, "maxFailedTrainings": 3},
        storage={
            "type": "s3",
            "endpoint": s3.endpoint,
            "tls": False,
            "bucket": bucket,
            "prefix": "hpo",
            "createBucket": True,
            "credentialsSecret": {"name": "s3-creds"},
        },
        trainer={"image": "test/trainer:dev", "retryBackoffSeconds": 0, "seedsPerPod": 2},
    )
    raw["spec"]["dataset"]["path"] = dataset
    raw["metadata"] = {"name": name, "namespace": namespace}
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(raw["spec"].get(key), dict):
            raw["spec"][key] = {**raw["spec"][key], **value}
        else:
            raw["spec"][key] = value
    return raw


def results_bucket() -> str:
    """A fresh name for one study's results bucket."""
    return f"results-{uuid.uuid4().hex[:10]}"


def create(kube: KubeServer, body: dict[str, Any]) -> None:
    api = kube.api()
    api.custom.create_namespaced_custom_object(
        "hpo-operator.dev", "v1alpha1", NS, "hpostudies", body
    )


def study(kube: KubeServer, name: str) -> dict[str, Any]:
    return kube.api().custom.get_namespaced_custom_object(
        "hpo-operator.dev", "v1alpha1", NS, "hpostudies", name
    )


def wait_for(what: Callable[[], Any], timeout: float = 240, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def phase(kube: KubeServer, name: str) -> str:
    return (study(kube, name).get("status") or {}).get("phase", "")


def finished(kube: KubeServer, name: str, timeout: float = 240) -> dict[str, Any]:
    wait_for(lambda: phase(kube, name) in ("Succeeded", "Failed"), timeout)
    return study(kube, name)


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The study's conditions by type (none before the operator first wrote a status)."""
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def pods(kube: KubeServer, name: str) -> list[dict[str, Any]]:
    raw = kube.api().core.list_namespaced_pod(
        NS, label_selector=f"{LABEL_STUDY}={name}", _preload_content=False
    )
    return json.loads(raw.data)["items"]


def events(kube: KubeServer, name: str) -> list[dict[str, Any]]:
    raw = kube.api().core.list_namespaced_event(NS, _preload_content=False)
    return [e for e in json.loads(raw.data)["items"] if e["involvedObject"]["name"] == name]


def synthetic(
    s3: S3Server, bucket: str, delay_s: float = 0.3
) -> Callable[[dict[str, Any]], tuple[int, str]]:
    """Pods answered at once with synthetic scores (a training takes ``delay_s``)."""
    return synthetic_trainer(
        lambda: new_s3_store(s3, bucket=bucket, prefix="hpo/default", create_bucket=False), delay_s
    )


def ledger_rows(s3: S3Server, bucket: str, name: str) -> list[SeedResult]:
    store = new_s3_store(s3, bucket=bucket, prefix="", create_bucket=False)
    return read_ledger(store, f"hpo/default/{name}/ledger.xlsx")


def check_complete(rows: list[SeedResult], trainings: int, seeds: int = 2) -> None:
    assert len(rows) == trainings, [r.key for r in rows]
    assert len({r.key for r in rows}) == trainings, "a training recorded twice"
    per_key: dict[str, int] = {}
    for r in rows:
        per_key[r.config_key] = per_key.get(r.config_key, 0) + 1
    assert all(n == seeds for n in per_key.values()), "a configuration trained twice"


def credentials_secret(name: str = "s3-creds", *, secret_key: bool = True) -> dict[str, Any]:
    """A Secret body with the test S3 credentials (``accessKey``, ``secretKey``)."""
    data = {"accessKey": base64.b64encode(TEST_ACCESS_KEY.encode()).decode()}
    if secret_key:
        data["secretKey"] = base64.b64encode(TEST_SECRET_KEY.encode()).decode()
    return {"metadata": {"name": name}, "data": data}


@dataclass
class OperatorStudy:
    """One study of an operator test, made by the ``new_study`` fixture: its name, its
    results bucket and its body (``study_body``), with the reads the assertions make."""

    kube: KubeServer
    s3: S3Server
    name: str
    bucket: str
    body: dict[str, Any]

    def create(self) -> None:
        create(self.kube, self.body)

    def patch(self, changes: dict[str, Any]) -> None:
        """Change the study object as ``kubectl patch --type merge`` would."""
        self.kube.api().custom.patch_namespaced_custom_object(
            "hpo-operator.dev", "v1alpha1", NS, "hpostudies", self.name, changes
        )

    def delete(self) -> None:
        """Delete the study object (``kubectl delete hpostudy``)."""
        self.kube.api().custom.delete_namespaced_custom_object(
            "hpo-operator.dev", "v1alpha1", NS, "hpostudies", self.name
        )

    def status(self) -> dict[str, Any]:
        """Its status (empty before the operator first wrote one)."""
        return study(self.kube, self.name).get("status") or {}

    def finished(self, timeout: float = 240) -> dict[str, Any]:
        """The study once it has ended (Succeeded or Failed)."""
        return finished(self.kube, self.name, timeout)

    def rows(self) -> list[SeedResult]:
        return ledger_rows(self.s3, self.bucket, self.name)

    def trainer(self, delay_s: float = 0.3) -> Callable[[dict[str, Any]], tuple[int, str]]:
        """The kubelet ``result`` of synthetic trainers writing to its bucket."""
        return synthetic(self.s3, self.bucket, delay_s)

    def results(self) -> S3Store:
        """The store its results are under (``hpo/default``, the studies of namespace default)."""
        return new_s3_store(self.s3, bucket=self.bucket, prefix="hpo/default", create_bucket=False)
