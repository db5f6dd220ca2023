"""Reading and checking a study's dataset: used by the operator and by the trainer alike.

Pure pandas / scikit-learn, no TensorFlow: the operator checks the dataset
when a study starts (``hpo.data.checks``) so a misspelt column fails the
study at once with a clear message instead of failing every training later,
and the trainer reads and splits it with the very same code.

The split is a function of the file and ``DatasetRef`` only (``split_seed``),
never of the training seed, so every training of a study sees the same test
rows and their MAEs are comparable.

The parts live in modules by job: ``table`` (reading the CSV), ``frame`` (checking it
against the study's columns), ``splits`` (train/validation/test rows) and
``fingerprint`` (which bytes a dataset is, the copy of an ``s3://`` one); this module
puts them together and is the one name to import them from.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from hpo.data.errors import DatasetError, DatasetMissing, DatasetUnreachable
from hpo.data.fingerprint import (
    SHA256,
    cache_dir,
    cached_copy,
    file_fingerprint,
    localise,
    short_fingerprint,
    split_s3_url,
)
from hpo.data.frame import (
    ID_LIKE,
    MANY_CATEGORIES,
    MIN_ROWS,
    categorical_columns,
    check_columns,
    usable_rows,
    validate_frame,
)
from hpo.data.splits import cv_split_indices, split_for_seed, split_indices
from hpo.data.table import read_table, unnamed_columns
from hpo.study.contract import DatasetRef

__all__ = [
    "ID_LIKE",
    "MANY_CATEGORIES",
    "MIN_ROWS",
    "SHA256",
    "DatasetError",
    "DatasetMissing",
    "DatasetSummary",
    "DatasetUnreachable",
    "cache_dir",
    "cached_copy",
    "categorical_columns",
    "check_columns",
    "cv_split_indices",
    "file_fingerprint",
    "load_usable",
    "localise",
    "read_table",
    "short_fingerprint",
    "split_for_seed",
    "split_indices",
    "split_s3_url",
    "unnamed_columns",
    "validate_dataset",
    "validate_frame",
]


@dataclass(frozen=True)
class DatasetSummary:
    """What ``validate_dataset`` found: usable rows and rows dropped for missing values,
    the feature columns encoded as categories, and what the user should know."""

    rows: int
    rows_dropped: int
    categorical: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _load(ref: DatasetRef) -> tuple[pd.DataFrame, int, list[str], list[str]]:
    df = read_table(ref.path)
    notes = validate_frame(df, ref.features, ref.labels, ref.categorical)
    encoded = categorical_columns(df, ref.features, ref.categorical)
    usable = usable_rows(df, [*ref.features, *ref.labels], encoded)
    return usable, len(df) - len(usable), encoded, notes


def load_usable(ref: DatasetRef) -> tuple[pd.DataFrame, int]:
    """The checked dataset's feature and label columns, and how many rows were dropped.

    Numeric columns are float64; categorical features (``categorical_columns``) hold
    category text, for ``hpo.data.encoding.FeatureEncoding.fit``.
    """
    usable, dropped, _, _ = _load(ref)
    return usable, dropped


def validate_dataset(ref: DatasetRef) -> DatasetSummary:
    """Check file, columns, contents and split sizes without training anything."""
    usable, dropped, encoded, notes = _load(ref)
    split_for_seed(len(usable), ref, 0)
    return DatasetSummary(
        rows=len(usable), rows_dropped=dropped, categorical=tuple(encoded), notes=tuple(notes)
    )
