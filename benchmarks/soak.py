"""A soak: one study of 2,000 instant trainings; the operator's memory must not creep.

The set-up of ``operator_scale.py`` (API emulator, moto S3 server, a test
kubelet that completes pods at once with synthetic scores, the operator as a
process of its own). The operator's resident memory (VmRSS of its process
only; the emulator keeps every object and request and grows, but apart) is
sampled while the study runs. Exits 1 if its level at the end of the study
is more than ``--limit`` % above its level after the first 200 trainings.

Each level is the median of the samples over a window of 5 % of the study
(so a ledger write in flight does not decide it): the early one from 200
recorded trainings on, the end one up to the last training recorded. The
final report (last ledger write, final group, plots: it loads matplotlib
once per operator) comes after that and is printed for information.

    .venv/bin/python benchmarks/soak.py [--trainings 2000] [--early 200] [--limit 10]
    make soak
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from operator_scale import Sample, bench


def level(samples: list[Sample], lo: int, hi: int) -> tuple[float, int]:
    """Median RSS of the samples with ``lo <= recorded < hi``, and how many there were."""
    window = [s.rss_mb for s in samples if lo <= s.recorded < hi]
    return (statistics.median(window) if window else float("nan")), len(window)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trainings", type=int, default=2000)
    ap.add_argument("--early", type=int, default=200, help="trainings before the first level")
    ap.add_argument("--limit", type=float, default=10.0, help="allowed growth, in %%")
    ap.add_argument("--parallelism", type=int, default=10)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    n = args.trainings
    span = max(1, int(0.05 * n))
    progress = {"next": 0}

    def tell(s: Sample) -> None:
        if s.recorded >= progress["next"]:
            print(
                f"  {s.t:6.1f}s  {s.recorded:>5} recorded  operator RSS {s.rss_mb:6.1f} MB",
                flush=True,
            )
            progress["next"] = s.recorded + max(1, n // 10)

    started = time.perf_counter()
    with bench() as b:
        o = b.run(n, args.parallelism, on_sample=tell)
    took = time.perf_counter() - started
    if o.phase != "Succeeded":
        print(f"the study ended {o.phase or 'without a phase'}: no verdict")
        return 1
    early, n_early = level(o.samples, args.early, args.early + span)
    end, n_end = level(o.samples, n - span, n)  # the final report starts at n
    final = o.samples[-1].rss_mb
    growth = 100 * (end / early - 1)
    print(
        f"\n{n} trainings in {o.wall_s:.0f}s (whole soak {took:.0f}s), "
        f"parallelism {args.parallelism}; operator RSS (median over {span} trainings):"
    )
    print(f"  after {args.early:>5} trainings: {early:7.1f} MB ({n_early} samples)")
    print(f"  at the end ({n - span}-{n}): {end:7.1f} MB ({n_end} samples)")
    print(f"  growth: {growth:+.1f} % (limit {args.limit:.0f} %)")
    print(
        f"  after the final report (plots; once per operator): {final:.1f} MB; "
        f"peak {o.peak_rss_mb:.1f} MB"
    )
    ok = growth <= args.limit
    print("PASS" if ok else f"FAIL: operator memory grew by more than {args.limit:.0f} %")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
