"""Many studies at once on one operator (``benchmarks/operator_many.py``, small): every
study, in every namespace, ends with every training in its ledger exactly once, also on a
busy cluster that keeps most pods waiting for capacity and preempts some while they run.
Correctness only: the benchmark's timings are printed by the script, never asserted."""

from __future__ import annotations

import sys

from helpers.study import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from operator_many import Plan, run  # benchmarks/ is no package

TIMEOUT_S = 900.0


def test_studies_in_several_namespaces_record_every_training_once() -> None:
    result = run(
        Plan(studies=4, namespaces=2, trainings=60, parallelism=5), quiet=True, timeout_s=TIMEOUT_S
    )

    assert result.bad_studies == []
    assert result.all_recorded_once
    assert result.pods_per_training == 1.0  # no training ran twice


def test_queued_and_preempted_pods_still_record_every_training_once() -> None:
    plan = Plan(studies=3, namespaces=2, trainings=40, parallelism=5, capacity=3, preempt=0.1)

    result = run(plan, quiet=True, timeout_s=TIMEOUT_S)

    assert result.bad_studies == []
    assert result.all_recorded_once
    assert result.failed_trainings == 0  # waiting and preemption cost no attempt
    assert result.preempted > 0
    assert result.requeued == result.preempted  # each preempted training ran again ...
    # ... in one more pod, and nothing else ran twice.
    assert round(result.pods_per_training * result.trainings) == result.trainings + result.preempted
    assert result.most_queued > 0  # pods did wait for capacity, and were counted queued
