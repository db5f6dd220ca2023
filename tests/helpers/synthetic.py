"""A stand-in for the trainer where a test or benchmark is about scheduling, not training.

``synthetic(store)`` answers a trainer pod at once (for the test kubelet's
``instant`` behaviour): it writes each seed's ``scores.json`` exactly where the
real trainer writes it and returns the termination message the trainer would.
Scores come from a smooth function of the configuration, so the narrow stage
has something to optimise.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from hpo.engine import Task
from hpo.store import Store
from hpo.study.contract import SeedResult, TrainingRequest
from hpo.study.layout import StudyPaths


def synthetic_mae(config: dict[str, Any], seed: int) -> float:
    return (
        abs(math.log10(config["learning_rate"]) + 2.0) / 10
        + sum(config["neurons"]) / 1000
        + seed / 1e4
    )


def synthetic_success(task: Task, study: str, labels: Iterable[str]) -> SeedResult:
    """``task``'s success with synthetic scores, as the trainer reports it: the selection
    score ``synthetic_mae``, the test MAE 0.5 above it, artifacts where the trainer puts them."""
    mae = synthetic_mae(task.trial.config, task.seed)
    return task.succeeded(
        study,
        mae=mae + 0.5,
        val_mae=mae,
        per_label={label: {"mae": mae, "pct": mae} for label in labels},
        artifacts=StudyPaths(study).seed(task.trial.id, task.seed),
    )


def synthetic(
    open_store: Callable[[], Store], delay_s: float = 0.0
) -> Callable[[dict[str, Any]], tuple[int, str]]:
    """The kubelet ``result`` callable; ``open_store`` is called once, on first use."""
    stores: list[Store] = []

    def result(pod: dict[str, Any]) -> tuple[int, str]:
        if delay_s:
            time.sleep(delay_s)
        if not stores:
            stores.append(open_store())
        store = stores[0]
        args = pod["spec"]["containers"][0]["args"]
        request = TrainingRequest.from_json(args[args.index("--request") + 1])
        out = []
        for seed in request.seeds:
            mae = synthetic_mae(request.config, seed)
            r = SeedResult(
                study=request.study,
                trial=request.trial,
                stage=request.stage,
                parent=request.parent,
                config=request.config,
                config_key=request.config_key,
                seed=seed,
                status="succeeded",
                mae=mae,
                per_label={
                    label: {"mae": mae, "pct": 10 * mae} for label in request.dataset.labels
                },
                artifacts=request.artifacts_prefix(seed),
                finished_at=time.time(),
            )
            scores = StudyPaths(request.study).scores(request.trial, seed)
            store.put_bytes(scores, r.to_json().encode())
            out.append({"seed": seed, "status": "succeeded", "mae": mae, "trial": request.trial})
        return 0, json.dumps(out)

    return result
