"""How long writing and reading the Excel ledger takes for big studies.

Run: ``.venv/bin/python benchmarks/ledger_write.py``. Prints seconds for
``write_ledger`` (whole workbook, all four sheets, into a ``LocalStore``) and
``read_ledger`` for 1,000 and 10,000 trainings with 3 labels and 3 seeds per
configuration, and checks the round trip on the way.
"""

from __future__ import annotations

import random
import tempfile
import time
from typing import Any

from hpo.records.ledger import read_ledger, write_ledger
from hpo.records.report import final_group
from hpo.store import LocalStore
from hpo.study.contract import SeedResult
from hpo.study.layout import StudyPaths
from hpo.study.spec import Threshold

LABELS = ["yield", "strength", "density"]
SEEDS = 3
BENCH = StudyPaths("bench")
STUDY: dict[str, Any] = {
    "metadata": {"name": "bench"},
    "spec": {"searchSpace": {"neurons": {"min": 8, "max": 256}}, "seeds": list(range(SEEDS))},
}


def synthetic(trainings: int, seed: int = 0) -> list[SeedResult]:
    """A random-then-Bayesian study: a sixth of the configurations random, 5 % failures."""
    rng = random.Random(seed)
    configs = trainings // SEEDS
    results = []
    for i in range(trainings):
        c = i // SEEDS
        random_stage = c < configs // 6
        layers = rng.randint(1, 5)
        config = {
            "hidden_layers": layers,
            "neurons": [rng.choice([8, 16, 32, 64, 128, 256]) for _ in range(layers)],
            "activation": rng.choice(["relu", "tanh", "elu"]),
            "learning_rate": 10 ** rng.uniform(-5, -1),
            "batch_size": rng.choice([16, 32, 64, 128]),
            "optimizer": rng.choice(["adam", "rmsprop", "sgd"]),
        }
        succeeded = rng.random() > 0.05
        trial = f"r{c:04d}" if random_stage else f"b{c:04d}"
        results.append(
            SeedResult(
                study="bench",
                trial=trial,
                stage="random" if random_stage else "bayesian",
                parent=None if random_stage else f"r{rng.randrange(max(configs // 6, 1)):04d}",
                config=config,
                config_key=f"{rng.getrandbits(64):016x}",
                seed=i % SEEDS,
                status="succeeded" if succeeded else "failed",
                mae=rng.uniform(0.1, 1.5) if succeeded else None,
                per_label={
                    label: {"mae": rng.uniform(0.5, 50), "pct": rng.uniform(1, 40)}
                    for label in LABELS
                }
                if succeeded
                else {},
                runtime_s=rng.uniform(5, 600),
                fit_s=rng.uniform(4, 590),
                epochs_run=rng.randint(5, 200),
                error=None if succeeded else "ResourceExhaustedError: OOM when allocating tensor",
                artifacts=BENCH.seed(trial, i % SEEDS) if succeeded else None,
            )
        )
    return results


def main() -> None:
    print(f"{'trainings':>10} {'write s':>8} {'read s':>8} {'size MB':>8}  round trip")
    for n in (1_000, 10_000):
        results = synthetic(n)
        best = final_group(results, LABELS, {"yield": Threshold(max_mae=10.0)}, 10)
        with tempfile.TemporaryDirectory() as tmp:
            store = LocalStore(tmp)
            start = time.perf_counter()
            write_ledger(store, BENCH.ledger, results, LABELS, best, STUDY)
            wrote = time.perf_counter()
            back = read_ledger(store, BENCH.ledger)
            read = time.perf_counter()
            size = len(store.get_bytes(BENCH.ledger)) / 1e6
        exact = back == sorted(results, key=lambda r: (r.trial, r.seed))
        print(
            f"{n:>10,} {wrote - start:>8.2f} {read - wrote:>8.2f} {size:>8.2f}  "
            f"{'exact' if exact else 'MISMATCH'}"
        )


if __name__ == "__main__":
    main()
