"""``exact_search.py --parallel P``: every method as a discrete-event simulation of P slots.

One unit of work is (dataset, repeat, P): ours and each peer at every budget, each
seeded by the repeat alone, so any number of ``--jobs`` gives the same table. Units
are appended to ``<out>.parts.jsonl`` as they finish and are not run again with
``--resume``. Each method gets the budget itself (no prefix reading: an
asynchronous peer's run depends on P); trainings used above it are counted and
flagged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import event_sim
import families
import numpy as np
from fcnet.table import HPOBENCH_HELD_OUT, load
from scipy.stats import wilcoxon

#: A peer is "significantly better" than ours when p < this (two-sided) and it wins more pairs.
ALPHA = 0.05


def one_unit(
    name: str,
    k: int,
    parallel: int,
    budgets: list[int],
    methods: list[str],
    overrides: dict[str, Any],
    shared_width: bool,
) -> dict[str, Any]:
    table = load(name)
    results: dict[str, dict[str, Any]] = {}
    for budget in budgets:
        per: dict[str, Any] = {}
        for m in methods:
            if m == "ours":
                spec, to_params = families.study(
                    table, budget, k, parallel, overrides, shared_width
                )
                out = event_sim.run_ours(table, spec, to_params, budget, parallel)
            else:
                out = event_sim.PEERS[m](table, budget, k, parallel)
            per[m] = out.as_dict(table)
        results[str(budget)] = per
    return {"dataset": name, "k": k, "parallel": parallel, "results": results}


def _key(
    name: str, k: int, parallel: int, methods: list[str], budgets: list[int], extra: Any
) -> str:
    return json.dumps([name, k, parallel, sorted(methods), sorted(budgets), extra], sort_keys=True)


def run(
    datasets: list[str],
    budgets: list[int],
    repeats: int,
    parallels: list[int],
    methods: list[str],
    jobs: int,
    parts: Path,
    overrides: dict[str, Any],
    shared_width: bool = False,
    report_only: bool = False,
) -> list[dict[str, Any]]:
    """Every unit not yet in ``parts``, ``jobs`` processes at a time; all units, in order."""
    from exact_search import _quiet_worker

    extra = [overrides, shared_width]
    done: dict[str, dict[str, Any]] = {}
    if parts.exists():
        for line in parts.read_text().splitlines():
            try:
                unit = json.loads(line)
            except ValueError:
                continue  # torn by a killed run: that unit runs again
            done[unit["key"]] = unit
    wanted = [
        (_key(n, k, p, methods, budgets, extra), n, k, p)
        for k in range(repeats)
        for p in parallels
        for n in datasets
    ]
    todo = [w for w in wanted if w[0] not in done and not report_only]

    def keep(key: str, unit: dict[str, Any]) -> None:
        unit["key"] = key
        done[key] = unit
        with parts.open("a") as f:
            f.write(json.dumps(unit) + "\n")

    args = (budgets, methods, overrides, shared_width)
    if jobs <= 1:
        for key, n, k, p in todo:
            keep(key, one_unit(n, k, p, *args))
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, initializer=_quiet_worker) as pool:
            futures = {pool.submit(one_unit, n, k, p, *args): key for key, n, k, p in todo}
            for i, fut in enumerate(as_completed(futures), 1):
                keep(futures[fut], fut.result())
                if i % max(1, len(todo) // 20) == 0 or i == len(todo):
                    print(f"  {i}/{len(todo)} units done", file=sys.stderr, flush=True)
    return [done[w[0]] for w in wanted if w[0] in done]


def _p(a: np.ndarray, b: np.ndarray) -> float:
    return float(wilcoxon(a, b, zero_method="zsplit").pvalue) if np.any(a != b) else 1.0


def summarise(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (dataset, P, budget, method): medians, budget use, and paired tests vs ours."""
    cells: dict[tuple[str, int, int], dict[str, list[dict[str, Any]]]] = {}
    for u in units:
        for b, per in u["results"].items():
            cell = cells.setdefault((u["dataset"], u["parallel"], int(b)), {})
            for m, out in per.items():
                cell.setdefault(m, []).append(out)
    rows = []
    for (name, p, b), cell in cells.items():
        mine = np.array([o["rank_pct"] for o in cell["ours"]])
        for m, outs in cell.items():
            r = np.array([o["rank_pct"] for o in outs])
            used = np.array([o["trainings"] for o in outs])
            row: dict[str, Any] = {
                "dataset": name,
                "held_out": name in HPOBENCH_HELD_OUT,
                "parallel": p,
                "budget": b,
                "method": m,
                "n": len(r),
                "median_rank_pct": float(np.median(r)),
                "median_makespan_s": float(np.median([o["makespan"] for o in outs])),
                "median_utilisation": float(np.median([o["utilisation"] for o in outs])),
                "median_compute_s": float(np.median([o["compute"] for o in outs])),
                "trainings_median": float(np.median(used)),
                "trainings_max": int(used.max()),
                "over_budget": int(np.sum(used > b)),
                "seconds_per_study": float(np.mean([o["seconds"] for o in outs])),
            }
            if m != "ours":
                row["ours_wins"] = int(np.sum(mine < r))
                row["ours_losses"] = int(np.sum(mine > r))
                row["p_vs_ours"] = _p(mine, r)
                row["better_than_ours"] = bool(
                    row["p_vs_ours"] < ALPHA and row["ours_losses"] > row["ours_wins"]
                )
            rows.append(row)
    return rows


def markdown_parallel(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | P | budget | method | repeats | median rank | makespan (h) | utilisation "
        "| compute (h) | trainings median/max | over budget | p vs ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = f"{r['p_vs_ours']:.1e}" if "p_vs_ours" in r else ""
        lines.append(
            f"| {r['dataset']} | {r['parallel']} | {r['budget']} | {r['method']} | {r['n']} "
            f"| {r['median_rank_pct']:.4f}% | {r['median_makespan_s'] / 3600:.2f} "
            f"| {100 * r['median_utilisation']:.0f}% | {r['median_compute_s'] / 3600:.2f} "
            f"| {r['trainings_median']:.0f}/{r['trainings_max']} | {r['over_budget']} | {p} |"
        )
    return "\n".join(lines)


def markdown_summary(rows: list[dict[str, Any]], methods: list[str]) -> str:
    """Per dataset and budget: median rank per method, p of ours vs TPE, any peer better."""
    head = " | ".join(methods)
    lines = [
        f"| dataset | P | budget | {head} | p ours vs TPE | peer significantly better |",
        "|---|---|---|" + "---|" * len(methods) + "---|---|",
    ]
    cells: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["parallel"], r["budget"]), {})[r["method"]] = r
    for (name, p, b), cell in cells.items():
        tag = f"{name} (held out)" if name in HPOBENCH_HELD_OUT else name
        ranks = " | ".join(
            f"{cell[m]['median_rank_pct']:.3f}%" if m in cell else "" for m in methods
        )
        tpe = f"{cell['tpe']['p_vs_ours']:.1e}" if "tpe" in cell else ""
        better = [m for m, r in cell.items() if r.get("better_than_ours")]
        lines.append(f"| {tag} | {p} | {b} | {ranks} | {tpe} | {', '.join(better) or 'no'} |")
    return "\n".join(lines)


def markdown_clock(rows: list[dict[str, Any]]) -> str:
    """One line per (dataset, P, budget): ours against TPE and random search by the clock."""
    cells: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["parallel"], r["budget"]), {})[r["method"]] = r
    lines = [
        "| dataset | P | budget | median rank: ours / TPE / random | utilisation: ours / TPE "
        "/ random | makespan (h): ours / TPE | ours' trainings median/max (over budget) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, p, b), c in cells.items():
        ms = [m for m in ("ours", "tpe", "random") if m in c]
        rank = " / ".join(f"{c[m]['median_rank_pct']:.3f}%" for m in ms)
        util = " / ".join(f"{100 * c[m]['median_utilisation']:.0f}%" for m in ms)
        span = " / ".join(f"{c[m]['median_makespan_s'] / 3600:.2f}" for m in ms[:2])
        o = c["ours"]
        lines.append(
            f"| {name} | {p} | {b} | {rank} | {util} | {span} "
            f"| {o['trainings_median']:.0f}/{o['trainings_max']} ({o['over_budget']}) |"
        )
    return "\n".join(lines)
