"""The trainer's view of the dataset: the three splits and the scalers fitted on them.

Reading, checking and splitting live in ``hpo.dataset`` (the operator checks
the dataset with the same code when a study starts); this module only adds
what training needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpo.contract import DatasetRef
from hpo.dataset import load_usable, split_for_seed
from hpo.scaling import Scaler


@dataclass(frozen=True)
class PreparedData:
    """Unscaled splits (float64) plus scalers fitted on the training split only."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_scaler: Scaler
    label_scaler: Scaler
    rows_dropped: int


def load_splits(ref: DatasetRef, seed: int = 0) -> PreparedData:
    """Load and split the dataset; fit both scalers on the training split only.

    ``seed`` is the training seed; it only matters with ``ref.folds``, where it
    picks the validation fold.
    """
    usable, dropped = load_usable(ref)
    x = usable[list(ref.features)].to_numpy(dtype=np.float64)
    y = usable[list(ref.labels)].to_numpy(dtype=np.float64)
    train, val, test = split_for_seed(len(usable), ref, seed)
    return PreparedData(
        x_train=x[train],
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=x[test],
        y_test=y[test],
        feature_scaler=Scaler.fit(x[train], ref.features),
        label_scaler=Scaler.fit(y[train], ref.labels),
        rows_dropped=dropped,
    )
