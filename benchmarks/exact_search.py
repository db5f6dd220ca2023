"""The search itself, measured exactly: every method on the FCNet tables, many repeats.

Each method gets the same number of trainings; each is scored by the true
quality of the configuration it hands back (its mean validation MSE over the
table's 4 seeds, as a rank among all 62,208 configurations), never by the noisy
score it saw. Ours runs the real engine (the same code ``hpo run`` drives) with
a lookup trainer; a peer's pick is read at exactly the number of trainings ours
used in the same repeat, so every pair is at equal budget.

    .venv/bin/python benchmarks/exact_search.py                 # the README's table
    .venv/bin/python benchmarks/exact_search.py --repeats 30    # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fcnet import ours, peers
from fcnet.table import DATASETS, Table, load

FAST_PEERS = ("random", "tpe")
SLOW_PEERS = ("optuna-gp", "skopt-gp", "kt-bayes")
#: Our study with its narrow stage off: the random stage alone, at the same budget.
RANDOM_ONLY = {"bayesianStage": {"enabled": False}}


def ours_random_only(table: Table, budget: int, seed: int) -> ours.Outcome:
    spec = ours.study(budget, seed)
    reserve = spec.result.size * (spec.training.seeds_per_config - 1)
    return ours.run(
        table,
        budget,
        seed,
        {**RANDOM_ONLY, "randomStage": {"configurations": max(4, budget - reserve)}},
    )


#: Study-file sections merged into ours' spec (``--ours-overrides``), to try other defaults.
OURS_OVERRIDES: dict[str, Any] = {}


def run(
    datasets: list[str], budgets: list[int], repeats: int, slow_repeats: int, methods: list[str]
) -> dict[str, Any]:
    """Per dataset and repeat: ours at every budget, then each peer once, long enough for
    the largest budget ours used (no peer plans by budget, so a prefix is a shorter run)."""
    out: dict[str, Any] = {"budgets": budgets, "repeats": repeats, "datasets": {}}
    for name in datasets:
        table = load(name)
        per = {str(b): {m: [] for m in methods} for b in budgets}
        used: dict[str, list[int]] = {str(b): [] for b in budgets}
        seconds: dict[str, float] = {}

        def timed(method: str, fn: Any, *a: Any, seconds: dict[str, float] = seconds) -> Any:
            started = time.perf_counter()
            value = fn(*a)
            seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - started
            return value

        for k in range(repeats):
            spent: dict[str, int] = {}
            for budget in budgets:
                mine = timed("ours", ours.run, table, budget, k, OURS_OVERRIDES)
                spent[str(budget)] = mine.trainings
                used[str(budget)].append(mine.trainings)
                per[str(budget)]["ours"].append(table.rank_pct(mine.pick))
                if "ours-random" in methods:
                    alone = timed("ours-random", ours_random_only, table, budget, k)
                    per[str(budget)]["ours-random"].append(table.rank_pct(alone.pick))
            for m in methods:
                if m in ("ours", "ours-random") or (m in SLOW_PEERS and k >= slow_repeats):
                    continue
                rows = timed(m, peers.PEERS[m], table, max(spent.values()), k)
                for b, n in spent.items():
                    per[b][m].append(table.rank_pct(peers.pick(table, rows, n)))
        for b in per:
            print(
                f"{name} @ {b}: "
                + ", ".join(f"{m} {np.median(v):.4f}%" for m, v in per[b].items() if v),
                flush=True,
            )
        out["datasets"][name] = {"ranks": per, "ours_trainings": used, "seconds": seconds}
    return out


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Median rank, share in the top 1% and 0.1%, paired wins and a Wilcoxon test vs ours."""
    rows = []
    for name, data in result["datasets"].items():
        for b, by_method in data["ranks"].items():
            mine = np.array(by_method["ours"])
            for m, ranks in by_method.items():
                if not ranks:
                    continue
                r = np.array(ranks)
                row: dict[str, Any] = {
                    "dataset": name,
                    "budget": int(b),
                    "method": m,
                    "n": len(r),
                    "median_rank_pct": float(np.median(r)),
                    "top1_share": float(np.mean(r < 1.0)),
                    "top01_share": float(np.mean(r < 0.1)),
                    "ours_trainings_median": float(np.median(data["ours_trainings"][b])),
                }
                if m != "ours":
                    paired = mine[: len(r)]
                    row["ours_wins"] = int(np.sum(paired < r))
                    row["ties"] = int(np.sum(paired == r))
                    row["ours_losses"] = int(np.sum(paired > r))
                    diff = paired - r
                    row["p_two_sided"] = (
                        float(wilcoxon(paired, r, zero_method="zsplit").pvalue)
                        if np.any(diff != 0)
                        else 1.0
                    )
                rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | trainings | method | repeats | median rank | in top 1% | in top 0.1% "
        "| ours W/T/L | p (Wilcoxon) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wtl = f"{r['ours_wins']}/{r['ties']}/{r['ours_losses']}" if "ours_wins" in r else ""
        p = f"{r['p_two_sided']:.1e}" if "p_two_sided" in r else ""
        method = f"**{r['method']}**" if r["method"] == "ours" else r["method"]
        lines.append(
            f"| {r['dataset']} | {r['budget']} (ours: {r['ours_trainings_median']:.0f}) | {method} "
            f"| {r['n']} | {r['median_rank_pct']:.4f}% | {100 * r['top1_share']:.0f}% "
            f"| {100 * r['top01_share']:.0f}% | {wtl} | {p} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--budgets", nargs="+", type=int, default=[40, 80, 160])
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument(
        "--slow-repeats",
        type=int,
        default=5,
        help="repeats of the peers that take minutes per study (Gaussian processes)",
    )
    ap.add_argument(
        "--methods",
        nargs="+",
        default=["ours", "ours-random", *FAST_PEERS],
        help=f"ours, ours-random, {', '.join(peers.PEERS)}",
    )
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "exact_search.json"
    )
    ap.add_argument(
        "--ours-overrides",
        type=json.loads,
        default={},
        help='JSON merged into ours\' study spec, e.g. \'{"training": {"seedRacing": false}}\'',
    )
    args = ap.parse_args()
    methods = ["ours", *[m for m in args.methods if m != "ours"]]
    OURS_OVERRIDES.update(args.ours_overrides)
    started = time.perf_counter()
    result = run(args.datasets, args.budgets, args.repeats, args.slow_repeats, methods)
    result["wall_s"] = time.perf_counter() - started
    rows = summarise(result)
    result["summary"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(rows))
    print(f"\n{result['wall_s']:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
