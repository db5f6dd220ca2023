"""Our study on each table family: the search space in our spec's terms, and the map from
one of our configurations to the table's parameters.

FCNet's space is ``fcnet.ours.SEARCH_SPACE``. HPOBench's MLPs (scikit-learn's
``MLPClassifier``: relu, Adam, constant learning rate) have depth 1-3, one width
for every layer, L2 ``alpha``, batch size and initial learning rate: our spec's
``hiddenLayers``, ``neurons``, ``l2``, ``batchSizes`` and ``learningRate`` choices.
Without ``sharedWidth`` our spec draws a width per layer and the table answers for
the first layer's width (the others are ignored): a handicap, since ours then
searches widths that make no difference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fcnet import ours
from fcnet.table import Table

from hpo.study.spec import StudySpec

_HPOBENCH_ALPHA = [1e-8, 7.74e-8, 5.99e-7, 4.64e-6, 3.59e-5, 2.78e-4, 2.15e-3, 1.67e-2, 0.129, 1.0]
_HPOBENCH_LR = [1e-5, 3.59e-5, 1.29e-4, 4.64e-4, 1.67e-3, 5.99e-3, 2.15e-2, 7.74e-2, 0.278, 1.0]
HPOBENCH_SPACE: dict[str, Any] = {
    "hiddenLayers": {"min": 1, "max": 3},
    "neurons": {"choices": [16, 25, 40, 64, 101, 161, 256, 406, 645, 1024]},
    "activations": ["relu"],
    "activationPerLayer": False,
    "learningRate": {"choices": _HPOBENCH_LR},
    "learningRateSchedules": ["constant"],
    "dropout": [0.0],
    "dropoutPerLayer": False,
    "l2": _HPOBENCH_ALPHA,
    "batchSizes": [4, 6, 10, 16, 25, 40, 64, 101, 161, 256],
    "optimizers": ["adam"],
}


def hpobench_params(config: dict[str, Any]) -> dict[str, object]:
    """Our configuration as HPOBench's parameters: the first layer's width is the width."""
    widths = config["neurons"]
    return {
        "alpha": float(config["l2"]),
        "batch_size": int(config["batch_size"]),
        "depth": len(widths),
        "learning_rate_init": float(config["learning_rate"]),
        "width": int(widths[0]),
    }


def study(
    table: Table,
    budget: int,
    seed: int,
    parallel: int = 1,
    overrides: dict[str, Any] | None = None,
    shared_width: bool = False,
) -> tuple[StudySpec, Callable[[dict[str, Any]], dict[str, object]]]:
    """Our study on ``table`` sized for ``budget`` trainings on ``parallel`` slots, and the map
    from its configurations to the table's parameters."""
    extra: dict[str, Any] = {**(overrides or {}), "parallelism": parallel}
    if table.family == "hpobench":
        space = {**HPOBENCH_SPACE, **extra.get("searchSpace", {})}
        if shared_width:
            space["sharedWidth"] = True
        extra["searchSpace"] = space
        return ours.study(budget, seed, extra), hpobench_params
    return ours.study(budget, seed, extra), ours.table_params
