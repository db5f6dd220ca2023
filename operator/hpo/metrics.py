"""Prometheus metrics of the operator (served by ``hpo operator --metrics-port``)."""

from __future__ import annotations

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

PHASES = ("Pending", "RandomSearch", "BayesianSearch", "Succeeded", "Failed")


def set_phase(namespace: str, study: str, phase: str) -> None:
    for p in PHASES:
        STUDIES.labels(namespace, study, p).set(1 if p == phase else 0)
