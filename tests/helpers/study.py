"""Study dicts built in code, so each test states what it changes, the example data, and
`hpo` run as a command the way a user runs it."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hpo.study.spec import API_VERSION

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CSV = REPO / "examples" / "data" / "transistor.csv"
FEATURES = ["W_um", "L_um", "tox_nm", "Vth_V", "Vgs_V", "Vds_V"]
LABELS = ["Id_mA", "gm_mS", "gds_uS"]

#: ``hpo`` in this interpreter, and the environment of its runs (TensorFlow quiet, output
#: unbuffered so that a test reads it line by line while the run goes on).
HPO = [sys.executable, "-m", "hpo.cli"]
HPO_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}

#: A small search space (one or two layers of 8 to 32 neurons): trainings of a second.
SMALL_SPACE: dict[str, Any] = {
    "hiddenLayers": {"min": 1, "max": 2},
    "neurons": {"min": 8, "max": 32, "step": 8},
    "activations": ["relu", "tanh"],
    "learningRate": {"min": 0.003, "max": 0.03},
    "batchSizes": [64],
}

#: The narrow stage on the Gaussian-process strategy, one parent, one trial a parent:
#: the counts of trainings a test states are exact (the default search has tests of its own).
GP_NARROW: dict[str, Any] = {
    "topK": 1,
    "trialsPerConfig": 1,
    "estimator": "ET",
    "neuronsRadius": 8,
    "method": "gaussianProcess",
}

#: What the trainer writes for one seed of a trial, in its artifacts folder.
ARTIFACTS = (
    "model.keras",
    "feature_scaler.json",
    "label_scaler.json",
    "seed.json",
    "config.json",
    "features.json",
    "scores.json",
)


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


def s3_storage(**more: Any) -> dict[str, Any]:
    """A ``spec.storage`` on S3 (bucket ``hpo`` at ``minio:9000``); ``more`` adds or replaces
    fields."""
    return {"type": "s3", "endpoint": "minio:9000", "bucket": "hpo", **more}


def study_with(path: str, value: Any, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """A valid study (a copy of ``raw``, else ``study_dict()``) with the field at dotted
    ``path`` (``spec.searchSpace.neurons``) set to ``value``."""
    raw = copy.deepcopy(raw) if raw is not None else study_dict()
    node = raw
    parts = path.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return raw


def study_file(folder: Path, name: str, raw: dict[str, Any]) -> Path:
    """``raw`` named ``name``, written as ``folder/<name>.yaml`` (what `hpo run` takes)."""
    raw["metadata"]["name"] = name
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def start_hpo(*args: str, **popen: Any) -> subprocess.Popen[str]:
    """``hpo ARGS`` started, its output and errors read as text through pipes (``popen``:
    more of ``subprocess.Popen``'s arguments, ``env`` for one)."""
    options: dict[str, Any] = {"env": HPO_ENV, **popen}
    return subprocess.Popen(
        [*HPO, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options
    )


def run_hpo(
    *args: str,
    timeout: float | None = None,
    env: Mapping[str, str] | None = HPO_ENV,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``hpo ARGS`` to its end, its output captured as text."""
    return subprocess.run(
        [*HPO, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
    )
