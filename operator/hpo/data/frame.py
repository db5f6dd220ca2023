"""Checking a dataset's table against a study's columns: present, numeric or categorical,
enough usable rows, a spread the scalers can standardise.

``validate_frame`` is the whole check, in steps; ``usable_rows`` is what training uses of
a checked table.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Sequence

import numpy as np
import pandas as pd

from hpo.data.encoding import as_categories, is_text
from hpo.data.errors import DatasetError
from hpo.data.table import GROUPED, commas_group, thousands_columns

#: Fewest usable rows we accept: below this a three-way split is meaningless.
MIN_ROWS = 10
#: More categories than this in one column is worth a note (as many network inputs).
MANY_CATEGORIES = 50
#: A categorical column with at least this many distinct values per usable row is an
#: identifier (a name, a serial number), not a category.
ID_LIKE = 0.9


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


def _non_numeric(series: pd.Series) -> pd.Series:
    """Cells that hold something other than a number (missing cells are not counted)."""
    if pd.api.types.is_numeric_dtype(series):
        return pd.Series(False, index=series.index)
    return series.notna() & pd.to_numeric(series, errors="coerce").isna()


def _check_numeric(df: pd.DataFrame, column: str, hint: str = "") -> None:
    bad = _non_numeric(df[column])
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        value = df[column].iloc[position]
        raise DatasetError(
            f"column {column!r} is not numeric: e.g. {value!r} in data row {position + 1} "
            f"({int(bad.sum())} non-numeric value(s)){hint}"
        )


def categorical_columns(
    df: pd.DataFrame, features: Sequence[str], declared: Sequence[str] = ()
) -> list[str]:
    """The feature columns encoded as categories: those declared
    (``spec.dataset.categorical``, e.g. numeric codes) and those holding text.

    A column of numbers with a few text cells among them ("1,5 V", "n/a") is a
    numeric column with typos, not a categorical one: it stays numeric and is
    refused by ``validate_frame`` naming a bad cell. Text means: at most half of
    its filled cells read as numbers.
    """
    out = []
    for name in features:
        series = df[name]
        if name in declared:
            out.append(name)
        elif is_text(series):
            filled = int(series.notna().sum())
            if int(_non_numeric(series).sum()) * 2 >= filled:
                out.append(name)
    return out


def _counted(missing: int, infinite: int) -> str:
    parts = [f"{missing} missing"] if missing else []
    return ", ".join([*parts, f"{infinite} infinite"] if infinite else parts)


def usable_rows(
    df: pd.DataFrame, columns: list[str], categorical: Sequence[str] = ()
) -> pd.DataFrame:
    """The selected columns, rows with a missing or infinite value dropped: numeric ones as
    float64, categorical ones as category text (``hpo.data.encoding.as_categories``)."""
    numeric = [c for c in columns if c not in categorical]
    selected = df[numeric].apply(pd.to_numeric).astype(np.float64)
    selected = selected.replace([np.inf, -np.inf], np.nan)
    for name in categorical:
        selected[name] = as_categories(df[name])
    return selected[columns].dropna(how="any")


def _check_categories(
    df: pd.DataFrame, usable: pd.DataFrame, categorical: list[str], declared: Sequence[str]
) -> list[str]:
    """Refuse an identifier column; say what else is worth knowing about categories."""
    notes = []
    rows = len(usable)
    if categorical:
        counted = ", ".join(f"{n!r} ({usable[n].nunique()})" for n in categorical)
        notes.append(f"categorical feature column(s), one network input per category: {counted}")
    for name in categorical:
        distinct = usable[name].nunique()
        if distinct > 2 and distinct >= ID_LIKE * rows:
            fix = (
                "take it out of spec.dataset.categorical if its values are measurements"
                if name in declared
                else "leave the column out of the features"
            )
            raise DatasetError(
                f"column {name!r} looks like an identifier, not a category: {distinct} "
                f"distinct values in {rows} usable rows, e.g. {usable[name].iloc[0]!r}; "
                "one-hot encoding would give the network one input per row, and every new "
                f"row would be a category it never saw; {fix}"
            )
        merged = merged_spellings(df.loc[usable.index, name])
        if merged:
            notes.append(
                f"categorical column {name!r}: number-like spellings read as one category "
                f"each: {merged} (a code whose leading zeros matter needs a letter, e.g. 'z01')"
            )
        missing = int(df[name].isna().sum())
        if missing:
            notes.append(
                f"categorical column {name!r}: {missing} row(s) have no value and are left "
                "out, as rows with missing numbers are; give them a category of their own "
                "(e.g. 'unknown') to keep them"
            )
        if distinct == 1:
            notes.append(
                f"categorical column {name!r} has one category only "
                f"({usable[name].iloc[0]!r} in every usable row): it tells the model nothing; "
                "leave it out of the features"
            )
        elif distinct > MANY_CATEGORIES:
            notes.append(
                f"categorical column {name!r} has {distinct} categories: as many network "
                "inputs, and a category with few rows is learnt poorly; consider grouping "
                "the rare ones"
            )
    return notes


#: At most this many merged categories are spelt out in a note.
_MERGED_SHOWN = 5


def merged_spellings(series: pd.Series) -> str:
    """Categories that several raw spellings became (``01`` and ``1`` are category
    ``1``: ``hpo.data.encoding.category_of``), as ``'01', '1' -> '1'; ...``; empty if
    none. Said so the user sees it happen, not only read it in the README."""
    spellings: dict[str, set[str]] = {}
    for raw, category in zip(series, as_categories(series), strict=True):
        if category is not None:
            spellings.setdefault(category, set()).add(str(raw).strip())
    merged = {c: sorted(s) for c, s in sorted(spellings.items()) if len(s) > 1}
    shown = "; ".join(
        f"{', '.join(map(repr, s))} -> {c!r}" for c, s in list(merged.items())[:_MERGED_SHOWN]
    )
    more = f"; ... ({len(merged)} categories in all)" if len(merged) > _MERGED_SHOWN else ""
    return shown + more


def _row_number(df: pd.DataFrame, label: object) -> int:
    """The 1-based data row of index ``label`` (its first, if the index repeats it)."""
    loc = df.index.get_loc(label)
    if isinstance(loc, slice):
        return int(loc.start or 0) + 1
    if isinstance(loc, np.ndarray):
        return int(np.flatnonzero(loc)[0]) + 1
    return int(loc) + 1


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
            row = _row_number(df, usable.index[at])
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


def validate_frame(
    df: pd.DataFrame,
    features: Sequence[str],
    labels: Sequence[str],
    categorical: Sequence[str] = (),
) -> list[str]:
    """Raise ``DatasetError`` if ``df`` cannot train a model mapping features to labels.

    ``categorical``: the declared categorical features (text columns are categorical
    anyway); labels are always numeric. Returns notes for the user (e.g. a
    categorical column with one category only).
    """
    features, labels = list(features), list(labels)
    _check_lists(features, labels, categorical)
    columns = features + labels
    _check_present(df, columns)
    _check_grouped(df, columns)
    encoded = _check_types(df, features, labels, categorical)
    usable = usable_rows(df, columns, encoded)
    _check_rows(df, usable, columns, encoded)
    _check_spread(df, usable[[c for c in columns if c not in encoded]], labels)
    return grouped_notes(df, columns) + _check_categories(df, usable, encoded, categorical)


def grouped_notes(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Say which columns were read as numbers although written with thousands
    separators (``hpo.data.table``): the user should know the file was interpreted."""
    read = [c for c in thousands_columns(df) if c in columns]
    if not read:
        return []
    return [
        f"column(s) {', '.join(map(repr, read))} hold numbers written with thousands "
        "separators (e.g. '1,000'): read as numbers (1000)"
    ]


def _check_grouped(df: pd.DataFrame, columns: Sequence[str]) -> None:
    """A text column holding numbers with thousands separators among other text: neither
    numbers nor categories for sure (``"1,5"`` may be a decimal comma), so refused naming
    a cell of each kind, never one-hot encoded; so is one of numbers like ``"1,250"`` only
    (1250, or 1.25 with a decimal comma?)."""
    for column in columns:
        series = df[column]
        if not is_text(series):
            continue
        cells = series.astype("string").str.strip()  # missing cells stay missing
        filled = cells.notna().to_numpy()
        with_groups = cells.str.fullmatch(GROUPED.pattern).fillna(False).to_numpy(bool)
        if not with_groups.any():
            continue
        numbers = pd.to_numeric(cells.astype(object), errors="coerce").notna().to_numpy()
        others = np.flatnonzero(filled & ~with_groups & ~numbers)
        at = int(np.flatnonzero(with_groups)[0])
        if not len(others) and not commas_group(cells.dropna()):
            raise DatasetError(
                f"column {column!r} holds numbers whose comma may group thousands or be a "
                f"decimal comma ({cells.iloc[at]!r} in data row {at + 1}), and no cell settles "
                "which: write them without thousands separators and with a decimal point "
                "(1250 or 1.25)"
            )
        if not len(others):  # all numbers (a frame not read by read_table): not numeric below
            continue
        grouped, other = (at, cells.iloc[at]), (int(others[0]), cells.iloc[int(others[0])])
        raise DatasetError(
            f"column {column!r} holds numbers with thousands separators ({grouped[1]!r} in "
            f"data row {grouped[0] + 1}) and other text ({other[1]!r} in data row "
            f"{other[0] + 1}): write the numbers without separators (1000, 4974.5) and "
            "fix the other cells"
        )


def _check_lists(features: list[str], labels: list[str], categorical: Sequence[str]) -> None:
    """The column lists themselves: some of each, none twice, no label an input."""
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
    stray = [n for n in categorical if n not in features]
    if stray:
        raise DatasetError(
            f"categorical column(s) {', '.join(map(repr, stray))} are not among the features"
        )


def _check_present(df: pd.DataFrame, columns: Sequence[str]) -> None:
    """Every column is in the file; else each missing one with a did-you-mean."""
    missing = [n for n in columns if n not in df.columns]
    if missing:
        raise DatasetError("; ".join(_not_found(n, list(df.columns)) for n in missing))


def _check_types(
    df: pd.DataFrame, features: list[str], labels: list[str], categorical: Sequence[str]
) -> list[str]:
    """Labels and non-categorical features hold numbers; returns the categorical features."""
    for column in labels:
        _check_numeric(df, column)
    encoded = categorical_columns(df, features, categorical)
    for column in features:
        if column not in encoded:
            _check_numeric(
                df,
                column,
                "; if it holds categories, list it in spec.dataset.categorical"
                if is_text(df[column])
                else "",
            )
    return encoded


def _check_rows(
    df: pd.DataFrame, usable: pd.DataFrame, columns: list[str], encoded: list[str]
) -> None:
    """Enough rows are left once those with a missing or infinite value are dropped."""
    total, rows = len(df), len(usable)
    if rows == 0:
        if total == 0:
            raise DatasetError("the dataset has no rows")
        raise DatasetError(
            f"no rows left after dropping rows with missing or infinite values: all {total} "
            f"rows miss at least one of the selected columns or hold inf there (counts: "
            f"{_worst_columns(df, columns, encoded)}); fill in the values or choose other columns"
        )
    if rows < MIN_ROWS:
        raise DatasetError(
            f"only {rows} usable row(s) ({total - rows} dropped for missing values); "
            f"need at least {MIN_ROWS} to split into train/validation/test"
        )


def _worst_columns(df: pd.DataFrame, columns: list[str], encoded: list[str]) -> str:
    """The columns with missing or infinite values, most first, with their counts."""
    numeric = [c for c in columns if c not in encoded]
    values = df[numeric].apply(pd.to_numeric).astype(np.float64)
    missing = pd.Series(
        {
            c: int(df[c].isna().sum()) if c in encoded else int(values[c].isna().sum())
            for c in columns
        }
    )
    infinite = pd.Series(
        {c: 0 if c in encoded else int(np.isinf(values[c]).sum()) for c in columns}
    )
    return ", ".join(
        f"{c!r} ({_counted(int(missing[c]), int(infinite[c]))})"
        for c in (missing + infinite).sort_values(ascending=False, kind="stable").index
        if missing[c] + infinite[c] > 0
    )


def check_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise ``DatasetError`` unless every column is in ``df`` and numeric: the check of
    training's ``validate_frame``, for data that only has features (predictions)."""
    _check_present(df, columns)
    for column in columns:
        _check_numeric(df, column)
