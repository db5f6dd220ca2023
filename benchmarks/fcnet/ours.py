"""Our search on an FCNet table: the real engine, a lookup trainer instead of TensorFlow.

The study file is an ordinary ``HPOStudy`` whose search space is FCNet's (two
layers, widths 16..512, an activation and a dropout rate per layer, six initial
learning rates, two schedules, four batch sizes); only the trainer differs: a
training of configuration c with seed s answers with the table's validation MSE
of c at table seed ``s mod 4``, as the selection score.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnet.table import Table

from hpo.engine import Engine, Task
from hpo.study.contract import SeedResult
from hpo.study.spec import StudySpec, parse_study

#: FCNet's space in our spec's terms; everything not named here is our default.
SEARCH_SPACE: dict[str, Any] = {
    "hiddenLayers": {"min": 2, "max": 2},
    "neurons": {"choices": [16, 32, 64, 128, 256, 512]},
    "activations": ["relu", "tanh"],
    "activationPerLayer": True,
    "learningRate": {"choices": [5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1]},
    "learningRateSchedules": ["cosine", "constant"],
    "dropout": [0.0, 0.3, 0.6],
    "dropoutPerLayer": True,
    "batchSizes": [8, 16, 32, 64],
    "optimizers": ["adam"],
}
_SCHEDULE = {"cosine": "cosine", "constant": "const"}


def table_params(config: dict[str, Any]) -> dict[str, object]:
    """Our configuration dict as the table's parameters."""
    acts = config["activation"]
    acts = acts if isinstance(acts, list) else [acts, acts]
    drops = config["dropout"]
    drops = drops if isinstance(drops, list) else [drops, drops]
    return {
        "activation_fn_1": acts[0],
        "activation_fn_2": acts[1],
        "batch_size": int(config["batch_size"]),
        "dropout_1": float(drops[0]),
        "dropout_2": float(drops[1]),
        "init_lr": float(config["learning_rate"]),
        "lr_schedule": _SCHEDULE[config["lr_schedule"]],
        "n_units_1": int(config["neurons"][0]),
        "n_units_2": int(config["neurons"][1]),
    }


def study(budget: int, seed: int, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Our defaults, with the random stage and the narrow stage sized to ``budget``."""
    return study_resource(budget, seed, overrides)["spec_parsed"]


def study_resource(
    budget: int, seed: int, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Our defaults with ``budget.trainings`` = ``budget``: the product sizes the stages from
    it (``hpo.engine.budget.stage_sizes``); one parent handed over (``topK`` 1)."""
    spec: dict[str, Any] = {
        "dataset": {"path": "fcnet.csv", "labels": ["y"]},
        "searchSpace": SEARCH_SPACE,
        "randomStage": {"seed": seed},
        "bayesianStage": {"topK": 1},
        "budget": {"trainings": budget},
        "parallelism": 1,
    }
    for section, value in (overrides or {}).items():
        if isinstance(value, dict):
            spec[section] = {**spec.get(section, {}), **value}
        else:
            spec[section] = value
    raw = {
        "apiVersion": "hpo-operator.dev/v1alpha1",
        "kind": "HPOStudy",
        "metadata": {"name": "fcnet"},
        "spec": copy.deepcopy(spec),
    }
    return {"resource": raw, "spec_parsed": parse_study(raw).spec}


def lookup(table: Table, task: Task) -> SeedResult:
    """The trainer contract, answered from the table."""
    score = table.score(table.row(table_params(task.trial.config)), task.seed)
    return task.succeeded("fcnet", mae=score, val_mae=score)


@dataclass(frozen=True)
class Outcome:
    pick: int  # the table row of the configuration handed back
    trainings: int


def run(
    table: Table,
    budget: int,
    seed: int,
    overrides: dict[str, Any] | None = None,
    order: list[tuple[str, str, int]] | None = None,
) -> Outcome:
    """One study to its end; the pick is the final group's first member. ``order`` gets
    every training (trial, configuration key, seed) in the order it was made."""
    spec = study(budget, seed, overrides)
    engine = Engine(spec)
    running: list[Task] = []
    while not engine.finished:
        running += engine.next_tasks(spec.parallelism - len(running))
        if not running:
            if engine.finished:  # planning found the study complete
                break
            raise RuntimeError("engine stalled")
        task = running.pop(0)
        if order is not None:
            order.append((task.trial.id, task.trial.config_key, task.seed))
        engine.record(lookup(table, task))
    best = engine.final_group(1)[0]
    return Outcome(table.row(table_params(best.config)), len(engine.recorded()))


def run_session(
    table: Table,
    budget: int,
    seed: int,
    folder: Path,
    overrides: dict[str, Any] | None = None,
) -> tuple[Outcome, list[tuple[str, str, int]]]:
    """The same study through ``StudySession`` on a local folder: the object ``hpo run``
    drives (store, ledger, spec saved). Slower (the ledger is written), so the benchmark
    uses ``run``; a test checks that both make the very same trainings and pick."""
    from hpo.session import StudySession
    from hpo.study.spec import parse_study
    from hpo.study.storage import store_ref_for

    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "fcnet.csv"
    data.write_text("x,y\n" + "".join(f"{i},{i % 7}\n" for i in range(40)))
    raw = study_resource(budget, seed, overrides)["resource"]
    raw["spec"]["dataset"]["path"] = str(data)
    spec = parse_study(raw)
    session = StudySession.open(spec, store_ref_for(spec, folder / "runs"), retry_backoff_s=0.0)
    session.start()
    order: list[tuple[str, str, int]] = []
    running: list[Task] = []
    while not session.engine.finished:
        running += session.take(spec.spec.parallelism - len(running))
        if not running:
            break
        task = running.pop(0)
        order.append((task.trial.id, task.trial.config_key, task.seed))
        session.record([lookup(table, task)])
        session.flush()
    session.flush(force=True)
    best = session.engine.final_group(1)[0]
    return Outcome(table.row(table_params(best.config)), len(session.engine.recorded())), order
