"""Every training and every configuration of a study as files for pandas, spreadsheets
and notebooks, without Excel: ``<study>-trainings.<ext>`` and ``<study>-configurations.<ext>``.

csv and json (records, ISO dates) need nothing more; parquet is written with pyarrow
(the ``parquet`` extra, which the operator image leaves out) and keeps every column's
type: a per-layer column whose every cell is a list (``neurons``) is a list column
there, not the JSON text csv needs. Each reads back with ``pandas.read_csv``,
``read_json`` or ``read_parquet``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pandas as pd

from hpo.results.errors import ResultsError
from hpo.results.study import StudyResults
from hpo.study.contract import PER_LAYER

FORMATS = ("csv", "json", "parquet")


def _one_type_per_column(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing kinds (a per-layer value as a number in one row and JSON
    text in another) as text, which every format keeps; others as they are."""
    out = frame.copy()
    for name in out.columns:
        column = out[name]
        if column.dtype == object:
            kinds = {type(v) for v in column.dropna()}
            if len(kinds) > 1:
                out[name] = column.map(lambda v: v if v is None else str(v))
    return out


def _as_list(cell: Any) -> list[Any] | None:
    """A per-layer cell's list (from the ledger's JSON text ``"[64, 32]"``); None if the
    cell is no list."""
    if isinstance(cell, list):
        return cell
    if isinstance(cell, str) and cell.startswith("["):
        try:
            value = json.loads(cell)
        except ValueError:
            return None
        return value if isinstance(value, list) else None
    return None


def _per_layer_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-layer columns whose every filled cell is a list, as lists (parquet keeps
    ``list<int64>``); a column mixing lists and single values stays as it is."""
    out = frame.copy()
    for name in PER_LAYER:
        if name not in out.columns:
            continue
        cells = out[name].dropna()
        lists = [_as_list(c) for c in cells]
        if len(cells) and all(v is not None for v in lists):
            out[name] = out[name].map(lambda c: _as_list(c) if c is not None else None)
    return out


def write_frame(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    """``frame`` as one file of ``fmt``."""
    if fmt == "parquet":
        frame = _per_layer_lists(frame)
    frame = _one_type_per_column(frame)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "json":
        frame.to_json(path, orient="records", date_format="iso", date_unit="ns", indent=1)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False, engine="pyarrow")
    else:
        raise ResultsError(f"format {fmt!r}: choose {', '.join(FORMATS)}")
    return path


def check_format(fmt: str) -> None:
    """Refuse a format this environment cannot write, before anything is read or written."""
    if fmt not in FORMATS:
        raise ResultsError(f"format {fmt!r}: choose {', '.join(FORMATS)}")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ResultsError(
            "--format parquet needs pyarrow, which is not installed: "
            "pip install 'hpo-operator[parquet]', or use --format csv or json"
        )


def export_study(study: StudyResults, fmt: str, out: Path) -> list[Path]:
    """Write the study's trainings and configurations into folder ``out`` (created);
    returns the two paths."""
    check_format(fmt)
    tables = {"trainings": study.trainings(), "configurations": study.configurations()}
    try:
        out.mkdir(parents=True, exist_ok=True)
        return [
            write_frame(frame, out / f"{study.name}-{name}.{fmt}", fmt)
            for name, frame in tables.items()
        ]
    except OSError as exc:
        raise ResultsError(f"{out}: cannot write ({exc.strerror or exc})") from None
