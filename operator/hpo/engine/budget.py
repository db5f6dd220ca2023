"""What a spec plans, before anything ran: the engine's progress totals and the dashboard's."""

from __future__ import annotations

from hpo.study.contract import NARROW_STAGE, RANDOM_STAGE, Stage
from hpo.study.spec import StudySpec


def planned_configurations(spec: StudySpec, stage: Stage | None = None) -> int:
    """Configurations ``spec`` plans in ``stage`` (None: both): the random stage's budget;
    the narrow stage's ``topK x trialsPerConfig``, none when it is disabled."""
    random = spec.random_stage.configurations
    narrow_stage = spec.narrow_stage
    narrow = narrow_stage.top_k * narrow_stage.trials_per_config if narrow_stage.enabled else 0
    if stage == RANDOM_STAGE:
        return random
    if stage == NARROW_STAGE:
        return narrow
    return random + narrow


def planned_trainings(spec: StudySpec, stage: Stage | None = None) -> int:
    """Trainings ``spec`` plans in ``stage`` (None: both), every seed of every configuration:
    an upper bound under seed racing, which trains fewer seeds of those that cannot win."""
    return planned_configurations(spec, stage) * spec.training.seeds_per_config
