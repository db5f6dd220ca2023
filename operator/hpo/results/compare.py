"""Several studies' final groups side by side: did the bigger budget help?

A comparison says whether the studies share a dataset (the fingerprint each
recorded in ``dataset.json`` when it started): errors on different data are
not comparable, and the comparison says so rather than ranking them together.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from hpo.engine.budget import planned_configurations, planned_trainings
from hpo.results.study import StudyResults
from hpo.study.contract import NARROW_STAGE, RANDOM_STAGE
from hpo.study.spec import SpecError, parse_study

#: The final group's columns a comparison shows, per study.
SHOWN = ("rank", "trial", "config_key", "val_mae_mean", "test_mae_mean", "seeds")


@dataclass(frozen=True)
class StudyLine:
    """What a comparison says of one study besides its final group."""

    #: The study's name, or its place where two studies share a name.
    name: str
    where: str
    finished: bool
    fingerprint: str | None
    trainings: int
    budget: str
    #: Rank 1's validation and test MAE (None without a final group).
    best_val: float | None = None
    best_test: float | None = None


@dataclass(frozen=True)
class Comparison:
    studies: list[StudyLine]
    #: One row per (study, rank): ``study`` plus ``SHOWN``.
    table: pd.DataFrame

    def change(self, i: int) -> float | None:
        """Study ``i``'s best test MAE relative to the first study's (-0.04: 4% lower);
        None where either has no final group or the datasets differ."""
        first, other = self.studies[0].best_test, self.studies[i].best_test
        if not self.same_dataset or first is None or other is None or first == 0:
            return None
        return other / first - 1

    @property
    def same_dataset(self) -> bool:
        """True when every study recorded the same dataset fingerprint."""
        prints = {s.fingerprint for s in self.studies}
        return len(prints) == 1 and None not in prints


def budget(study: StudyResults) -> str:
    """The search budget the spec set: configurations per stage, seeds, epochs."""
    try:
        spec = parse_study(study.spec).spec
    except SpecError:
        return "unknown (study.yaml does not parse with this version)"
    random, narrow = (planned_configurations(spec, s) for s in (RANDOM_STAGE, NARROW_STAGE))
    return (
        f"{random} random + {narrow} narrow-stage "
        f"{_plural(random + narrow, 'configuration', with_count=False)} "
        f"x {_plural(spec.training.seeds_per_config, 'seed')} "
        f"(at most {_plural(planned_trainings(spec), 'training')}), "
        f"{_plural(spec.training.epochs, 'epoch')}"
    )


def _plural(n: int, word: str, *, with_count: bool = True) -> str:
    """``1 seed``, ``2 seeds`` (the word alone when ``with_count`` is False)."""
    text = word if n == 1 else f"{word}s"
    return f"{n} {text}" if with_count else text


def compare(studies: list[StudyResults]) -> Comparison:
    """The final groups of ``studies`` (each study's own ranks), with what tells them apart."""
    lines, parts = [], []
    names = [s.name for s in studies]
    for s in studies:
        label = s.name if names.count(s.name) == 1 else s.where
        trainings = s.trainings()
        group = s.final_group()
        best = group.iloc[0] if len(group) else None
        lines.append(
            StudyLine(
                name=label,
                where=s.where,
                finished=s.finished,
                fingerprint=s.dataset.get("fingerprint"),
                trainings=int((trainings["status"] == "succeeded").sum()),
                budget=budget(s),
                best_val=None if best is None else float(best["val_mae_mean"]),
                best_test=None if best is None else float(best["test_mae_mean"]),
            )
        )
        part = group[[c for c in SHOWN if c in group.columns]].copy()
        part.insert(0, "study", label)
        parts.append(part)
    table = (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["study", *SHOWN])
    )
    return Comparison(lines, table)
