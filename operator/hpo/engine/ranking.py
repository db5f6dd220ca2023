"""Ranking: the best configurations so far, kept up to date result by result, and the
random stage's hand-over to the narrow stage."""

from __future__ import annotations

import heapq

from hpo.study.contract import HIDDEN_LAYERS, SeedResult
from hpo.study.spec import NarrowStage
from hpo.study.summary import ConfigSummary


class Ranking:
    """Every configuration's summary and a heap by (score, spread, trial): ``top(n)`` costs
    the same at the 5,000th training as at the 10th. Stale heap entries are skipped."""

    def __init__(self) -> None:
        self.live: dict[str, ConfigSummary] = {}
        self._heap: list[tuple[float, float, str, int]] = []
        self._version: dict[str, int] = {}
        #: Trials with more than one successful seed: those ``final_ranked`` may put first.
        self.several: set[str] = set()

    def __len__(self) -> int:
        return len(self.live)

    def add(self, r: SeedResult) -> None:
        """Add one recorded result to its configuration's summary and to the ranking."""
        s = self.live.get(r.trial)
        if s is None:
            s = self.live[r.trial] = ConfigSummary.of(r)
        ranked_before = s.n
        s.add(r)
        if s.n > 1:
            self.several.add(r.trial)
        if s.n != ranked_before:
            version = self._version.get(r.trial, 0) + 1
            self._version[r.trial] = version
            assert s.score is not None and s.score_std is not None
            heapq.heappush(self._heap, (s.score, s.score_std, r.trial, version))

    def top(self, n: int) -> list[ConfigSummary]:
        """The ``n`` best configurations, in ``ranked`` order, without ranking them all."""
        found: list[ConfigSummary] = []
        kept = []
        while self._heap and len(found) < n:
            entry = heapq.heappop(self._heap)
            if self._version.get(entry[2]) == entry[3]:  # else a superseded score
                found.append(self.live[entry[2]])
                kept.append(entry)
        for entry in kept:
            heapq.heappush(self._heap, entry)
        return found


def choose_parents(best: list[ConfigSummary], stage: NarrowStage) -> list[ConfigSummary]:
    """The configurations the narrow stage starts from, out of ``best`` (ranked): the
    ``top_k`` best overall, or the best of each depth first (``selection``), then the
    next best."""
    if stage.selection == "overall":
        return best[: stage.top_k]
    chosen: list[ConfigSummary] = []
    depths: set[int] = set()
    for s in best:
        if s.config[HIDDEN_LAYERS] not in depths:
            chosen.append(s)
            depths.add(s.config[HIDDEN_LAYERS])
    chosen.sort(key=lambda s: (s.score, s.score_std, s.trial))
    chosen = chosen[: stage.top_k]
    for s in best:
        if len(chosen) >= stage.top_k:
            break
        if s not in chosen:
            chosen.append(s)
    return chosen
