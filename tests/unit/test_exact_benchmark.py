"""The exact benchmark's parallel mode (benchmarks/exact_search.py --parallel): a small version.

A few studies of ours on an FCNet and an HPOBench table, on 8 simulated slots whose
trainings last as long as the tables recorded: no study may start more trainings than
its budget, and the report's clock figures must add up (compute is the sum of the
durations, utilisation is compute over slots x makespan). Not a speed target.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import event_sim
import families
from fcnet.table import load


@pytest.mark.parametrize("name", ["protein_structure", "car"])
def test_parallel_studies_keep_their_budget_and_report_utilisation(name: str) -> None:
    table = load(name)
    for k in range(3):
        spec, to_params = families.study(table, 40, k, parallel=8)
        mine = event_sim.run_ours(table, spec, to_params, 40, 8)
        theirs = event_sim.PEERS["random"](table, 40, k, 8)
        for out in (mine, theirs):
            assert 0 < out.trainings <= out.budget == 40, (name, k, out)
            assert out.makespan > 0
            assert out.utilisation == pytest.approx(out.compute / (8 * out.makespan))
            assert 0 < out.utilisation <= 1
            # 8 slots: the makespan is at least an eighth of the work, at most all of it
            assert out.compute / 8 <= out.makespan * (1 + 1e-9) <= out.compute * (1 + 1e-9)
        # random search's compute is exactly the sum of its trainings' recorded durations
        rows = event_sim.RandomPeer(table, 40, k).rows
        assert theirs.compute == pytest.approx(sum(table.duration(r, 1) for r in rows))


def test_one_slot_runs_back_to_back() -> None:
    """At P = 1 a slot never idles: makespan equals compute, utilisation is 1."""
    table = load("slice_localization")
    spec, to_params = families.study(table, 40, 0, parallel=1)
    out = event_sim.run_ours(table, spec, to_params, 40, 1)
    assert out.makespan == pytest.approx(out.compute)
    assert out.utilisation == pytest.approx(1.0)
