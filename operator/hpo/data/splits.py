"""Splitting a dataset's rows into train, validation and test: a function of the row count
and ``DatasetRef`` only (``split_seed``, ``folds``), never of the training seed beyond
choosing a fold, so every training of a study sees the same test rows."""

from __future__ import annotations

import numpy as np

from hpo.data.errors import DatasetError
from hpo.study.contract import DatasetRef


def _check_fractions(ref: DatasetRef) -> None:
    for name in ("test_size", "validation_size"):
        value = getattr(ref, name)
        if not 0.0 < value < 1.0:
            raise DatasetError(f"{name} must be a fraction between 0 and 1, got {value}")


def split_indices(rows: int, ref: DatasetRef) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row positions of train, validation and test; deterministic in ``split_seed``."""
    from sklearn.model_selection import train_test_split  # slow import; keep this module light

    _check_fractions(ref)
    positions = np.arange(rows)
    try:
        rest, test = train_test_split(
            positions, test_size=ref.test_size, random_state=ref.split_seed
        )
        train, val = train_test_split(
            rest, test_size=ref.validation_size, random_state=ref.split_seed
        )
    except ValueError as exc:
        raise DatasetError(
            f"cannot split {rows} rows with test_size={ref.test_size} and "
            f"validation_size={ref.validation_size}: {exc}"
        ) from exc
    if len(train) < 2:
        raise DatasetError(
            f"only {len(train)} training row(s) after the split of {rows} rows; "
            "lower test_size/validation_size or add data"
        )
    return train, val, test


def cv_split_indices(
    rows: int, ref: DatasetRef, fold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row positions of train, validation and test for k-fold cross-validation.

    The test split is the one ``split_indices`` makes (same ``test_size`` and
    ``split_seed``), so test scores stay comparable with and without folds. The
    other rows are cut into ``ref.folds`` shuffled folds, deterministic in
    ``split_seed``: fold ``fold % folds`` validates (so a training seed can be
    passed as is), the others train. ``validation_size`` is not used.
    """
    from sklearn.model_selection import KFold, train_test_split  # slow import

    k = ref.folds
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
        raise DatasetError(
            f"folds must be 0 (one validation split) or at least 2 for cross-validation, got {k!r}"
        )
    if not 0.0 < ref.test_size < 1.0:
        raise DatasetError(f"test_size must be a fraction between 0 and 1, got {ref.test_size}")
    try:
        rest, test = train_test_split(
            np.arange(rows), test_size=ref.test_size, random_state=ref.split_seed
        )
    except ValueError as exc:
        raise DatasetError(
            f"cannot split {rows} rows with test_size={ref.test_size}: {exc}"
        ) from exc
    if k > len(rest):
        raise DatasetError(
            f"folds={k} is more than the {len(rest)} rows left after the test split of "
            f"{rows} rows; lower folds or test_size"
        )
    largest_fold = -(-len(rest) // k)
    if len(rest) - largest_fold < 2:
        raise DatasetError(
            f"folds={k} over {len(rest)} rows leaves fewer than 2 training rows; lower folds"
        )
    splits = KFold(n_splits=k, shuffle=True, random_state=ref.split_seed).split(rest)
    train, val = next(s for i, s in enumerate(splits) if i == fold % k)
    return rest[train], rest[val], test


def split_for_seed(
    rows: int, ref: DatasetRef, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The split training ``seed`` uses: with ``ref.folds``, seed s validates on fold s % k."""
    if ref.folds == 0:
        return split_indices(rows, ref)
    return cv_split_indices(rows, ref, seed)
