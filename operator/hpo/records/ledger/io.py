"""Writing the ledger to a store and rebuilding every ``SeedResult`` from it.

``read_ledger`` returns exactly the ``SeedResult`` objects ``write_ledger``
was given (every field, full precision), which is what lets a study resume
from its ledger.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import pandas as pd

from hpo.records.ledger.frames import (
    configurations_frame,
    study_frame,
    trials_frame,
)
from hpo.records.ledger.xlsx import sheet_rows, workbook_bytes
from hpo.store.base import Store
from hpo.store.keys import StoreError
from hpo.study.contract import KNOBS, PER_LAYER, SeedResult


class LedgerUnreadable(StoreError):
    """The ledger exists but cannot be read back (truncated, corrupt, not a workbook).

    Every success is also in its ``scores.json``, so the ledger can be rebuilt
    (``hpo run --rebuild-ledger``); the message names the file and says so.
    """

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"the ledger {location} cannot be read ({reason})")


def write_ledger(
    store: Store,
    key: str,
    results: list[SeedResult],
    labels: list[str],
    best: pd.DataFrame | None,
    study: dict[str, Any],
    *,
    if_match: str | None = None,
    if_none_match: bool = False,
) -> str:
    """Write the whole ledger with one conditional ``put_bytes``; returns its ETag.

    Pass the ETag of the ledger last read as ``if_match`` (or ``if_none_match``
    for the first write) so a concurrent writer makes this raise
    ``PreconditionFailed`` instead of being overwritten.
    """
    data = workbook_bytes(
        trials_frame(results, labels),
        configurations_frame(results, labels),
        best,
        study_frame(study),
    )
    return store.put_bytes(key, data, if_match=if_match, if_none_match=if_none_match)


#: The test MAE's column: ``test_mae``, or ``mae`` in a ledger written before v0.9.
TEST_COLUMNS = ("test_mae", "mae")


def _test_column(header: list[str]) -> int:
    """Where the test MAE's column is (its first occurrence: a label named ``test`` has
    a ``test_mae`` column of its own further right)."""
    for name in TEST_COLUMNS:
        if name in header:
            return header.index(name)
    raise ValueError("Trials sheet lacks the 'test_mae' (or older 'mae') column")


def _labels_from_header(header: list[str]) -> list[str]:
    """Labels from the ``<label>_mae`` / ``<label>_pct`` pairs between the test MAE's
    column and ``runtime_s``."""
    if "runtime_s" not in header:
        raise ValueError("Trials sheet lacks the 'runtime_s' column")
    between = header[_test_column(header) + 1 : header.index("runtime_s")]
    if len(between) % 2:
        raise ValueError(f"Trials sheet: per-label columns do not pair up: {between}")
    labels = []
    for mae_col, pct_col in zip(between[::2], between[1::2], strict=True):
        label = mae_col.removesuffix("_mae")
        if not mae_col.endswith("_mae") or pct_col != f"{label}_pct":
            raise ValueError(f"Trials sheet: expected <label>_mae, <label>_pct; got {between}")
        labels.append(label)
    return labels


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any, default: int = 0) -> int:
    return default if value is None else int(value)


def _config(get: Callable[[str], Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name in KNOBS:
        value = get(name)
        if value is None:
            continue
        if name in PER_LAYER and isinstance(value, str) and value.startswith("["):
            value = json.loads(value)
        config[name] = value
    return config


def read_ledger(store: Store, key: str) -> list[SeedResult]:
    """Rebuild the ``SeedResult`` of every ``Trials`` row; [] if the ledger does not exist yet.

    Rows come back in (trial, seed) order, whatever the sheet's order (people read
    it by stage and time). A ledger that is there but cannot be read back raises
    ``LedgerUnreadable`` naming it.
    """
    try:
        data = store.get_bytes(key)
    except StoreError:
        if not store.exists(key):
            return []
        raise
    try:
        return sorted(_results(data), key=lambda r: (r.trial, r.seed))
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        KeyError,
        ValueError,
        TypeError,
        SyntaxError,
    ) as exc:
        # A torn zip, a damaged deflate stream, a missing part (KeyError), XML that does
        # not parse (ElementTree's ParseError is a SyntaxError), cells of the wrong kind.
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise LedgerUnreadable(f"{store.uri}/{key}", reason) from exc


def _results(data: bytes) -> list[SeedResult]:
    rows = sheet_rows(data, "Trials")
    header = [str(h) if h is not None else "" for h in next(rows, [])]
    if not header:
        return []
    labels = _labels_from_header(header)
    test = _test_column(header)
    # First occurrence of each name: the documented columns come before the per-label
    # ones, which are read by position (a label "val" or "test" repeats a name).
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        index.setdefault(name, i)
    width = len(header)
    results = []
    for raw in rows:
        if all(v is None for v in raw):
            continue
        row = raw + [None] * (width - len(raw))

        def get(name: str, row: list[Any] = row) -> Any:
            i = index.get(name)
            return None if i is None else row[i]

        per_label: dict[str, dict[str, float]] = {}
        for i, label in enumerate(labels):
            mae, pct = row[test + 1 + 2 * i], row[test + 2 + 2 * i]
            if mae is not None or pct is not None:
                per_label[label] = {"mae": _float(mae), "pct": _float(pct)}  # type: ignore[dict-item]
        results.append(
            SeedResult(
                study=get("study") or "",
                trial=str(get("trial")),
                stage=get("stage"),
                parent=get("parent"),
                config=_config(get),
                config_key=str(get("config_key")),
                seed=_int(get("seed")),
                status=get("status"),
                mae=_float(row[test]),
                val_mae=_float(get("val_mae")),
                per_label=per_label,
                runtime_s=_float(get("runtime_s")) or 0.0,
                fit_s=_float(get("fit_s")) or 0.0,
                epochs_run=_int(get("epochs")),
                rows_dropped=_int(get("rows_dropped")),
                error=get("error"),
                artifacts=get("artifacts"),
                source=get("source"),
                source_trial=get("source_trial"),
                finished_at=_float(get("finished_at")) or 0.0,
            )
        )
    return results
