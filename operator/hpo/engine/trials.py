"""What the engine plans and reports: trials, trainings, warm starts and progress counts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from hpo.study.contract import SeedResult, Stage
from hpo.study.space import Config

#: The engine's phase. The narrow stage's phase keeps the stored stage name
#: (``NARROW_STAGE``): status.json, the CRD status and the CLI write it out as is.
Phase = Literal["random", "bayesian", "done", "failed"]
TrainingId = tuple[str, int]

#: Trial ids: ``r`` random stage, ``b`` narrow stage, ``w`` brought in by a warm start.
TRIAL_ID = re.compile(r"^([rbw])(\d+)$")


class HistoryConflict(ValueError):
    """Recorded results do not fit this study (its search space or seed changed)."""


@dataclass(frozen=True)
class Trial:
    """One configuration of the study, trained once per seed."""

    id: str
    stage: Stage
    config: Config
    config_key: str
    parent: str | None = None


@dataclass(frozen=True)
class Task:
    """One training to run: a trial and one seed; ``attempt`` counts from 1."""

    trial: Trial
    seed: int
    attempt: int = 1

    @property
    def id(self) -> TrainingId:
        return (self.trial.id, self.seed)

    def _result(self, study: str, **fields: Any) -> SeedResult:
        t = self.trial
        return SeedResult(
            study=study,
            trial=t.id,
            stage=t.stage,
            parent=t.parent,
            config=t.config,
            config_key=t.config_key,
            seed=self.seed,
            **fields,
        )

    def succeeded(self, study: str, mae: float, val_mae: float, **more: Any) -> SeedResult:
        """This training's result with its scores (stand-in trainers: benchmarks, tests)."""
        return self._result(study, status="succeeded", mae=mae, val_mae=val_mae, **more)

    def failed(self, study: str, error: str) -> SeedResult:
        """This training's result when it could not run or finish (one failed attempt)."""
        return self._result(study, status="failed", error=error)


@dataclass(frozen=True)
class WarmStart:
    """What earlier studies give this one (``hpo.records.warmstart`` reads them; fixed for the
    study's life, so a restart decides the same).

    ``results``: successful trainings that count as this study's (trial ids
    ``w0000``..., stage ``random``, their ``source`` set); their configurations are
    never sampled again, and they rank and hand over like any result. ``first``:
    configurations to train first, anew: the first of the random stage's budget.
    """

    results: tuple[SeedResult, ...] = ()
    first: tuple[Config, ...] = ()


@dataclass
class StudyProgress:
    """Counts of one study at one moment, for displays and the cluster status."""

    phase: Phase
    done: int
    failed: int
    running: int
    queued: int
    total: int
    best_trial: str | None
    best_mae: float | None
    best_std: float | None
    #: Seeds behind ``best_mae``: a spread of one seed is no spread at all.
    best_seeds: int | None = None
    #: Trainings the study may be charged, and those charged so far (``Engine.charged``).
    budget: int | None = None
    charged: int | None = None


def random_trial_id(i: int) -> str:
    return f"r{i:04d}"


def warm_trial_id(i: int) -> str:
    """A configuration a warm start brought in with its results."""
    return f"w{i:04d}"


def narrow_trial_id(i: int) -> str:
    return f"b{i:04d}"
