"""Study dicts built in code, so each test states what it changes, and the example data."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hpo.study.spec import API_VERSION

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CSV = REPO / "examples" / "data" / "transistor.csv"
FEATURES = ["W_um", "L_um", "tox_nm", "Vth_V", "Vgs_V", "Vds_V"]
LABELS = ["Id_mA", "gm_mS", "gds_uS"]


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
