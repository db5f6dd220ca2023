"""When recorded trainings mean the same in a study: the same data, the same training settings.

One definition, shared by the resume check (``hpo.session``: a study's own records
against its spec as run now) and warm start (``hpo.records.warmstart``: another study's
records against this one). The data is the same when its fingerprint is (the same
bytes, wherever the file now lies); the settings are those ``hpo.study.spec.refused_changes``
compares; a configuration is inside a study's space when ``outside_space`` says so.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

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
    DatasetRef,
)
from hpo.study.space import normalise, round_lr
from hpo.study.spec import SearchSpace
from hpo.study.spec.changes import refused_changes, spec_value

#: The dataset's path is not a setting: the fingerprint says whether it is the same data
#: (a moved project folder is not a new dataset).
DATASET_PATH = ("dataset", "path")


def same_data(recorded: dict[str, Any] | None, now: DatasetRef) -> bool:
    """Whether a study's ``dataset.json`` record is of the data ``now`` holds."""
    return recorded is not None and recorded.get("fingerprint") == now.etag


def changed_settings(
    old: dict[str, Any],
    new: dict[str, Any],
    within: Collection[tuple[str, ...]] | None = None,
    ignore: Collection[tuple[str, ...]] = (),
) -> list[str]:
    """Spec fields (``spec.training.epochs``) of ``old`` that ``new`` changes and that give
    recorded trainings their meaning (``within``: only those, e.g.
    ``hpo.study.spec.TRAINING_FIELDS``; ``ignore``: not those): ``refused_changes`` without
    the dataset's path (``DATASET_PATH``)."""
    return refused_changes(old, new, within, ignore=(DATASET_PATH, *ignore))


def settings_values(old: dict[str, Any], new: dict[str, Any], paths: list[str]) -> str:
    """``spec.training.epochs: 3 then, 5 now; ...`` for messages."""
    return "; ".join(f"{p}: {spec_value(old, p)!r} then, {spec_value(new, p)!r} now" for p in paths)


def outside_space(space: SearchSpace, config: dict[str, Any]) -> str | None:
    """Why ``space`` does not hold ``config`` (``neurons 520 outside 16..512``), None if it does.

    The rule the search, a resume and a warm start share: the declared space is its
    bounds (``min..max``, the listed choices); a range's ``step`` is the random stage's
    grid, and the narrow stage refines between its points (``bayesianStage.neuronsStep``),
    so a configuration off that grid but inside the bounds is inside the space.
    """
    c = normalise(config)
    neurons, lrs = space.neurons, space.learning_rate
    acts = c[ACTIVATION] if isinstance(c[ACTIVATION], list) else [c[ACTIVATION]]
    drops = c[DROPOUT] if isinstance(c[DROPOUT], list) else [c[DROPOUT]]
    depth = space.hidden_layers
    checks: list[tuple[str, list[Any], Any]] = [
        (HIDDEN_LAYERS, [c[HIDDEN_LAYERS]], (depth.min, depth.max)),
        (NEURONS, c[NEURONS], neurons.choices or (neurons.min, neurons.max)),
        (LEARNING_RATE, [c[LEARNING_RATE]], lrs.choices or (round_lr(lrs.min), round_lr(lrs.max))),
        (ACTIVATION, acts, space.activations),
        (DROPOUT, drops, space.dropout),
        (BATCH_SIZE, [c[BATCH_SIZE]], space.batch_sizes),
        (OPTIMIZER, [c[OPTIMIZER]], space.optimizers),
        (L2, [c[L2]], space.l2),
        (LR_SCHEDULE, [c[LR_SCHEDULE]], space.learning_rate_schedules),
    ]
    for knob, values, allowed in checks:
        for v in values:
            if isinstance(allowed, tuple) and not allowed[0] <= v <= allowed[1]:
                return f"{knob} {v:g} outside {allowed[0]:g}..{allowed[1]:g}"
            if isinstance(allowed, list) and v not in allowed:
                return f"{knob} {v} not one of {', '.join(str(a) for a in allowed)}"
    if len(set(map(str, acts))) > 1 and not space.activation_per_layer:
        return f"{ACTIVATION} per layer ({'/'.join(acts)}), not one for all layers"
    if len(set(c[NEURONS])) > 1 and space.shared_width:
        widths = "-".join(str(n) for n in c[NEURONS])
        return f"{NEURONS} {widths} differ but searchSpace.sharedWidth is on"
    if len(set(drops)) > 1 and not space.dropout_per_layer:
        return f"{DROPOUT} per layer ({'/'.join(map(str, drops))}), not one for all layers"
    return None
