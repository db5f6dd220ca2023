"""What a spec plans and may cost, before anything ran: stage sizes, the budget, the reserve.

The one default rule that sizes a study from its budget lives here (chosen on the
exact benchmark, which calls it too): ``RANDOM_SHARE`` x sqrt(budget) configurations
for the random stage (a quarter of 80, a sixth of 160), the final group's extra seeds
set aside, the narrow stage gets the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

from hpo.engine.trials import TrainingId
from hpo.study.contract import NARROW_STAGE, RANDOM_STAGE, Stage
from hpo.study.spec import StudySpec

#: The random stage's configurations are this times the square root of the budget (in
#: trainings of first seeds): 20 of 80, 28 of 160. Chosen on the exact benchmark (FCNet,
#: car, phoneme, vehicle, australian): a quarter of 160 left the narrow stage too short,
#: a sixth of 80 too little to start it from.
RANDOM_SHARE = 2.2
#: Stage sizes of a spec that sets neither them nor a budget.
DEFAULT_RANDOM_CONFIGURATIONS = 12
DEFAULT_TRIALS_PER_CONFIG = 10


@dataclass(frozen=True)
class StageSizes:
    """Configurations per stage: ``random``; ``top_k x trials_per_config`` narrow ones."""

    random: int
    top_k: int
    trials_per_config: int


def first_seeds(spec: StudySpec) -> int:
    """Seeds every configuration gets at first: 1 under seed racing, else all of them."""
    seeds = spec.training.seeds_per_config
    return 1 if spec.training.seed_racing and seeds > 1 else seeds


def reserve(spec: StudySpec) -> int:
    """Trainings set aside for the final group's other seeds (seed racing gives them last)."""
    return spec.result.size * (spec.training.seeds_per_config - first_seeds(spec))


def stage_sizes(spec: StudySpec) -> StageSizes:
    """The stages' sizes: those the spec sets; unset ones from ``budget.trainings`` by the
    default rule (``RANDOM_SHARE`` x sqrt(budget) for the random stage, at least 4;
    the final group's other seeds set aside; the narrow stage the rest, shared over
    ``topK``), or the defaults (12 and 10) without a budget."""
    top_k = spec.narrow_stage.top_k
    random = spec.random_stage.configurations
    per = spec.narrow_stage.trials_per_config
    budget = spec.budget.trainings
    if budget is None:
        return StageSizes(
            random if random is not None else DEFAULT_RANDOM_CONFIGURATIONS,
            top_k,
            per if per is not None else DEFAULT_TRIALS_PER_CONFIG,
        )
    first = first_seeds(spec)
    if random is None:
        random = max(4, round(RANDOM_SHARE * math.sqrt(budget)) // first)
    if per is None:
        narrow = max(1, (budget - random * first - reserve(spec)) // first)
        per = max(1, -(-narrow // top_k))
    return StageSizes(random, top_k, per)


def planned_configurations(spec: StudySpec, stage: Stage | None = None) -> int:
    """Configurations ``spec`` plans in ``stage`` (None: both): the random stage's size;
    the narrow stage's ``topK x trialsPerConfig``, none when it is disabled."""
    sizes = stage_sizes(spec)
    narrow = sizes.top_k * sizes.trials_per_config if spec.narrow_stage.enabled else 0
    if stage == RANDOM_STAGE:
        return sizes.random
    if stage == NARROW_STAGE:
        return narrow
    return sizes.random + narrow


def planned_trainings(spec: StudySpec, stage: Stage | None = None) -> int:
    """Trainings ``spec`` plans in ``stage`` (None: both), every seed of every configuration:
    an upper bound under seed racing, which trains fewer seeds of those that cannot win.
    With ``budget.trainings`` set, the whole study's plan is capped by it."""
    planned = planned_configurations(spec, stage) * spec.training.seeds_per_config
    if stage is None and spec.budget.trainings is not None:
        return min(planned, spec.budget.trainings)
    return planned


def budget_of(spec: StudySpec) -> int:
    """The trainings the study may be charged: ``budget.trainings``, else every seed of
    every planned configuration (so the stage sizes users set are a cap)."""
    if spec.budget.trainings is not None:
        return spec.budget.trainings
    return planned_configurations(spec) * spec.training.seeds_per_config


def cost_line(spec: StudySpec) -> str:
    """What the study will cost, in words (``hpo validate``)."""
    sizes = stage_sizes(spec)
    seeds = spec.training.seeds_per_config
    first = first_seeds(spec)
    parts = [f"{sizes.random} random configurations x {first} seed{'s' if first > 1 else ''}"]
    if spec.narrow_stage.enabled:
        parts.append(
            f"up to {sizes.top_k * sizes.trials_per_config} narrow-stage configurations "
            f"x {first} seed{'s' if first > 1 else ''}"
        )
    if first < seeds:
        parts.append(
            f"the final group's {spec.result.size} configurations raced to {seeds} seeds "
            f"({reserve(spec)} more)"
        )
        narrow = sizes.top_k * sizes.trials_per_config if spec.narrow_stage.enabled else 0
        if (sizes.random + narrow) * first + reserve(spec) < budget_of(spec):
            parts.append("more contenders raced while the cap allows (ties, close scores)")
    retries = spec.failure_policy.retries
    if spec.budget.trainings is not None:
        origin, tail = "budget.trainings", " (retries of failures included)"
    else:
        again = f"{retries} retr{'ies' if retries > 1 else 'y'}" if retries else ""
        origin, tail = "the stage sizes", f"; plus up to {again} of each failure" if again else ""
    return f"at most {budget_of(spec)} trainings ({origin}): " + ", ".join(parts) + tail


def warm_extra(warm: Collection[TrainingId], seeds_of: Callable[[str], list[int]]) -> int:
    """Seeds a warm start's configurations lack: part of the plan when no budget is set.
    Counted against what the warm start brought, so a restarted study plans the same."""
    trials = {trial for trial, _ in warm}
    return sum(1 for t in trials for s in seeds_of(t) if (t, s) not in warm)
