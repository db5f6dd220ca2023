"""Load, validate and split a tabular dataset; fit the scalers.

Pure pandas / scikit-learn, no TensorFlow: the operator calls
``validate_dataset`` when a study starts so a misspelt column fails the study
at once with a clear message instead of failing every training later.

The split is a function of the file and ``DatasetRef`` only (``split_seed``),
never of the training seed, so every training of a study sees the same test
rows and their MAEs are comparable.
"""

from __future__ import annotations

import difflib
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpo.contract import DatasetRef
from hpo_trainer.scaling import Scaler

#: Fewest usable rows we accept: below this a three-way split is meaningless.
MIN_ROWS = 10

_CACHE_SIZE = 4
_cache: dict[tuple[str, int, int], pd.DataFrame] = {}
_cache_lock = threading.Lock()


class DatasetError(ValueError):
    """The dataset cannot be used as described; the message says why and where."""


@dataclass(frozen=True)
class DatasetSummary:
    """What ``validate_dataset`` found: usable rows and rows dropped for missing values."""

    rows: int
    rows_dropped: int


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


def read_table(path: str | Path) -> pd.DataFrame:
    """Read the CSV, once per process while the file is unchanged.

    Keyed by (path, size, mtime) so a long-lived worker that trains many
    configurations parses the file once but still notices a replaced file.
    Callers must not modify the returned frame.
    """
    file = Path(path)
    if not file.exists():
        raise DatasetError(f"dataset file not found: {path}")
    if not file.is_file():
        raise DatasetError(f"dataset path is not a file: {path}")
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    try:
        frame = pd.read_csv(file)
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"dataset file is empty: {path}") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"could not parse dataset CSV {path}: {first_line}") from exc
    with _cache_lock:
        for stale in [k for k in _cache if k[0] == key[0]]:
            del _cache[stale]
        while len(_cache) >= _CACHE_SIZE:
            del _cache[next(iter(_cache))]
        _cache[key] = frame
    return frame


def _fold(name: str) -> str:
    return unicodedata.normalize("NFKC", name).strip().casefold()


def _not_found(name: str, available: Sequence[str]) -> str:
    folded = {_fold(str(c)): str(c) for c in available}
    guess = folded.get(_fold(name))
    if guess is None:
        close = difflib.get_close_matches(name, [str(c) for c in available], n=1, cutoff=0.6)
        guess = close[0] if close else None
    if guess is not None:
        if unicodedata.normalize("NFC", guess) == unicodedata.normalize("NFC", name):
            # Looks identical on screen: say why it still differs.
            return (
                f"column {name!r} not found; the file has {guess!r}, the same text in "
                "another Unicode normalisation form (NFC vs NFD): write it as in the file"
            )
        return f"column {name!r} not found; did you mean {guess!r}?"
    shown = ", ".join(repr(str(c)) for c in list(available)[:20])
    more = ", ..." if len(available) > 20 else ""
    return f"column {name!r} not found (columns are: {shown}{more})"


def _check_numeric(df: pd.DataFrame, column: str) -> None:
    series = df[column]
    if pd.api.types.is_numeric_dtype(series):
        return
    coerced = pd.to_numeric(series, errors="coerce")
    bad = series.notna() & coerced.isna()
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        value = series.iloc[position]
        raise DatasetError(
            f"column {column!r} is not numeric: e.g. {value!r} in data row {position + 1} "
            f"({int(bad.sum())} non-numeric value(s))"
        )


def _usable(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The selected columns as float64, rows with a missing or infinite value dropped."""
    selected = df[columns].apply(pd.to_numeric).astype(np.float64)
    selected = selected.replace([np.inf, -np.inf], np.nan)
    return selected.dropna(how="any")


def _check_spread(df: pd.DataFrame, usable: pd.DataFrame, labels: list[str]) -> None:
    """Columns the scalers cannot standardise: a spread that overflows float64 (the
    training would see NaN) and a constant label (nothing to learn, and percent
    errors of a zero label divide by zero)."""
    for column in usable.columns:
        values = usable[column].to_numpy()
        with np.errstate(over="ignore", invalid="ignore"):
            spread = float(np.std(values))
        if not np.isfinite(spread):
            at = int(np.argmax(np.abs(values)))
            row = df.index.get_loc(usable.index[at]) + 1
            raise DatasetError(
                f"column {column!r} has values too large to standardise: e.g. {values[at]:g} "
                f"in data row {row} (the spread overflows float64, so training would see NaN); "
                "rescale the column, e.g. change its unit"
            )
    for label in labels:
        distinct = usable[label].unique()
        if len(distinct) == 1:
            raise DatasetError(
                f"label column {label!r} is constant ({distinct[0]:g} in every usable row): "
                "there is nothing to learn; choose another label"
            )


def validate_frame(df: pd.DataFrame, features: Sequence[str], labels: Sequence[str]) -> None:
    """Raise ``DatasetError`` if ``df`` cannot train a model mapping features to labels."""
    features, labels = list(features), list(labels)
    if not features:
        raise DatasetError("no feature columns given")
    if not labels:
        raise DatasetError("no label columns given")
    for kind, names in (("feature", features), ("label", labels)):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DatasetError(f"{kind} column(s) listed twice: {', '.join(map(repr, duplicates))}")
    both = [n for n in labels if n in features]
    if both:
        raise DatasetError(
            f"column(s) {', '.join(map(repr, both))} listed both as feature and label; "
            "a label cannot also be an input"
        )
    columns = features + labels
    missing = [n for n in columns if n not in df.columns]
    if missing:
        raise DatasetError("; ".join(_not_found(n, list(df.columns)) for n in missing))
    for column in columns:
        _check_numeric(df, column)
    total = len(df)
    usable = _usable(df, columns)
    rows = len(usable)
    if rows == 0:
        if total == 0:
            raise DatasetError("the dataset has no rows")
        counts = df[columns].apply(pd.to_numeric).isna().sum().sort_values(ascending=False)
        worst = ", ".join(f"{c!r} ({n})" for c, n in counts.items() if n > 0)
        raise DatasetError(
            f"no rows left after dropping rows with missing values: all {total} rows miss "
            f"at least one of the selected columns (missing counts: {worst})"
        )
    if rows < MIN_ROWS:
        raise DatasetError(
            f"only {rows} usable row(s) ({total - rows} dropped for missing values); "
            f"need at least {MIN_ROWS} to split into train/validation/test"
        )
    _check_spread(df, usable, labels)


def _check_fractions(ref: DatasetRef) -> None:
    for name in ("test_size", "validation_size"):
        value = getattr(ref, name)
        if not 0.0 < value < 1.0:
            raise DatasetError(f"{name} must be a fraction between 0 and 1, got {value}")


def split_indices(rows: int, ref: DatasetRef) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row positions of train, validation and test; deterministic in ``split_seed``."""
    from sklearn.model_selection import train_test_split  # slow import; keep data.py light

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


def _load_usable(ref: DatasetRef) -> tuple[pd.DataFrame, int]:
    df = read_table(ref.path)
    validate_frame(df, ref.features, ref.labels)
    usable = _usable(df, [*ref.features, *ref.labels])
    return usable, len(df) - len(usable)


def _split(rows: int, ref: DatasetRef, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The split training ``seed`` uses: seed s validates on fold s mod folds."""
    if ref.folds == 0:
        return split_indices(rows, ref)
    return cv_split_indices(rows, ref, seed)


def validate_dataset(ref: DatasetRef) -> DatasetSummary:
    """Check file, columns, contents and split sizes without training anything."""
    usable, dropped = _load_usable(ref)
    _split(len(usable), ref, 0)
    return DatasetSummary(rows=len(usable), rows_dropped=dropped)


def prepare(ref: DatasetRef, seed: int = 0) -> PreparedData:
    """Load and split the dataset; fit both scalers on the training split only.

    ``seed`` is the training seed; it only matters with ``ref.folds``, where it
    picks the validation fold.
    """
    usable, dropped = _load_usable(ref)
    x = usable[list(ref.features)].to_numpy(dtype=np.float64)
    y = usable[list(ref.labels)].to_numpy(dtype=np.float64)
    train, val, test = _split(len(usable), ref, seed)
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
