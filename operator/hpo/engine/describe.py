"""The end-of-run summary of a study's engine: what ``hpo run`` and the status print.

Apart from ``hpo.engine.core`` so that the state machine stays one readable module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpo.study.contract import NARROW_STAGE, RANDOM_STAGE

if TYPE_CHECKING:
    from hpo.engine.core import Engine


def describe(engine: Engine) -> dict[str, Any]:
    """Numbers for the end-of-run summary."""
    prog = engine.progress()
    trials = engine.trials.values()
    return {
        "phase": prog.phase,
        "trainings": prog.done + prog.failed,
        "failed": prog.failed,
        "budget": engine.budget,
        "charged": engine.charged,
        "interrupted": engine.interrupted,
        "random_configs": sum(1 for t in trials if t.stage == RANDOM_STAGE and t.id[0] != "w"),
        "warm_configs": sum(1 for t in trials if t.id[0] == "w"),
        "warm_trainings": len(engine.warm.results),
        "narrow_configs": sum(1 for t in trials if t.stage == NARROW_STAGE),
        "handed_over": list(engine.parents),
        "notes": list(engine.notes),
        "failed_reason": engine.failed_reason,
    }
