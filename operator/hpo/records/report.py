"""What a study hands back to people: the final group, three plots and a terminal table.

Everything here is derived from the ``SeedResult`` list alone, so a report can
be rebuilt at any time from the ledger (``hpo.records.ledger.read_ledger``).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from hpo.study.contract import (
    HIDDEN_LAYERS,
    KNOBS,
    NARROW_STAGE,
    PER_LAYER,
    RANDOM_STAGE,
    SeedResult,
)
from hpo.study.summary import final_ranked, selection_score, summarise

if TYPE_CHECKING:  # matplotlib loads only when a plot is drawn (~1 s; `hpo report` needs none)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from hpo.study.spec import Threshold

PLOT_FILES = ("mae_vs_hidden_layers.png", "best_seeds_boxplot.png", "convergence.png")
STAGE_COLOURS: dict[str, str] = {RANDOM_STAGE: "tab:blue", NARROW_STAGE: "tab:orange"}
_OTHER_COLOUR = "tab:gray"
_DPI = 120
_LOG_SPAN = 30.0


# --------------------------------------------------------------------------- final group


def _has_threshold(limits: Threshold | None) -> bool:
    return limits is not None and (limits.max_mae is not None or limits.max_percent is not None)


def _passes(means: tuple[float, float] | None, limits: Threshold) -> bool:
    """A label passes only if its mean scores are known and within every given limit."""
    if means is None:
        return False
    mae, pct = means
    max_mae, max_pct = limits.max_mae, limits.max_percent
    return (max_mae is None or mae <= max_mae) and (max_pct is None or pct <= max_pct)


def final_group_columns(labels: Sequence[str], checked: Sequence[str] = ()) -> list[str]:
    """The final group's columns (``best.json``'s keys) in order; ``checked``: the labels
    with a threshold, which get a ``<label>_pass``."""
    return [
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
        *[name for label in labels for name in (f"{label}_mae", f"{label}_pct")],
        *[f"{label}_pass" for label in checked],
        "passes_all",
    ]


def final_group(
    results: list[SeedResult],
    labels: list[str],
    thresholds: Mapping[str, Threshold],
    size: int,
    racing: bool = False,
) -> pd.DataFrame:
    """The ``size`` best configurations by mean selection score over seeds (under seed
    ``racing`` those with more seeds first: ``final_ranked``), with per-label pass marks.

    ``val_mae_*`` is the selection score (validation MAE) the ranking used;
    ``mae_*`` and the per-label scores are on the test split, which no decision
    read: an unbiased estimate of each member's error. Per-label scores are
    means over successful seeds. ``thresholds``: the spec's own
    (``spec.result.thresholds``, by label). ``<label>_pass`` exists
    for each label that has a ``max_mae`` or ``max_percent``; a label with no
    per-label scores fails its threshold. ``passes_all`` is True when every
    threshold passes (so also when there are none).
    """
    unknown = sorted(set(thresholds) - set(labels))
    if unknown:
        raise ValueError(f"thresholds given for unknown labels {unknown}; labels are {labels}")
    checked = [label for label in labels if _has_threshold(thresholds.get(label))]
    columns = final_group_columns(labels, checked)
    rows = []
    for rank, s in enumerate(final_ranked(summarise(results).values(), racing)[: max(size, 0)], 1):
        row: dict[str, Any] = {
            "rank": rank,
            "trial": s.trial,
            "stage": s.stage,
            "config_key": s.config_key,
            **{name: s.config.get(name) for name in KNOBS},
            "val_mae_mean": s.score,
            "val_mae_std": s.score_std,
            "test_mae_mean": s.mean,
            "test_mae_std": s.std,
            "seeds": s.n,
        }
        for name in PER_LAYER:
            if isinstance(row[name], (list, tuple)):
                row[name] = json.dumps(list(row[name]))  # "[64, 32]", as in the ledger
        for label in labels:
            means = s.label_mean(label)
            row[f"{label}_mae"] = means[0] if means else None
            row[f"{label}_pct"] = means[1] if means else None
        marks = [_passes(s.label_mean(label), thresholds[label]) for label in checked]
        row.update({f"{label}_pass": mark for label, mark in zip(checked, marks, strict=True)})
        row["passes_all"] = all(marks)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=columns)
    for name in [*[f"{label}_pass" for label in checked], "passes_all"]:
        frame[name] = frame[name].astype(bool)
    return frame


# --------------------------------------------------------------------------- plots


def _succeeded(results: list[SeedResult]) -> list[SeedResult]:
    """Trainings with a selection score (validation MAE) to draw."""
    return [
        r
        for r in results
        if r.status == "succeeded"
        and (score := selection_score(r)) is not None
        and math.isfinite(float(score))
    ]


def _score(r: SeedResult) -> float:
    """What the plots draw: the selection score every decision read, never the test MAE
    (a running minimum over test MAEs is itself a selection on the test split)."""
    return float(selection_score(r))  # type: ignore[arg-type]  # _succeeded: set and finite


def completion_order(results: list[SeedResult]) -> list[SeedResult]:
    """The trainings in the order they ended (``finished_at``, which the ledger keeps);
    ties and unknown times (0: recorded before v0.2) keep the given order."""
    return sorted(results, key=lambda r: r.finished_at)


def _final_test(best: pd.DataFrame) -> dict[str, float]:
    """Each final-group member's mean test MAE, by trial (``mae_mean`` before v0.9)."""
    column = next((c for c in ("test_mae_mean", "mae_mean") if c in best.columns), None)
    if column is None or "trial" not in best.columns:
        return {}
    return {
        str(t): float(v)
        for t, v in zip(best["trial"], best[column], strict=True)
        if not _missing(v) and math.isfinite(float(v))
    }


def _colour(stage: str) -> str:
    return STAGE_COLOURS.get(stage, _OTHER_COLOUR)


def _stages(results: list[SeedResult]) -> list[str]:
    """Stages in a stable order: the known two first, then any other seen."""
    seen: set[str] = {r.stage for r in results}
    return [s for s in STAGE_COLOURS if s in seen] + sorted(seen - set(STAGE_COLOURS))


def _figure(width: float, height: float) -> Figure:
    """A figure of its own (no pyplot: no global state), matplotlib loaded on first use."""
    import matplotlib

    matplotlib.use("Agg")  # no display in pods or CI; before any pyplot import anywhere
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])


#: matplotlib draws in one thread at a time (see ``make_plots``).
_DRAWING = threading.Lock()


def _auto_log(ax: Axes, values: list[float]) -> None:
    """Log scale when MAEs span decades: one diverged run must not flatten the rest."""
    positive = [v for v in values if v > 0]
    if positive and len(positive) == len(values) and max(positive) / min(positive) > _LOG_SPAN:
        ax.set_yscale("log")


_VAL_AXIS = "validation MAE (selection score, standardised labels)"
_TEST_NOTE = "final group's test MAE (reported, never selected on)"


def depth_figure(results: list[SeedResult]) -> Figure:
    """Every training's selection score by depth: does depth matter, how noisy are seeds?"""
    fig = _figure(8, 5)
    ax = fig.add_subplot()
    ok = [r for r in _succeeded(results) if r.config.get(HIDDEN_LAYERS) is not None]
    if not ok:
        _empty(ax, "no successful trainings yet")
    else:
        rng = np.random.default_rng(0)  # fixed jitter: the same results give the same picture
        for stage in _stages(ok):
            xs = np.array([r.config[HIDDEN_LAYERS] for r in ok if r.stage == stage], float)
            ys = [_score(r) for r in ok if r.stage == stage]
            jitter = rng.uniform(-0.18, 0.18, len(xs))
            ax.scatter(xs + jitter, ys, s=14, alpha=0.55, color=_colour(stage), label=stage)
        depths = sorted({int(r.config[HIDDEN_LAYERS]) for r in ok})
        for i, depth in enumerate(depths):
            median = float(np.median([_score(r) for r in ok if r.config[HIDDEN_LAYERS] == depth]))
            ax.hlines(
                median,
                depth - 0.32,
                depth + 0.32,
                color="black",
                linewidth=2.2,
                label="median per depth" if i == 0 else "_nolegend_",  # "_": not in the legend
            )
        ax.set_xticks(depths)
        _auto_log(ax, [_score(r) for r in ok])
        ax.legend(loc="best")
        ax.grid(axis="y", alpha=0.3)
    ax.set_title("Validation MAE of every training by number of hidden layers")
    ax.set_xlabel("hidden layers")
    ax.set_ylabel(_VAL_AXIS)
    return fig


def best_figure(results: list[SeedResult], best: pd.DataFrame) -> Figure:
    """Spread of the selection score across the final group's seeds: is the winner's lead
    bigger than its noise? Each member's mean test MAE is marked, labelled as such."""
    trials = [str(t) for t in best["trial"]] if "trial" in best.columns else []
    ranks = list(best["rank"]) if "rank" in best.columns else list(range(1, len(trials) + 1))
    by_trial: dict[str, list[float]] = {t: [] for t in trials}
    for r in _succeeded(results):
        if r.trial in by_trial:
            by_trial[r.trial].append(_score(r))
    shown = [(rank, t) for rank, t in zip(ranks, trials, strict=True) if by_trial[t]]
    fig = _figure(max(6.0, 0.9 * len(shown) + 2), 5)
    ax = fig.add_subplot()
    if not shown:
        _empty(ax, "no final group yet")
    else:
        data = [by_trial[t] for _, t in shown]
        ax.boxplot(data, tick_labels=[f"#{rank}\n{t}" for rank, t in shown], widths=0.5)
        rng = np.random.default_rng(0)
        for i, values in enumerate(data, 1):
            jitter = rng.uniform(-0.08, 0.08, len(values))
            ax.scatter(i + jitter, values, s=16, color="black", alpha=0.6, zorder=3)
        tests = _final_test(best)
        marked = [(i, tests[t]) for i, (_, t) in enumerate(shown, 1) if t in tests]
        if marked:
            xs, ys = zip(*marked, strict=True)
            ax.scatter(xs, ys, marker="D", s=36, color="tab:red", zorder=4, label=_TEST_NOTE)
            ax.legend(loc="best")
        ax.grid(axis="y", alpha=0.3)
    ax.set_title("Final group: validation MAE across seeds")
    ax.set_xlabel("configuration (rank, trial)")
    ax.set_ylabel(_VAL_AXIS)
    return fig


def convergence_figure(results: list[SeedResult], best: pd.DataFrame | None = None) -> Figure:
    """Best selection score so far in completion order: did the narrow stage still
    improve things? The final group's best test MAE is a labelled line, if known."""
    results = completion_order(results)
    fig = _figure(9, 5)
    ax = fig.add_subplot()
    index = {id(r): i for i, r in enumerate(results, 1)}
    ok = _succeeded(results)
    if not ok:
        _empty(ax, "no successful trainings yet")
    else:
        for stage in _stages(ok):
            xs = [index[id(r)] for r in ok if r.stage == stage]
            ys = [_score(r) for r in ok if r.stage == stage]
            ax.scatter(xs, ys, s=10, alpha=0.35, color=_colour(stage), label=f"{stage} training")
        steps_x, steps_y, lowest = [], [], math.inf
        for r in ok:
            lowest = min(lowest, _score(r))
            steps_x.append(index[id(r)])
            steps_y.append(lowest)
        steps_x.append(len(results))
        steps_y.append(lowest)
        ax.step(steps_x, steps_y, where="post", color="black", linewidth=1.8, label="best so far")
        first_narrow = next((i for i, r in enumerate(results, 1) if r.stage == NARROW_STAGE), None)
        if first_narrow is not None:
            ax.axvline(
                first_narrow - 0.5,
                color="tab:red",
                linestyle="--",
                linewidth=1.2,
                label="narrow stage starts",
            )
        tests = _final_test(best) if best is not None else {}
        if tests:
            top = next(iter(tests.values()))
            ax.axhline(top, color="tab:green", linestyle=":", label=f"#1 {_TEST_NOTE}")
        _auto_log(ax, [_score(r) for r in ok] + list(tests.values())[:1])
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
    ax.set_title("Best validation MAE so far, in completion order")
    ax.set_xlabel("training (completion order)")
    ax.set_ylabel(_VAL_AXIS)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    return path


def make_plots(results: list[SeedResult], best: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write the three report PNGs into ``out_dir`` (created if needed); returns their paths.

    Uses ``Figure`` directly rather than pyplot so no global figure state is
    shared between threads of the operator; one drawing at a time all the same, as
    matplotlib's mathtext parser is shared and not thread-safe (its issue 26289: studies
    ending together in one operator failed their final report).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    depth, box, convergence = (out_dir / name for name in PLOT_FILES)
    with _DRAWING:
        return [
            _save(depth_figure(results), depth),
            _save(best_figure(results, best), box),
            _save(convergence_figure(results, best), convergence),
        ]


# --------------------------------------------------------------------------- table


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any, spec: str = "") -> str:
    if _missing(value):
        return "–"
    return format(value, spec) if spec else str(value)


def _mean_spread(mean: Any, std: Any, seeds: Any) -> str:
    """``mean ± std``; one seed has no spread, so its value alone."""
    if not _missing(seeds) and int(seeds) < 2:
        return _fmt(mean, ".4f")
    return f"{_fmt(mean, '.4f')} ± {_fmt(std, '.4f')}"


def _label_error(mae: Any, pct: Any) -> str:
    """A label's test MAE in its own units, and in percent of the label's mean."""
    if _missing(mae):
        return "–"
    return f"{mae:#.4g}" + (f" ({pct:.1f}%)" if not _missing(pct) else "")


def _label_cell(passed: bool | None, mae: Any, pct: Any) -> Text:
    """The label's errors, marked ✓/✗ when the label has a threshold (``passed`` not None)."""
    if passed is None:
        return Text(_label_error(mae, pct))
    return Text(
        ("✓ " if passed else "✗ ") + _label_error(mae, pct), style="green" if passed else "red"
    )


#: Under the table: what the per-label columns hold (the standardised MAE alone can hide
#: a large error on one label, e.g. a count label off by 74% of its mean).
LABEL_CAPTION = (
    "per label: test MAE in the label's units (in % of its mean |value| on the test split, "
    "or of its reference value)"
)


def _test(row: Mapping[Any, Any], stat: str) -> Any:
    """``test_mae_<stat>``, or ``mae_<stat>`` of a ``best.json`` written before v0.9."""
    return row.get(f"test_mae_{stat}", row.get(f"mae_{stat}"))


def render_table(best: pd.DataFrame, labels: list[str]) -> Table:
    """The final group for the terminal: a column of errors per label (label units and
    percent), marked pass/fail where the label has a threshold."""
    checked = [label for label in labels if f"{label}_pass" in best.columns]
    table = Table(
        title="Final group: ranked on validation MAE; test MAE is unbiased (no decision read it)",
        caption=(LABEL_CAPTION + ("; ✓/✗: its threshold" if checked else "")) if labels else None,
        header_style="bold",
    )
    for name, justify in (
        ("#", "right"),
        ("trial", "left"),
        ("configuration", "left"),
        ("val MAE (selection)", "right"),
        ("test MAE mean ± std", "right"),
        ("seeds", "right"),
    ):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for label in labels:
        table.add_column(label, justify="left")
    if checked:
        table.add_column("all", justify="center")

    for row in best.to_dict("records"):
        cells: list[Text] = [
            Text(_fmt(row.get("rank"))),
            Text(f"{_fmt(row.get('trial'))} ({str(row.get('stage', ''))[:1]})"),
            Text(_fmt(row.get("config_key"))),
            Text(_fmt(row.get("val_mae_mean"), ".4f")),
            Text(_mean_spread(_test(row, "mean"), _test(row, "std"), row.get("seeds"))),
            Text(_fmt(row.get("seeds"))),
        ]
        for label in labels:
            passed = bool(row[f"{label}_pass"]) if label in checked else None
            cells.append(_label_cell(passed, row.get(f"{label}_mae"), row.get(f"{label}_pct")))
        if checked:
            ok = bool(row.get("passes_all"))
            cells.append(Text("✓" if ok else "✗", style="bold green" if ok else "bold red"))
        table.add_row(*cells)
    return table
