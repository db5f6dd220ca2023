"""Fixtures for the whole suite (tests/unit, tests/integration, tests/e2e).

- ``make_study``: ``study_dict`` (helpers/study.py) as a fixture.
- ``hpo_crd``: the product's HPOStudy CRD (as ``hpo crd`` generates it), the one
  the emulated cluster serves: ``kube_crds`` hands it to ``support.kube``.
- ``s3_server`` (session, from ``support.s3fixtures``), ``make_s3_store``,
  ``s3_store``: a real S3 server and product stores on fresh buckets.

Parallel runs (``make test``: pytest-xdist, ``--dist loadgroup``): each test goes to
any worker, except that the tests sharing one of the expensive module-scoped set-ups
in ``SHARED_SETUPS`` go to one worker together, so that set-up runs once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from _pytest.nodeid import NodeId

from helpers.s3 import new_s3_store
from helpers.study import study_dict
from hpo.kube.crd import crd
from hpo.store.s3 import S3Store
from support.s3server import S3Server

pytest_plugins = ["support.s3fixtures", "support.kube.fixtures"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


#: Module-scoped fixtures too costly to build once per xdist worker (a whole study, a
#: venv, trainings): the tests of one module that use one run on the same worker.
SHARED_SETUPS = frozenset(
    {
        "finished",  # e2e/test_local_run.py: one `hpo run`, inspected from several sides
        "stopped",  # e2e/test_local_stop.py: one study stopped four ways, then finished
        "recorded_once",  # unit/test_local_resume.py: a finished study, copied per test
        "source_once",  # unit/test_warmstart.py: a finished source study, copied per test
        "s3_run",  # e2e/test_s3_study.py: one `hpo run` on S3
        "run",  # e2e/test_security.py: six studies through one operator
        "operator_venv",  # e2e/test_operator_install.py: a venv without TensorFlow
        "trained",  # integration/test_trainer.py, e2e/test_results.py: real trainings
        "materials",  # e2e/test_categorical.py: a study on a text column, one training without
        "operator_outcomes",  # integration/test_bad_input_operator.py: one operator, 5 studies
        "dashboard",  # e2e/test_dashboard.py: one dashboard, one browser, one `hpo run`
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        shared = sorted(SHARED_SETUPS & set(getattr(item, "fixturenames", ())))
        if shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}:{shared[0]}"))
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers
        return
    # pytest-xdist 3.8 groups by renaming item._nodeid, which pytest 9 no longer reads
    # (the id lives in item._id): without this, --dist loadgroup silently acts as load.
    for item in items:
        groups = sorted({str(m.args[0]) for m in item.iter_markers("xdist_group") if m.args})
        if groups and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


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
