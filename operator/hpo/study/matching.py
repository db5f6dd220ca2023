"""When recorded trainings mean the same in a study: the same data, the same training settings.

One definition, shared by the resume check (``hpo.session``: a study's own records
against its spec as run now) and warm start (``hpo.records.warmstart``: another study's
records against this one). The data is the same when its fingerprint is (the same
bytes, wherever the file now lies); the settings are those ``hpo.study.spec.refused_changes``
compares.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from hpo.study.contract import DatasetRef
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
