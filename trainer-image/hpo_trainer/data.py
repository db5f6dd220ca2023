"""The trainer's view of the dataset: the three splits and the scalers fitted on them.

Reading, checking and splitting live in ``hpo.data.dataset`` (the operator checks
the dataset with the same code when a study starts); this module only adds
what training needs. Categorical features are one-hot encoded first
(``hpo.data.encoding``: categories from every usable row, so every split and every
seed has the same columns), then scaled; one-hot columns are left 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpo.data.dataset import load_usable, split_for_seed
from hpo.data.encoding import ONE_HOT_MEAN, ONE_HOT_SCALE, FeatureEncoding
from hpo.data.scaling import Scaler
from hpo.study.contract import DatasetRef


@dataclass(frozen=True)
class PreparedData:
    """Encoded, unscaled splits (float64) plus scalers fitted on the training split only."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_scaler: Scaler
    label_scaler: Scaler
    rows_dropped: int
    #: How the raw feature columns became ``x_*``'s columns (the feature scaler's).
    encoding: FeatureEncoding


def load_splits(ref: DatasetRef, seed: int = 0) -> PreparedData:
    """Load and split the dataset; fit both scalers on the training split only.

    ``seed`` is the training seed; it only matters with ``ref.folds``, where it
    picks the validation fold.
    """
    usable, dropped = load_usable(ref)
    encoding = FeatureEncoding.fit(usable, ref.features, ref.categorical)
    x = encoding.transform(usable)
    y = usable[list(ref.labels)].to_numpy(dtype=np.float64)
    train, val, test = split_for_seed(len(usable), ref, seed)
    fitted = Scaler.fit(x[train], encoding.encoded_columns())
    one_hot = np.isin(fitted.columns, encoding.one_hot_columns())
    feature_scaler = Scaler(
        fitted.columns,
        np.where(one_hot, ONE_HOT_MEAN, fitted.mean),
        np.where(one_hot, ONE_HOT_SCALE, fitted.scale),
    )
    return PreparedData(
        x_train=x[train],
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=x[test],
        y_test=y[test],
        feature_scaler=feature_scaler,
        label_scaler=Scaler.fit(y[train], ref.labels),
        rows_dropped=dropped,
        encoding=encoding,
    )
