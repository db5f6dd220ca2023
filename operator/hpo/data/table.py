"""Reading a dataset's CSV file: once per process, refusing what pandas would silently
repair (another separator, a name given twice) or misread (a workbook, Parquet)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pandas as pd

from hpo.data.errors import DatasetError, DatasetMissing

_CACHE_SIZE = 4
_cache: dict[tuple[str, int, int], pd.DataFrame] = {}
_cache_lock = threading.Lock()


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
    _read_grouped_numbers(frame)
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


#: A number written with thousands separators: ``1,000``, ``-12,345.5`` (groups of three).
#: Its leading group starts with 1-9: ``0,125`` is a decimal comma, never a group.
GROUPED = re.compile(r"[+-]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d*)?")
#: Two groups (``1,234,567``): no decimal comma reads so.
_GROUPS = re.compile(r"[+-]?[1-9]\d{0,2}(?:,\d{3}){2,}(?:\.\d*)?")
#: A number as a CSV reader takes one.
_PLAIN = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _read_grouped_numbers(frame: pd.DataFrame) -> None:
    """Text columns whose every filled cell is a number, some written with thousands
    separators (``"1,000"``, ``"4,974.5"``), become numbers when some cell settles that the
    commas are separators (``commas_group``): what the writer meant (a category per value,
    or an identifier, it is not). The columns are
    recorded (``thousands_columns``) so the user is told. A column with any other text
    stays text (``hpo.data.frame`` refuses it naming a cell)."""
    grouped = []
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        cells = series.dropna().astype(str).str.strip()
        with_groups = cells.str.fullmatch(GROUPED.pattern)
        if not with_groups.any():
            continue
        numeric = (with_groups | cells.str.fullmatch(_PLAIN.pattern)).all()
        if numeric and commas_group(cells):
            numbers = pd.to_numeric(cells.str.replace(",", "", regex=False)).astype("float64")
            frame[name] = numbers.reindex(series.index)
            grouped.append(str(name))
    if grouped:
        frame.attrs["thousands"] = grouped


def commas_group(cells: pd.Series) -> bool:
    """Whether some cell of a column of numbers settles that its commas group thousands:
    two groups (``1,234,567``) or a decimal point (``4,974.5``, ``750.5``). Without one,
    ``1,250`` may as well be 1.25 written with a decimal comma (``hpo.data.frame``
    refuses such a column rather than guess)."""
    text = cells.astype("string")
    dotted = text.str.contains(".", regex=False).fillna(False)
    return bool(dotted.any() or text.str.fullmatch(_GROUPS.pattern).fillna(False).any())


def thousands_columns(frame: pd.DataFrame) -> list[str]:
    """Columns read as numbers although written with thousands separators (``"1,000"``)."""
    return list(frame.attrs.get("thousands", []))


def unnamed_columns(frame: pd.DataFrame) -> list[str]:
    """Columns whose header cell is empty (pandas calls them ``Unnamed: <i>``)."""
    return list(frame.attrs.get("unnamed", []))
