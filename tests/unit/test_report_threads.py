"""Report plots drawn by many studies at once: one operator finishes its studies in
threads of their own, and matplotlib's mathtext (the log axis' ``10^{-2}`` tick labels)
is not thread-safe (matplotlib issue 26289). Seen with 50 concurrent studies: final
reports failed with ``ParseFatalException: Unknown symbol: \\mathdefault``, their loops
restarted, failed again, and the studies took minutes to end."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

from hpo.records.report import PLOT_FILES, final_group, make_plots
from hpo.study.contract import SeedResult
from unit.test_report import LABELS, PNG_MAGIC, result

THREADS = 12


def scaled(i: int) -> list[SeedResult]:
    """A study whose MAEs span two decades at a scale of its own: log axes whose tick
    labels no other thread has drawn yet (mathtext caches what it has parsed)."""
    base = 10.0 ** (-(i % 6)) * (1 + i // 6)
    return [result(f"r{k:04d}", 0, base * 10 ** (k / 4)) for k in range(1, 10)]


def test_plots_drawn_in_many_threads_at_once_all_come_out(tmp_path: Path) -> None:
    start = threading.Barrier(THREADS)

    def draw(i: int) -> list[Path]:
        results = scaled(i)
        group = final_group(results, LABELS, {}, 3)
        start.wait()
        return make_plots(results, group, tmp_path / str(i))

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        drawn = list(pool.map(draw, range(THREADS)))  # re-raises a failed drawing

    for paths in drawn:
        assert [p.name for p in paths] == list(PLOT_FILES)
        for path in paths:
            assert path.read_bytes()[:8] == PNG_MAGIC
