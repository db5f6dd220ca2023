"""Reading and checking a study's dataset: used by the operator and by the trainer alike.

Pure pandas / scikit-learn, no TensorFlow: the operator checks the dataset
when a study starts (``hpo.data.checks``) so a misspelt column fails the
study at once with a clear message instead of failing every training later,
and the trainer reads and splits it with the very same code.

The split is a function of the file and ``DatasetRef`` only (``split_seed``),
never of the training seed, so every training of a study sees the same test
rows and their MAEs are comparable.

An ``s3://`` dataset is downloaded once per process and checked every time:
a dataset replaced in the bucket mid-study would silently mix two datasets in
one ledger, so every use compares the object's ETag with the one recorded
when the study started (one HEAD request) before using its copy. A local file
is fingerprinted the same way, by the sha256 of its bytes.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import tempfile
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpo.data.encoding import as_categories, is_text
from hpo.store import StoreRef, open_store
from hpo.store.keys import StoreError, check_key, key_segment
from hpo.study.contract import DatasetRef

#: Fewest usable rows we accept: below this a three-way split is meaningless.
MIN_ROWS = 10
#: More categories than this in one column is worth a note (as many network inputs).
MANY_CATEGORIES = 50
#: A categorical column with at least this many distinct values per usable row is an
#: identifier (a name, a serial number), not a category.
ID_LIKE = 0.9

_CACHE_SIZE = 4
_cache: dict[tuple[str, int, int], pd.DataFrame] = {}
_cache_lock = threading.Lock()


class DatasetError(ValueError):
    """The dataset cannot be used as described; the message says why and where."""


class DatasetMissing(DatasetError):
    """No file at the dataset's path (or not a file): ``spec.dataset.path`` is what is wrong."""


class DatasetUnreachable(DatasetError):
    """The store holding an ``s3://`` dataset did not answer (or refused the credentials):
    nothing is known about the dataset itself yet."""


@dataclass(frozen=True)
class DatasetSummary:
    """What ``validate_dataset`` found: usable rows and rows dropped for missing values,
    the feature columns encoded as categories, and what the user should know."""

    rows: int
    rows_dropped: int
    categorical: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def read_table(path: str | Path) -> pd.DataFrame:
    """Read the CSV, once per process while the file is unchanged.

    Keyed by (path, size, mtime) so a long-lived worker that trains many
    configurations parses the file once but still notices a replaced file.
    Callers must not modify the returned frame.
    """
    file = Path(path)
    if not file.exists():
        if file.is_symlink():
            raise DatasetMissing(
                f"dataset path is a symbolic link that leads nowhere (broken, or a loop): {path}"
            )
        raise DatasetMissing(f"dataset file not found: {path}")
    if not file.is_file():
        raise DatasetMissing(f"dataset path is not a file: {path}")
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    _check_not_binary(file, path)
    try:
        frame = pd.read_csv(file)
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"dataset file is empty: {path}") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "; save it as UTF-8 text" if isinstance(exc, UnicodeDecodeError) else ""
        raise DatasetError(f"could not parse dataset CSV {path}: {first_line}{hint}") from exc
    _check_header(file, path, frame)
    with _cache_lock:
        for stale in [k for k in _cache if k[0] == key[0]]:
            del _cache[stale]
        while len(_cache) >= _CACHE_SIZE:
            del _cache[next(iter(_cache))]
        _cache[key] = frame
    return frame


#: File signatures of formats people save tables in that are not CSV.
_NOT_CSV = (
    (b"PK\x03\x04", "an Excel workbook (or another zip file)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel workbook (.xls)"),
    (b"PAR1", "a Parquet file"),
)
#: Separators a CSV saved with another locale or tool uses instead of ','.
_OTHER_SEPARATORS = (";", "\t", "|")


def _check_not_binary(file: Path, path: str | Path) -> None:
    """A workbook or Parquet file named as the dataset: say what it is, not a UTF-8 error."""
    with file.open("rb") as f:
        head = f.read(8)
    for magic, what in _NOT_CSV:
        if head.startswith(magic):
            raise DatasetError(
                f"dataset {path} is {what}, not a CSV file: save it as CSV "
                "(comma-separated, UTF-8) and point spec.dataset.path at that file"
            )


def _check_header(file: Path, path: str | Path, frame: pd.DataFrame) -> None:
    """What pandas would otherwise silently repair in the header: a file separated by
    another character (one column), a name given twice (renamed ``x.1``) and a column
    without a name (``Unnamed: 0``, usually an index written by ``DataFrame.to_csv``)."""
    columns = [str(c) for c in frame.columns]
    if len(columns) == 1:
        for sep in _OTHER_SEPARATORS:
            if sep in columns[0]:
                shown = "tab" if sep == "\t" else repr(sep)
                raise DatasetError(
                    f"dataset {path} has a single column {columns[0][:60]!r}: it looks "
                    f"separated by {shown}, not ','; save it comma-separated"
                )
    raw = pd.read_csv(file, header=None, nrows=1, dtype=str, keep_default_na=False)
    names = [str(v).strip() for v in raw.iloc[0].tolist()] if len(raw) else []
    twice = sorted({n for n in names if n and names.count(n) > 1})
    if twice:
        raise DatasetError(
            f"dataset {path}: column name(s) {', '.join(map(repr, twice))} appear more than "
            "once in the header; give every column its own name"
        )
    unnamed = [i for i, n in enumerate(names) if not n]
    if unnamed and len(names) == len(columns):
        frame.attrs["unnamed"] = [columns[i] for i in unnamed]


def unnamed_columns(frame: pd.DataFrame) -> list[str]:
    """Columns whose header cell is empty (pandas calls them ``Unnamed: <i>``)."""
    return list(frame.attrs.get("unnamed", []))


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


def _usable(df: pd.DataFrame, columns: list[str], categorical: Sequence[str] = ()) -> pd.DataFrame:
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
    columns = features + labels
    missing = [n for n in columns if n not in df.columns]
    if missing:
        raise DatasetError("; ".join(_not_found(n, list(df.columns)) for n in missing))
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
    total = len(df)
    usable = _usable(df, columns, encoded)
    rows = len(usable)
    if rows == 0:
        if total == 0:
            raise DatasetError("the dataset has no rows")
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
        worst = ", ".join(
            f"{c!r} ({_counted(int(missing[c]), int(infinite[c]))})"
            for c in (missing + infinite).sort_values(ascending=False, kind="stable").index
            if missing[c] + infinite[c] > 0
        )
        raise DatasetError(
            f"no rows left after dropping rows with missing or infinite values: all {total} "
            f"rows miss at least one of the selected columns or hold inf there (counts: "
            f"{worst}); fill in the values or choose other columns"
        )
    if rows < MIN_ROWS:
        raise DatasetError(
            f"only {rows} usable row(s) ({total - rows} dropped for missing values); "
            f"need at least {MIN_ROWS} to split into train/validation/test"
        )
    _check_spread(df, usable[[c for c in columns if c not in encoded]], labels)
    return _check_categories(df, usable, encoded, categorical)


def check_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise ``DatasetError`` unless every column is in ``df`` and numeric: the check of
    training's ``validate_frame``, for data that only has features (predictions)."""
    missing = [n for n in columns if n not in df.columns]
    if missing:
        raise DatasetError("; ".join(_not_found(n, list(df.columns)) for n in missing))
    for column in columns:
        _check_numeric(df, column)


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


def _load(ref: DatasetRef) -> tuple[pd.DataFrame, int, list[str], list[str]]:
    df = read_table(ref.path)
    notes = validate_frame(df, ref.features, ref.labels, ref.categorical)
    encoded = categorical_columns(df, ref.features, ref.categorical)
    usable = _usable(df, [*ref.features, *ref.labels], encoded)
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


# --------------------------------------------------------------------------- s3:// datasets

_lock = threading.Lock()
_copies: dict[tuple[str, str], Path] = {}


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key); the key is checked like any store key."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise DatasetError(f"dataset URL {url!r} must look like s3://bucket/key.csv")
    try:
        check_key(key)
    except StoreError as exc:
        raise DatasetError(f"dataset URL {url!r}: {exc}") from None
    return bucket, key


def cache_dir() -> Path:
    """Where downloaded datasets are kept: ``$HPO_CACHE/datasets`` (default: the temp folder)."""
    return Path(os.environ.get("HPO_CACHE", Path(tempfile.gettempdir()) / "hpo-cache")) / "datasets"


def cached_copy(url: str, etag: str) -> Path:
    """The local file for one version of a dataset: always inside ``cache_dir()``.

    The folder is a digest of URL and ETag; the file keeps the key's last segment
    (checked by ``split_s3_url``) so its suffix still tells the format.
    """
    _, key = split_s3_url(url)
    digest = hashlib.sha256(f"{url}@{etag}".encode()).hexdigest()[:16]
    try:
        name = key_segment(key.rsplit("/", 1)[-1], "dataset file name")
    except StoreError as exc:
        raise DatasetError(f"dataset URL {url!r}: {exc}") from None
    return cache_dir() / digest / name


# --------------------------------------------------------------------------- local datasets

_digests: dict[tuple[str, int, int, int, int], str] = {}

#: How a local file's fingerprint is spelled in ``DatasetRef.etag`` (an S3 ETag never
#: starts so).
SHA256 = "sha256:"


def file_fingerprint(path: str | Path) -> tuple[str, int]:
    """``sha256:<hex>`` of the file's bytes and its size.

    Cached per process while the file's size, mtime, ctime and inode stay the
    same: a worker that trains many configurations reads the file once, yet a
    file edited, replaced or copied over (``cp -p`` keeps the mtime, not the
    ctime) is hashed again.
    """
    file = Path(path)
    try:
        st = file.stat()
        key = (str(file.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        with _cache_lock:
            digest = _digests.get(key)
        if digest is None:
            h = hashlib.sha256()
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            digest = SHA256 + h.hexdigest()
            with _cache_lock:
                _digests.clear()  # one dataset per study: keep the latest only
                _digests[key] = digest
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc.strerror or exc}") from exc
    return digest, st.st_size


def short_fingerprint(etag: str | None) -> str:
    """A fingerprint as shown in messages: ``sha256 1a2b3c4d5e6f`` or ``ETag "..."``."""
    if etag is None:
        return "no fingerprint"
    if etag.startswith(SHA256):
        return f"sha256 {etag.removeprefix(SHA256)[:12]}"
    return f"ETag {etag}"


def localise(
    ref: DatasetRef, store: StoreRef | None, credentials: tuple[str, str] | None = None
) -> DatasetRef:
    """``ref`` with a local ``path``, its ``etag`` and ``size`` filled in.

    A local file keeps its path; its ``etag`` is the sha256 of its bytes. For
    ``s3://`` the object is fetched from the study's endpoint (same credentials)
    unless this process already holds the same version. Either way a ``ref`` that
    carries a fingerprint (a training request) is refused if the data differs.
    """
    if not ref.path.startswith("s3://"):
        if not Path(ref.path).is_file():
            return ref  # read_table says what is wrong with the path
        digest, size = file_fingerprint(ref.path)
        if ref.etag is not None and digest != ref.etag:
            raise DatasetError(
                f"dataset {ref.path} changed since the study started "
                f"({short_fingerprint(ref.etag)}, {ref.size} bytes then; "
                f"{short_fingerprint(digest)}, {size} bytes now): not training on other data; "
                "restore the file, or start a new study (another metadata.name) on the new data"
            )
        return dataclasses.replace(ref, etag=digest, size=size)
    if store is None or store.kind != "s3":
        raise DatasetError(f"dataset {ref.path}: an s3:// dataset needs storage.type s3")
    bucket, key = split_s3_url(ref.path)
    try:
        source = open_store(store, bucket=bucket, prefix="", credentials=credentials)
        etag = source.etag(key)
    except StoreError as exc:
        raise DatasetUnreachable(f"dataset {ref.path}: {exc}") from exc
    if etag is None:
        raise DatasetError(f"dataset not found: {ref.path}")
    if ref.etag is not None and etag != ref.etag:
        raise DatasetError(
            f"dataset {ref.path} changed since the study started (ETag {ref.etag} then, "
            f"{etag} now); restore it or start a new study"
        )
    with _lock:
        local = _copies.get((ref.path, etag))
    if local is None or not local.exists():
        local = cached_copy(ref.path, etag)
        if not local.exists():
            try:
                tmp = local.with_name(f".{local.name}.{os.getpid()}")
                source.get_file(key, tmp)
                os.replace(tmp, local)
            except StoreError as exc:
                raise DatasetUnreachable(f"dataset {ref.path}: {exc}") from exc
        with _lock:
            _copies[(ref.path, etag)] = local
    return dataclasses.replace(ref, path=str(local), etag=etag, size=local.stat().st_size)
