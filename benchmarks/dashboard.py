"""What the dashboard costs on a big study: page load time and the server's cost per refresh.

Run: ``.venv/bin/python benchmarks/dashboard.py [--trainings 5000] [--small 50] [--s3]``
(``--s3``: the studies uploaded to the S3 test server, ``tests/support/s3server.py``,
and served from ``s3://`` over plain http).
Needs Debian's chromium + chromium-driver (``make install-test`` installs them).

Writes a synthetic finished study (a real ledger through ``hpo.records.ledger.write_ledger``,
best.json through ``hpo.records.report.final_group``, each success's
``trials/<trial>/seed-<n>/scores.json``; no model files) of ``--trainings``
trainings and one of ``--small``, serves them with ``hpo dashboard`` (a subprocess) and
measures, for each:

- the first ``/api/study`` (the ledger read and the page data built: once per revision);
- the study page's load in headless Chromium, to its tables drawn (usable; the parallel
  coordinates, WebGL, are drawn last; the page's own clock) and to every table and chart
  drawn (at the client; median of 3),
  and of that the page shell with Plotly.js parsed (DOMContentLoaded), the same for any study;
- one refresh: a conditional GET of ``/api/study`` and of ``/api/studies`` that finds
  nothing changed (304), as the pages poll: wall time at the client and the server
  process's CPU time (from /proc), averaged over ``--refreshes``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from hpo.records.ledger import write_ledger
from hpo.records.recorder import best_records
from hpo.records.report import final_group
from hpo.study.contract import SeedResult
from hpo.study.layout import StudyPaths
from hpo.study.spec import Threshold

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import browser

LABELS = ["Id_mA", "gm_mS", "gds_uS"]
SEEDS = 2


def study_resource(name: str, trainings: int) -> dict[str, Any]:
    configs = trainings // SEEDS
    random_configs = configs // 3
    return {
        "apiVersion": "hpo-operator.dev/v1alpha1",
        "kind": "HPOStudy",
        "metadata": {"name": name},
        "spec": {
            "dataset": {"path": "data.csv", "labels": LABELS},
            "training": {"seedsPerConfig": SEEDS, "seedRacing": False},
            "randomStage": {"configurations": random_configs},
            "bayesianStage": {"topK": 1, "trialsPerConfig": configs - random_configs},
            "failurePolicy": {"maxFailedTrainings": trainings},
            "result": {"size": 5, "thresholds": {"Id_mA": {"maxPercent": 20}}},
        },
    }


def synthetic(name: str, trainings: int, seed: int = 0) -> list[SeedResult]:
    """A third of the configurations random, the rest narrow; 2 % failures."""
    rng = random.Random(seed)
    configs = trainings // SEEDS
    out, t = [], 1.79e9
    for i in range(configs * SEEDS):
        c = i // SEEDS
        random_stage = c < configs // 3
        layers = rng.randint(1, 4)
        config = {
            "hidden_layers": layers,
            "neurons": [rng.choice([16, 32, 64, 128]) for _ in range(layers)],
            "activation": rng.choice(["relu", "tanh", "gelu"]),
            "learning_rate": round(10 ** rng.uniform(-4, -1.5), 6),
            "batch_size": rng.choice([32, 64]),
            "optimizer": rng.choice(["adam", "nadam"]),
            "dropout": 0.0,
            "l2": 0.0,
            "lr_schedule": rng.choice(["constant", "cosine"]),
        }
        ok = rng.random() > 0.02
        score = rng.uniform(0.05, 1.0) * (1.0 if random_stage else 0.6)
        t += rng.uniform(1, 30)
        trial = f"r{c:05d}" if random_stage else f"b{c:05d}"
        out.append(
            SeedResult(
                study=name,
                trial=trial,
                stage="random" if random_stage else "bayesian",
                parent=None if random_stage else "r00000",
                config=config,
                config_key=f"k{c:06d}",
                seed=1 + i % SEEDS,
                status="succeeded" if ok else "failed",
                mae=score * 1.05 if ok else None,
                val_mae=score if ok else None,
                per_label={lb: {"mae": score * 3, "pct": score * 40} for lb in LABELS}
                if ok
                else {},
                runtime_s=rng.uniform(5, 60),
                fit_s=rng.uniform(4, 55),
                epochs_run=rng.randint(5, 100),
                error=None if ok else f"ResourceExhaustedError: OOM in trial {trial}",
                finished_at=t,
            )
        )
    return out


def write_study(root: Path, name: str, trainings: int) -> None:
    from hpo.store import LocalStore

    store, paths = LocalStore(root), StudyPaths(name)
    resource = study_resource(name, trainings)
    results = synthetic(name, trainings)
    store.put_bytes(paths.study, yaml.safe_dump(resource, sort_keys=False).encode())
    best = final_group(results, LABELS, {"Id_mA": Threshold(max_percent=20.0)}, 5)
    for r in results:  # as the trainer stores each success (artifacts besides: not read here)
        if r.status == "succeeded":
            store.put_bytes(paths.scores(r.trial, r.seed), r.to_json().encode())
    write_ledger(store, paths.ledger, results, LABELS, best, resource)
    store.put_bytes(paths.best, json.dumps(best_records(best)).encode())


@contextlib.contextmanager
def uploaded(root: Path) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """The studies under ``root`` on a running S3 test server: where, options, env."""
    from helpers.s3 import new_s3_store
    from support.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server

    with S3Server() as s3:
        store = new_s3_store(s3, prefix="")
        started = time.perf_counter()
        for f in root.rglob("*"):
            if f.is_file():
                store.put_file(f.relative_to(root).as_posix(), f)
        print(f"uploaded to the S3 test server in {time.perf_counter() - started:.1f}s")
        keys = {"HPO_S3_ACCESS_KEY": TEST_ACCESS_KEY, "HPO_S3_SECRET_KEY": TEST_SECRET_KEY}
        yield (
            f"s3://{store.bucket}",
            ["--endpoint", s3.endpoint, "--no-tls"],
            {
                **os.environ,
                **keys,
            },
        )


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(url: str, etag: str | None = None) -> tuple[int, str | None, int]:
    request = urllib.request.Request(url, headers={"If-None-Match": etag} if etag else {})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, r.headers.get("ETag"), len(r.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return 304, etag, 0
        raise


def cold(base: str, name: str) -> tuple[float, int]:
    """The first ``/api/study`` of a study (its ledger read, its page data built)."""
    started = time.perf_counter()
    _, _, size = get(f"{base}/api/study?id={name}")
    return time.perf_counter() - started, size


def measure(
    base: str, pid: int, name: str, refreshes: int, driver: Any, first: tuple[float, int]
) -> dict[str, float]:
    url = f"{base}/api/study?id={name}"
    loads, shells, parts = [], [], []
    for _ in range(3):
        started = time.perf_counter()
        driver.get(f"{base}/study?id={name}")
        browser.wait_for(
            lambda: driver.execute_script(
                "return document.querySelectorAll('#trainings tbody tr').length > 0"
                " && document.querySelectorAll('#final-table tbody tr').length > 0"
                " && !!document.querySelector('#chart-parcoords .main-svg');"
            ),
            300,
            "the page drawn",
        )
        loads.append(time.perf_counter() - started)
        browser.wait_for(
            lambda: driver.execute_script("return window.hpoTimings.all_drawn_at_ms;"), 300
        )
        parts.append(driver.execute_script("return window.hpoTimings;"))
        shells.append(
            driver.execute_script(
                "return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd;"
            )
            / 1e3
        )
    driver.get("about:blank")  # no poller of its own while the refreshes are timed
    walls, cpus = [], []
    for api in (url, f"{base}/api/studies"):
        _, tag, _ = get(api)
        cpu0, t0 = cpu_s(pid), time.perf_counter()
        for _ in range(refreshes):
            status, _, _ = get(api, tag)
            assert status == 304, status
        walls.append((time.perf_counter() - t0) / refreshes)
        cpus.append((cpu_s(pid) - cpu0) / refreshes)
    drawn = {f"browser_{k}": statistics.median(p[k] for p in parts) for k in parts[0]}
    return {
        "first_api_s": first[0],
        "json_mb": first[1] / 1e6,
        "page_shown_s": statistics.median(p["shown_at_ms"] for p in parts) / 1e3,
        "page_load_s": statistics.median(loads),
        "of_which_shell_s": statistics.median(shells),
        "refresh_study_ms": walls[0] * 1e3,
        "refresh_study_cpu_ms": cpus[0] * 1e3,
        "refresh_list_ms": walls[1] * 1e3,
        "refresh_list_cpu_ms": cpus[1] * 1e3,
        **drawn,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", type=int, default=5000)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--refreshes", type=int, default=200)
    parser.add_argument("--s3", action="store_true", help="serve from the S3 test server")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp) / "runs"
        sizes = {"big": args.trainings, "small": args.small}
        for name, n in sizes.items():
            started = time.perf_counter()
            write_study(root, name, n)
            print(f"wrote {name}: {n} trainings in {time.perf_counter() - started:.1f}s")
        where, options, env = str(root), [], dict(os.environ)
        if args.s3:
            where, options, env = stack.enter_context(uploaded(root))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "hpo.cli", "dashboard", where, "--port", str(port), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        driver = browser.chromium()
        try:
            browser.wait_for(lambda: get(base + "/")[0] == 200, 60, "the server")
            firsts = {name: cold(base, name) for name in sizes}  # before any list builds them
            results = {
                name: measure(base, server.pid, name, args.refreshes, driver, firsts[name])
                for name in sizes
            }
        finally:
            driver.quit()
            server.terminate()
            server.wait(10)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"{'':26}" + "".join(f"{f'{n} ({sizes[n]})':>16}" for n in results))
    for key in results["big"]:
        print(f"{key:26}" + "".join(f"{results[n][key]:16.3f}" for n in results))


if __name__ == "__main__":
    main()
