"""The one seam from ``hpo`` to ``hpo_trainer``: loading a saved Keras model.

Keras code lives in the trainer (``hpo_trainer.model``), the only package that
imports TensorFlow, and the operator image ships without it. This module
imports it lazily, inside ``load_keras``, so ``hpo.results`` imports without
TensorFlow; ``tests/unit/test_architecture.py`` allows this import and no other.
Predicting through the trainer's own ``predict`` keeps the arithmetic (float32
input, fixed batch size) that produced the recorded scores.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hpo.results.errors import ResultsError

#: Said when TensorFlow (the trainer extra) is not installed here.
NEEDS_TENSORFLOW = (
    "loading a model needs TensorFlow, which is not installed here: install the "
    "trainer extra (pip install 'hpo-operator[trainer]'); the operator image has none"
)

#: Standardised inputs -> standardised outputs, float64.
KerasFunction = Callable[[np.ndarray], np.ndarray]


def load_keras(data: bytes, where: str) -> KerasFunction:
    """The model saved as ``data`` (a ``.keras`` file's bytes) as a function of
    standardised features; ``where`` names it in errors."""
    try:
        from hpo_trainer.model import load_model, predict
    except ImportError:
        raise ResultsError(NEEDS_TENSORFLOW) from None
    with tempfile.TemporaryDirectory(prefix="hpo-model-") as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(data)
        try:
            model = load_model(path)
        except ImportError:
            raise ResultsError(NEEDS_TENSORFLOW) from None
        except Exception as exc:  # a torn or foreign file: Keras raises many kinds
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise ResultsError(f"{where}: not a model Keras can load ({reason})") from None

    def run(x: np.ndarray) -> np.ndarray:
        return predict(model, x)

    return run
