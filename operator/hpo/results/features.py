"""Raw feature columns -> the model's input matrix: the one feature step of prediction.

The columns and their order are the ones the trainer recorded in the feature
scaler (``feature_scaler.json``), so a prediction needs nothing of the study's
spec. Checks are ``hpo.dataset``'s (the training side's names and messages).
This is the single function an encoding of categorical features replaces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hpo.dataset import DatasetError, check_columns
from hpo.results.errors import ResultsError


def _names(columns: Sequence[str]) -> str:
    return ", ".join(repr(c) for c in columns)


def feature_matrix(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """``frame``'s ``features`` as float64, in that order; every value must be a finite
    number (a model cannot predict from a missing one)."""
    features = list(features)
    try:
        check_columns(frame, features)
    except DatasetError as exc:
        raise ResultsError(f"{exc}; the study's features are {_names(features)}") from None
    values = frame[features].apply(pd.to_numeric).astype(np.float64)
    bad = ~np.isfinite(values.to_numpy())
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        column = features[col]
        count = int(bad[:, col].sum())
        raise ResultsError(
            f"column {column!r} has {count} missing or infinite value(s), e.g. in data row "
            f"{row + 1}: a prediction needs every feature; fill them in or drop those rows"
        )
    return values.to_numpy()
