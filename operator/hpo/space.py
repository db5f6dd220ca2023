"""Configurations: canonical keys, unique random sampling, narrowing for the Bayesian stage.

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

from hpo.spec import BayesianStage, SearchSpace

Config = dict[str, Any]

#: Spaces at most this large are enumerated and shuffled, so exhaustion is exact.
ENUMERATE_LIMIT = 20_000
#: Consecutive repeats after which rejection sampling gives up on a huge space.
MAX_CONSECUTIVE_REPEATS = 2_000


def round_lr(value: float) -> float:
    return float(f"{value:.3g}")


def normalise(config: Config) -> Config:
    """The canonical form: plain Python types, learning rate to 3 significant digits."""
    neurons = [int(n) for n in config["neurons"]]
    return {
        "hidden_layers": len(neurons),
        "neurons": neurons,
        "activation": str(config["activation"]),
        "learning_rate": round_lr(float(config["learning_rate"])),
        "batch_size": int(config["batch_size"]),
        "optimizer": str(config["optimizer"]),
    }


def config_key(config: Config) -> str:
    """Readable and canonical: two configurations are the same iff their keys are."""
    c = normalise(config)
    neurons = "-".join(str(n) for n in c["neurons"])
    return (
        f"L{c['hidden_layers']}|{neurons}|{c['activation']}|lr={c['learning_rate']:.3g}"
        f"|bs={c['batch_size']}|{c['optimizer']}"
    )


def neuron_grid(space: SearchSpace) -> list[int]:
    n = space.neurons
    return list(range(n.min, n.max + 1, n.step))


def lr_grid(lo: float, hi: float) -> list[float]:
    """Every 3-significant-digit value in [lo, hi] (the ends included)."""
    values = {round_lr(lo), round_lr(hi)}
    for exp in range(math.floor(math.log10(lo)) - 1, math.floor(math.log10(hi)) + 1):
        for mant in range(100, 1000):
            v = round_lr(mant * 10.0 ** (exp - 2))
            if lo <= v <= hi:
                values.add(v)
    return sorted(v for v in values if round_lr(lo) <= v <= round_lr(hi))


def space_size(space: SearchSpace) -> int:
    per_layer = len(neuron_grid(space))
    depths = range(space.hidden_layers.min, space.hidden_layers.max + 1)
    lrs = len(lr_grid(space.learning_rate.min, space.learning_rate.max))
    others = len(space.activations) * len(space.batch_sizes) * len(space.optimizers) * lrs
    return sum(per_layer**d for d in depths) * others


def _enumerate(space: SearchSpace) -> Iterator[Config]:
    grid = neuron_grid(space)
    lrs = lr_grid(space.learning_rate.min, space.learning_rate.max)
    for depth in range(space.hidden_layers.min, space.hidden_layers.max + 1):
        for neurons in itertools.product(grid, repeat=depth):
            for act, lr, bs, opt in itertools.product(
                space.activations, lrs, space.batch_sizes, space.optimizers
            ):
                yield {
                    "hidden_layers": depth,
                    "neurons": list(neurons),
                    "activation": act,
                    "learning_rate": lr,
                    "batch_size": bs,
                    "optimizer": opt,
                }


def _sample(space: SearchSpace, rng: np.random.Generator) -> Config:
    grid = neuron_grid(space)
    depth = int(rng.integers(space.hidden_layers.min, space.hidden_layers.max + 1))
    lo, hi = math.log10(space.learning_rate.min), math.log10(space.learning_rate.max)
    lr = round_lr(10 ** rng.uniform(lo, hi))
    lr = min(max(lr, round_lr(space.learning_rate.min)), round_lr(space.learning_rate.max))
    return {
        "hidden_layers": depth,
        "neurons": [int(grid[i]) for i in rng.integers(0, len(grid), size=depth)],
        "activation": space.activations[int(rng.integers(len(space.activations)))],
        "learning_rate": lr,
        "batch_size": int(space.batch_sizes[int(rng.integers(len(space.batch_sizes)))]),
        "optimizer": space.optimizers[int(rng.integers(len(space.optimizers)))],
    }


@dataclass(frozen=True)
class Plan:
    configs: list[Config]
    #: Set when the space could not give as many unique configurations as asked.
    shortfall: str | None = None


def sample_unique(space: SearchSpace, n: int, seed: int) -> Plan:
    """The first ``n`` unique configurations of the study's deterministic stream.

    The stream depends only on the space and the seed, so asking for more
    later (a bigger budget, a restart) extends the same list: ``n`` is only
    where it is cut.
    """
    rng = np.random.default_rng(seed)
    size = space_size(space)
    if size <= ENUMERATE_LIMIT:
        everything = list(_enumerate(space))
        order = rng.permutation(len(everything))
        configs = [everything[i] for i in order[:n]]
        if len(configs) < n:
            return Plan(
                configs,
                f"the search space holds only {size} unique configurations; "
                f"{n} were asked for, going on with {size}",
            )
        return Plan(configs)
    seen: set[str] = set()
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


@dataclass(frozen=True)
class NarrowSpace:
    """A grid around one configuration: same depth, activation, batch size, optimizer.

    ``choices[i]`` are the values of dimension i: one per hidden layer's
    neurons, then the learning rate. The optimiser searches over indices into
    these lists, so every suggestion is a grid point with a canonical key.
    """

    parent: Config
    choices: list[list[float]]

    @property
    def size(self) -> int:
        return math.prod(len(c) for c in self.choices)

    @property
    def free_dims(self) -> list[int]:
        return [i for i, c in enumerate(self.choices) if len(c) > 1]

    def to_config(self, indices: Iterable[int]) -> Config:
        values = [c[int(i)] for c, i in zip(self.choices, indices, strict=True)]
        return normalise(
            {**self.parent, "neurons": [int(v) for v in values[:-1]], "learning_rate": values[-1]}
        )

    def to_indices(self, config: Config) -> list[int]:
        """Nearest grid indices of a configuration (exact for anything this space produced)."""
        values = [*config["neurons"], config["learning_rate"]]
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
            for k in ("hidden_layers", "activation", "batch_size", "optimizer")
        )
        if not same:
            return False
        values = [*c["neurons"], c["learning_rate"]]
        return all(v in choices for v, choices in zip(values, self.choices, strict=True))

    def bounds(self) -> dict[str, Any]:
        """Human-readable bounds, for the ledger and for tests."""
        return {
            "neurons": [(min(c), max(c)) for c in self.choices[:-1]],
            "learning_rate": (min(self.choices[-1]), max(self.choices[-1])),
        }


def narrow(parent: Config, space: SearchSpace, stage: BayesianStage) -> NarrowSpace:
    """The Bayesian stage's grid around ``parent``, clipped to the declared space."""
    parent = normalise(parent)
    lo, hi = space.neurons.min, space.neurons.max
    k_max = stage.neurons_radius // stage.neurons_step
    choices: list[list[float]] = []
    for n in parent["neurons"]:
        layer = sorted(
            {n + k * stage.neurons_step for k in range(-k_max, k_max + 1)} & set(range(lo, hi + 1))
            | {n}
        )
        choices.append([float(v) for v in layer])
    lr0 = parent["learning_rate"]
    lr_lo = round_lr(space.learning_rate.min)
    lr_hi = round_lr(space.learning_rate.max)
    j_max = math.floor(stage.learning_rate_radius / stage.learning_rate_step + 1e-9)
    lrs = {round_lr(lr0 * 10 ** (j * stage.learning_rate_step)) for j in range(-j_max, j_max + 1)}
    choices.append(sorted({v for v in lrs if lr_lo <= v <= lr_hi} | {lr0}))
    return NarrowSpace(parent=parent, choices=choices)
