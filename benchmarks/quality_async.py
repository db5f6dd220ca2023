"""Optuna TPE for ``quality.py``, asynchronous: ``slots`` trainings at once, as ``hpo run``.

A slot that frees starts the next seed of a configuration already asked for, else
asks Optuna for a new configuration; a configuration is told once all its seeds
are scored. TPE runs as the exact parallel benchmark runs it (``event_sim.py``):
multivariate, with its constant liar, so configurations still training count as
pending. The budget is exact: ``configs x seeds`` trainings, never more (a
configuration asked for twice is trained once; its later trials are told the
same score).
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TYPE_CHECKING, Any

from hpo.study.space import config_key, normalise
from hpo.study.spec import SearchSpace

if TYPE_CHECKING:
    from quality import Budget, Files, Trainer


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """One configuration of the declared space from an Optuna trial (depth-conditional)."""
    layers = trial.suggest_int("hidden_layers", space.hidden_layers.min, space.hidden_layers.max)
    n = space.neurons
    return normalise(
        {
            "neurons": [
                trial.suggest_int(f"neurons_{i}", n.min, n.max, step=n.step) for i in range(layers)
            ],
            "activation": trial.suggest_categorical("activation", space.activations),
            "learning_rate": trial.suggest_float(
                "learning_rate", space.learning_rate.min, space.learning_rate.max, log=True
            ),
            "batch_size": trial.suggest_categorical("batch_size", space.batch_sizes),
            "optimizer": trial.suggest_categorical("optimizer", space.optimizers),
        }
    )


def run_optuna_async(
    files: Files, budget: Budget, seed: int, trainer: Trainer, space: SearchSpace, slots: int
) -> tuple[dict[str, Any], float, float]:
    """(best configuration, its score, search wall seconds) of one TPE study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multivariate/constant_liar are "experimental"
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    seeds = list(range(1, 1 + budget.seeds))
    configs: dict[str, dict[str, Any]] = {}
    maes: dict[str, list[float | None]] = {}
    scores: dict[str, float] = {}
    waiting: dict[str, list[Any]] = {}  # trials told once their configuration is scored
    queue: deque[tuple[str, int]] = deque()  # seeds asked for, not started
    running: dict[Future[float | None], str] = {}
    asks = 0
    start = time.perf_counter()
    while True:
        while len(running) < slots:
            if not queue:
                if len(configs) >= budget.configs or asks >= 50 * budget.configs:
                    break
                asks += 1
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    trial = study.ask()
                    config = suggest(trial, space)
                key = config_key(config)
                if key in scores:
                    study.tell(trial, scores[key])
                elif key in configs:
                    waiting[key].append(trial)
                else:
                    configs[key], maes[key], waiting[key] = config, [], [trial]
                    queue.extend((key, s) for s in seeds)
                continue
            key, s = queue.popleft()
            running[trainer.submit(files, configs[key], s, budget)] = key
        if not running:
            break
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in done:
            key = running.pop(fut)
            maes[key].append(fut.result())
            if len(maes[key]) == len(seeds):
                scores[key] = trainer.score(maes[key])
                for t in waiting.pop(key):
                    study.tell(t, scores[key])
    best = min(scores, key=scores.__getitem__)
    return configs[best], scores[best], time.perf_counter() - start
