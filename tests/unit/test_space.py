"""Canonical keys, unique sampling, exhaustion and narrowing."""

from __future__ import annotations

from hpo.study.space import (
    config_key,
    contains,
    narrow,
    normalise,
    sample_unique,
    space_size,
)
from hpo.study.spec import NarrowStage, SearchSpace


def _space(**kw: object) -> SearchSpace:
    return SearchSpace.model_validate(kw)


def test_key_is_canonical() -> None:
    a = {
        "neurons": [64, 32],
        "activation": "relu",
        "learning_rate": 0.0012345,
        "batch_size": 32,
        "optimizer": "adam",
    }
    b = {**a, "learning_rate": 0.00123, "neurons": [64.0, 32.0], "hidden_layers": 2}
    assert config_key(a) == config_key(b) == "L2|64-32|relu|lr=0.00123|bs=32|adam"
    assert config_key({**a, "neurons": [32, 64]}) != config_key(a)
    assert normalise(a)["hidden_layers"] == 2


def test_sampling_is_unique_and_deterministic() -> None:
    space = _space()
    plan = sample_unique(space, 200, seed=7)
    keys = [config_key(c) for c in plan.configs]
    assert len(keys) == 200 == len(set(keys))
    assert plan.shortfall is None
    assert [config_key(c) for c in sample_unique(space, 200, seed=7).configs] == keys
    assert [config_key(c) for c in sample_unique(space, 50, seed=7).configs] == keys[:50]
    assert [config_key(c) for c in sample_unique(space, 50, seed=8).configs] != keys[:50]
    for c in plan.configs:
        assert 1 <= c["hidden_layers"] <= 3 and len(c["neurons"]) == c["hidden_layers"]
        assert all(16 <= n <= 128 and n % 16 == 0 for n in c["neurons"])
        assert 1e-4 <= c["learning_rate"] <= 1e-2


def test_small_space_is_exhausted_not_looped_forever() -> None:
    space = _space(
        hiddenLayers={"min": 1, "max": 2},
        neurons={"min": 8, "max": 16, "step": 8},
        activations=["relu"],
        learningRate={"min": 0.001, "max": 0.001},
        batchSizes=[32],
        optimizers=["adam"],
    )
    assert space_size(space) == 2 + 4
    plan = sample_unique(space, 10, seed=0)
    assert len(plan.configs) == 6
    assert len({config_key(c) for c in plan.configs}) == 6
    assert plan.shortfall and "only 6 unique configurations" in plan.shortfall


def test_narrowing_stays_near_parent_and_inside_space() -> None:
    space = _space(
        neurons={"min": 16, "max": 128, "step": 16}, learningRate={"min": 1e-4, "max": 1e-2}
    )
    stage = NarrowStage(
        neurons_radius=32, neurons_step=8, learning_rate_radius=0.5, learning_rate_step=0.1
    )
    parent = {
        "neurons": [16, 128],
        "activation": "tanh",
        "learning_rate": 0.008,
        "batch_size": 64,
        "optimizer": "adam",
    }
    ns = narrow(parent, space, stage)
    assert ns.choices[0] == [16, 24, 32, 40, 48]  # clipped at the space's minimum
    assert ns.choices[1] == [96, 104, 112, 120, 128]  # clipped at the maximum
    lrs = ns.choices[2]
    assert min(lrs) >= 0.008 / 10**0.5 * 0.99 and max(lrs) <= 1e-2
    assert 0.008 in lrs
    assert ns.contains(parent)
    assert not ns.contains({**parent, "activation": "relu"})
    assert not ns.contains({**parent, "neurons": [16, 64]})
    cfg = ns.to_config([4, 0, 0])
    assert cfg["neurons"] == [48, 96] and ns.contains(cfg)
    assert ns.to_indices(cfg) == [4, 0, 0]


# A shared width (``searchSpace.sharedWidth``): every layer gets the same width.
SHARED = {
    "hiddenLayers": {"min": 1, "max": 3},
    "neurons": {"min": 16, "max": 128, "step": 16},
    "activations": ["relu"],
    "learningRate": {"choices": [0.001, 0.01]},
    "batchSizes": [32],
}


def test_a_shared_width_counts_one_width_per_network() -> None:
    per_layer, shared = _space(**SHARED), _space(**SHARED, sharedWidth=True)
    assert space_size(per_layer) == (8 + 8**2 + 8**3) * 2
    assert space_size(shared) == 8 * 3 * 2
    # Small enough to enumerate: exactly every network once, each with one width.
    plan = sample_unique(shared, 100, seed=0)
    assert len(plan.configs) == 48 and plan.shortfall
    assert all(len(set(c["neurons"])) == 1 for c in plan.configs)
    assert len({config_key(c) for c in plan.configs}) == 48


def test_a_shared_width_samples_one_width_for_every_layer() -> None:
    space = _space(sharedWidth=True)  # the default space is too large to enumerate
    assert space_size(space) > 20_000
    plan = sample_unique(space, 300, seed=5)
    keys = [config_key(c) for c in plan.configs]
    assert len(keys) == 300 == len(set(keys))
    assert all(len(c["neurons"]) == c["hidden_layers"] for c in plan.configs)
    assert all(len(set(c["neurons"])) == 1 for c in plan.configs)
    assert {c["hidden_layers"] for c in plan.configs} == {1, 2, 3}
    assert {c["neurons"][0] for c in plan.configs} == set(range(16, 129, 16))
    # Off, the stream is the one it always was (layers draw their own widths).
    off = sample_unique(_space(), 300, seed=5).configs
    assert any(len(set(c["neurons"])) > 1 for c in off)


def test_a_shared_width_space_holds_only_equal_widths() -> None:
    shared = _space(**SHARED, sharedWidth=True)
    config = {
        "neurons": [32, 32],
        "activation": "relu",
        "learning_rate": 0.01,
        "batch_size": 32,
        "optimizer": "adam",
    }
    assert contains(shared, config) and contains(_space(**SHARED), config)
    uneven = {**config, "neurons": [32, 64]}
    assert not contains(shared, uneven) and contains(_space(**SHARED), uneven)


def test_a_shared_width_narrows_along_one_width_dimension() -> None:
    space = _space(sharedWidth=True, learningRate={"min": 1e-4, "max": 1e-2})
    stage = NarrowStage(
        neurons_radius=32, neurons_step=16, learning_rate_radius=0.2, learning_rate_step=0.1
    )
    parent = {
        "neurons": [112, 112, 112],
        "activation": "tanh",
        "learning_rate": 0.001,
        "batch_size": 32,
        "optimizer": "adam",
    }
    ns = narrow(parent, space, stage)
    assert len(ns.choices) == 2  # one width, one learning rate
    assert ns.choices[0] == [80, 96, 112, 128]
    assert ns.size == 4 * len(ns.choices[1])
    cfg = ns.to_config([0, 0])
    assert cfg["neurons"] == [80, 80, 80] and ns.contains(cfg)
    assert ns.to_indices(cfg) == [0, 0]
    assert not ns.contains({**parent, "neurons": [112, 96, 112]})
