"""The S3 test server as a pytest fixture (a pytest plugin: ``pytest_plugins``).

``s3_server`` is session-scoped: one moto process per pytest process, so one per
xdist worker, each on a free port. A missing ``.venv-s3`` fails the tests that
need S3 (it never skips them): the S3 store must be tested wherever the suite runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.s3server import S3Server, S3ServerUnavailable


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
