"""The seams of DESIGN.md, checked: TensorFlow lives only in the trainer; style is clean."""

from __future__ import annotations

import subprocess
import sys

from helpers.study import REPO

OPERATOR_MODULES = [
    "hpo.spec",
    "hpo.space",
    "hpo.engine",
    "hpo.bayes",
    "hpo.ledger",
    "hpo.report",
    "hpo.recorder",
    "hpo.store",
    "hpo.prepare",
    "hpo.runners.local",
    "hpo.cli",
    "hpo_trainer.data",
    "hpo_trainer.fetch",
    "hpo.pods",
    "hpo.stores",
    "hpo.store_s3",
    "hpo.crd",
]


def test_operator_side_never_imports_tensorflow_kopf_or_kubernetes() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {OPERATOR_MODULES!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras', 'kopf', 'kubernetes'})\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_engine_is_pure() -> None:
    source = (REPO / "operator" / "hpo" / "engine.py").read_text()
    for name in ("tensorflow", "keras", "kopf", "kubernetes", "hpo.runners", "hpo_trainer"):
        assert f"import {name}" not in source and f"from {name}" not in source


def test_ruff_check_and_format_are_clean() -> None:
    ruff = [sys.executable, "-m", "ruff"]
    check = subprocess.run([*ruff, "check", str(REPO)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run([*ruff, "format", "--check", str(REPO)], capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout
