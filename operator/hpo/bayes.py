"""The scikit-optimize bridge: one optimiser per handed-over configuration.

The optimiser lives over grid indices of a ``NarrowSpace``; it is rebuilt
from recorded results (after a restart) simply by telling it everything
recorded again, in trial order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from skopt import Optimizer
from skopt.space import Integer

from hpo.space import Config, NarrowSpace, config_key

#: Asks in a row that bring nothing new before a search is declared exhausted.
MAX_BARREN_ASKS = 5
#: Candidate points scored per ask.
ACQ_POINTS = 1_000


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
        self.barren_asks = 0
        self.known: dict[str, float | None] = {}
        self._free = space.free_dims
        self._opt: Optimizer | None = None
        if self._free:
            dims = [Integer(0, len(space.choices[i]) - 1) for i in self._free]
            # The narrow grid is small: scoring a few hundred candidates per ask
            # covers it, where skopt's default 10,000 cost seconds per ask.
            self._opt = Optimizer(
                dims,
                base_estimator=estimator,
                n_initial_points=initial_points,
                random_state=random_state,
                acq_optimizer="sampling",
                acq_optimizer_kwargs={"n_points": min(ACQ_POINTS, 4 * space.size)},
            )

    @property
    def exhausted(self) -> bool:
        return (
            self._opt is None
            or self.planned >= self.budget
            or self.barren_asks >= MAX_BARREN_ASKS
            or len(self.known) >= self.space.size
        )

    def _point(self, config: Config) -> list[int]:
        idx = self.space.to_indices(config)
        return [idx[i] for i in self._free]

    def _config(self, point: list[int]) -> Config:
        idx = self.space.to_indices(self.space.parent)
        for dim, value in zip(self._free, point, strict=True):
            idx[dim] = int(value)
        return self.space.to_config(idx)

    def tell(self, config: Config, objective: float) -> None:
        """Record an observed mean MAE (from a training or from the ledger)."""
        self.tell_many([config], [objective])

    def tell_many(self, configs: list[Config], objectives: list[float]) -> None:
        """Several observations with one model fit (rebuilding after a restart)."""
        if not configs:
            return
        for config, y in zip(configs, objectives, strict=True):
            self.known[config_key(config)] = y
        if self._opt is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._opt.tell([self._point(c) for c in configs], [float(y) for y in objectives])

    def mark_pending(self, config: Config) -> None:
        """A configuration is planned; it must not be suggested again."""
        self.known.setdefault(config_key(config), None)

    def ask(self, n: int, lookup: Callable[[str], float | None]) -> list[Config]:
        """Up to ``n`` new configurations; repeats of recorded ones are answered via ``lookup``.

        ``lookup(key)`` returns the recorded objective of a configuration that
        was trained elsewhere in the study (e.g. by the random stage), or None.
        """
        n = min(n, self.budget - self.planned)
        if n <= 0 or self.exhausted or self._opt is None:
            return []
        out: list[Config] = []
        while len(out) < n and not self.exhausted:
            pending = sum(1 for v in self.known.values() if v is None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                points = self._opt.ask(n_points=n - len(out) + pending)
            fresh = False
            for p in points:
                config = self._config([int(v) for v in p])
                key = config_key(config)
                if key in self.known:
                    continue
                recorded = lookup(key)
                if recorded is not None:
                    self.tell(config, recorded)
                    fresh = True
                    continue
                if len(out) < n:
                    self.mark_pending(config)
                    out.append(config)
                    fresh = True
            self.barren_asks = 0 if fresh else self.barren_asks + 1
        self.planned += len(out)
        return out
