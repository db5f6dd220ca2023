"""Every decision of ours on the FCNet tables, as one digest: is a change a pure refactoring?

For each dataset, budget, repeat and parallelism, one study runs to its end on
the exact benchmark's lookup trainer and its pick, its training count and the
order of every training it started (trial, configuration key, seed) are
recorded. Two runs print the same digest exactly when every study made the
same trainings in the same order and handed back the same pick; the per-study
lines (``--out``) show where they part.

    .venv/bin/python benchmarks/search_fingerprint.py --out /tmp/before.jsonl
    # ... change the code ...
    .venv/bin/python benchmarks/search_fingerprint.py --out /tmp/after.jsonl
    diff /tmp/before.jsonl /tmp/after.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fcnet import ours
from fcnet.table import DATASETS, load


def one(args: tuple[str, int, int, int, str]) -> dict[str, Any]:
    name, budget, seed, parallelism, method = args
    order: list[tuple[str, str, int]] = []
    overrides = {"parallelism": parallelism, "bayesianStage": {"method": method}}
    outcome = ours.run(load(name), budget, seed, overrides, order=order)
    digest = hashlib.sha256(json.dumps(order).encode()).hexdigest()[:16]
    return {
        "dataset": name,
        "budget": budget,
        "seed": seed,
        "parallelism": parallelism,
        "pick": outcome.pick,
        "trainings": outcome.trainings,
        "order": digest,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--budgets", nargs="+", type=int, default=[40, 80, 160])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--parallelism", nargs="+", type=int, default=[1, 8])
    ap.add_argument(
        "--method",
        default="localSearch",
        choices=["localSearch", "gaussianProcess"],
        help="the narrow stage's strategy (gaussianProcess: seconds per study, not milliseconds)",
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, help="one JSON line per study")
    args = ap.parse_args()
    cells = [
        (name, budget, seed, p, args.method)
        for name in args.datasets
        for budget in args.budgets
        for seed in range(args.repeats)
        for p in args.parallelism
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, cells))
    lines = [json.dumps(row, sort_keys=True) for row in rows]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    total = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    print(f"{len(rows)} studies, {sum(r['trainings'] for r in rows)} trainings; digest {total}")


if __name__ == "__main__":
    main()
