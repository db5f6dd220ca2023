"""`hpo run` with the default search (seed racing, local search): real trainings end to end.

The selection score (val_mae) and the test MAE reach the ledger and the final
group; the final group has every seed; the others have one; a rerun trains nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from helpers.study import study_dict
from hpo.records.ledger import read_ledger
from hpo.store import LocalStore

HPO = [sys.executable, "-m", "hpo.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def test_default_search_end_to_end(tmp_path: Path) -> None:
    raw = study_dict(
        searchSpace={
            "hiddenLayers": {"min": 1, "max": 2},
            "neurons": {"choices": [8, 16, 32]},
            "activations": ["relu", "tanh"],
            "learningRate": {"choices": [0.003, 0.01, 0.03]},
            "learningRateSchedules": ["constant", "cosine"],
            "dropout": [0.0, 0.1],
            "batchSizes": [64],
        },
        training={"epochs": 3, "patience": 2, "seedsPerConfig": 2},
        randomStage={"configurations": 4},
        bayesianStage={"topK": 1, "trialsPerConfig": 3},
        result={"size": 2},
        parallelism=2,
    )
    raw["metadata"]["name"] = "defaults"
    study = tmp_path / "defaults.yaml"
    study.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    cmd = [*HPO, "run", str(study), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "val MAE (selection)" in proc.stdout and "test MAE" in proc.stdout

    rows = read_ledger(LocalStore(out), "defaults/ledger.xlsx")
    assert all(r.status == "succeeded" for r in rows)
    assert all(r.val_mae is not None and r.mae is not None for r in rows)
    assert any(r.val_mae != r.mae for r in rows)
    seeds = Counter(r.trial for r in rows)
    assert sum(1 for t in seeds if t.startswith("b")) == 3  # the narrow stage's budget
    best = json.loads((out / "defaults" / "best.json").read_text())
    assert len(best) == 2
    for member in best:
        assert seeds[member["trial"]] == 2, "a final group member lacks a seed"
        assert {"val_mae_mean", "test_mae_mean"} <= set(member)
    assert [m["val_mae_mean"] for m in best] == sorted(m["val_mae_mean"] for m in best)
    assert 1 in seeds.values(), "racing gave every configuration every seed"

    again = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr + again.stdout
    assert read_ledger(LocalStore(out), "defaults/ledger.xlsx") == rows  # nothing retrained
