"""The Gaussian-process strategy (scikit-optimize): one optimiser per handed-over configuration.

The optimiser lives over grid indices of a ``NarrowSpace``. Every ask builds
it afresh from what the study has recorded in that space at that moment, with
a random state drawn from the number of configurations planned so far: what
it proposes is a function of the records alone, so a study rebuilt after a
restart proposes exactly what the live study would have (the optimiser's own
state, grown by one tell after another, could not be rebuilt that way).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from skopt import Optimizer
from skopt.space import Integer

from hpo.engine.budget import stage_sizes
from hpo.engine.search.base import Proposal, Records
from hpo.study.space import Config, NarrowSpace, config_key, narrow
from hpo.study.spec import StudySpec
from hpo.study.summary import ConfigSummary

#: Asks in a row that bring nothing new before a search is declared exhausted.
MAX_BARREN_ASKS = 5
#: Candidate points scored per ask.
ACQ_POINTS = 1_000
#: Grids up to this size are checked for being used up before the optimiser is built.
SMALL_GRID = 4_096


class ParentSearch:
    """Bayesian search around one parent configuration, with a trial budget."""

    def __init__(
        self,
        space: NarrowSpace,
        budget: int,
        estimator: str,
        initial_points: int,
        random_state: int,
    ) -> None:
        self.space = space
        self.budget = budget
        self.planned = 0
        self.estimator = estimator
        self.initial_points = initial_points
        self.random_state = random_state
        self._free = space.free_dims
        self._barren = False

    @property
    def exhausted(self) -> bool:
        return not self._free or self.planned >= self.budget or self._barren

    def _point(self, config: Config) -> list[int]:
        idx = self.space.to_indices(config)
        return [idx[i] for i in self._free]

    def _config(self, point: list[int]) -> Config:
        idx = self.space.to_indices(self.space.parent)
        for dim, value in zip(self._free, point, strict=True):
            idx[dim] = int(value)
        return self.space.to_config(idx)

    def _free_points(self, taken: Callable[[str], bool]) -> list[Config] | None:
        """Every configuration of a small grid that is no trial yet (None for a large grid:
        walking it would cost more than the asks, and repeats there are rare)."""
        if self.space.size > SMALL_GRID:
            return None
        sizes = [len(c) for c in self.space.choices]
        grid = (self.space.to_config(i) for i in itertools.product(*(range(n) for n in sizes)))
        return [c for c in grid if not taken(config_key(c))]

    def _by_prediction(self, opt: Optimizer, configs: list[Config]) -> list[Config]:
        """``configs`` by the fitted model's prediction (as given while there is none yet)."""
        if not configs or not opt.models:
            return configs
        x = opt.space.transform([self._point(c) for c in configs])
        predicted = opt.models[-1].predict(x)
        order = sorted(range(len(configs)), key=lambda i: (float(predicted[i]), i))
        return [configs[i] for i in order]

    def _optimizer(self, observed: list[tuple[Config, float]]) -> Optimizer:
        dims = [Integer(0, len(self.space.choices[i]) - 1) for i in self._free]
        # The narrow grid is small: scoring a few hundred candidates per ask
        # covers it, where skopt's default 10,000 cost seconds per ask.
        opt = Optimizer(
            dims,
            base_estimator=self.estimator,
            n_initial_points=self.initial_points,
            random_state=(self.random_state * 100_003 + self.planned) % 2**32,
            acq_optimizer="sampling",
            acq_optimizer_kwargs={"n_points": min(ACQ_POINTS, 4 * self.space.size)},
        )
        if observed:
            # One canonical order (by key): the same records give the same model.
            ordered = sorted(observed, key=lambda o: config_key(o[0]))
            opt.tell([self._point(c) for c, _ in ordered], [float(y) for _, y in ordered])
        return opt

    def ask(
        self,
        n: int,
        observed: Iterable[tuple[Config, float]],
        taken: Callable[[str], bool],
        pending: int = 0,
    ) -> list[Config]:
        """Up to ``n`` new configurations of this space.

        ``observed``: every configuration of this space with a recorded objective
        (whichever stage trained it), and those still training with a lie
        (``constant_lies``); ``taken(key)``: whether a configuration is a
        trial of the study already (recorded, running or planned), never proposed;
        ``pending``: this search's configurations still training, which the optimiser
        does not know of and may well propose again (so it is asked for that many more).
        """
        n = min(n, self.budget - self.planned)
        if n <= 0 or self.exhausted:
            return []
        free = self._free_points(taken)
        if free is not None and not free:
            self._barren = True  # every point is a trial: nothing to fit a model for
            return []
        seen = [(c, y) for c, y in observed if self.space.contains(c)]
        out: list[Config] = []
        keys: set[str] = set()
        barren = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = self._optimizer(seen)
            while len(out) < n and barren < MAX_BARREN_ASKS:
                fresh = False
                extra = 0 if free is not None else pending + barren  # small: filled below
                for p in opt.ask(n_points=n - len(out) + extra):
                    config = self._config([int(v) for v in p])
                    key = config_key(config)
                    if key in keys or taken(key) or len(out) >= n:
                        continue
                    keys.add(key)
                    out.append(config)
                    fresh = True
                if free is not None and len(out) < n:
                    # A small grid: the optimiser's repeats say little; the free points
                    # it did not propose go next, best predicted first.
                    rest = [c for c in free if config_key(c) not in keys]
                    for config in self._by_prediction(opt, rest)[: n - len(out)]:
                        keys.add(config_key(config))
                        out.append(config)
                    break
                barren = 0 if fresh else barren + 1
        self._barren = barren >= MAX_BARREN_ASKS
        self.planned += len(out)
        return out


def constant_lies(records: Records, scores: list[float]) -> list[tuple[Config, float]]:
    """Configurations still to come (queued, running, raced), each told to the optimiser
    as if it had scored the mean of the recorded objectives (a constant liar): so proposals
    made while they train spread out instead of crowding where they already are. A
    sequential study has none when it proposes, so it decides as before."""
    if not scores:
        return []
    lie = sum(scores) / len(scores)
    return [(t.config, lie) for t in records.trials.values() if not records.complete(t.id)]


@dataclass
class _Parent:
    """One handed-over configuration and the optimiser searching around it."""

    trial: str
    space: NarrowSpace
    search: ParentSearch


class GaussianSearch:
    """The narrow stage as one small Bayesian optimisation per parent, each in the parent's
    narrowed grid (``hpo.study.space.narrow``) with its own share of the budget."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        self.parents: list[_Parent] = []

    def start(self, parents: Sequence[ConfigSummary], records: Records) -> list[str]:
        """One optimiser per parent; after a restart each counts what it planned before
        (what it was told needs no rebuilding: every ask reads the records afresh)."""
        stage = self.spec.narrow_stage
        for j, s in enumerate(parents):
            space = narrow(s.config, self.spec.search_space, stage)
            search = ParentSearch(
                space,
                budget=stage_sizes(self.spec).trials_per_config,
                estimator=stage.estimator,
                initial_points=stage.initial_points,
                random_state=self.spec.random_stage.seed * 1009 + j,
            )
            self.parents.append(_Parent(s.trial, space, search))
        by_parent = {p.trial: p for p in self.parents}
        notes = []
        for t in sorted(records.narrow(), key=lambda t: t.id):
            p = by_parent.get(t.parent or "")
            if p is None:
                notes.append(f"trial {t.id} has an unknown parent {t.parent}; kept as is")
                continue
            p.search.planned += 1
        return notes

    def remaining(self, records: Records) -> int:
        if all(p.search.exhausted for p in self.parents):
            return 0
        return sum(max(0, p.search.budget - p.search.planned) for p in self.parents)

    def propose(self, n: int, records: Records) -> list[Proposal]:
        """``n`` configurations shared out over the parents whose search is not exhausted."""
        active = [p for p in self.parents if not p.search.exhausted]
        if not active:
            return []
        share, extra = divmod(n, len(active))
        # Every configuration with all its seeds recorded, whichever stage trained it.
        observed = [
            (t.config, records.objective(t.id))
            for t in records.trials.values()
            if records.complete(t.id)
        ]
        observed += constant_lies(records, [y for _, y in observed])
        narrow_trials = records.narrow()
        out: list[Proposal] = []
        keys: set[str] = set()

        def taken(key: str) -> bool:
            return key in records.known or key in keys  # not twice, by two parents either

        for i, p in enumerate(active):
            k = share + (1 if i < extra else 0)
            if k == 0:
                continue
            pending = sum(
                1 for t in narrow_trials if t.parent == p.trial and not records.complete(t.id)
            )
            for config in p.search.ask(k, observed, taken, pending):
                key = config_key(config)
                if taken(key):
                    continue
                keys.add(key)
                out.append(Proposal(config, p.trial))
        return out
