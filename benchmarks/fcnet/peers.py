"""The searches users would otherwise pick, driven on an FCNet table without training.

Each peer trains every configuration it proposes once (seed 1, as a study's
first seed), counts every proposal against its budget (repeats included, as
it would pay for them), and hands back the configuration with the best score
it saw. Each returns the rows it evaluated, in order, so the pick at a
smaller budget is read off a prefix (none of these peers plans by budget).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable

import numpy as np
from fcnet.table import PARAMS, Table

#: A study's first seed: what every peer's single training of a configuration uses.
FIRST_SEED = 1
Peer = Callable[[Table, int, int], list[int]]


def random_search(table: Table, n: int, seed: int) -> list[int]:
    """Unique configurations uniformly at random."""
    rng = np.random.default_rng(seed)
    return [int(r) for r in rng.choice(table.size, size=n, replace=False)]


def _optuna(sampler_factory: Callable[[int], object]) -> Peer:
    def run(table: Table, n: int, seed: int) -> list[int]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        rows: list[int] = []

        def objective(trial: optuna.Trial) -> float:
            params = {
                name: trial.suggest_categorical(name, values) for name, values in PARAMS.items()
            }  # type: ignore[arg-type]
            row = table.row(params)
            rows.append(row)
            return table.score(row, FIRST_SEED)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(sampler=sampler_factory(seed))  # type: ignore[arg-type]
            study.optimize(objective, n_trials=n)
        return rows

    return run


def _tpe(seed: int) -> object:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def _gp(seed: int) -> object:
    import optuna

    return optuna.samplers.GPSampler(seed=seed)


tpe = _optuna(_tpe)
optuna_gp = _optuna(_gp)


def skopt_gp(table: Table, n: int, seed: int) -> list[int]:
    """scikit-optimize's global GP (``gp_minimize``'s defaults: 10 random points, EI/LCB hedge)."""
    from skopt import Optimizer
    from skopt.space import Categorical

    dims = [Categorical(list(range(len(v))), name=k) for k, v in PARAMS.items()]
    opt = Optimizer(dims, base_estimator="GP", n_initial_points=10, random_state=seed)
    rows: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n):
            point = opt.ask()
            row = int(
                np.ravel_multi_index([int(v) for v in point], [len(v) for v in PARAMS.values()])
            )
            rows.append(row)
            opt.tell(point, table.score(row, FIRST_SEED))
    return rows


def keras_tuner_bayes(table: Table, n: int, seed: int) -> list[int]:
    """Keras Tuner's BayesianOptimization oracle through its Oracle API (no Tuner, no training)."""
    import keras_tuner as kt

    logging.getLogger("keras_tuner").setLevel(logging.ERROR)
    hp = kt.HyperParameters()
    for name, values in PARAMS.items():
        hp.Choice(name, values)  # type: ignore[arg-type]
    rows: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        oracle = kt.oracles.BayesianOptimizationOracle(
            objective=kt.Objective("val_loss", "min"),
            max_trials=n,
            hyperparameters=hp,
            seed=seed,
        )
        oracle._set_project_dir(tmp, "fcnet")
        while len(rows) < n:
            trial = oracle.create_trial("bench")
            if trial.status != "RUNNING":
                break  # the oracle gave up (space exhausted)
            row = table.row(dict(trial.hyperparameters.values))
            rows.append(row)
            oracle.update_trial(trial.trial_id, {"val_loss": table.score(row, FIRST_SEED)})
            trial.status = "COMPLETED"
            oracle.end_trial(trial)
    return rows


PEERS: dict[str, Peer] = {
    "random": random_search,
    "tpe": tpe,
    "optuna-gp": optuna_gp,
    "skopt-gp": skopt_gp,
    "kt-bayes": keras_tuner_bayes,
}


def pick(table: Table, rows: list[int], budget: int) -> int:
    """The configuration a peer hands back after ``budget`` trainings: its best score seen."""
    seen = rows[:budget]
    scores = [table.score(r, FIRST_SEED) for r in seen]
    return seen[int(np.argmin(scores))]
