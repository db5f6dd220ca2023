"""Ours against the strongest peers on the exact tables: SMAC3, HEBO, Optuna TPE, random.

Paired repeats: repeat k seeds every method with k, on the same table and budget.
A study's pick is scored by its true rank (its mean over the table's seeds), its
cost by the trainings it started and the wall-clock seconds the method itself took
(table lookups cost nothing, so that is the search's own overhead per study). Peers
run as ``event_sim`` drives them (one training per proposal, asynchronous ask/tell
at ``--parallel`` > 1); SMAC3 and HEBO in their own venvs (``remote.py``).

    make bench-peers     # once: benchmarks/.venv-smac and benchmarks/.venv-hebo
    .venv/bin/python benchmarks/peers_extra/compare.py --datasets protein_structure car phoneme \\
        --budget 80 --repeats 20 --hebo-repeats 10 --jobs 2

Finished studies are appended to ``<out>.parts.jsonl`` at once and not run again, so a
long run can be stopped and continued; the summary goes to ``<out>``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from event_sim import PEERS, run_ours  # noqa: E402
from families import study  # noqa: E402
from fcnet.table import ALL, HPOBENCH, load  # noqa: E402

METHODS = ("ours", "ours-per-layer", "random", "tpe", "smac", "hebo")
RESULTS = HERE.parent / "results" / "peers_extra.json"


OURS = ("ours", "ours-per-layer")


def one_study(
    dataset: str, method: str, k: int, budget: int, parallel: int, trainings: int
) -> dict[str, Any]:
    """One study of ``method`` on ``dataset``, seeded by ``k``: ours sized for ``budget``, a
    peer given ``trainings``. On HPOBench's tables ours shares one width over the layers
    (``sharedWidth``, as the table does); ``ours-per-layer`` draws a width per layer, of
    which the table reads the first."""
    table = load(dataset)
    if method in OURS:
        shared = method == "ours" and dataset in HPOBENCH
        spec, to_params = study(table, budget, k, parallel, shared_width=shared)
        outcome = run_ours(table, spec, to_params, budget, parallel)
    else:
        import remote  # noqa: F401  (registers smac and hebo)

        outcome = PEERS[method](table, trainings, k, parallel)
    return {"dataset": dataset, "method": method, "k": k, **outcome.as_dict(table)}


def _key(dataset: str, method: str, k: int, budget: int, parallel: int) -> str:
    return json.dumps([dataset, method, k, budget, parallel])


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def run(
    units: list[tuple[str, str, int]],
    budget: int,
    parallel: int,
    jobs: int,
    parts: Path,
    report_only: bool = False,
) -> list[dict[str, Any]]:
    """Every unit not in ``parts`` yet, ``jobs`` at a time; returns all units' results.

    Ours first: a peer then gets as many trainings as ours started in the same repeat
    (ours' budget may be overrun, e.g. by racing: every pair is at equal trainings)."""
    done: dict[str, dict[str, Any]] = {}
    if parts.exists():
        for line in parts.read_text().splitlines():
            r = json.loads(line)
            done[_key(r["dataset"], r["method"], r["k"], budget, parallel)] = r
    todo = [u for u in units if _key(*u, budget, parallel) not in done]
    if report_only:  # what is done so far, nothing run
        return [done[k] for k in (_key(*u, budget, parallel) for u in units) if k in done]
    print(f"{len(units) - len(todo)} studies done before, {len(todo)} to run", flush=True)
    with ProcessPoolExecutor(jobs, initializer=_one_thread) as pool, parts.open("a") as out:
        for phase in (True, False):  # ours, then the peers
            futures = []
            for d, m, k in todo:
                if (m in OURS) == phase:
                    ours = done.get(_key(d, "ours", k, budget, parallel))
                    n = ours["trainings"] if ours else budget
                    futures.append(pool.submit(one_study, d, m, k, budget, parallel, n))
            for f in as_completed(futures):
                r = f.result()
                done[_key(r["dataset"], r["method"], r["k"], budget, parallel)] = r
                out.write(json.dumps(r) + "\n")
                out.flush()
                print(
                    f"{r['dataset']:>18} {r['method']:>14} k={r['k']:<3} "
                    f"rank {r['rank_pct']:.3f}% trainings {r['trainings']} {r['seconds']:.1f}s",
                    flush=True,
                )
    return [done[_key(*u, budget, parallel)] for u in units]


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per dataset and method: median rank, trainings, seconds per study, and the paired
    Wilcoxon test of ours against it (two-sided, on the repeats both ran)."""
    from scipy.stats import wilcoxon

    by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in results:
        by.setdefault((r["dataset"], r["method"]), {})[r["k"]] = r
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (dataset, method), rs in sorted(by.items()):
        ranks = [r["rank_pct"] for r in rs.values()]
        row: dict[str, Any] = {
            "repeats": len(rs),
            "median_rank_pct": statistics.median(ranks),
            "mean_rank_pct": statistics.fmean(ranks),
            "median_trainings": statistics.median(r["trainings"] for r in rs.values()),
            "max_trainings": max(r["trainings"] for r in rs.values()),
            "over_budget": sum(r["trainings"] > r["budget"] for r in rs.values()),
            "seconds_per_study": statistics.median(r["seconds"] for r in rs.values()),
        }
        ours = by.get((dataset, "ours"), {})
        pairs = [(ours[k]["rank_pct"], rs[k]["rank_pct"]) for k in rs if k in ours]
        if method != "ours" and pairs:
            diff = [a - b for a, b in pairs]
            row["ours_better"] = sum(d < 0 for d in diff)
            row["ours_worse"] = sum(d > 0 for d in diff)
            nonzero = [d for d in diff if d != 0]
            row["p_wilcoxon"] = float(wilcoxon(nonzero).pvalue) if len(nonzero) >= 5 else None
        out.setdefault(dataset, {})[method] = row
    return out


def table_text(summary: dict[str, dict[str, dict[str, Any]]], methods: list[str]) -> str:
    lines = [
        "| dataset | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for dataset, rows in summary.items():
        cells = []
        for m in methods:
            r = rows.get(m)
            if r is None:
                cells.append("")
                continue
            cell = f"{r['median_rank_pct']:.3f}% ({r['repeats']}, {r['seconds_per_study']:.1f}s)"
            if r.get("p_wilcoxon") is not None:
                cell += f" p={r['p_wilcoxon']:.2g}"
            cells.append(cell)
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["protein_structure", "car", "phoneme"])
    ap.add_argument("--budget", type=int, default=80)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--hebo-repeats", type=int, default=10, help="HEBO is slow: fewer repeats")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report", action="store_true", help="table what is done, run nothing")
    args = ap.parse_args()
    unknown = [d for d in args.datasets if d not in ALL]
    if unknown:
        ap.error(f"unknown dataset {unknown[0]!r}; choose from {', '.join(ALL)}")
    units = []
    for k in range(args.repeats):
        for dataset in args.datasets:
            for m in args.methods:
                if m == "ours-per-layer" and dataset not in HPOBENCH:
                    continue  # the same study as ours on FCNet
                if m == "hebo" and k >= args.hebo_repeats:
                    continue
                units.append((dataset, m, k))
    parts = args.out.with_suffix(".parts.jsonl")
    parts.parent.mkdir(parents=True, exist_ok=True)
    results = run(units, args.budget, args.parallel, args.jobs, parts, args.report)
    summary = summarise(results)
    report = {
        "command": " ".join(["benchmarks/peers_extra/compare.py", *sys.argv[1:]]),
        "budget": args.budget,
        "parallel": args.parallel,
        "summary": summary,
        "studies": results,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(table_text(summary, args.methods))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
