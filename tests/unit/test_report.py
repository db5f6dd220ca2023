"""Final group ranking and thresholds, report plots and the terminal table."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import threading
from pathlib import Path
from typing import Any

import pytest
from matplotlib.collections import PathCollection
from rich.console import Console

from hpo.records.report import (
    PLOT_FILES,
    best_figure,
    convergence_figure,
    depth_figure,
    final_group,
    make_plots,
    render_table,
)
from hpo.study.contract import KNOBS, SeedResult
from hpo.study.spec import Threshold

LABELS = ["yield", "strength"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def result(
    trial: str,
    seed: int,
    mae: float | None,
    *,
    layers: int = 2,
    stage: str = "random",
    labels: dict[str, tuple[float, float]] | None = None,
) -> SeedResult:
    """One training; ``mae=None`` makes it a failed one."""
    cfg: dict[str, Any] = {
        "hidden_layers": layers,
        "neurons": [32] * layers,
        "activation": "relu",
        "learning_rate": 1e-3,
        "batch_size": 64,
        "optimizer": "adam",
    }
    if mae is None:
        return SeedResult("s", trial, stage, None, cfg, f"k-{trial}", seed, "failed", error="x")  # type: ignore[arg-type]
    per_label = labels or {"yield": (mae, mae * 10), "strength": (mae * 2, mae * 20)}
    return SeedResult(
        "s",
        trial,
        stage,  # type: ignore[arg-type]
        None if stage == "random" else "r0001",
        cfg,
        f"k-{trial}",
        seed,
        "succeeded",
        mae=mae,
        per_label={k: {"mae": v[0], "pct": v[1]} for k, v in per_label.items()},
    )


def study_results() -> list[SeedResult]:
    return [
        # r0001: mean 1.0; yield (1.0, 4.0) on average
        result("r0001", 0, 0.5, labels={"yield": (0.5, 3.0), "strength": (1.0, 10.0)}),
        result("r0001", 1, 1.5, labels={"yield": (1.5, 5.0), "strength": (3.0, 30.0)}),
        # r0002: mean 2.0, std 0
        result("r0002", 0, 2.0, layers=3),
        result("r0002", 1, 2.0, layers=3),
        # r0003: never succeeded, never ranked
        result("r0003", 0, None),
        # b0001: mean 0.8, best, one failed seed
        result("b0001", 0, 0.7, stage="bayesian", layers=1),
        result("b0001", 1, 0.9, stage="bayesian", layers=1),
        result("b0001", 2, None, stage="bayesian"),
        # b0002: same mean as r0001 (1.0) but steadier, so it ranks before it
        result("b0002", 0, 1.0, stage="bayesian"),
        result("b0002", 1, 1.0, stage="bayesian"),
    ]


def test_final_group_ranking_and_columns() -> None:
    group = final_group(study_results(), LABELS, {}, 3)

    assert list(group.columns) == [
        "rank",
        "trial",
        "stage",
        "config_key",
        *KNOBS,
        "val_mae_mean",
        "val_mae_std",
        "test_mae_mean",
        "test_mae_std",
        "seeds",
        "yield_mae",
        "yield_pct",
        "strength_mae",
        "strength_pct",
        "passes_all",
    ]
    assert group["trial"].tolist() == ["b0001", "b0002", "r0001"]
    assert group["rank"].tolist() == [1, 2, 3]
    assert group["seeds"].tolist() == [2, 2, 2]
    assert group["test_mae_mean"].tolist() == pytest.approx([0.8, 1.0, 1.0])
    assert group["test_mae_std"].iloc[2] == pytest.approx(2**0.5 / 2)
    assert group["neurons"].iloc[0] == "[32]"
    # Results recorded before validation scores existed rank on their test MAE.
    assert group["val_mae_mean"].tolist() == pytest.approx([0.8, 1.0, 1.0])
    r1 = group.iloc[2]
    assert (r1["yield_mae"], r1["yield_pct"]) == pytest.approx((1.0, 4.0))
    assert (r1["strength_mae"], r1["strength_pct"]) == pytest.approx((2.0, 20.0))
    assert group["passes_all"].tolist() == [True, True, True]  # no thresholds


def test_final_group_thresholds() -> None:
    thresholds = {
        # means: b0001 0.8 / 8.0, b0002 1.0 / 10.0, r0001 1.0 / 4.0, r0002 2.0 / 20.0
        "yield": Threshold(max_mae=1.0, max_percent=9.0),
        # means: b0001 1.6, b0002 2.0, r0001 2.0, r0002 4.0
        "strength": Threshold(max_mae=1.9),
    }
    group = final_group(study_results(), LABELS, thresholds, 10)

    assert group["trial"].tolist() == ["b0001", "b0002", "r0001", "r0002"]
    assert group.columns[-3:].tolist() == ["yield_pass", "strength_pass", "passes_all"]
    assert group["yield_pass"].tolist() == [True, False, True, False]
    assert group["strength_pass"].tolist() == [True, False, False, False]
    assert group["passes_all"].tolist() == [True, False, False, False]
    assert group["passes_all"].dtype == bool


def test_final_group_ignores_labels_without_limits_and_rejects_unknown() -> None:
    # The spec refuses a threshold without a limit; final_group ignores one all the same.
    no_limit = Threshold.model_construct(max_mae=None, max_percent=None)
    group = final_group(study_results(), LABELS, {"yield": no_limit}, 2)
    assert "yield_pass" not in group.columns
    with pytest.raises(ValueError, match="unknown labels"):
        final_group(study_results(), LABELS, {"colour": Threshold(max_mae=1.0)}, 2)


def test_final_group_label_without_scores_fails() -> None:
    results = [result("r0001", 0, 0.5, labels={"strength": (1.0, 1.0)})]
    group = final_group(results, LABELS, {"yield": Threshold(max_mae=100.0)}, 1)
    assert group["yield_pass"].tolist() == [False]


def test_final_group_empty() -> None:
    group = final_group([result("r0001", 0, None)], LABELS, {}, 5)
    assert group.empty
    assert "passes_all" in group.columns


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 10_000, path


def test_make_plots_writes_pngs(tmp_path: Path) -> None:
    results = study_results()
    group = final_group(results, LABELS, {}, 3)

    paths = make_plots(results, group, tmp_path / "plots")

    assert [p.name for p in paths] == list(PLOT_FILES)
    for path in paths:
        assert_png(path)


def test_make_plots_without_successes(tmp_path: Path) -> None:
    results = [result("r0001", 0, None)]
    paths = make_plots(results, final_group(results, LABELS, {}, 3), tmp_path)
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_render_table() -> None:
    group = final_group(study_results(), LABELS, {"yield": Threshold(max_mae=0.9)}, 3)

    table = render_table(group, LABELS)

    headers = [str(c.header) for c in table.columns]
    assert headers[:6] == [
        "#",
        "trial",
        "configuration",
        "val MAE (selection)",
        "test MAE mean ± std",
        "seeds",
    ]
    # Every label gets a column of its errors (units and %), marked where it has a threshold.
    assert headers[6:] == ["yield", "strength", "all"]
    assert table.row_count == 3
    console = Console(record=True, width=200, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "b0001 (b)" in text
    assert "0.8000 ± 0.1414" in text
    assert group.iloc[0]["config_key"] in text
    assert "✓" in text and "✗" in text


def test_the_table_shows_every_labels_errors_without_thresholds() -> None:
    """No threshold set: each label's test MAE still shows, in its units and in percent
    (the standardised MAE alone hid errors of 74% and 112% on a count label)."""
    group = final_group(study_results(), LABELS, {}, 3)
    table = render_table(group, LABELS)
    assert [str(c.header) for c in table.columns][6:] == ["yield", "strength"]
    console = Console(record=True, width=200, color_system=None)
    console.print(table)
    text = console.export_text()
    # r0001 (rank 3): yield (0.5, 3%) and (1.5, 5%), strength (1, 10%) and (3, 30%)
    assert "1.000 (4.0%)" in text and "2.000 (20.0%)" in text
    assert "✓" not in text and "✗" not in text
    assert "in % of its mean" in text


def test_a_label_without_percent_is_summarised_not_crashed() -> None:
    """The trainer leaves out pct when a label's reference is 0: its mean is NaN, shown '–'."""
    r = result("r0001", 0, 0.5, labels={"yield": (0.5, 1.0), "strength": (1.0, 1.0)})
    del r.per_label["yield"]["pct"]
    group = final_group([r], LABELS, {}, 1)
    assert group.loc[0, "yield_mae"] == 0.5 and math.isnan(group.loc[0, "yield_pct"])
    console = Console(record=True, width=200, color_system=None)
    console.print(render_table(group, LABELS))
    assert "0.5000 " in console.export_text()


def test_final_group_ranks_on_validation_never_on_test() -> None:
    """The selection score decides; the test MAE is only reported (an unbiased estimate)."""
    lucky_on_test = [result("r0001", s, 0.1) for s in (0, 1)]
    steady = [result("r0002", s, 0.9) for s in (0, 1)]
    for r in lucky_on_test:
        r.val_mae = 0.8  # worse on validation
    for r in steady:
        r.val_mae = 0.5
    group = final_group(lucky_on_test + steady, LABELS, {}, 2)
    assert group["trial"].tolist() == ["r0002", "r0001"]
    assert group["val_mae_mean"].tolist() == pytest.approx([0.5, 0.8])
    assert group["test_mae_mean"].tolist() == pytest.approx([0.9, 0.1])


def _honest_results() -> list[SeedResult]:
    """Validation and test MAE disagree on purpose, and the ledger order (by trial) is
    not the completion order (``finished_at``)."""
    rows = [  # trial, seed, val, test, finished_at
        ("r0001", 0, 0.9, 0.1, 300.0),
        ("r0002", 0, 0.5, 0.9, 100.0),
        ("r0003", 0, 0.7, 0.2, 200.0),
        ("b0001", 0, 0.4, 0.8, 400.0),
    ]
    out = []
    for trial, seed, val, test, finished in rows:
        stage = "bayesian" if trial.startswith("b") else "random"
        r = dataclasses.replace(result(trial, seed, test, stage=stage), val_mae=val)
        out.append(dataclasses.replace(r, finished_at=finished))
    return out


def test_plots_draw_the_selection_score_in_completion_order() -> None:
    """The convergence line is the running minimum of the validation MAE over the
    trainings in the order they ended; test MAEs appear only as the final group's,
    labelled so; the other two plots draw validation MAEs too."""
    results = _honest_results()
    best = final_group(results, LABELS, {}, 2)
    assert best["trial"].tolist() == ["b0001", "r0002"]
    fig = convergence_figure(results, best)
    (ax,) = fig.axes
    step = next(line for line in ax.lines if line.get_label() == "best so far")
    # completion order: r0002 (0.5), r0003 (0.7), r0001 (0.9), b0001 (0.4)
    assert list(step.get_xdata()) == [1, 2, 3, 4, 4]
    assert list(step.get_ydata()) == [0.5, 0.5, 0.5, 0.4, 0.4]
    test_line = next(line for line in ax.lines if "test MAE" in str(line.get_label()))
    assert "#1 final group's test MAE" in str(test_line.get_label())
    assert list(test_line.get_ydata()) == [0.8, 0.8]
    assert "validation MAE" in ax.get_ylabel() and "completion order" in ax.get_xlabel()
    (depth_ax,) = depth_figure(results).axes
    points = [c for c in depth_ax.collections if isinstance(c, PathCollection)]
    drawn = sorted(float(y) for c in points for _, y in c.get_offsets())
    assert drawn == pytest.approx(sorted([0.9, 0.5, 0.7, 0.4]), abs=1e-12)
    (box_ax,) = best_figure(results, best).axes
    marked = [c for c in box_ax.collections if "test MAE" in str(c.get_label())]
    assert [float(y) for _, y in marked[0].get_offsets()] == pytest.approx([0.8, 0.9])
    seeds = [c for c in box_ax.collections if c not in marked]
    assert sorted(float(y) for c in seeds for _, y in c.get_offsets()) == [0.4, 0.5]
    assert "validation MAE" in box_ax.get_ylabel()


# -- many studies draw at once ------------------------------------------------------------
# One operator finishes its studies in threads of their own, and matplotlib's mathtext (the
# log axis' ``10^{-2}`` tick labels) is not thread-safe (matplotlib issue 26289): with 50
# concurrent studies final reports failed with ``ParseFatalException``, their loops restarted.

THREADS = 12


def scaled(i: int) -> list[SeedResult]:
    """A study whose MAEs span two decades at a scale of its own: log axes whose tick
    labels no other thread has drawn yet (mathtext caches what it has parsed)."""
    base = 10.0 ** (-(i % 6)) * (1 + i // 6)
    return [result(f"r{k:04d}", 0, base * 10 ** (k / 4)) for k in range(1, 10)]


def test_plots_drawn_in_many_threads_at_once_all_come_out(tmp_path: Path) -> None:
    start = threading.Barrier(THREADS)

    def draw(i: int) -> list[Path]:
        results = scaled(i)
        group = final_group(results, LABELS, {}, 3)
        start.wait()
        return make_plots(results, group, tmp_path / str(i))

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        drawn = list(pool.map(draw, range(THREADS)))  # re-raises a failed drawing

    for paths in drawn:
        assert [p.name for p in paths] == list(PLOT_FILES)
        for path in paths:
            assert path.read_bytes()[:8] == PNG_MAGIC
