"""Module-scoped fixtures for tests that run the operator: an emulated cluster serving
the product's CRD with the S3 credentials Secret, and the example dataset in a bucket.

Import them into a conftest or a test module (``from helpers.cluster import dataset,
kube``); pytest finds fixtures by name there.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.operator import NS, credentials_secret
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
