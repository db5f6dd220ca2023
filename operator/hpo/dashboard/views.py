"""What each page draws, as JSON-ready dicts built from the results API's frames.

Pure pandas: no web framework here, so a test can compare these numbers with the
ledger directly, and the server builds them once per study revision.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from typing import Any

import pandas as pd
import yaml

from hpo.engine import planned_trainings
from hpo.study.contract import KNOBS, NARROW_STAGE, RANDOM_STAGE, Stage

STAGES: tuple[Stage, ...] = (RANDOM_STAGE, NARROW_STAGE)


def clean(value: Any) -> Any:
    """A cell as JSON: NaN/NA/inf as None, numpy scalars as Python ones."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def records(frame: pd.DataFrame, columns: list[str] | None = None) -> list[dict[str, Any]]:
    cols = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    return [
        {c: clean(v) for c, v in zip(cols, row, strict=True)}
        for row in frame[cols].itertuples(index=False, name=None)
    ]


def epochs(frame: pd.DataFrame) -> pd.DataFrame:
    """Date-time columns as Unix seconds (the browser shows ages from them)."""
    out = frame.copy()
    for name in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[name]):
            # Through object: an empty column's map would keep its date-time dtype.
            out[name] = (
                out[name].astype(object).map(lambda t: None if pd.isna(t) else t.timestamp())
            )
    return out


#: Training columns the pages do not show (the rest goes to the browser, column-wise).
HIDDEN = ("config_key", "artifacts", "fit_s", "rows_dropped")


def columns_of(frame: pd.DataFrame, hidden: tuple[str, ...] = ()) -> dict[str, Any]:
    """A frame as ``{"columns": [...], "data": [[...], ...]}``: half the bytes of records,
    serialised by pandas (NaN as null, 15 significant digits)."""
    shown = frame.drop(columns=[c for c in hidden if c in frame.columns])
    split = json.loads(shown.to_json(orient="split", index=False, double_precision=15))
    return {"columns": split["columns"], "data": split["data"]}


def col(frame: pd.DataFrame, *names: str) -> str | None:
    """The first of ``names`` the frame has (the contract's names, then the ledger's)."""
    return next((n for n in names if n in frame.columns), None)


def config_text(row: dict[str, Any], hyperparams: list[str]) -> str:
    """A configuration on one line, for hover texts."""
    return ", ".join(f"{h}={row[h]}" for h in hyperparams if row.get(h) is not None)


def _parsed_spec(raw: dict[str, Any]) -> Any:
    from hpo.study.spec import SpecError, parse_study

    try:
        return parse_study(raw).spec
    except (SpecError, ValueError, TypeError, AttributeError):
        return None


def planned(spec: Any) -> tuple[int | None, bool]:
    """Trainings the spec plans (random + narrow configurations x seeds) and whether that
    is an upper bound (seed racing trains fewer seeds of configurations that cannot win)."""
    if spec is None:
        return None, False
    return planned_trainings(spec), spec.training.seed_racing


def _reason(error: Any) -> str:
    """A failure's reason: its first line with numbers, ids and quoted names blanked, so
    the same failure of different trainings groups together."""
    text = str(error or "unknown error").strip().splitlines()[0] if error else "unknown error"
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    # numbers and ids with digits in them (trial r0012, seed-2, 3.5 GiB) as N
    return re.sub(r"[\w.-]*\d[\w.-]*", "N", text)[:200]


def build(study: Any) -> dict[str, Any]:
    """Everything the study page and the studies list show, for one revision."""
    try:
        raw_spec = study.spec or {}
    except ValueError:  # no study.yaml (a ledger alone): the pages show what is recorded
        raw_spec = {}
    spec = _parsed_spec(raw_spec)
    try:
        labels = list(spec.dataset.labels) if spec else list(study.labels)
    except ValueError:
        labels = []
    trainings = by_finish(epochs(study.trainings()))
    configs = study.configurations()
    finished = bool(study.finished)
    final = study.final_group() if finished else pd.DataFrame()
    # the API's names (test_mae_*); the ledger's (mae_*) where an older frame has them
    configs = configs.rename(columns={"mae_mean": "test_mae_mean", "mae_std": "test_mae_std"})
    final = final.rename(columns={"mae_mean": "test_mae_mean", "mae_std": "test_mae_std"})
    hyper = [h for h in KNOBS if h in trainings.columns or h in configs.columns]
    val, test = col(trainings, "val_mae"), col(trainings, "test_mae", "mae")
    status = trainings["status"] if "status" in trainings.columns else pd.Series(dtype=object)
    ok = trainings[status == "succeeded"] if len(trainings) else trainings
    failed = trainings[status != "succeeded"] if len(trainings) else trainings
    taken = warm(trainings)
    total, bound = planned(spec)
    done = int((~taken & (status == "succeeded")).sum()) if len(trainings) else 0
    if finished or (total is not None and done + len(failed) > total):
        total, bound = done + len(failed), False
    # the furthest stage reached (a late retry of the random stage finishes after the
    # narrow stage's first trainings, so not the last row's)
    reached = [x for x in STAGES if len(trainings) and (trainings["stage"] == x).any()]
    stage = "done" if finished else (reached[-1] if reached else "-")
    max_failed = spec.failure_policy.max_failed_trainings if spec else None
    if finished:
        phase = "Finished"
    elif max_failed is not None and len(failed) > max_failed:
        phase = "Failed"
    elif len(trainings):
        phase = "In progress"
    else:
        phase = "Not started"
    best_row = None
    if val and len(ok):
        best_row = configs.sort_values("val_mae_mean").iloc[0] if len(configs) else None
    times = trainings["finished"] if "finished" in trainings.columns else pd.Series(dtype=float)
    starts = trainings["started"] if "started" in trainings.columns else times
    summary = {
        "name": study.name,
        "where": study.where,
        "phase": phase,
        "stage": stage,
        "done": done,
        "taken": int(taken.sum()) if len(trainings) else 0,
        "failed": len(failed),
        "total": total,
        "total_is_bound": bound,
        "best_val": clean(best_row["val_mae_mean"]) if best_row is not None else None,
        "best_trial": clean(best_row["trial"]) if best_row is not None else None,
        "started": clean(starts.min()) if len(starts) else None,
        "updated": clean(times.max()) if len(times) else None,
    }
    detail = {
        "summary": summary,
        "labels": labels,
        "hyperparams": hyper,
        "val": val,
        "test": test,
        "progress": _progress(trainings, spec, finished),
        "trainings": columns_of(trainings, HIDDEN),
        "configurations": columns_of(configs, HIDDEN),
        "final": _final(final, trainings, labels, spec, hyper, val),
        "failures": _failures(failed),
        "spec": yaml.safe_dump(raw_spec, sort_keys=False),
    }
    return detail


def by_finish(trainings: pd.DataFrame) -> pd.DataFrame:
    """Trainings in the order they finished (the ledger's is by stage, then finish), so
    "best so far" is against time; unknown times last, in the ledger's order."""
    if "finished" not in trainings.columns or not len(trainings):
        return trainings
    return trainings.sort_values("finished", kind="stable", na_position="last").reset_index(
        drop=True
    )


def warm(trainings: pd.DataFrame) -> pd.Series:
    """Which rows a warm start took from another study (``source`` set): not trained
    here, so not part of this study's planned trainings."""
    if "source" not in trainings.columns:
        return pd.Series(False, index=trainings.index)
    source = trainings["source"]
    return source.notna() & (source.astype(str).str.strip() != "")


def _progress(trainings: pd.DataFrame, spec: Any, finished: bool) -> list[dict[str, Any]]:
    out = []
    taken = warm(trainings)
    for stage in STAGES:
        in_stage = trainings["stage"] == stage if len(trainings) else taken
        part = trainings[in_stage & ~taken] if len(trainings) else trainings
        n_taken = int((in_stage & taken).sum()) if len(trainings) else 0
        ok = int((part["status"] == "succeeded").sum()) if len(part) else 0
        plan = None if spec is None else planned_trainings(spec, stage)
        if finished or (plan is not None and len(part) > plan):
            plan = len(part)
        out.append(
            {
                "stage": stage,
                "done": ok,
                "failed": len(part) - ok,
                "planned": plan,
                "taken": n_taken,
            }
        )
    return out


def _final(
    final: pd.DataFrame,
    trainings: pd.DataFrame,
    labels: list[str],
    spec: Any,
    hyper: list[str],
    val: str | None,
) -> dict[str, Any]:
    thresholds = {}
    if spec is not None:  # the page's shape of spec.result.thresholds (dashboard.js reads it)
        thresholds = {
            k: {"max_mae": t.max_mae, "max_pct": t.max_percent}
            for k, t in spec.result.thresholds.items()
        }
    rows = records(final)
    for r in rows:
        r["config"] = config_text(r, hyper)
        seeds = trainings[(trainings["trial"] == r["trial"]) & (trainings["status"] == "succeeded")]
        r["seed_scores"] = [
            {"seed": clean(s), "val": clean(v)}
            for s, v in zip(seeds["seed"], seeds[val] if val else [], strict=False)
        ]
    return {"rows": rows, "thresholds": thresholds}


def _failures(failed: pd.DataFrame) -> list[dict[str, Any]]:
    if not len(failed):
        return []
    groups: dict[str, list[str]] = {}
    for trial, seed, error in zip(failed["trial"], failed["seed"], failed["error"], strict=True):
        groups.setdefault(_reason(error), []).append(f"{trial}/seed-{seed}")
    return sorted(
        ({"reason": k, "count": len(v), "trainings": v[:20]} for k, v in groups.items()),
        key=lambda g: -g["count"],
    )


def unpack(table: dict[str, Any]) -> list[dict[str, Any]]:
    """``columns_of``'s table back as one dict per row."""
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def load_options(where: str, endpoint: str | None, tls: bool | None) -> tuple[str, str]:
    """What the ``hpo get`` command and the ``open_study`` call need beside ``where`` to
    reach it as the server does: ``--endpoint``/``--no-tls`` for an ``s3://`` study."""
    if not where.startswith("s3://"):
        return "", ""
    cli, api = "", ""
    if endpoint:
        cli += f" --endpoint {shlex.quote(endpoint)}"
        api += f", endpoint={json.dumps(endpoint)}"
    if tls is not None:
        cli += " --tls" if tls else " --no-tls"
        api += f", tls={tls}"
    return cli, api


def configuration(
    study: Any,
    detail: dict[str, Any],
    trial: str,
    *,
    endpoint: str | None = None,
    tls: bool | None = None,
) -> dict[str, Any] | None:
    """One configuration's page: its seeds with scores and artifacts, and how to load it
    (with the ``endpoint`` and ``tls`` the server reads the study with)."""
    rows = [r for r in unpack(detail["trainings"]) if r.get("trial") == trial]
    if not rows:
        return None
    summary = next((c for c in unpack(detail["configurations"]) if c.get("trial") == trial), {})
    seeds = []
    for r in rows:
        seed = int(r["seed"])
        try:
            names = sorted(study.artifacts(trial, seed))
        except Exception:  # a missing folder shows as no artifacts
            names = []
        seeds.append({**r, "artifacts": names})
    where = detail["summary"]["where"]
    first = int(rows[0]["seed"])
    cli, api = load_options(where, endpoint, tls)
    return {
        "trial": trial,
        "study": detail["summary"]["name"],
        "labels": detail["labels"],
        "hyperparams": {h: rows[0].get(h) for h in detail["hyperparams"]},
        "summary": summary,
        "seeds": seeds,
        "val": detail["val"],
        "test": detail["test"],
        "load_cli": (
            f"hpo get {shlex.quote(where)}{cli} --what model --trial {trial} --seed {first}"
        ),
        "load_api": (
            "from hpo.results import open_study\n"
            f"model = open_study({json.dumps(where)}{api})"
            f".load_model(trial={json.dumps(trial)})\n"
            "predictions = model.predict(frame)  # all seeds averaged; seed=N for one"
        ),
    }


#: The live status's run phase as the pages name it (the derived ones: ``build``).
LIVE_PHASES = {
    "running": "In progress",
    "succeeded": "Finished",
    "failed": "Failed",
    "interrupted": "Interrupted",
}


def live(summary: dict[str, Any], status: Any, now: Any = None) -> dict[str, Any]:
    """``summary`` (``build``'s, from the ledger) with the runner's live status over it
    (``hpo.records.livestatus.LiveStatus`` or None): ``running``, ``queued``, the run's phase
    and stage, counts the ledger has not caught up with, and ``live`` (live, stale, finished,
    interrupted; None without a status: a study run before it existed shows the derived
    values)."""
    out = dict(summary)
    if status is None:
        out.update(running=None, queued=None, live=None, heartbeat=None, stale_after_s=None)
        return out
    state = status.state(now)
    out["live"] = state
    out["heartbeat"] = status.heartbeat.timestamp()
    out["stale_after_s"] = status.stale_after_s()
    # running is known only while the runner writes; a stale one's is a guess
    out["running"] = status.running if state == "live" else (None if state == "stale" else 0)
    # in pods that wait for the cluster's capacity (a local runner has no queue: 0)
    out["queued"] = status.queued if state == "live" else (None if state == "stale" else 0)
    if state == "stale":
        return out  # the runner is gone: the ledger's values, not a dead runner's
    if out.get("phase") != "Finished":  # best.json is written just before the last word
        out["phase"] = LIVE_PHASES.get(status.phase, out["phase"])
        out["stage"] = status.stage
    # the ledger is written in batches: the runner's counts are ahead of it
    out["done"] = max(int(out.get("done") or 0), status.done)
    out["failed"] = max(int(out.get("failed") or 0), status.failed)
    if state == "live" and status.planned:
        out["total"] = max(status.planned, out["done"] + out["failed"])
    if status.best_val is not None and (out.get("best_val") is None or state == "live"):
        # the status's, as its phase and counts are (the ledger's lags up to 30 s)
        out["best_val"], out["best_trial"] = status.best_val, status.best_trial
    return out
