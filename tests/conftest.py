"""Fixtures for the whole suite (tests/unit, tests/integration, tests/e2e).

- ``make_study``: ``study_dict`` (helpers/study.py) as a fixture.
- ``hpo_crd``: the product's HPOStudy CRD (as ``hpo crd`` generates it), the one
  the emulated cluster serves: ``kube_crds`` hands it to ``support.kube``.
- ``s3_server`` (session, from ``support.s3fixtures``), ``make_s3_store``,
  ``s3_store``: a real S3 server and product stores on fresh buckets.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from helpers.s3 import new_s3_store
from helpers.study import study_dict
from hpo.crd import crd
from hpo.store_s3 import S3Store
from support.s3server import S3Server

pytest_plugins = ["support.s3fixtures", "support.kube.fixtures"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def make_study():
    return study_dict


@pytest.fixture(scope="session")
def hpo_crd() -> dict[str, Any]:
    """The HPOStudy CustomResourceDefinition (a fresh dict per session: do not change it)."""
    return crd()


@pytest.fixture(scope="session")
def kube_crds(hpo_crd: dict[str, Any]) -> list[dict[str, Any]]:
    """The CRDs ``support.kube.fixtures.kube_server`` serves."""
    return [hpo_crd]


@pytest.fixture
def make_s3_store(s3_server: S3Server) -> Callable[..., S3Store]:
    """``make_s3_store(**S3Store options)``: a store on a bucket of its own."""

    def make(**options: Any) -> S3Store:
        return new_s3_store(s3_server, **options)

    return make


@pytest.fixture
def s3_store(make_s3_store: Callable[..., S3Store]) -> S3Store:
    """A store under a prefix of a fresh bucket (created by ``ensure_bucket``)."""
    return make_s3_store()
