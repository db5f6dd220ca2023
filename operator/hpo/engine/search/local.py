"""Local search: try the untried one-step neighbours of the best configurations so far.

Chosen on the exact FCNet benchmark (``benchmarks/exact_search.py``): at 80 and
160 trainings, walking the neighbourhood of the incumbent found better
configurations than Optuna's TPE and than one small Gaussian process per parent.
A neighbour changes one knob by one step: an ordered knob (a layer's width, the
learning rate, a dropout rate, the batch size, the L2 factor, the depth) moves
to the next value up or down (with a shared width, every layer's at once); a
categorical one (an activation, the optimiser, the schedule) to each other value.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any

import numpy as np

from hpo.engine.budget import stage_sizes
from hpo.engine.search.base import Proposal, Records
from hpo.engine.search.surrogate import Surrogate
from hpo.study.contract import (
    ACTIVATION,
    BATCH_SIZE,
    DROPOUT,
    HIDDEN_LAYERS,
    L2,
    LEARNING_RATE,
    LR_SCHEDULE,
    NEURONS,
    OPTIMIZER,
)
from hpo.study.space import Config, config_key, learning_rates, normalise, round_lr
from hpo.study.spec import NarrowStage, SearchSpace, StudySpec
from hpo.study.summary import ConfigSummary


def _steps(values: list[Any], current: Any) -> list[Any]:
    """The values next to ``current`` in an ordered list (nearest if it is not in it)."""
    if not values:
        return []
    pos = min(range(len(values)), key=lambda i: abs(float(values[i]) - float(current)))
    if values[pos] != current:
        return [values[pos]]
    return [values[i] for i in (pos - 1, pos + 1) if 0 <= i < len(values)]


def _lr_steps(space: SearchSpace, stage: NarrowStage, lr: float) -> list[float]:
    if space.learning_rate.choices:
        return _steps(learning_rates(space), lr)
    lo, hi = round_lr(space.learning_rate.min), round_lr(space.learning_rate.max)
    out = []
    for sign in (-1, 1):
        v = round_lr(lr * 10 ** (sign * stage.learning_rate_step))
        v = min(max(v, lo), hi)
        if v != lr:
            out.append(v)
    return out


def _width_steps(space: SearchSpace, stage: NarrowStage, width: int) -> list[int]:
    if space.neurons.choices:
        return _steps(space.neurons.grid, width)
    lo, hi = space.neurons.min, space.neurons.max
    return [w for w in (width - stage.neurons_step, width + stage.neurons_step) if lo <= w <= hi]


def _layers(value: Any, depth: int) -> list[Any]:
    return list(value) if isinstance(value, list) else [value] * depth


def neighbours(config: Config, space: SearchSpace, stage: NarrowStage) -> list[Config]:
    """Every one-step neighbour of ``config`` inside ``space``, in a fixed order, no repeats."""
    c = normalise(config)
    depth = c[HIDDEN_LAYERS]
    out: list[Config] = []

    def add(**change: Any) -> None:
        out.append({**c, **change})

    if space.shared_width:  # every layer's width moves as one
        for w in _width_steps(space, stage, c[NEURONS][0]):
            add(neurons=[w] * depth)
    else:
        for i, width in enumerate(c[NEURONS]):
            for w in _width_steps(space, stage, width):
                add(neurons=[*c[NEURONS][:i], w, *c[NEURONS][i + 1 :]])
    for lr in _lr_steps(space, stage, c[LEARNING_RATE]):
        add(learning_rate=lr)
    for bs in _steps(sorted(space.batch_sizes), c[BATCH_SIZE]):
        add(batch_size=bs)
    for name, values in (
        (OPTIMIZER, space.optimizers),
        (LR_SCHEDULE, space.learning_rate_schedules),
    ):
        for v in values:
            if v != c[name]:
                add(**{name: v})
    for l2 in _steps(list(space.l2), c[L2]):
        add(l2=l2)
    acts = _layers(c[ACTIVATION], depth)
    if space.activation_per_layer:
        for i in range(depth):
            for a in space.activations:
                if a != acts[i]:
                    add(activation=[*acts[:i], a, *acts[i + 1 :]])
    else:
        for a in space.activations:
            if a != c[ACTIVATION]:
                add(activation=a)
    drops = _layers(c[DROPOUT], depth)
    if space.dropout_per_layer:
        for i in range(depth):
            for d in _steps(list(space.dropout), drops[i]):
                add(dropout=[*drops[:i], d, *drops[i + 1 :]])
    else:
        for d in _steps(list(space.dropout), c[DROPOUT]):
            add(dropout=d)
    # Depth: drop the last layer, or repeat it (same width, activation and dropout).
    if depth - 1 >= space.hidden_layers.min:
        add(
            neurons=c[NEURONS][:-1],
            activation=_layers(c[ACTIVATION], depth)[:-1],
            dropout=_layers(c[DROPOUT], depth)[:-1],
        )
    if depth + 1 <= space.hidden_layers.max:
        add(
            neurons=[*c[NEURONS], c[NEURONS][-1]],
            activation=[*acts, acts[-1]],
            dropout=[*drops, drops[-1]],
        )
    seen: set[str] = {config_key(c)}
    unique = []
    for n in out:
        n = normalise(n)
        key = config_key(n)
        if key not in seen:
            seen.add(key)
            unique.append(n)
    return unique


class LocalSearch:
    """The narrow stage as a walk: untried neighbours of the best configurations so far,
    ordered by the shared ``Surrogate`` (a helper model, not a strategy of its own)."""

    def __init__(self, spec: StudySpec) -> None:
        self.space = spec.search_space
        self.stage = spec.narrow_stage
        self.seed = spec.random_stage.seed
        sizes = stage_sizes(spec)
        self.budget = sizes.top_k * sizes.trials_per_config
        #: Set once a proposal found nothing while no result was still to come; a rebuilt
        #: study finds that again on its first proposal.
        self._exhausted = False

    def start(self, parents: Sequence[ConfigSummary], records: Records) -> list[str]:
        """Nothing to set up: every proposal starts from the ranking of the moment."""
        return []

    def remaining(self, records: Records) -> int:
        if self._exhausted:
            return 0
        return max(0, self.budget - len(records.narrow()))

    def propose(self, n: int, records: Records) -> list[Proposal]:
        """Up to ``n`` untried neighbours of the complete configurations, best first."""
        planned = len(records.narrow())
        n = min(n, self.budget - planned)
        if n <= 0:
            return []
        seen = records.ranked()
        best = [(s.trial, s.config) for s in seen if records.complete(s.trial)]
        rng = study_rng(self.seed, planned)
        predict = None
        if self.stage.surrogate:
            configs, scores = [s.config for s in seen], [s.score or 0.0 for s in seen]
            predict = Surrogate(configs, scores, self.space.shared_width).predict
        chosen = self._walk(n, best, records.known, rng, predict)
        # Every neighbour of every result is known, unless a training is still to come
        # (a retry handed out in this very call is in neither running nor waiting).
        idle = not chosen and not records.in_progress
        if idle and all(records.complete(t) for t in records.trials):
            self._exhausted = True
        return [Proposal(config, parent) for parent, config in chosen]

    def _walk(
        self,
        n: int,
        ranked_configs: Iterable[tuple[str, Config]],
        known: Container[str],
        rng: np.random.Generator,
        predict: Callable[[list[Config]], np.ndarray] | None,
    ) -> list[tuple[str, Config]]:
        """Up to ``n`` untried configurations, each with the trial it is a neighbour of.

        ``ranked_configs`` are (trial, config) best first; the untried neighbours of
        the best one are taken first, then those of the next best, and so on. Among
        one configuration's neighbours, ``predict`` (lower is better) orders them;
        without it the order is random.
        """
        out: list[tuple[str, Config]] = []
        taken: set[str] = set()
        for parent, config in ranked_configs:
            if len(out) >= n:
                break
            fresh = [
                c
                for c in neighbours(config, self.space, self.stage)
                if config_key(c) not in known and config_key(c) not in taken
            ]
            order = [int(i) for i in rng.permutation(len(fresh))]
            if predict is not None and fresh:
                guess = predict(fresh)
                order = sorted(order, key=lambda i: float(guess[i]))
            for i in order:
                if len(out) >= n:
                    break
                chosen = fresh[i]
                taken.add(config_key(chosen))
                out.append((parent, chosen))
        return out


def study_rng(seed: int, planned: int) -> np.random.Generator:
    """The generator of the next proposal: a function of the study's seed and how many
    narrow-stage configurations exist, so a restart proposes what the first run would."""
    return np.random.default_rng([seed, planned, 7919])


__all__ = ["LocalSearch", "neighbours", "study_rng"]
