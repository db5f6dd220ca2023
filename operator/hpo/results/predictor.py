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
from hpo.results.features import feature_matrix
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
        """Encoded feature matrix (the scaler's column order) -> labels in their own units."""
        return self.label_scaler.inverse_transform(self.model(self.feature_scaler.transform(x)))


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
        if not len(x):
            return pd.DataFrame(
                np.empty((0, len(self.labels))), index=frame.index, columns=self.labels
            )
        y = np.mean([m.predict(x) for m in self.members], axis=0)
        return pd.DataFrame(y, index=frame.index, columns=self.labels)
