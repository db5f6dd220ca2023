"""Shared test helpers: study dicts built in code, so each test states what it changes."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from hpo.spec import API_VERSION

pytest_plugins = ["conftest_s3"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CSV = REPO / "examples" / "data" / "transistor.csv"
FEATURES = ["W_um", "L_um", "tox_nm", "Vth_V", "Vgs_V", "Vds_V"]
LABELS = ["Id_mA", "gm_mS", "gds_uS"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def study_dict(**spec: Any) -> dict[str, Any]:
    """A minimal valid study; keyword arguments replace whole spec sections."""
    base: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "HPOStudy",
        "metadata": {"name": "t"},
        "spec": {"dataset": {"path": str(EXAMPLE_CSV), "labels": list(LABELS)}},
    }
    base["spec"].update(copy.deepcopy(spec))
    return base


@pytest.fixture
def make_study():
    return study_dict
