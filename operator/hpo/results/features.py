"""Raw feature columns -> the model's input matrix: the one feature step of prediction.

What the columns are, in which order, and how a categorical one is one-hot
encoded comes from the training's ``features.json`` (``hpo.data.encoding``); a
training recorded before that file existed has numeric features only, in the
order of its feature scaler (``feature_scaler.json``). Either way a prediction
needs nothing of the study's spec. Checks are ``hpo.data.dataset``'s and
``hpo.data.encoding``'s (the training side's names and messages).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hpo.data.dataset import DatasetError, check_columns
from hpo.data.encoding import EncodingError, Feature, FeatureEncoding, FeaturesFile, UnseenCategory
from hpo.data.scaling import Scaler
from hpo.results.errors import ResultsError


class UnknownCategory(ResultsError, UnseenCategory):
    """A categorical column holds a category the model was not trained with (``column``,
    ``value``, ``known``); both a ``ResultsError`` and an ``hpo.data.encoding.UnseenCategory``."""


def encoding_of(features_json: bytes | None, feature_scaler: Scaler, where: str) -> FeatureEncoding:
    """The training's encoding: from ``features.json``, or (a training without one)
    every column of its feature scaler as a numeric feature. ``where`` names it in errors."""
    if features_json is None:
        return FeatureEncoding(tuple(Feature(c) for c in feature_scaler.columns))
    try:
        encoding = FeaturesFile.from_json(features_json.decode("utf-8")).encoding
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{where}: features.json cannot be read ({exc})") from None
    if encoding.encoded_columns() != feature_scaler.columns:
        raise ResultsError(
            f"{where}: features.json's encoded columns differ from feature_scaler.json's"
        )
    return encoding


#: The prediction file's column saying why a row has no prediction (empty: predicted).
REASON = "reason"


def check_columns_of(frame: pd.DataFrame, encoding: FeatureEncoding) -> None:
    """Every feature column is there, and numeric ones hold numbers (or nothing): what is
    wrong with the whole file, refused naming the column (``ResultsError``)."""
    names = encoding.names
    numeric = [f.name for f in encoding.features if not f.categorical]
    absent = [n for n in names if n not in frame.columns]
    try:
        # Missing columns first (any kind, with close matches), then numeric contents.
        check_columns(frame, absent or numeric)
    except DatasetError as exc:
        shown = ", ".join(repr(c) for c in names)
        raise ResultsError(f"{exc}; the study's features are {shown}") from None


def incomplete_rows(frame: pd.DataFrame, encoding: FeatureEncoding) -> pd.Series:
    """Per row of ``frame`` (its index): why it cannot be predicted, or None.

    A missing or infinite feature value is a property of the row, not of the file
    (training left such rows out the same way): the row is marked, the others are
    predicted. Columns must have passed ``check_columns_of``."""
    numeric = [f.name for f in encoding.features if not f.categorical]
    values = frame[numeric].apply(pd.to_numeric).astype(np.float64).to_numpy()
    names = np.array([*numeric, *encoding.categorical], dtype=object)
    empty = np.hstack(
        [np.isnan(values), *(_empty(frame[n])[:, None] for n in encoding.categorical)]
    ).reshape(len(frame), len(names))
    infinite = np.isinf(values)
    reasons: list[str | None] = [None] * len(frame)
    for i in np.flatnonzero(empty.any(axis=1) | infinite.any(axis=1)):
        parts = [f"no value in {', '.join(map(repr, names[empty[i]]))}"] if empty[i].any() else []
        if infinite[i].any():
            parts.append(
                f"infinite value in {', '.join(map(repr, names[: len(numeric)][infinite[i]]))}"
            )
        reasons[int(i)] = "; ".join(parts)
    return pd.Series(reasons, index=frame.index, dtype=object)


def _empty(series: pd.Series) -> np.ndarray:
    """Cells without a value (a categorical column's: no category to encode)."""
    return series.isna().to_numpy(bool)


def feature_matrix(frame: pd.DataFrame, encoding: FeatureEncoding) -> np.ndarray:
    """``frame``'s feature columns encoded as the model's inputs (float64, the feature
    scaler's column order); every numeric value must be a finite number and every
    categorical one a known category (a model cannot predict from a missing one)."""
    check_columns_of(frame, encoding)
    numeric = [f.name for f in encoding.features if not f.categorical]
    values = frame[numeric].apply(pd.to_numeric).astype(np.float64)
    bad = ~np.isfinite(values.to_numpy())
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        column = numeric[col]
        count = int(bad[:, col].sum())
        raise ResultsError(
            f"column {column!r} has {count} missing or infinite value(s), e.g. in data row "
            f"{row + 1}: a prediction needs every feature; fill them in or drop those rows"
        )
    try:
        return encoding.transform(frame)
    except UnseenCategory as exc:
        raise UnknownCategory(exc.column, exc.value, exc.known) from None
    except EncodingError as exc:
        raise ResultsError(str(exc)) from None
