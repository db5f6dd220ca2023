"""The Excel ledger: exact round trip, sheet layouts, formatting, conditional writes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from openpyxl import load_workbook

from hpo.records.ledger import (
    NO_BEST_NOTE,
    configurations_frame,
    read_ledger,
    trials_frame,
    write_ledger,
)
from hpo.records.ledger.frames import study_frame
from hpo.records.ledger.xlsx import workbook_bytes
from hpo.records.report import final_group
from hpo.store import LocalStore, PreconditionFailed
from hpo.study.contract import KNOBS, SeedResult
from hpo.study.spec import Threshold

LABELS = ["yield", "strength"]
KEY = "demo/ledger.xlsx"
STUDY: dict[str, Any] = {
    "apiVersion": "hpo.example.org/v1",
    "kind": "Study",
    "metadata": {"name": "demo"},
    "spec": {
        "searchSpace": {"neurons": {"min": 8, "max": 64}, "activation": ["relu", "tanh"]},
        "seeds": [0, 1, 2],
        "finalGroupSize": 3,
    },
}


def config(layers: int = 2, lr: float = 1e-3, **extra: Any) -> dict[str, Any]:
    neurons = [64, 32, 16, 8][:layers]
    base = {
        "hidden_layers": layers,
        "neurons": neurons,
        "activation": "relu",
        "learning_rate": lr,
        "batch_size": 32,
        "optimizer": "adam",
    }
    return {**base, **extra}


def ok(
    trial: str,
    seed: int,
    mae: float,
    *,
    cfg: dict[str, Any] | None = None,
    stage: str = "random",
    parent: str | None = None,
    labels: dict[str, tuple[float, float]] | None = None,
) -> SeedResult:
    per_label = labels or {"yield": (mae * 10, mae * 100), "strength": (mae * 3, mae * 50)}
    return SeedResult(
        study="demo",
        trial=trial,
        stage=stage,  # type: ignore[arg-type]
        parent=parent,
        config=cfg or config(),
        config_key=f"key-{trial}",
        seed=seed,
        status="succeeded",
        mae=mae,
        val_mae=mae * 1.25,
        per_label={k: {"mae": v[0], "pct": v[1]} for k, v in per_label.items()},
        runtime_s=12.345678901234567,
        fit_s=10.1,
        epochs_run=42,
        rows_dropped=3,
        artifacts=f"demo/trials/{trial}/seed-{seed}",
    )


def failed(trial: str, seed: int, error: str = "OOM", *, stage: str = "random") -> SeedResult:
    return SeedResult(
        study="demo",
        trial=trial,
        stage=stage,  # type: ignore[arg-type]
        parent=None,
        config=config(3, 0.01),
        config_key=f"key-{trial}",
        seed=seed,
        status="failed",
        runtime_s=0.5,
        error=error,
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def mixed_results() -> list[SeedResult]:
    """Awkward values on purpose: 17-digit floats, odd text, failures, missing pct."""
    nasty = "Traceback\r\n  line 1\n\tKeyError: 'x' =SUM(A1) _x0041_ \x1b[31mred\x00 & <tag>  "
    return [
        ok("r0001", 1, 0.1 + 0.2, cfg=config(1, 0.1 + 0.2)),
        ok("r0001", 0, 1 / 3, cfg=config(1, 0.1 + 0.2)),
        failed("r0002", 0, nasty),
        failed("r0002", 1, "=1+1"),
        ok("b0001", 0, 2.0, stage="bayesian", parent="r0001", cfg=config(4, 3.0e-05)),
        ok("r0003", 0, 0.5, labels={"yield": (1.5, math.nan)}),
    ]


def test_round_trip_is_exact(store: LocalStore) -> None:
    results = mixed_results()
    write_ledger(store, KEY, results, LABELS, None, STUDY)

    back = read_ledger(store, KEY)

    expected = sorted(results, key=lambda r: (r.trial, r.seed))
    # NaN never equals itself, and the ledger turns it into None by design.
    expected[-1].per_label["yield"]["pct"] = None  # type: ignore[assignment]
    assert [r.key for r in back] == [r.key for r in expected]
    for got, want in zip(back, expected, strict=True):
        assert got == want
        assert type(got.config["learning_rate"]) is float
        assert got.config["neurons"] == want.config["neurons"]


def test_round_trip_at_scale_with_random_floats(store: LocalStore) -> None:
    import random

    rng = random.Random(7)
    results = [
        ok(f"r{t:04d}", s, rng.random(), cfg=config(rng.randint(1, 4), 10 ** rng.uniform(-5, -1)))
        for t in range(200)
        for s in range(3)
    ]
    write_ledger(store, KEY, results, LABELS, None, STUDY)
    assert read_ledger(store, KEY) == sorted(results, key=lambda r: (r.trial, r.seed))


def test_missing_ledger_reads_empty(store: LocalStore) -> None:
    assert read_ledger(store, "nothing/ledger.xlsx") == []


def test_trials_columns_and_order() -> None:
    frame = trials_frame(mixed_results(), LABELS)
    assert list(frame.columns) == [
        "trial",
        "stage",
        "parent",
        "config_key",
        *KNOBS,
        "seed",
        "val_mae",
        "test_mae",
        "yield_mae",
        "yield_pct",
        "strength_mae",
        "strength_pct",
        "runtime_s",
        "fit_s",
        "epochs",
        "finished",
        "status",
        "error",
        "artifacts",
        "source",
        "source_trial",
        # beyond the documented layout, so SeedResult round-trips exactly
        "rows_dropped",
        "study",
        "finished_at",
    ]
    # By stage, then completion time (unknown here: then by trial and seed).
    assert list(zip(frame["trial"], frame["seed"], strict=True)) == [
        ("r0001", 0),
        ("r0001", 1),
        ("r0002", 0),
        ("r0002", 1),
        ("r0003", 0),
        ("b0001", 0),
    ]
    assert frame.loc[frame["trial"] == "b0001", "neurons"].item() == "[64, 32, 16, 8]"


def test_configurations_aggregates_by_hand() -> None:
    results = [
        ok("r0001", 0, 1.0, labels={"yield": (10.0, 5.0), "strength": (1.0, 2.0)}),
        ok("r0001", 1, 3.0, labels={"yield": (20.0, 7.0), "strength": (3.0, 4.0)}),
        failed("r0001", 2),
        ok("r0002", 0, 0.5),
        ok("r0002", 1, 1.5),
        ok("r0002", 2, 1.0),
        failed("r0003", 0),
    ]
    frame = configurations_frame(results, LABELS)

    assert list(frame.columns) == [
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
        "yield_mae_mean",
        "yield_pct_mean",
        "strength_mae_mean",
        "strength_pct_mean",
    ]
    assert list(frame["trial"]) == ["r0002", "r0001", "r0003"]
    assert frame["rank"].tolist()[:2] == [1, 2]
    assert pd.isna(frame["rank"].iloc[2])  # never succeeded: no rank, last

    r2, r1, r3 = (frame.iloc[i] for i in range(3))
    assert r2["test_mae_mean"] == pytest.approx(1.0)
    assert r2["test_mae_std"] == pytest.approx(0.5)  # sample std of 0.5, 1.5, 1.0
    assert (r2["test_mae_min"], r2["test_mae_max"], r2["seeds"], r2["failed"]) == (0.5, 1.5, 3, 0)
    assert r1["test_mae_mean"] == pytest.approx(2.0)
    assert r1["test_mae_std"] == pytest.approx(statistics.stdev([1.0, 3.0]))  # sqrt(2)
    assert (r1["test_mae_min"], r1["test_mae_max"], r1["seeds"], r1["failed"]) == (1.0, 3.0, 2, 1)
    assert r1["yield_mae_mean"] == pytest.approx(15.0)
    assert r1["yield_pct_mean"] == pytest.approx(6.0)
    assert r1["strength_mae_mean"] == pytest.approx(2.0)
    assert r1["strength_pct_mean"] == pytest.approx(3.0)
    assert (r3["seeds"], r3["failed"]) == (0, 1)
    assert pd.isna(r3["test_mae_mean"])


def workbook(store: LocalStore, key: str = KEY) -> Any:
    return load_workbook(io.BytesIO(store.get_bytes(key)))


def test_workbook_layout_and_formatting(store: LocalStore) -> None:
    results = mixed_results()
    best = final_group(results, LABELS, {"yield": Threshold(max_mae=5.0)}, 2)
    write_ledger(store, KEY, results, LABELS, best, STUDY)
    wb = workbook(store)

    assert wb.sheetnames == ["Trials", "Configurations", "Best", "Study"]
    expected_headers = {
        "Trials": list(trials_frame(results, LABELS).columns),
        "Configurations": list(configurations_frame(results, LABELS).columns),
        "Best": list(best.columns),
        "Study": ["field", "value"],
    }
    for name, header in expected_headers.items():
        ws = wb[name]
        assert [c.value for c in ws[1]] == header, name
        assert ws.freeze_panes == "A2"
        assert ws.auto_filter.ref == f"A1:{ws.cell(1, len(header)).column_letter}{ws.max_row}"
        assert all(c.font.b for c in ws[1])
        widths = [ws.column_dimensions[c.column_letter].width for c in ws[1]]
        assert all(6 <= w <= 50 for w in widths)

    trials = wb["Trials"]
    col = {c.value: c.column for c in trials[1]}
    b0001 = 1 + len(results)  # the narrow-stage row comes last
    mae_cell = trials.cell(b0001, col["test_mae"])
    assert mae_cell.number_format == "0.0000"
    assert mae_cell.value == 2.0  # full value stored, only the display is rounded
    assert trials.cell(2, col["yield_pct"]).number_format == "0.00"
    assert trials.cell(2, col["runtime_s"]).number_format == "0.00"
    lr_cell = trials.cell(b0001, col["learning_rate"])
    assert lr_cell.number_format == "0.0#####"  # 0.00003, not 3.00E-05
    assert lr_cell.value == 3.0e-05
    assert trials.cell(2, col["test_mae"]).value == 1 / 3  # 17 significant digits survive
    assert trials.cell(b0001, col["error"]).value is None
    assert trials.max_row == 1 + len(results)

    conf = wb["Configurations"]
    assert conf.cell(2, 1).value == 1
    assert conf.cell(2, 2).value == "r0001"  # mean(0.3, 1/3) is the best

    best_ws = wb["Best"]
    assert best_ws.max_row == 1 + len(best)
    assert [c.value for c in best_ws[2]][:2] == [1, "r0001"]

    study = {row[0]: row[1] for row in wb["Study"].iter_rows(min_row=2, values_only=True)}
    assert study["metadata.name"] == "demo"
    assert study["spec.searchSpace.neurons.min"] == 8
    assert study["spec.searchSpace.activation"] == '["relu", "tanh"]'
    assert study["spec.seeds"] == "[0, 1, 2]"


def test_best_sheet_without_final_group(store: LocalStore) -> None:
    write_ledger(store, KEY, mixed_results(), LABELS, None, STUDY)
    ws = workbook(store)["Best"]
    assert ws["A1"].value == NO_BEST_NOTE
    assert ws.max_row == 1


def test_conditional_writes(store: LocalStore) -> None:
    results = mixed_results()
    first = write_ledger(store, KEY, results[:2], LABELS, None, STUDY, if_none_match=True)
    assert first == store.etag(KEY)

    with pytest.raises(PreconditionFailed):
        write_ledger(store, KEY, results, LABELS, None, STUDY, if_none_match=True)

    second = write_ledger(store, KEY, results, LABELS, None, STUDY, if_match=first)
    assert second != first

    with pytest.raises(PreconditionFailed):  # ``first`` is stale now
        write_ledger(store, KEY, results[:3], LABELS, None, STUDY, if_match=first)
    assert len(read_ledger(store, KEY)) == len(results)


def test_empty_study(store: LocalStore) -> None:
    write_ledger(store, KEY, [], LABELS, None, {})
    assert read_ledger(store, KEY) == []
    wb = workbook(store)
    assert [c.value for c in wb["Trials"][1]] == list(trials_frame([], LABELS).columns)


def test_partial_config_round_trips(store: LocalStore) -> None:
    """A hyperparameter missing from a configuration stays missing (no invented None)."""
    r = ok("r0001", 0, 0.25, cfg={"hidden_layers": 1, "neurons": [8], "learning_rate": 0.01})
    write_ledger(store, KEY, [r], LABELS, None, STUDY)
    assert read_ledger(store, KEY) == [r]


def test_overlong_error_keeps_its_tail(store: LocalStore) -> None:
    """Excel holds 32,767 characters per cell; a traceback's last lines matter most."""
    error = "x" * 40_000 + "\nValueError: the real cause"
    write_ledger(store, KEY, [failed("r0001", 0, error)], LABELS, None, STUDY)
    (back,) = read_ledger(store, KEY)
    assert back.error is not None
    assert len(back.error) <= 32_767
    assert back.error.startswith("[truncated]")
    assert back.error.endswith("ValueError: the real cause")


# -- the ledger as people read it ------------------------------------------------------------


def _timed(trial: str, seed: int, finished_at: float, stage: str = "random") -> SeedResult:
    r = ok(trial, seed, 0.4, stage=stage, parent="r0001" if stage == "bayesian" else None)
    return dataclasses.replace(r, finished_at=finished_at)


def test_finished_shows_a_date_time_and_finished_at_still_round_trips(store: LocalStore) -> None:
    at = 1_767_312_245.123456  # 2026-01-02 00:04:05.123456 UTC
    results = [_timed("r0001", 0, at), _timed("r0002", 0, 0.0)]  # 0: not known
    write_ledger(store, KEY, results, LABELS, None, STUDY)
    trials = workbook(store)["Trials"]
    col = {c.value: c.column for c in trials[1]}
    row = {trials.cell(r, 1).value: r for r in range(2, trials.max_row + 1)}
    cell = trials.cell(row["r0001"], col["finished"])
    assert cell.number_format == "yyyy-mm-dd hh:mm:ss"
    assert isinstance(cell.value, dt.datetime)  # a real date-time cell, not epoch seconds
    shown = dt.datetime.fromtimestamp(at, dt.UTC).replace(tzinfo=None)
    assert abs(cell.value - shown) < dt.timedelta(milliseconds=1)
    assert trials.cell(row["r0002"], col["finished"]).value is None
    back = read_ledger(store, KEY)
    assert [r.finished_at for r in back] == [at, 0.0]  # exact, from finished_at
    assert back == sorted(results, key=lambda r: (r.trial, r.seed))


def test_trials_sheet_reads_in_the_order_the_study_ran(store: LocalStore) -> None:
    """Random rows first, then the narrow stage's, each by completion time: not by trial id (then
    every b-row came before every r-row)."""
    results = [
        _timed("b0000", 0, 300.0, "bayesian"),
        _timed("r0002", 0, 100.0),
        _timed("r0001", 0, 200.0),
        _timed("b0001", 0, 250.0, "bayesian"),
    ]
    write_ledger(store, KEY, results, LABELS, None, STUDY)
    rows = list(workbook(store)["Trials"].iter_rows(min_row=2, max_col=1, values_only=True))
    assert [r[0] for r in rows] == ["r0002", "r0001", "b0001", "b0000"]
    back = read_ledger(store, KEY)  # readers still get (trial, seed) order
    assert [r.trial for r in back] == ["b0000", "b0001", "r0001", "r0002"]


def test_best_json_holds_per_layer_values_as_lists(tmp_path: Path) -> None:
    """As ``config.json`` does; the ledger's cells hold them as JSON text, which
    ``read_ledger`` parses back."""
    from helpers.study import study_dict
    from hpo.records.recorder import Recorder
    from hpo.study.layout import StudyPaths
    from hpo.study.spec import parse_study

    study = parse_study(study_dict())
    labels = list(study.spec.dataset.labels)
    store = LocalStore(tmp_path / "runs")
    results = [
        dataclasses.replace(
            ok("r0001", s, 0.4 + s / 100, cfg=config(3)),
            study="t",
            per_label={label: {"mae": 1.0, "pct": 2.0} for label in labels},
        )
        for s in (0, 1)
    ]
    Recorder(store, StudyPaths("t"), study, labels).finish(results)
    best = json.loads((tmp_path / "runs" / "t" / "best.json").read_text())
    assert best[0]["neurons"] == [64, 32, 16]
    assert read_ledger(store, "t/ledger.xlsx")[0].config["neurons"] == [64, 32, 16]


def test_a_ledger_written_with_the_old_mae_column_still_reads(store: LocalStore) -> None:
    """Before v0.9 the test MAE's column was ``mae`` (``mae_mean``... per configuration):
    such a workbook reads back the same results; new ones say ``test_mae``."""
    results = mixed_results()
    trials = trials_frame(results, LABELS)
    assert "test_mae" in trials.columns and "mae" not in trials.columns
    old = trials.rename(columns={"test_mae": "mae"})
    configs = configurations_frame(results, LABELS)
    configs = configs.rename(columns=lambda c: c.removeprefix("test_"))
    store.put_bytes(KEY, workbook_bytes(old, configs, None, study_frame(STUDY)))
    back = read_ledger(store, KEY)
    write_ledger(store, "new/ledger.xlsx", results, LABELS, None, STUDY)
    assert back == read_ledger(store, "new/ledger.xlsx")
    assert [r.mae for r in back] == [r.mae for r in sorted(results, key=lambda r: r.key)]


def test_labels_named_like_the_score_columns_read_back(store: LocalStore) -> None:
    """A label ``test`` has a ``test_mae`` column of its own (and ``val`` a ``val_mae``):
    the scores and the label's errors are read by position, never mixed up."""
    labels = ["test", "val"]
    results = [ok("r0001", 0, 0.25, labels={"test": (7.0, 70.0), "val": (9.0, 90.0)})]
    write_ledger(store, KEY, results, labels, None, STUDY)
    (back,) = read_ledger(store, KEY)
    assert (back.mae, back.val_mae) == (0.25, 0.25 * 1.25)
    assert back.per_label == {"test": {"mae": 7.0, "pct": 70.0}, "val": {"mae": 9.0, "pct": 90.0}}
