"""A small generated dataset with a text column whose categories matter.

``material`` shifts the label by much more than the numeric features move it,
so a model that sees the column must beat one that does not. One row holds a
rare category (``titanium``): wherever the split puts it, training must not
fail on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: The label's shift per material: the column explains most of the label's spread.
OFFSETS = {"aluminium": -2.0, "copper": 0.5, "steel": 2.5, "titanium": 1.0}
FEATURES = ["x1", "material", "x2"]
LABELS = ["y"]


def categorical_frame(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    material = rng.choice(["aluminium", "copper", "steel"], rows).astype(object)
    material[rows // 2] = "titanium"
    x1, x2 = rng.uniform(-1, 1, rows), rng.uniform(-1, 1, rows)
    shift = np.array([OFFSETS[m] for m in material])
    y = 0.5 * x1 - 0.3 * x2 + shift + rng.normal(0, 0.05, rows)
    return pd.DataFrame({"x1": x1, "material": material, "x2": x2, "y": y})


def categorical_csv(folder: Path, rows: int = 300) -> Path:
    path = folder / "materials.csv"
    categorical_frame(rows).to_csv(path, index=False)
    return path
