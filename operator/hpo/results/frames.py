"""The API's data frames, built from the ledger's ``SeedResult`` list and ``best.json``.

The tables are the ledger's own (``hpo.records.ledger.trials_frame`` and
``configurations_frame``), so a frame and the workbook never disagree; only
names the ledger wrote before v0.9 are renamed: its ``mae`` was the test split's,
here ``test_mae`` (and ``test_mae_mean``/``test_mae_std`` per configuration), as the
ledger itself now writes them.
Per-layer hyperparameters stay as the ledger writes them, JSON text such as
``"[64, 32]"`` (a list in a cell would not survive csv or parquet).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from hpo.records.ledger import configurations_frame, trials_frame
from hpo.records.report import final_group_columns as report_columns
from hpo.study.contract import PER_LAYER, SeedResult

_TRAININGS_RENAMED = {"mae": "test_mae"}
_SUMMARY_RENAMED = {"mae_mean": "test_mae_mean", "mae_std": "test_mae_std"}
_CONFIG_RENAMED = {**_SUMMARY_RENAMED, "mae_min": "test_mae_min", "mae_max": "test_mae_max"}
#: Columns the API does not show: Excel's date serial and the round trip's helpers.
_TRAININGS_DROPPED = ("finished", "finished_at", "study")


def _utc(seconds: pd.Series) -> pd.Series:
    """Unix seconds as UTC timestamps to the microsecond (a float's nanoseconds are
    noise, and csv or json would not keep them); 0 (unknown: before v0.2) as NaT."""
    values = pd.to_numeric(seconds, errors="coerce").where(lambda s: s > 0)
    return pd.to_datetime(values, unit="s", utc=True).dt.round("us")


def trainings_frame(results: list[SeedResult], labels: Sequence[str]) -> pd.DataFrame:
    """One row per training, in the order the study ran them: trial, stage, parent,
    config_key, the hyperparameters, seed, val_mae, test_mae, ``<label>_mae`` (label
    units) and ``<label>_pct`` per label, runtime, epochs, status, error, artifacts,
    started and finished (UTC)."""
    frame = trials_frame(results, list(labels))
    finished = _utc(frame["finished_at"])
    started = _utc(frame["finished_at"] - frame["runtime_s"].fillna(0.0))
    frame = frame.drop(columns=list(_TRAININGS_DROPPED)).rename(columns=_TRAININGS_RENAMED)
    frame["started"] = started.where(finished.notna())
    frame["finished"] = finished
    return frame.reset_index(drop=True)


def configurations_table(results: list[SeedResult], labels: Sequence[str]) -> pd.DataFrame:
    """One row per configuration, ranked on mean validation MAE (``rank`` 1 best; none
    for a configuration without a successful seed): the ledger's Configurations sheet."""
    return configurations_frame(results, list(labels)).rename(columns=_CONFIG_RENAMED)


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list) else value


def final_group_frame(records: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """``best.json``'s records as a frame, per-layer lists as the ledger's JSON text;
    ``columns`` (the frame's when empty) keep an unfinished study's frame typed."""
    rows = [{k: (_cell(v) if k in PER_LAYER else v) for k, v in r.items()} for r in records]
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(columns))
    return frame.rename(columns=_SUMMARY_RENAMED)


def final_group_columns(labels: Sequence[str]) -> list[str]:
    """The columns of an empty final group (before any ``best.json``)."""
    return report_columns(labels)
