"""Standardisation that can be saved as plain JSON next to a model.

Equivalent to scikit-learn's ``StandardScaler`` (population standard
deviation), but stored as ``{"mean", "scale", "columns"}`` JSON instead of a
pickle: readable, diffable, safe to load and independent of library versions.
Floats survive the JSON round trip exactly, so a reloaded scaler reproduces
the training-time transform bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scaler:
    """Per-column ``(x - mean) / scale``; ``scale`` is 1.0 for constant columns."""

    columns: list[str]
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, columns: Sequence[str]) -> Scaler:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(columns):
            raise ValueError(
                f"expected a 2-D array with {len(columns)} columns, got {values.shape}"
            )
        mean = values.mean(axis=0)
        scale = values.std(axis=0)
        # A constant column would divide by zero; leave it centred but unscaled.
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        return cls(list(columns), mean, scale)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.scale

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64) * self.scale + self.mean

    def to_json(self) -> str:
        return json.dumps(
            {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "columns": self.columns},
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Scaler:
        raw = json.loads(text)
        mean = np.asarray(raw["mean"], dtype=np.float64)
        scale = np.asarray(raw["scale"], dtype=np.float64)
        columns = list(raw["columns"])
        if not (len(mean) == len(scale) == len(columns)):
            raise ValueError("scaler JSON: mean, scale and columns must have the same length")
        return cls(columns, mean, scale)
