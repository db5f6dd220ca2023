"""A loaded model of one configuration: one seed, or all its seeds as an ensemble.

Each seed has its own scalers (fitted on its own training split), so every
member maps raw features to labels in their own units by itself; an ensemble
is the mean of its members' predictions in label units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hpo.data.encoding import FeatureEncoding
from hpo.data.scaling import Scaler
from hpo.results.errors import ResultsError
from hpo.results.features import REASON, check_columns_of, feature_matrix, incomplete_rows
from hpo.results.keras_model import KerasFunction


@dataclass(frozen=True)
class Member:
    """One training: its feature encoding, its scalers and its model."""

    seed: int
    feature_scaler: Scaler
    label_scaler: Scaler
    model: KerasFunction
    encoding: FeatureEncoding

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Encoded feature matrix (the scaler's column order) -> labels in their own units;
        a row the model cannot take (``too_large``) comes out NaN, for the caller to mark."""
        scaled = self.feature_scaler.transform(x)
        unfit = too_large(scaled)
        scaled[unfit] = 0.0  # kept out of the network (no float32 overflow); output dropped
        y = self.label_scaler.inverse_transform(self.model(scaled))
        y[unfit] = np.nan
        return y


#: The largest standardised input the network takes: it computes in float32.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def too_large(scaled: np.ndarray) -> np.ndarray:
    """Rows whose standardised inputs do not fit the network's float32 (e.g. a feature of
    1e300): they would come out as NaN, so they are marked instead of predicted."""
    with np.errstate(invalid="ignore"):
        return ~(np.abs(scaled) <= _FLOAT32_MAX).all(axis=1)


class Predictor:
    """Raw feature columns in, labels in their own units out (``predict``)."""

    def __init__(self, trial: str, members: list[Member]) -> None:
        if not members:
            raise ResultsError(f"trial {trial}: no model to load")
        first = members[0]
        for m in members[1:]:
            if (
                m.encoding != first.encoding
                or m.feature_scaler.columns != first.feature_scaler.columns
                or m.label_scaler.columns != first.label_scaler.columns
            ):
                raise ResultsError(
                    f"trial {trial}: seeds {first.seed} and {m.seed} were trained on other "
                    "columns; load one seed at a time"
                )
        self.trial = trial
        self.members = members
        #: The raw feature columns, in order (a categorical one is one column here).
        self.features: list[str] = first.encoding.names
        self.encoding: FeatureEncoding = first.encoding
        self.labels: list[str] = list(first.label_scaler.columns)
        self.seeds: list[int] = [m.seed for m in members]

    def __repr__(self) -> str:
        return f"Predictor(trial={self.trial!r}, seeds={self.seeds}, labels={self.labels})"

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per row of ``frame`` (its index kept), one column per label.

        ``frame`` needs every feature column (others are ignored); missing ones
        are refused naming them and the study's features, and a category the
        model was not trained with is refused (``UnknownCategory``) naming its
        column and value.
        """
        x = feature_matrix(frame, self.encoding)
        y = self._predict(x)
        bad = ~np.isfinite(y).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ResultsError(
                f"data row {row + 1}: {self._unpredictable(frame.iloc[[row]], x[[row]])}; "
                f"{int(bad.sum())} row(s) so (predict_rows marks them and predicts the others)"
            )
        return pd.DataFrame(y, index=frame.index, columns=self.labels)

    def predict_rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Like ``predict``, but a row that cannot be predicted is marked, not refused:
        its labels are empty (NaN) and column ``reason`` says why (a missing or infinite
        feature, a value too large for the model); ``reason`` is empty on predicted rows.

        What is wrong with the whole file is still refused: a missing or non-numeric
        feature column, and a category the model was not trained with (``UnknownCategory``:
        the model cannot say anything about it, and a silent gap would hide a mismatch
        between the data and the model)."""
        check_columns_of(frame, self.encoding)
        reasons = incomplete_rows(frame, self.encoding)
        complete = frame[reasons.isna().to_numpy()]
        out = pd.DataFrame(np.nan, index=frame.index, columns=self.labels)
        if len(complete):
            x = feature_matrix(complete, self.encoding)
            y = self._predict(x)
            bad = ~np.isfinite(y).all(axis=1)
            out.loc[complete.index[~bad], self.labels] = y[~bad]
            for i in map(int, np.flatnonzero(bad)):
                reasons.loc[complete.index[i]] = self._unpredictable(complete.iloc[[i]], x[[i]])
        out[REASON] = reasons
        return out

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.empty((0, len(self.labels)))
        with np.errstate(over="ignore", invalid="ignore"):
            return np.mean([m.predict(x) for m in self.members], axis=0)

    def _unpredictable(self, row: pd.DataFrame, x: np.ndarray) -> str:
        """Why one complete row has no finite prediction: a value the model cannot take."""
        member = self.members[0]
        scaled = member.feature_scaler.transform(x)[0]
        with np.errstate(invalid="ignore"):
            worst = int(np.nanargmax(np.abs(scaled)))
        column = member.feature_scaler.columns[worst]
        raw = row[column].iloc[0] if column in row.columns else x[0, worst]
        shown = f"{float(raw):g}" if isinstance(raw, (int, float, np.number)) else repr(raw)
        if too_large(scaled[None, :])[0]:
            return (
                f"{column}={shown} is too large for the model (beyond float32 once "
                "standardised); rescale it as the training data was"
            )
        return f"the model's output is not a finite number (largest input: {column}={shown})"
