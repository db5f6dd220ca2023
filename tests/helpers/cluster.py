"""Module-scoped fixtures for tests that run the operator: an emulated cluster serving
the product's CRD with the S3 credentials Secret, the example dataset in a bucket, and
studies on them with results buckets of their own.

Import them into a conftest or a test module (``from helpers.cluster import dataset,
kube, new_study``); pytest finds fixtures by name there.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers.operator import NS, OperatorStudy, credentials_secret, results_bucket, study_body
from helpers.s3 import new_s3_store
from helpers.study import EXAMPLE_CSV
from support.kube.server import KubeServer
from support.s3server import S3Server


@pytest.fixture(scope="module")
def kube(hpo_crd: dict[str, Any]) -> Iterator[KubeServer]:
    """A cluster of the module's own, serving HPOStudy, with Secret ``default/s3-creds``."""
    server = KubeServer(crds=(hpo_crd,)).start()
    api = server.api()
    api.core.create_namespaced_secret(NS, credentials_secret())
    api.close()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dataset(s3_server: S3Server) -> str:
    """``s3://BUCKET/transistor.csv``: the example dataset in a bucket of the module's own."""
    bucket = f"data-{uuid.uuid4().hex[:10]}"
    new_s3_store(s3_server, bucket=bucket, prefix="").put_file("transistor.csv", EXAMPLE_CSV)
    return f"s3://{bucket}/transistor.csv"


@pytest.fixture
def new_study(kube: KubeServer, s3_server: S3Server, dataset: str) -> Callable[..., OperatorStudy]:
    """``new_study(name, **spec)``: ``study_body(name, ..., **spec)`` on ``dataset``, its
    results in a bucket of its own (not created yet: the operator does that)."""

    def make(name: str, **spec: Any) -> OperatorStudy:
        bucket = results_bucket()
        body = study_body(name, s3_server, dataset, bucket, **spec)
        return OperatorStudy(kube, s3_server, name, bucket, body)

    return make
