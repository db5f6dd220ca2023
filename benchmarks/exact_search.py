"""The search itself, measured exactly: every method on the FCNet tables, many repeats.

Each method gets the same number of trainings; each is scored by the true
quality of the configuration it hands back (its mean validation MSE over the
table's 4 seeds, as a rank among all 62,208 configurations), never by the noisy
score it saw. Ours runs the real engine (the same code ``hpo run`` drives) with
a lookup trainer; a peer's pick is read at exactly the number of trainings ours
used in the same repeat, so every pair is at equal budget.

    .venv/bin/python benchmarks/exact_search.py                 # the README's table
    .venv/bin/python benchmarks/exact_search.py --repeats 30    # a quick look
    .venv/bin/python benchmarks/exact_search.py --parallel 1 8 --repeats 10   # by the clock

``--parallel P ...`` runs every method as a discrete-event simulation of P slots
(``exact_parallel.py``, ``event_sim.py``): durations are the tables' training
times, each method gets the budget itself, and the report adds makespan, slot
utilisation, total compute and trainings used vs budget. ``--datasets`` takes the
FCNet and the HPOBench MLP tables (``twelve`` for all of them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fcnet import ours, peers
from fcnet.table import ALL, DATASETS, Table, load

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


def one_repeat(
    name: str, k: int, budgets: list[int], methods: list[str], overrides: dict[str, Any]
) -> dict[str, Any]:
    """Repeat ``k`` on one dataset: ours at every budget, then each peer once, long enough
    for the largest budget ours used (no peer plans by budget, so a prefix is a shorter run).
    Seeded by ``k`` alone, so a repeat gives the same answer in any process and order."""
    OURS_OVERRIDES.clear()
    OURS_OVERRIDES.update(overrides)
    table = load(name)
    ranks: dict[str, dict[str, float]] = {str(b): {} for b in budgets}
    spent: dict[str, int] = {}
    seconds: dict[str, float] = {}

    def timed(method: str, fn: Any, *a: Any) -> Any:
        started = time.perf_counter()
        value = fn(*a)
        seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - started
        return value

    for budget in budgets:
        mine = timed("ours", ours.run, table, budget, k, OURS_OVERRIDES)
        spent[str(budget)] = mine.trainings
        ranks[str(budget)]["ours"] = table.rank_pct(mine.pick)
        if "ours-random" in methods:
            alone = timed("ours-random", ours_random_only, table, budget, k)
            ranks[str(budget)]["ours-random"] = table.rank_pct(alone.pick)
    for m in methods:
        if m in ("ours", "ours-random"):
            continue
        rows = timed(m, peers.PEERS[m], table, max(spent.values()), k)
        for b, n in spent.items():
            ranks[b][m] = table.rank_pct(peers.pick(table, rows, n))
    return {"dataset": name, "k": k, "ranks": ranks, "spent": spent, "seconds": seconds}


def _unit_key(name: str, k: int, methods: list[str], budgets: list[int]) -> str:
    return json.dumps([name, k, sorted(methods), sorted(budgets), OURS_OVERRIDES], sort_keys=True)


def _quiet_worker() -> None:
    """One thread per process (the pool is the parallelism), and no Keras Tuner chatter."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (the worker's life)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def run(
    datasets: list[str],
    budgets: list[int],
    repeats: int,
    slow_repeats: int,
    methods: list[str],
    jobs: int = 1,
    parts: Path | None = None,
    report_only: bool = False,
) -> dict[str, Any]:
    """Every (dataset, repeat) as one unit of work, ``jobs`` at a time.

    A finished unit is appended to ``parts`` (JSON lines) at once, and units already
    there are not run again: a long run (the Gaussian-process peers take minutes per
    study) can be stopped and continued. ``report_only`` runs nothing and tables the
    repeats finished so far (a repeat holds ours and every peer, so pairs stay paired).
    """
    done: dict[str, dict[str, Any]] = {}
    if parts is not None and parts.exists():
        for line in parts.read_text().splitlines():
            try:
                unit = json.loads(line)
            except ValueError:
                continue  # a line torn by a killed run: that repeat runs again
            done[unit["key"]] = unit
    todo = []
    for k in range(repeats):  # repeat-major: a run stopped early covers every dataset alike
        for name in datasets:
            ms = [m for m in methods if not (m in SLOW_PEERS and k >= slow_repeats)]
            key = _unit_key(name, k, ms, budgets)
            if key not in done and not report_only:
                todo.append((key, name, k, ms))
    overrides = dict(OURS_OVERRIDES)

    def keep(key: str, unit: dict[str, Any]) -> None:
        unit["key"] = key
        done[key] = unit
        if parts is not None:
            with parts.open("a") as f:
                f.write(json.dumps(unit) + "\n")

    if jobs <= 1:
        for key, name, k, ms in todo:
            keep(key, one_repeat(name, k, budgets, ms, overrides))
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, initializer=_quiet_worker) as pool:
            futures = {
                pool.submit(one_repeat, name, k, budgets, ms, overrides): key
                for key, name, k, ms in todo
            }
            for n, fut in enumerate(as_completed(futures), 1):
                keep(futures[fut], fut.result())
                if n % max(1, len(todo) // 20) == 0 or n == len(todo):
                    print(f"  {n}/{len(todo)} repeats done", file=sys.stderr, flush=True)

    out: dict[str, Any] = {"budgets": budgets, "repeats": repeats, "datasets": {}}
    for name in datasets:
        per: dict[str, dict[str, list[float]]] = {str(b): {m: [] for m in methods} for b in budgets}
        used: dict[str, list[int]] = {str(b): [] for b in budgets}
        seconds: dict[str, float] = {}
        for k in range(repeats):
            ms = [m for m in methods if not (m in SLOW_PEERS and k >= slow_repeats)]
            unit = done.get(_unit_key(name, k, ms, budgets))
            if unit is None:
                continue  # not run yet (report_only)
            for b in per:
                used[b].append(unit["spent"][b])
                for m, r in unit["ranks"][b].items():
                    per[b][m].append(r)
            for m, s in unit["seconds"].items():
                seconds[m] = seconds.get(m, 0.0) + s
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
    ap.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), choices=[*ALL, "twelve", "hpobench"]
    )
    ap.add_argument(
        "--parallel",
        nargs="+",
        type=int,
        default=None,
        help="slots P (e.g. 1 8 32): the event-driven mode; peers run asynchronously",
    )
    ap.add_argument(
        "--shared-width",
        action="store_true",
        help="HPOBench: ours searches one width for every layer (searchSpace.sharedWidth)",
    )
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
    ap.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes (default: one per CPU); every repeat is seeded alone, so any number "
        "of jobs gives the same table",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: table the repeats in <out>.parts.jsonl finished so far",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the repeats already in <out>.parts.jsonl and run only the rest",
    )
    args = ap.parse_args()
    methods = ["ours", *[m for m in args.methods if m != "ours"]]
    OURS_OVERRIDES.update(args.ours_overrides)
    args.datasets = _expand(args.datasets)
    if args.parallel:
        return main_parallel(args, methods)
    started = time.perf_counter()
    parts = args.out.with_suffix(".parts.jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not (args.resume or args.report_only):
        parts.unlink(missing_ok=True)
    result = run(
        args.datasets,
        args.budgets,
        args.repeats,
        args.slow_repeats,
        methods,
        args.jobs,
        parts,
        args.report_only,
    )
    result["wall_s"] = time.perf_counter() - started
    rows = summarise(result)
    result["summary"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(rows))
    print(f"\n{result['wall_s']:.0f} s; results in {args.out}")


def _expand(names: list[str]) -> list[str]:
    from fcnet.table import HPOBENCH

    groups = {"twelve": list(ALL), "hpobench": list(HPOBENCH)}
    out: list[str] = []
    for n in names:
        out += [x for x in groups.get(n, [n]) if x not in out]
    return out


def main_parallel(args: argparse.Namespace, methods: list[str]) -> None:
    import exact_parallel

    methods = [m for m in methods if m != "ours-random"]
    started = time.perf_counter()
    parts = args.out.with_suffix(".parts.jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not (args.resume or args.report_only):
        parts.unlink(missing_ok=True)
    units = exact_parallel.run(
        args.datasets,
        args.budgets,
        args.repeats,
        args.parallel,
        methods,
        args.jobs,
        parts,
        dict(OURS_OVERRIDES),
        args.shared_width,
        args.report_only,
    )
    rows = exact_parallel.summarise(units)
    result = {
        "command": " ".join(sys.argv),
        "budgets": args.budgets,
        "repeats": args.repeats,
        "parallel": args.parallel,
        "methods": methods,
        "shared_width": args.shared_width,
        "wall_s": time.perf_counter() - started,
        "summary": rows,
        "units": units,
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(exact_parallel.markdown_summary(rows, methods))
    print()
    print(exact_parallel.markdown_clock(rows))
    print()
    print(exact_parallel.markdown_parallel(rows))
    over = sum(r["over_budget"] for r in rows)
    print(f"\n{result['wall_s']:.0f} s; {over} studies over budget; results in {args.out}")


if __name__ == "__main__":
    main()
