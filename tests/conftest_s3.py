"""Reusable S3 fixtures: a moto server per session, a fresh bucket per test.

Register with ``pytest_plugins = ["conftest_s3"]`` in ``tests/conftest.py``.
A missing ``.venv-s3`` fails the tests that need S3 (it never skips them):
the S3 store must be tested wherever the suite runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from s3server import S3Server, S3ServerUnavailable, new_s3_store

from hpo.store.s3 import S3Store


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    try:
        server = S3Server().start()
    except S3ServerUnavailable as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:  # fail, never skip: the S3 store must be tested wherever the suite runs
        pytest.fail(problem, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


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
