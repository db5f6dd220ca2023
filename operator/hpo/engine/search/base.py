"""The seam between the engine and a narrow-stage strategy: what it reads, what it gives."""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from hpo.engine.trials import Trial
from hpo.study.contract import NARROW_STAGE
from hpo.study.space import Config
from hpo.study.summary import ConfigSummary


@dataclass(frozen=True)
class Records:
    """The study as a strategy sees it at one moment, read-only, built by the engine for
    every call: everything a strategy decides with is here, so a study rebuilt from its
    records after a restart decides the same."""

    #: Every trial planned so far (recorded, running or queued), in the order planned.
    trials: Mapping[str, Trial]
    #: The configuration keys of ``trials``: never to be proposed again.
    known: Container[str]
    #: Configurations with a score, best first (``hpo.study.summary.ranked`` order).
    ranked: Callable[[], list[ConfigSummary]]
    #: Whether every seed the trial was given is recorded.
    complete: Callable[[str], bool]
    #: A complete trial's objective: its mean selection score, or a penalty if none succeeded.
    objective: Callable[[str], float]
    #: Trainings queued, running or waiting for their time: results still to come.
    in_progress: int

    def narrow(self) -> list[Trial]:
        """The narrow stage's trials so far, in the order planned."""
        return [t for t in self.trials.values() if t.stage == NARROW_STAGE]


@dataclass(frozen=True)
class Proposal:
    """A configuration to train next, and the trial it was found from (None: no parent)."""

    config: Config
    parent: str | None = None


class NarrowSearch(Protocol):
    """A narrow-stage strategy: proposes configurations near the random stage's best.

    A restarted study builds a fresh strategy and calls ``start`` again, so what it
    keeps between calls must come back from ``Records``: its random generators are
    seeded from the study's seed and how much was planned before, and a flag such as
    "exhausted" is only a memo of what its next ``propose`` would find again. (The
    Gaussian-process strategy's count of asks that gave nothing new starts again at
    zero after a restart: it may ask a few more times, never propose a trial twice.)
    """

    def start(self, parents: Sequence[ConfigSummary], records: Records) -> list[str]:
        """The stage begins (or resumes after a restart) from the random stage's ``parents``;
        ``records`` may hold narrow trials planned before. Returns notes for the user."""
        ...

    def propose(self, n: int, records: Records) -> list[Proposal]:
        """Up to ``n`` new configurations, none of them in ``records.known``, no repeats."""
        ...

    def remaining(self, records: Records) -> int:
        """How many more configurations it may propose; 0 once it is exhausted."""
        ...
