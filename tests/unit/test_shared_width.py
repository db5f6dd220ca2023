"""A shared width (``searchSpace.sharedWidth``) through the narrow stage: the local search's
moves, its surrogate and the Gaussian-process strategy keep every layer at one width."""

from __future__ import annotations

import pytest

from helpers.engine import drive_engine, objective
from helpers.study import study_dict
from hpo.engine import Engine, Task
from hpo.engine.search.gaussian import GaussianSearch
from hpo.engine.search.local import neighbours
from hpo.engine.search.surrogate import features
from hpo.study.contract import SeedResult
from hpo.study.space import config_key
from hpo.study.spec import StudySpec, parse_study

PARENT = {
    "neurons": [64, 64],
    "activation": "relu",
    "learning_rate": 0.001,
    "batch_size": 32,
    "optimizer": "adam",
}


def _spec(method: str = "localSearch", **space: object) -> StudySpec:
    return parse_study(
        study_dict(
            searchSpace={"sharedWidth": True, **space},
            randomStage={"configurations": 8, "seed": 3},
            training={"seedsPerConfig": 2},
            bayesianStage={"topK": 2, "trialsPerConfig": 5, "method": method},
            result={"size": 2},
            parallelism=2,
        )
    ).spec


def _result(task: Task) -> SeedResult:
    score = objective(task.trial.config) + (task.seed % 5) * 1e-3
    return task.succeeded("t", mae=score + 0.5, val_mae=score)


def test_the_width_moves_of_a_shared_width_move_every_layer() -> None:
    spec = _spec()
    found = neighbours(PARENT, spec.search_space, spec.narrow_stage)
    step = spec.narrow_stage.neurons_step
    widths = [c["neurons"] for c in found if c["neurons"] != PARENT["neurons"]]
    depth_moves = [w for w in widths if len(w) != 2]
    assert sorted(w for w in widths if len(w) == 2) == [[64 - step] * 2, [64 + step] * 2]
    assert depth_moves == [[64], [64, 64, 64]]
    assert all(len(set(c["neurons"])) == 1 for c in found)


def test_the_surrogate_sees_a_shared_width_as_one_knob() -> None:
    deep = {**PARENT, "neurons": [64, 64, 64]}
    shared = features(deep, shared_width=True)
    assert shared["w=64"] == 1.0 and shared["log2w"] == 6.0
    assert not any(k.startswith(("w0", "w1", "log2w0")) for k in shared)
    # Off, each layer has its own width features, as before.
    assert {"w0=64", "w1=64", "w2=64", "log2w2"} <= set(features(deep))


@pytest.mark.parametrize("method", ["localSearch", "gaussianProcess"])
def test_a_shared_width_study_trains_only_equal_widths(method: str) -> None:
    spec = _spec(method)
    engine = Engine(spec)
    drive_engine(engine, _result, slots=2)
    assert engine.phase == "done"
    trials = list(engine.trials.values())
    narrow = [t for t in trials if t.stage == "bayesian"]
    assert len(narrow) == 10
    assert len({t.config_key for t in trials}) == len(trials)
    uneven = [t.config_key for t in trials if len(set(t.config["neurons"])) > 1]
    assert not uneven, f"widths differ by layer in {uneven}"
    # Some narrow configuration moved the width (not only the learning rate and the rest).
    assert any(
        t.config["neurons"][0] != engine.trials[t.parent or ""].config["neurons"][0] for t in narrow
    )
    if method == "gaussianProcess":
        search = engine.search
        assert isinstance(search, GaussianSearch)
        assert all(len(p.space.choices) == 2 for p in search.parents)  # width, learning rate
        for t in narrow:
            space = next(p.space for p in search.parents if p.trial == t.parent)
            assert space.contains(t.config), config_key(t.config)
