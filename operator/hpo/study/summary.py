"""Per-configuration aggregates over seeds: what ranking, hand-over and reports read."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hpo.study.contract import SeedResult


@dataclass
class ConfigSummary:
    """One configuration across its seeds; ``mean`` is the study's objective."""

    trial: str
    stage: str
    parent: str | None
    config_key: str
    config: dict[str, Any]
    #: Test MAE per successful seed: reported, never used to decide.
    maes: list[float] = field(default_factory=list)
    #: Selection score (validation MAE) per successful seed: what ranks configurations.
    scores: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    failed: int = 0
    per_label: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    #: (seeds, mean, std) as last computed: ``statistics.stdev`` is exact, and slow.
    _stats: tuple[int, float | None, float | None] = field(
        default=(0, None, None), init=False, repr=False, compare=False
    )

    @classmethod
    def of(cls, r: SeedResult) -> ConfigSummary:
        """An empty summary of ``r``'s configuration (``add`` takes the results): the one
        place a summary is built, for the engine's live ranking and for the records."""
        return cls(
            trial=r.trial, stage=r.stage, parent=r.parent, config_key=r.config_key, config=r.config
        )

    @property
    def n(self) -> int:
        return len(self.maes)

    @property
    def score(self) -> float | None:
        """Mean selection score over seeds: the study's objective."""
        return statistics.fmean(self.scores) if self.scores else None

    @property
    def score_std(self) -> float | None:
        if not self.scores:
            return None
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0

    @property
    def first_score(self) -> float | None:
        """The selection score of its first seed (the lowest it has)."""
        if not self.scores:
            return None
        return self.scores[self.seeds.index(min(self.seeds))]

    def _mean_std(self) -> tuple[float | None, float | None]:
        if self._stats[0] != len(self.maes):  # results are only ever added
            mean = statistics.fmean(self.maes)
            std = statistics.stdev(self.maes) if len(self.maes) > 1 else 0.0
            self._stats = (len(self.maes), mean, std)
        return self._stats[1], self._stats[2]

    @property
    def mean(self) -> float | None:
        return self._mean_std()[0]

    @property
    def std(self) -> float | None:
        return self._mean_std()[1]

    @property
    def min(self) -> float | None:
        return min(self.maes) if self.maes else None

    @property
    def max(self) -> float | None:
        return max(self.maes) if self.maes else None

    def add(self, r: SeedResult) -> None:
        """Take one more result of this configuration (a seed, succeeded or failed)."""
        score = selection_score(r)  # never None when the test MAE is there
        if r.status == "succeeded" and r.mae is not None and score is not None:
            self.maes.append(float(r.mae))
            self.scores.append(float(score))
            self.seeds.append(r.seed)
            for label, scores in r.per_label.items():
                # No pct when the label's reference is 0 (hpo_trainer.metrics): NaN, not a crash.
                pct = scores.get("pct")
                self.per_label.setdefault(label, []).append(
                    (float(scores["mae"]), math.nan if pct is None else float(pct))
                )
        else:
            self.failed += 1

    def label_mean(self, label: str) -> tuple[float, float] | None:
        """Mean over seeds of (MAE in original units, MAE in percent) for ``label``."""
        pairs = self.per_label.get(label)
        if not pairs:
            return None
        return (statistics.fmean(p[0] for p in pairs), statistics.fmean(p[1] for p in pairs))


def selection_score(r: SeedResult) -> float | None:
    """What ranks a training: its validation MAE; results recorded before v0.2 have
    only the test MAE, which then stands in (such a study ranked on it from the start)."""
    return r.val_mae if r.val_mae is not None else r.mae


def summarise(results: Iterable[SeedResult]) -> dict[str, ConfigSummary]:
    """Group results by trial (one trial = one configuration), in first-seen order."""
    out: dict[str, ConfigSummary] = {}
    for r in results:
        s = out.get(r.trial)
        if s is None:
            s = out[r.trial] = ConfigSummary.of(r)
        s.add(r)
    return out


def ranked(summaries: Iterable[ConfigSummary]) -> list[ConfigSummary]:
    """Configurations with at least one successful seed, best mean selection score first.

    Ties break on spread (a steadier configuration is preferred), then trial id
    so the order is deterministic. The test MAE never enters the order.
    """
    ok = [s for s in summaries if s.score is not None]
    return sorted(ok, key=lambda s: (s.score, s.score_std, s.trial))


def final_ranked(summaries: Iterable[ConfigSummary], racing: bool) -> list[ConfigSummary]:
    """The order a study hands its configurations back in: ``ranked``, except that under
    seed racing a one-seed configuration that lost on the first seed comes after the
    raced contenders (those with several seeds).

    Compared on equal terms, on the seed they share: racing gave the contenders their
    other seeds because their first scores were the best, so a one-seed configuration
    whose first score is no better than every contender's lost that comparison; its one
    score against their means over every seed would favour it unfairly (a first score
    that reached the top is biased low). One whose first score beats a contender's was
    not there when racing chose (it finished later, e.g. with many slots): it is
    compared by mean, as before. Measured on the exact benchmark
    (``benchmarks/exact_search.py``): on HPOBench car, where a third of a study's
    configurations tie at 0 errors on one seed, the final group's first member was
    an unraced tie, about the 15th percentile; now about the 5th.
    """
    ok = ranked(summaries)
    firsts = [f for s in ok if s.n > 1 and (f := s.first_score) is not None]
    if not racing or not firsts:
        return ok
    bar = max(firsts)
    return sorted(ok, key=lambda s: s.n == 1 and (s.score or 0.0) >= bar)  # stable: by mean
