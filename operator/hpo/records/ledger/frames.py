"""The ledger's tables as DataFrames: one row per training, per configuration, per spec field.

Column names and order are the ledger's documented layout (README); both the
workbook writer and ``read_ledger`` go by them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from hpo.study.contract import KNOBS, NARROW_STAGE, PER_LAYER, RANDOM_STAGE, SeedResult
from hpo.study.summary import ConfigSummary, ranked, summarise

#: Trials columns before and after the per-label ``<label>_mae`` / ``<label>_pct`` pairs.
#: ``val_mae`` is the selection score (validation split or held-out fold); ``test_mae`` the
#: test MAE, which no decision reads (``mae`` in ledgers before v0.9; still read).
TRIALS_HEAD = ("trial", "stage", "parent", "config_key", *KNOBS, "seed", "val_mae", "test_mae")
#: ``finished`` is ``finished_at`` as a date-time (UTC) for people; code reads ``finished_at``.
#: ``source``/``source_trial``: the study a warm start took the row from, and its trial
#: id there (empty: trained by this study).
TRIALS_TAIL = (
    "runtime_s",
    "fit_s",
    "epochs",
    "finished",
    "status",
    "error",
    "artifacts",
    "source",
    "source_trial",
)
#: Appended after the documented columns: ``SeedResult`` fields the documented
#: layout has no place for, kept so the round trip through the ledger is exact.
TRIALS_EXTRA = ("rows_dropped", "study", "finished_at")


def _neurons_text(value: Any) -> Any:
    """Lists as ``[64, 32]`` so the cell is readable and ``json.loads`` brings it back."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return value


def _hyperparams(config: Mapping[str, Any]) -> dict[str, Any]:
    row = {name: config.get(name) for name in KNOBS}
    for name in PER_LAYER:
        row[name] = _neurons_text(row[name])
    return row


def trials_columns(labels: list[str]) -> list[str]:
    """The ``Trials`` header for ``labels``."""
    pairs = [name for label in labels for name in (f"{label}_mae", f"{label}_pct")]
    return [*TRIALS_HEAD, *pairs, *TRIALS_TAIL, *TRIALS_EXTRA]


def _label_key(label: str, name: str) -> tuple[str, str]:
    """A per-label cell's key while a row is built: a label named ``test`` or ``val``
    spells its columns like the scores' (``test_mae``), so the names come last."""
    return (label, name)


def _named(rows: list[dict[Any, Any]], keys: list[Any], names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=pd.Index(keys, dtype=object))
    frame.columns = pd.Index(names)
    return frame


#: Stages in the order a study runs them: the ``Trials`` sheet reads top to bottom so.
STAGE_ORDER = (RANDOM_STAGE, NARROW_STAGE)
#: 1970-01-01 as an Excel serial date (days since 1899-12-30).
_EXCEL_EPOCH_DAYS = 25569.0


def excel_datetime(epoch_s: float) -> float | None:
    """Unix seconds as an Excel date-time serial (UTC), which Excel shows as a date and
    time; None for an unknown time (0)."""
    return epoch_s / 86400.0 + _EXCEL_EPOCH_DAYS if epoch_s else None


def trial_order(r: SeedResult) -> tuple[int, float, str, int]:
    """Stage, then completion time: the order the study ran (ids of the two stages are
    numbered apart, so sorting by trial id put every narrow-stage row before the random ones)."""
    stage = STAGE_ORDER.index(r.stage) if r.stage in STAGE_ORDER else len(STAGE_ORDER)
    return (stage, r.finished_at, r.trial, r.seed)


def trials_frame(results: list[SeedResult], labels: list[str]) -> pd.DataFrame:
    """Sheet ``Trials``: one row per training, by stage then completion time.

    Columns follow ``trials_columns``; per-label scores of labels not in
    ``labels`` are not written.
    """
    rows = []
    for r in sorted(results, key=trial_order):
        row: dict[Any, Any] = {
            "trial": r.trial,
            "stage": r.stage,
            "parent": r.parent,
            "config_key": r.config_key,
            **_hyperparams(r.config),
            "seed": r.seed,
            "val_mae": r.val_mae,
            "test_mae": r.mae,
        }
        for label in labels:
            scores = r.per_label.get(label) or {}
            row[_label_key(label, "mae")] = scores.get("mae")
            row[_label_key(label, "pct")] = scores.get("pct")
        row.update(
            runtime_s=r.runtime_s,
            fit_s=r.fit_s,
            epochs=r.epochs_run,
            finished=excel_datetime(r.finished_at),
            status=r.status,
            error=r.error,
            artifacts=r.artifacts,
            source=r.source,
            source_trial=r.source_trial,
            rows_dropped=r.rows_dropped,
            study=r.study,
            finished_at=r.finished_at,
        )
        rows.append(row)
    pairs = [_label_key(label, name) for label in labels for name in ("mae", "pct")]
    keys = [*TRIALS_HEAD, *pairs, *TRIALS_TAIL, *TRIALS_EXTRA]
    return _named(rows, keys, trials_columns(labels))


def configurations_columns(labels: list[str]) -> list[str]:
    """The ``Configurations`` header for ``labels``."""
    per_label = [n for label in labels for n in (f"{label}_mae_mean", f"{label}_pct_mean")]
    return [
        "rank",
        "trial",
        "stage",
        "parent",
        "config_key",
        *KNOBS,
        "val_mae_mean",
        "val_mae_std",
        "test_mae_mean",
        "test_mae_std",
        "test_mae_min",
        "test_mae_max",
        "seeds",
        "failed",
        *per_label,
    ]


def configurations_frame(results: list[SeedResult], labels: list[str]) -> pd.DataFrame:
    """Sheet ``Configurations``: one row per configuration, best mean selection score first.

    ``seeds`` counts successful seeds, ``failed`` the failed ones. Configurations
    without a successful seed have no rank and come last, by trial id.
    """
    summaries = summarise(results)
    ordered = ranked(summaries.values())
    unranked = sorted((s for s in summaries.values() if s.score is None), key=lambda s: s.trial)

    def row(rank: int | None, s: ConfigSummary) -> dict[Any, Any]:
        out: dict[Any, Any] = {
            "rank": rank,
            "trial": s.trial,
            "stage": s.stage,
            "parent": s.parent,
            "config_key": s.config_key,
            **_hyperparams(s.config),
            "val_mae_mean": s.score,
            "val_mae_std": s.score_std,
            "test_mae_mean": s.mean,
            "test_mae_std": s.std,
            "test_mae_min": s.min,
            "test_mae_max": s.max,
            "seeds": s.n,
            "failed": s.failed,
        }
        for label in labels:
            means = s.label_mean(label)
            out[_label_key(label, "mae")] = means[0] if means else None
            out[_label_key(label, "pct")] = means[1] if means else None
        return out

    rows = [row(i, s) for i, s in enumerate(ordered, 1)] + [row(None, s) for s in unranked]
    names = configurations_columns(labels)
    pairs = [_label_key(label, name) for label in labels for name in ("mae", "pct")]
    frame = _named(rows, [*names[: len(names) - len(pairs)], *pairs], names)
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


def study_frame(study: Mapping[str, Any]) -> pd.DataFrame:
    """Sheet ``Study``: the spec flattened to ``field`` / ``value`` rows, lists as JSON."""
    rows: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), child)
        elif isinstance(value, (Mapping, list, tuple)):
            rows.append((prefix, json.dumps(value, default=str)))
        else:
            rows.append((prefix, value))

    walk("", study)
    return pd.DataFrame(rows, columns=["field", "value"], dtype=object)
