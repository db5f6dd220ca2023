"""Configurations: canonical keys, unique random sampling, narrowing for the narrow stage.

A configuration is a plain dict (``hidden_layers``, ``neurons`` (one count
per layer), ``activation``, ``learning_rate``, ``batch_size``,
``optimizer``). Learning rates are kept to 3 significant digits so that the
canonical key makes "the same configuration" a finite, checkable notion.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from hpo.study.spec import NarrowStage, SearchSpace

Config = dict[str, Any]

#: Spaces at most this large are enumerated and shuffled, so exhaustion is exact.
ENUMERATE_LIMIT = 20_000
#: Consecutive repeats after which rejection sampling gives up on a huge space.
MAX_CONSECUTIVE_REPEATS = 2_000


def round_lr(value: float) -> float:
    return float(f"{value:.3g}")


def _per_layer(value: Any, depth: int, cast: Any) -> Any:
    """A per-layer list whose entries are all equal is the same network as one value."""
    if isinstance(value, list | tuple):
        values = [cast(v) for v in value]
        if len(values) != depth:
            raise ValueError(f"expected one value per hidden layer ({depth}), got {values!r}")
        return values[0] if len(set(values)) == 1 else values
    return cast(value)


def normalise(config: Config) -> Config:
    """The canonical form: plain Python types, learning rate to 3 significant digits.

    The knobs added after v0.1 (``dropout``, ``l2``, ``lr_schedule``) are always
    present; their defaults leave the key of a v0.1 configuration unchanged.
    """
    neurons = [int(n) for n in config[NEURONS]]
    depth = len(neurons)
    return {
        HIDDEN_LAYERS: depth,
        NEURONS: neurons,
        ACTIVATION: _per_layer(config[ACTIVATION], depth, str),
        LEARNING_RATE: round_lr(float(config[LEARNING_RATE])),
        BATCH_SIZE: int(config[BATCH_SIZE]),
        OPTIMIZER: str(config[OPTIMIZER]),
        DROPOUT: _per_layer(config.get(DROPOUT, 0.0), depth, float),
        L2: round_lr(float(config.get(L2, 0.0))) if config.get(L2) else 0.0,
        LR_SCHEDULE: str(config.get(LR_SCHEDULE, "constant")),
    }


def _joined(value: Any, fmt: str = "{}") -> str:
    if isinstance(value, list):
        return "-".join(fmt.format(v) for v in value)
    return fmt.format(value)


def config_key(config: Config) -> str:
    """Readable and canonical: two configurations are the same iff their keys are."""
    c = normalise(config)
    neurons = "-".join(str(n) for n in c[NEURONS])
    key = (
        f"L{c[HIDDEN_LAYERS]}|{neurons}|{_joined(c[ACTIVATION])}|lr={c[LEARNING_RATE]:.3g}"
        f"|bs={c[BATCH_SIZE]}|{c[OPTIMIZER]}"
    )
    if c[DROPOUT] != 0.0:
        key += f"|do={_joined(c[DROPOUT], '{:g}')}"
    if c[L2]:
        key += f"|l2={c[L2]:.3g}"
    if c[LR_SCHEDULE] != "constant":
        key += f"|{c[LR_SCHEDULE]}"
    return key


def neuron_grid(space: SearchSpace) -> list[int]:
    return space.neurons.grid


def learning_rates(space: SearchSpace) -> list[float]:
    """Every learning rate the space can give, smallest first."""
    lr = space.learning_rate
    return list(lr.choices) if lr.choices else lr_grid(lr.min, lr.max)


def lr_grid(lo: float, hi: float) -> list[float]:
    """Every 3-significant-digit value in [lo, hi] (the ends included)."""
    values = {round_lr(lo), round_lr(hi)}
    for exp in range(math.floor(math.log10(lo)) - 1, math.floor(math.log10(hi)) + 1):
        for mant in range(100, 1000):
            v = round_lr(mant * 10.0 ** (exp - 2))
            if lo <= v <= hi:
                values.add(v)
    return sorted(v for v in values if round_lr(lo) <= v <= round_lr(hi))


def _layer_choices(space: SearchSpace, depth: int) -> tuple[int, int]:
    """How many activation and dropout settings a network of ``depth`` layers can have."""
    acts = len(space.activations) ** (depth if space.activation_per_layer else 1)
    drops = len(space.dropout) ** (depth if space.dropout_per_layer else 1)
    return acts, drops


def _widths(space: SearchSpace, depth: int) -> int:
    """How many width settings a network of ``depth`` layers can have."""
    return len(neuron_grid(space)) ** (1 if space.shared_width else depth)


def space_size(space: SearchSpace) -> int:
    """Distinct networks (a per-layer list of equal values counts once, as its key does)."""
    lrs = len(learning_rates(space))
    others = (
        len(space.batch_sizes)
        * len(space.optimizers)
        * lrs
        * len(space.l2)
        * len(space.learning_rate_schedules)
    )
    total = 0
    for d in range(space.hidden_layers.min, space.hidden_layers.max + 1):
        acts, drops = _layer_choices(space, d)
        total += _widths(space, d) * acts * drops * others
    return total


def _extras(space: SearchSpace) -> list[tuple[str, list[Any]]]:
    """The knobs added after v0.1 with more than one value, in a fixed order. Knobs
    with one value draw nothing, so a v0.1 space samples exactly as it did."""
    out: list[tuple[str, list[Any]]] = []
    if len(space.l2) > 1:
        out.append((L2, list(space.l2)))
    if len(space.learning_rate_schedules) > 1:
        out.append((LR_SCHEDULE, list(space.learning_rate_schedules)))
    return out


def _enumerate(space: SearchSpace) -> Iterator[Config]:
    grid = neuron_grid(space)
    lrs = learning_rates(space)
    extras = _extras(space)
    fixed = {
        DROPOUT: space.dropout[0],
        L2: space.l2[0],
        LR_SCHEDULE: space.learning_rate_schedules[0],
    }
    for depth in range(space.hidden_layers.min, space.hidden_layers.max + 1):
        act_sets: Iterable[Any] = (
            (list(a) for a in itertools.product(space.activations, repeat=depth))
            if space.activation_per_layer and depth > 1
            else iter(space.activations)
        )
        act_list = list(act_sets)
        drop_list: list[Any] = (
            [list(d) for d in itertools.product(space.dropout, repeat=depth)]
            if space.dropout_per_layer and depth > 1
            else list(space.dropout)
        )
        widths: Iterable[tuple[int, ...]] = (
            ((w,) * depth for w in grid)
            if space.shared_width
            else itertools.product(grid, repeat=depth)
        )
        for neurons in widths:
            for act, lr, bs, opt in itertools.product(
                act_list, lrs, space.batch_sizes, space.optimizers
            ):
                for drop in drop_list:
                    for values in itertools.product(*(v for _, v in extras)):
                        config = {
                            **fixed,
                            HIDDEN_LAYERS: depth,
                            NEURONS: list(neurons),
                            ACTIVATION: act,
                            LEARNING_RATE: lr,
                            BATCH_SIZE: bs,
                            OPTIMIZER: opt,
                            DROPOUT: drop,
                        }
                        config.update({k: v for (k, _), v in zip(extras, values, strict=True)})
                        # Equal per-layer values normalise to one value: each network once.
                        yield normalise(config)


def _sample(space: SearchSpace, rng: np.random.Generator) -> Config:
    grid = neuron_grid(space)
    depth = int(rng.integers(space.hidden_layers.min, space.hidden_layers.max + 1))
    widths = 1 if space.shared_width else depth  # drawn: one width, or one per layer
    if space.learning_rate.choices:
        lr_choices = space.learning_rate.choices
        lr = lr_choices[int(rng.integers(len(lr_choices)))]
    else:
        lo, hi = math.log10(space.learning_rate.min), math.log10(space.learning_rate.max)
        lr = round_lr(10 ** rng.uniform(lo, hi))
        lr = min(max(lr, round_lr(space.learning_rate.min)), round_lr(space.learning_rate.max))
    config: Config = {
        HIDDEN_LAYERS: depth,
        NEURONS: [int(grid[i]) for i in rng.integers(0, len(grid), size=widths)],
        ACTIVATION: space.activations[int(rng.integers(len(space.activations)))],
        LEARNING_RATE: lr,
        BATCH_SIZE: int(space.batch_sizes[int(rng.integers(len(space.batch_sizes)))]),
        OPTIMIZER: space.optimizers[int(rng.integers(len(space.optimizers)))],
        DROPOUT: space.dropout[0],
        L2: space.l2[0],
        LR_SCHEDULE: space.learning_rate_schedules[0],
    }
    if space.shared_width:
        config[NEURONS] = config[NEURONS] * depth
    if space.activation_per_layer and depth > 1:
        picks = rng.integers(len(space.activations), size=depth - 1)
        config[ACTIVATION] = [config[ACTIVATION], *(space.activations[int(i)] for i in picks)]
    if len(space.dropout) > 1:
        n = depth if space.dropout_per_layer else 1
        drops = [space.dropout[int(i)] for i in rng.integers(len(space.dropout), size=n)]
        config[DROPOUT] = drops if space.dropout_per_layer else drops[0]
    for name, values in _extras(space):
        config[name] = values[int(rng.integers(len(values)))]
    return normalise(config)


@dataclass(frozen=True)
class Plan:
    configs: list[Config]
    #: Set when the space could not give as many unique configurations as asked.
    shortfall: str | None = None


def sample_unique(
    space: SearchSpace, n: int, seed: int, exclude: frozenset[str] = frozenset()
) -> Plan:
    """The first ``n`` unique configurations of the study's deterministic stream.

    The stream depends only on the space and the seed, so asking for more
    later (a bigger budget, a restart) extends the same list: ``n`` is only
    where it is cut. Configurations whose key is in ``exclude`` (known already:
    a warm start's) are skipped.
    """
    rng = np.random.default_rng(seed)
    size = space_size(space)
    if size <= ENUMERATE_LIMIT:
        everything = list(_enumerate(space))
        order = rng.permutation(len(everything))
        if exclude:
            kept = [i for i in order if config_key(everything[i]) not in exclude]
        else:
            kept = list(order[:n])
        configs = [everything[i] for i in kept[:n]]
        if len(configs) < n:
            return Plan(
                configs,
                f"the search space holds only {size} unique configurations"
                f"{f' ({size - len(kept)} known already)' if exclude else ''}; "
                f"{n} were asked for, going on with {len(configs)}",
            )
        return Plan(configs)
    seen: set[str] = set(exclude)
    configs = []
    repeats = 0
    while len(configs) < n:
        c = _sample(space, rng)
        k = config_key(c)
        if k in seen:
            repeats += 1
            if repeats >= MAX_CONSECUTIVE_REPEATS:
                return Plan(
                    configs,
                    f"found only {len(configs)} unique configurations after "
                    f"{MAX_CONSECUTIVE_REPEATS} consecutive repeats; {n} were asked for",
                )
            continue
        repeats = 0
        seen.add(k)
        configs.append(c)
    return Plan(configs)


def contains(space: SearchSpace, config: Config) -> bool:
    """Whether ``space`` can give ``config`` (a warm start's configurations must)."""
    c = normalise(config)
    depth = c[HIDDEN_LAYERS]
    lrs = space.learning_rate
    lr_ok = (
        c[LEARNING_RATE] in lrs.choices
        if lrs.choices
        else round_lr(lrs.min) <= c[LEARNING_RATE] <= round_lr(lrs.max)
    )
    acts = c[ACTIVATION] if isinstance(c[ACTIVATION], list) else [c[ACTIVATION]]
    drops = c[DROPOUT] if isinstance(c[DROPOUT], list) else [c[DROPOUT]]
    return (
        space.hidden_layers.min <= depth <= space.hidden_layers.max
        and all(n in space.neurons.grid for n in c[NEURONS])
        and (not space.shared_width or len(set(c[NEURONS])) == 1)
        and lr_ok
        and all(a in space.activations for a in acts)
        and (space.activation_per_layer or len(acts) == 1)
        and all(d in space.dropout for d in drops)
        and (space.dropout_per_layer or len(drops) == 1)
        and c[BATCH_SIZE] in space.batch_sizes
        and c[OPTIMIZER] in space.optimizers
        and c[L2] in space.l2
        and c[LR_SCHEDULE] in space.learning_rate_schedules
    )


@dataclass(frozen=True)
class NarrowSpace:
    """A grid around one configuration: same depth, activation, batch size, optimizer.

    ``choices[i]`` are the values of dimension i: one per hidden layer's
    neurons (one for them all if ``shared_width``), then the learning rate. The
    optimiser searches over indices into these lists, so every suggestion is a
    grid point with a canonical key.
    """

    parent: Config
    choices: list[list[float]]
    shared_width: bool = False

    def _values(self, config: Config) -> list[Any]:
        """A configuration's value of each dimension."""
        widths = config[NEURONS][:1] if self.shared_width else config[NEURONS]
        return [*widths, config[LEARNING_RATE]]

    @property
    def size(self) -> int:
        return math.prod(len(c) for c in self.choices)

    @property
    def free_dims(self) -> list[int]:
        return [i for i, c in enumerate(self.choices) if len(c) > 1]

    def to_config(self, indices: Iterable[int]) -> Config:
        values = [c[int(i)] for c, i in zip(self.choices, indices, strict=True)]
        neurons = [int(v) for v in values[:-1]]
        if self.shared_width:
            neurons = neurons * self.parent[HIDDEN_LAYERS]
        return normalise({**self.parent, NEURONS: neurons, LEARNING_RATE: values[-1]})

    def to_indices(self, config: Config) -> list[int]:
        """Nearest grid indices of a configuration (exact for anything this space produced)."""
        values = self._values(config)
        out = []
        for i, (choices, v) in enumerate(zip(self.choices, values, strict=True)):
            if i == len(self.choices) - 1:
                dist = [abs(math.log10(c) - math.log10(v)) for c in choices]
            else:
                dist = [abs(c - v) for c in choices]
            out.append(int(np.argmin(dist)))
        return out

    def contains(self, config: Config) -> bool:
        c = normalise(config)
        same = all(
            c[k] == self.parent[k]
            for k in (
                HIDDEN_LAYERS,
                ACTIVATION,
                BATCH_SIZE,
                OPTIMIZER,
                DROPOUT,
                L2,
                LR_SCHEDULE,
            )
        )
        if not same or (self.shared_width and len(set(c[NEURONS])) > 1):
            return False
        values = self._values(c)
        return all(v in choices for v, choices in zip(values, self.choices, strict=True))

    def bounds(self) -> dict[str, Any]:
        """Human-readable bounds, for the ledger and for tests."""
        return {
            NEURONS: [(min(c), max(c)) for c in self.choices[:-1]],
            LEARNING_RATE: (min(self.choices[-1]), max(self.choices[-1])),
        }


def narrow(parent: Config, space: SearchSpace, stage: NarrowStage) -> NarrowSpace:
    """The narrow stage's grid around ``parent``, clipped to the declared space."""
    parent = normalise(parent)
    choices: list[list[float]] = []
    # One width dimension for a shared width (a parent of the space has equal widths).
    widths = parent[NEURONS][:1] if space.shared_width else parent[NEURONS]
    if space.neurons.choices:
        grid = space.neurons.choices
        for n in widths:
            near = [v for v in grid if abs(v - n) <= stage.neurons_radius]
            choices.append([float(v) for v in sorted(set(near) | {n})])
    else:
        lo, hi = space.neurons.min, space.neurons.max
        k_max = stage.neurons_radius // stage.neurons_step
        for n in widths:
            layer = sorted(
                {n + k * stage.neurons_step for k in range(-k_max, k_max + 1)}
                & set(range(lo, hi + 1))
                | {n}
            )
            choices.append([float(v) for v in layer])
    lr0 = parent[LEARNING_RATE]
    if space.learning_rate.choices:
        radius = stage.learning_rate_radius + 1e-9
        near_lr = {v for v in space.learning_rate.choices if abs(math.log10(v / lr0)) <= radius}
        choices.append(sorted(near_lr | {lr0}))
        return NarrowSpace(parent, choices, space.shared_width)
    lr_lo = round_lr(space.learning_rate.min)
    lr_hi = round_lr(space.learning_rate.max)
    j_max = math.floor(stage.learning_rate_radius / stage.learning_rate_step + 1e-9)
    lrs = {round_lr(lr0 * 10 ** (j * stage.learning_rate_step)) for j in range(-j_max, j_max + 1)}
    choices.append(sorted({v for v in lrs if lr_lo <= v <= lr_hi} | {lr0}))
    return NarrowSpace(parent, choices, space.shared_width)
