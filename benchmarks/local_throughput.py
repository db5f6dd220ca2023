"""Local throughput: trainings per minute at parallelism 1 and 2, and the cost around each fit.

Runs the same random-stage-only study (same configurations, same seeds) at
parallelism 1 and 2 with the local runner, and, as the alternative, a fresh
``python -m hpo_trainer`` process per training. Prints a table; nothing is
asserted (machines here are shared: compare the ratios within one run).

    .venv/bin/python benchmarks/local_throughput.py [--configs 6] [--seeds 2] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "operator"))

from hpo.data.checks import check_dataset  # noqa: E402
from hpo.local.runner import LocalRunner  # noqa: E402
from hpo.session import training_request  # noqa: E402
from hpo.study.spec import load_study  # noqa: E402


def study_file(folder: Path, configs: int, seeds: int, epochs: int) -> Path:
    raw = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    raw["metadata"]["name"] = "throughput"
    spec = raw["spec"]
    spec["dataset"]["path"] = str(REPO / "examples" / "data" / "transistor.csv")
    spec["training"].update(epochs=epochs, patience=epochs, seedsPerConfig=seeds)
    spec["randomStage"]["configurations"] = configs
    spec["bayesianStage"] = {"enabled": False}
    path = folder / "throughput.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_local(path: Path, out: Path, parallelism: int) -> dict[str, float]:
    study = load_study(path)
    done_at: list[float] = []

    def listener(event: str, progress: object, result: object) -> None:
        if event == "result":
            done_at.append(time.perf_counter())

    start = time.perf_counter()
    outcome = LocalRunner(study, out, parallelism=parallelism, listener=listener).run()
    wall = time.perf_counter() - start
    rs = [r for r in outcome.engine.recorded() if r.status == "succeeded"]
    fit = sum(r.fit_s for r in rs)
    inside = statistics.fmean(r.runtime_s - r.fit_s for r in rs[parallelism:])
    # Once every worker has TensorFlow loaded: completions after the first round.
    steady = done_at[parallelism - 1 :]
    return {
        "n": len(rs),
        "wall": wall,
        "per_min": 60 * len(rs) / wall,
        "steady_per_min": 60 * (len(steady) - 1) / (steady[-1] - steady[0]),
        "fit_mean": fit / len(rs),
        # Everything that is not model.fit, spread over the trainings (start-up included).
        "overhead_run": (wall * parallelism - fit) / len(rs),
        # Around each fit in a warm worker: data, build, predict, save, upload.
        "overhead_warm": inside,
    }


def run_process_per_training(path: Path, out: Path, n: int) -> dict[str, float]:
    """The alternative: a new trainer process (and TensorFlow import) per training."""
    from hpo.engine import Engine

    study = load_study(path)
    prepared = check_dataset(study)
    tasks = Engine(study.spec).next_tasks(n)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    fits = []
    for task in tasks:
        request = training_request(study, prepared, [task])
        cmd = [sys.executable, "-m", "hpo_trainer", "--request", request.to_json()]
        proc = subprocess.run(
            [*cmd, "--store-root", str(out)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        fits.append(json.loads(proc.stdout.strip().splitlines()[-1])["fit_s"])
    wall = time.perf_counter() - start
    return {
        "n": n,
        "wall": wall,
        "per_min": 60 * n / wall,
        "steady_per_min": 60 * n / wall,
        "fit_mean": statistics.fmean(fits),
        "overhead_run": (wall - sum(fits)) / n,
        "overhead_warm": float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--per-process", type=int, default=4, help="trainings for the alternative")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = study_file(folder, args.configs, args.seeds, args.epochs)
        p1 = run_local(path, folder / "p1", 1)
        p2 = run_local(path, folder / "p2", 2)
        alt = run_process_per_training(path, folder / "alt", args.per_process)
    print(f"machine: {os.cpu_count()} cores; {args.configs} configs x {args.seeds} seeds, ")
    print(f"{args.epochs} epochs on examples/data/transistor.csv\n")
    header = (
        f"{'mode':<24}{'trainings':>10}{'wall s':>8}{'per min':>8}{'steady':>8}{'fit s':>7}"
        f"{'overhead/run':>14}{'overhead/warm':>15}"
    )
    print(header)
    print("-" * len(header))
    for name, m in (
        ("local, parallelism 1", p1),
        ("local, parallelism 2", p2),
        ("process per training", alt),
    ):
        run_pct = 100 * m["overhead_run"] / m["fit_mean"]
        warm = m["overhead_warm"]
        warm_s = "-" if warm != warm else f"{warm:.2f}s {100 * warm / m['fit_mean']:.0f}%"
        print(
            f"{name:<24}{m['n']:>10.0f}{m['wall']:>8.1f}{m['per_min']:>8.1f}"
            f"{m['steady_per_min']:>8.1f}{m['fit_mean']:>7.2f}"
            f"{m['overhead_run']:>8.2f}s {run_pct:>3.0f}%{warm_s:>15}"
        )
    print()
    print(f"speed-up parallelism 2 / 1:           {p2['per_min'] / p1['per_min']:.2f}x")
    steady = p2["steady_per_min"] / p1["steady_per_min"]
    print(f"  once workers are warm (steady):     {steady:.2f}x")
    print(f"  fit time, parallelism 2 / 1:        {p2['fit_mean'] / p1['fit_mean']:.2f}x slower")
    print(f"local p1 / process per training:      {p1['per_min'] / alt['per_min']:.2f}x")
    print("overhead/run: (wall x parallelism - sum of fit times) / trainings, start-up included")
    print("overhead/warm: runtime minus fit inside a warm worker (data, build, score, save)")


if __name__ == "__main__":
    main()
