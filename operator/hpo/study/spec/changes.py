"""Which spec fields an edit changes, and which of them a running study refuses.

One comparison serves the operator and ``hpo run`` (an edited spec), the resume check
(a study's records against its spec now) and warm start (another study's records).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

#: Spec fields (camelCase paths) that may change while a study runs: budgets and policy.
#: Anything else (dataset, search space, seeds, storage) would make it another study.
MUTABLE_WHILE_RUNNING: frozenset[tuple[str, ...]] = frozenset(
    {
        ("parallelism",),
        ("budget",),
        ("failurePolicy",),
        ("randomStage", "configurations"),
        ("bayesianStage", "trialsPerConfig"),
        ("result",),
        ("trainer",),
    }
)


#: Spec fields that give one training its result: the data, its split, and how a
#: model is fitted. A study's recorded training means the same in another study iff
#: these are equal and so is the data's fingerprint (``hpo.study.matching.changed_settings``,
#: shared by the resume check and warm start). Which seeds a configuration gets
#: (``seedsPerConfig``, ``baseSeed``, ``seedRacing``) is not among them: a result is one
#: seed's.
TRAINING_FIELDS: frozenset[tuple[str, ...]] = frozenset(
    {
        ("dataset",),
        ("training", "epochs"),
        ("training", "patience"),
        ("training", "threads"),
    }
)


def _absent(value: Any) -> bool:
    """Absent and empty are the same: a list field added later with an empty default (a
    study saved before it existed has no such key) is no change."""
    return value is None or (isinstance(value, list | dict) and not value)


def refused_changes(
    old: dict[str, Any],
    new: dict[str, Any],
    within: Collection[tuple[str, ...]] | None = None,
    ignore: Collection[tuple[str, ...]] = (),
) -> list[str]:
    """Paths (``spec.training.epochs``) of spec fields that changed and may not change while
    the study runs. ``within``: only fields under these paths are compared
    (``TRAINING_FIELDS``); ``ignore``: fields under these paths are not (what another
    check covers, e.g. the dataset's path, which its fingerprint stands for)."""
    out: list[str] = []

    def under(path: tuple[str, ...], roots: Collection[tuple[str, ...]]) -> bool:
        return any(path[: len(m)] == m for m in roots)

    def walk(a: Any, b: Any, path: tuple[str, ...]) -> None:
        if under(path, MUTABLE_WHILE_RUNNING) or under(path, ignore):
            return
        if within is not None and not any(
            path[: len(m)] == m or m[: len(path)] == path for m in within
        ):
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), (*path, key))
        elif a != b and not (_absent(a) and _absent(b)):
            out.append("spec." + ".".join(path))

    walk(old, new, ())
    return out


def refused_message(refused: list[str]) -> str:
    """The one wording of refused spec changes (the operator's condition, ``hpo run``)."""
    return f"{', '.join(refused)} cannot change while the study runs"


def spec_value(spec: dict[str, Any], path: str) -> Any:
    """The value at a ``refused_changes`` path (``spec.training.epochs``); None if absent."""
    value: Any = spec
    for part in path.removeprefix("spec.").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value
