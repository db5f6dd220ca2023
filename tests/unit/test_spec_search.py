"""The search-space and selection fields added for the search: each wrong value named."""

from __future__ import annotations

from typing import Any

import pytest

from helpers.study import study_dict
from hpo.study.spec import SpecError, parse_study

CASES: list[tuple[dict[str, Any], str]] = [
    (
        {"searchSpace": {"neurons": {"choices": [16, 16]}}},
        "spec.searchSpace.neurons.choices: duplicate width: 16",
    ),
    (
        {"searchSpace": {"neurons": {"choices": [0, 16]}}},
        "spec.searchSpace.neurons.choices: width 0 is out of range (1..4096)",
    ),
    (
        {"searchSpace": {"neurons": {"choices": []}}},
        "spec.searchSpace.neurons.choices: at least one width is required",
    ),
    (
        {"searchSpace": {"learningRate": {"choices": [0.001, 2.0]}}},
        "spec.searchSpace.learningRate.choices: learning rate 2 is out of range (0, 1]",
    ),
    (
        {"searchSpace": {"learningRate": {"choices": [0.001, 0.0010001]}}},
        "spec.searchSpace.learningRate.choices: duplicate learning rate (to 3 significant "
        "digits): 0.001",
    ),
    (
        {"searchSpace": {"dropout": [0.0, 0.99]}},
        "spec.searchSpace.dropout: dropout rate 0.99 is out of range (0..0.95)",
    ),
    (
        {"searchSpace": {"l2": [-0.1]}},
        "spec.searchSpace.l2: l2 factor -0.1 is out of range (0..1)",
    ),
    (
        {"searchSpace": {"learningRateSchedules": ["linear"]}},
        "spec.searchSpace.learningRateSchedules: unknown schedule 'linear'; choose from "
        "constant, cosine",
    ),
    (
        {"searchSpace": {"activationPerLayer": "yes"}},
        "spec.searchSpace.activationPerLayer: Input should be a valid boolean (got 'yes')",
    ),
    (
        {"searchSpace": {"sharedWidth": "true"}},
        "spec.searchSpace.sharedWidth: Input should be a valid boolean (got 'true')",
    ),
    (
        {"searchSpace": {"sharedWidths": True}},
        "spec.searchSpace.sharedWidths: is not a known field; did you mean 'sharedWidth'?",
    ),
    (
        {"dataset": {"path": "d.csv", "labels": ["y"], "crossValidationFolds": 1}},
        "spec.dataset: crossValidationFolds must be 0 (one validation split) or at least 2",
    ),
    (
        {"bayesianStage": {"method": "annealing"}},
        "spec.bayesianStage.method: Input should be 'localSearch' or 'gaussianProcess' "
        "(got 'annealing')",
    ),
    (
        {"training": {"seedRacing": 1}},
        "spec.training.seedRacing: Input should be a valid boolean (got 1)",
    ),
]


@pytest.mark.parametrize(("spec", "message"), CASES, ids=[m.split(":")[0] for _, m in CASES])
def test_a_wrong_search_field_is_named(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_study(study_dict(**spec))
    assert message in info.value.problems, info.value.problems


def test_the_new_fields_have_defaults_that_change_nothing_of_a_v01_study() -> None:
    spec = parse_study(study_dict()).spec
    space = spec.search_space
    assert space.dropout == [0.0] and space.l2 == [0.0]
    assert space.learning_rate_schedules == ["constant"]
    assert not space.activation_per_layer and not space.dropout_per_layer
    assert not space.shared_width
    assert space.neurons.choices is None and space.learning_rate.choices is None
    assert spec.dataset.cross_validation_folds == 0
    # The search's defaults, as the exact benchmark chose them.
    assert spec.training.seed_racing and spec.narrow_stage.method == "localSearch"
    assert spec.narrow_stage.surrogate


def test_choices_are_kept_sorted_and_rounded() -> None:
    spec = parse_study(
        study_dict(
            searchSpace={
                "neurons": {"choices": [64, 16, 32]},
                "learningRate": {"choices": [0.01, 0.00123456]},
            }
        )
    ).spec
    assert spec.search_space.neurons.grid == [16, 32, 64]
    assert spec.search_space.learning_rate.choices == [0.00123, 0.01]
