"""Prometheus metrics of the operator (served by ``hpo operator --metrics-port``)."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

STUDIES = Gauge(
    "hpo_studies", "Studies by phase.", ["namespace", "study", "phase"], registry=REGISTRY
)
STARTED = Counter(
    "hpo_trainings_started_total",
    "Trainings started (one per seed).",
    ["namespace", "study"],
    registry=REGISTRY,
)
SUCCEEDED = Counter(
    "hpo_trainings_succeeded_total",
    "Trainings recorded as succeeded.",
    ["namespace", "study"],
    registry=REGISTRY,
)
FAILED = Counter(
    "hpo_trainings_failed_total",
    "Failed training attempts (retried or final).",
    ["namespace", "study"],
    registry=REGISTRY,
)
DISRUPTED = Counter(
    "hpo_trainings_disrupted_total",
    "Trainings whose pod the infrastructure ended (preempted, evicted, node lost, deleted): "
    "run again without an attempt up to trainer.maxDisruptions. Reason: the DisruptionTarget "
    "reason, NodeLost or Deleted.",
    ["namespace", "study", "reason"],
    registry=REGISTRY,
)
QUEUED = Gauge(
    "hpo_trainings_queued",
    "Trainings in pods that wait for the cluster's capacity (unschedulable, held by a queue).",
    ["namespace", "study"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "hpo_training_duration_seconds",
    "Wall time of one training in its trainer.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
BEST_MAE = Gauge(
    "hpo_best_mae",
    "Best mean test MAE (standardised labels) of a study.",
    ["namespace", "study"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "hpo_reconcile_errors_total",
    "Reconciliation steps that failed and were retried.",
    ["namespace", "study"],
    registry=REGISTRY,
)

#: ``hpo_studies``'s phases: one series per study and phase, 1 for the phase it is in.
PHASES = ("Pending", "RandomSearch", "NarrowSearch", "Succeeded", "Failed")
#: Phases an older operator wrote, by their name now. ``BayesianSearch`` (the narrow stage,
#: before it was renamed) counts as ``NarrowSearch`` and gets no series of its own: a study
#: written before the upgrade is then never counted under both names (a sum over the phases
#: stays one per study), and a dashboard needs to know one name only.
RENAMED = {"BayesianSearch": "NarrowSearch"}


def set_phase(namespace: str, study: str, phase: str) -> None:
    phase = RENAMED.get(phase, phase)
    for p in PHASES:
        STUDIES.labels(namespace, study, p).set(1 if p == phase else 0)


def finished(namespace: str, study: str, status: dict[str, Any]) -> None:
    """A study that ended before this process saw it run: counted from its status."""
    set_phase(namespace, study, str(status.get("phase")))
    best = status.get("best") or {}
    if isinstance(best, dict) and isinstance(best.get("maeMean"), int | float):
        BEST_MAE.labels(namespace, study).set(best["maeMean"])


def forget(namespace: str, study: str) -> None:
    """A deleted study is no longer counted in any phase (its counters stay: totals)."""
    for p in PHASES:
        with contextlib.suppress(KeyError):
            STUDIES.remove(namespace, study, p)
    for gauge in (BEST_MAE, QUEUED):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, study)
