"""Categorical (text) feature columns as one-hot inputs, saved as JSON next to a model.

A ``FeatureEncoding`` turns the raw feature columns of a frame into the matrix
the feature scaler and the network see: a numeric column passes through as
float64; a categorical column becomes one 0/1 column per category, named
``<column>=<category>``, in the order of ``categories`` (sorted text, so the
same data always gives the same columns). Pure numpy/pandas: the operator, the
results API and the trainer all read it.

Two choices, and why:

- **Categories are fitted on every usable row of the dataset**, not on the
  training split. The list of categories is part of the data's schema, not a
  statistic of its relation to the labels, so nothing about the labels leaks;
  and every training of a study (every seed, every cross-validation fold) gets
  the same columns, so a validation or test row never holds a category the
  encoding does not know (training never fails on one) and the seeds of an
  ensemble share one input layout. A category whose rows all fall outside the
  training split is a column of zeros there: the network learns nothing from
  it, and such a row is predicted as if it had no category. The scalers are
  still fitted on the training split only.
- **One-hot columns are not standardised** (``ONE_HOT_MEAN``/``ONE_HOT_SCALE``
  in the feature scaler): 0/1 is already on the scale of standardised numeric
  inputs, whereas standardising would give a category held by a fraction p of
  the rows the value ``sqrt((1-p)/p)`` (about 10 at 1%): rare categories would
  become the largest inputs of the network. It is also what scikit-learn's
  usual ``ColumnTransformer(OneHotEncoder, StandardScaler)`` pipeline does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: What the feature scaler records for a one-hot column: left as 0/1 (see above).
ONE_HOT_MEAN = 0.0
ONE_HOT_SCALE = 1.0
#: Version of ``FeatureEncoding.to_json``'s layout.
FORMAT = 1
#: A text cell that reads as a number (what a CSV reader would take for one).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


class EncodingError(ValueError):
    """A frame cannot be encoded as the study's features; the message names the column."""


class UnseenCategory(EncodingError):
    """A categorical column holds a value that no row of the training data had."""

    def __init__(self, column: str, value: str, known: Sequence[str]) -> None:
        self.column, self.value, self.known = column, value, list(known)
        shown = ", ".join(repr(c) for c in self.known[:20])
        more = f", ... ({len(self.known)} in all)" if len(self.known) > 20 else ""
        super().__init__(
            f"column {column!r}: category {value!r} is not one the model was trained with "
            f"(known categories: {shown}{more})"
        )


def category_of(value: Any) -> str | None:
    """One cell as a category's text; None if missing.

    A number has one spelling, whether pandas read it as a number or as text (a column
    that also holds words is read as text): integral ones without ``.0``, others as
    Python's shortest ``repr``. So ``3``, ``3.0``, ``"3"``, ``"3.0"``, ``"03"`` and
    ``"3e0"`` are one category, ``"3"`` (as ``"0.10"`` is ``"0.1"``), the same in the
    training data and in rows to predict. ``"03"`` is ``"3"`` because a CSV reader
    takes a column of such codes for numbers and drops the zero anyway; a code whose
    leading zeros matter needs a letter in it (``"z03"``). Other text is kept as is.
    """
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    text = str(value)
    number_text = text.strip()
    if _INTEGER.fullmatch(number_text):  # exactly, however many digits
        return str(int(number_text))
    if _NUMBER.fullmatch(number_text):
        return category_of(float(number_text))
    return text


def as_categories(series: pd.Series) -> pd.Series:
    """A column as category texts (object dtype, ``category_of`` each), missing cells as
    None."""
    return pd.Series([category_of(v) for v in series], index=series.index, dtype=object)


def is_text(series: pd.Series) -> bool:
    """A column pandas did not read as numbers (or booleans)."""
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


@dataclass(frozen=True)
class Feature:
    """One raw feature column: numeric, or categorical with its categories in order."""

    name: str
    categories: tuple[str, ...] | None = None

    @property
    def categorical(self) -> bool:
        return self.categories is not None

    def encoded(self) -> list[str]:
        if self.categories is None:
            return [self.name]
        return [f"{self.name}={c}" for c in self.categories]


@dataclass(frozen=True)
class FeatureEncoding:
    """The raw feature columns, in order, and how each becomes network inputs."""

    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        columns = self.encoded_columns()
        clash = sorted({c for c in columns if columns.count(c) > 1})
        if clash:
            raise EncodingError(
                f"encoded column name(s) {', '.join(map(repr, clash))} would appear twice "
                "(a column is named like a one-hot column '<column>=<category>'); rename it"
            )

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, feature_columns: Sequence[str], categorical: Iterable[str] = ()
    ) -> FeatureEncoding:
        """Record each feature column's kind: categorical if it holds text (or is listed in
        ``categorical``), its categories sorted; missing cells are not a category."""
        declared = set(categorical)
        features = []
        for name in feature_columns:
            if name not in frame.columns:
                raise EncodingError(_missing_message([name], feature_columns))
            series = frame[name]
            if name in declared or is_text(series):
                values = {c for c in as_categories(series) if c is not None}
                features.append(Feature(name, tuple(sorted(values))))
            else:
                features.append(Feature(name))
        return cls(tuple(features))

    @property
    def names(self) -> list[str]:
        """The raw feature columns, in the order the study lists them."""
        return [f.name for f in self.features]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.categorical]

    def encoded_columns(self) -> list[str]:
        """The network's inputs in order (what the feature scaler sees): a numeric column
        as itself, a categorical one as ``<column>=<category>`` per category."""
        return [c for f in self.features for c in f.encoded()]

    def one_hot_columns(self) -> list[str]:
        return [c for f in self.features if f.categorical for c in f.encoded()]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """The raw feature columns of ``frame`` (any order, extra columns ignored) as the
        encoded float64 matrix, one row per row of ``frame``."""
        missing = [n for n in self.names if n not in frame.columns]
        if missing:
            raise EncodingError(_missing_message(missing, self.names))
        blocks: list[np.ndarray] = []
        for feature in self.features:
            series = frame[feature.name]
            if feature.categories is None:
                blocks.append(_numbers(series, feature.name)[:, None])
                continue
            values = as_categories(series)
            # A text cell spelled exactly as a recorded category is that one: a features.json
            # written before numbers had one spelling may hold "01" and "1" apart. Else
            # through each category's spelling now ("1.0" recorded, a float 1.0 given).
            exact = {category: i for i, category in enumerate(feature.categories)}
            index: dict[str, int] = {}
            for i, category in enumerate(feature.categories):
                index.setdefault(category_of(category) or category, i)
            codes = np.array(
                [
                    -1 if v is None else exact[raw] if raw in exact else index.get(v, -1)
                    for raw, v in zip(
                        (c if isinstance(c, str) else None for c in series), values, strict=True
                    )
                ],
                dtype=int,
            )
            if (codes < 0).any():
                row = int(np.flatnonzero(codes < 0)[0])
                if values.iloc[row] is None:
                    raise EncodingError(
                        f"column {feature.name!r} has no value in data row {row + 1}: "
                        "give it one of its categories"
                    )
                raise UnseenCategory(feature.name, values.iloc[row], feature.categories)
            block = np.zeros((len(series), len(feature.categories)), dtype=np.float64)
            block[np.arange(len(series)), codes] = 1.0
            blocks.append(block)
        return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": [
                {"name": f.name, "kind": "numeric"}
                if f.categories is None
                else {"name": f.name, "kind": "categorical", "categories": list(f.categories)}
                for f in self.features
            ],
            "encoded_columns": self.encoded_columns(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureEncoding:
        try:
            features = []
            for item in raw["features"]:
                if item["kind"] == "numeric":
                    features.append(Feature(str(item["name"])))
                elif item["kind"] == "categorical":
                    features.append(Feature(str(item["name"]), tuple(map(str, item["categories"]))))
                else:
                    raise EncodingError(f"unknown feature kind {item['kind']!r}")
        except (KeyError, TypeError) as exc:
            raise EncodingError(f"feature encoding JSON: missing or malformed {exc}") from None
        encoding = cls(tuple(features))
        recorded = raw.get("encoded_columns")
        if recorded is not None and list(recorded) != encoding.encoded_columns():
            raise EncodingError("feature encoding JSON: encoded_columns disagree with features")
        return encoding

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureEncoding:
        return cls.from_dict(json.loads(text))


def _numbers(series: pd.Series, name: str) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce")
    bad = series.notna() & values.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise EncodingError(
            f"column {name!r} is numeric in the study, but holds {series.iloc[row]!r} "
            f"in data row {row + 1}"
        )
    return values.to_numpy(dtype=np.float64)


def _missing_message(missing: Sequence[str], names: Sequence[str]) -> str:
    return (
        f"feature column(s) {', '.join(map(repr, missing))} missing; the study's features "
        f"are: {', '.join(map(repr, names))}"
    )


# --------------------------------------------------------------------------- features.json

#: How predictions come out, in the words features.json records.
PREDICTION_UNITS = (
    "label units: the model's outputs times label_scaler.json's scale plus its mean "
    "are in the units of the dataset's label columns"
)


@dataclass(frozen=True)
class FeaturesFile:
    """``features.json``: what a prediction needs besides the model and the two scalers,
    so it can be reproduced with no access to the study spec.

    Inputs: ``encoding.transform`` of the raw feature columns, then
    ``feature_scaler.json`` (whose columns are ``encoding.encoded_columns()``).
    Outputs: the model's, through ``label_scaler.json``'s inverse, are the
    ``labels`` in order, in their own units.
    """

    encoding: FeatureEncoding
    labels: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                **self.encoding.to_dict(),
                "labels": list(self.labels),
                "predictions": PREDICTION_UNITS,
                "pipeline": [
                    "encode the feature columns (features, in order; a categorical one "
                    "as one 0/1 column per category)",
                    "feature_scaler.json: (x - mean) / scale per encoded column",
                    "model.keras",
                    "label_scaler.json: y * scale + mean per label",
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> FeaturesFile:
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("labels"), list):
            raise EncodingError("features.json: no list of labels")
        return cls(FeatureEncoding.from_dict(raw), tuple(map(str, raw["labels"])))
