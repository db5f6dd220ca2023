"""Checks a study's dataset when the study starts, before any training is scheduled.

``check_dataset`` resolves the feature list, checks the file against the spec
(with ``hpo.data.dataset``, the code the trainer reads it with) and returns what
every training of the study gets: the dataset reference (with the ETag of an
``s3://`` object) and the training options.

Wrong columns or data are cheap to find here and costly to find as N failed
trainings later.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hpo.data.dataset import (
    DatasetError,
    DatasetMissing,
    DatasetUnreachable,
    localise,
    read_table,
    unnamed_columns,
    validate_dataset,
)
from hpo.store import StoreRef
from hpo.study.contract import DatasetRef, TrainingOptions
from hpo.study.spec import Study


class DatasetProblem(ValueError):
    """The dataset does not fit the study; the message names the column or file."""


class DatasetUnavailable(DatasetProblem):
    """The store holding the dataset could not be reached: try again, nothing is wrong
    with the study (yet)."""


@dataclass(frozen=True)
class Prepared:
    """What ``check_dataset`` found, and what every training request of the study carries."""

    dataset: DatasetRef
    training: TrainingOptions
    rows: int
    rows_dropped: int
    #: What the user should know about the dataset (e.g. a column left out, and why).
    notes: tuple[str, ...] = ()


def check_dataset(
    study: Study, store: StoreRef | None = None, credentials: tuple[str, str] | None = None
) -> Prepared:
    """Resolve the feature list and validate the dataset against the spec.

    An ``s3://`` dataset is fetched here once and its ETag recorded, so that
    every trainer can check it uses the very same object.
    """
    ds = study.spec.dataset
    remote = DatasetRef(path=ds.path, features=[], labels=list(ds.labels))
    try:
        local = localise(remote, store, credentials)
    except DatasetUnreachable as exc:
        raise DatasetUnavailable(f"spec.dataset.path: {exc}") from None
    except DatasetError as exc:
        raise DatasetProblem(f"spec.dataset.path: {exc}") from None
    features = list(ds.features)
    inferred = not features
    notes: list[str] = []
    if inferred:
        try:
            table = read_table(local.path)
        except DatasetMissing as exc:
            raise DatasetProblem(f"spec.dataset.path: {exc}") from None
        except DatasetError as exc:
            raise DatasetProblem(f"spec.dataset: {exc}") from None
        except OSError as exc:
            raise DatasetProblem(f"spec.dataset.path: cannot read {ds.path}: {exc}") from None
        header = [str(c) for c in table.columns]
        # A column without a name is nearly always the index `DataFrame.to_csv` writes:
        # a row number is no feature, so it is left out (and said so), never trained on.
        unnamed = set(unnamed_columns(table))
        if unnamed:
            notes.append(
                f"{ds.path}: {len(unnamed)} column(s) without a name in the header (e.g. an "
                "index written by pandas' to_csv) left out of the features; name them and "
                "list them in spec.dataset.features to use them"
            )
        features = [c for c in header if c not in ds.labels and c not in unnamed]
        if not features:
            raise DatasetProblem(
                f"spec.dataset: {ds.path} has no column left as a feature besides the labels"
            )
    ref = DatasetRef(
        path=ds.path,
        features=features,
        labels=list(ds.labels),
        test_size=ds.test_size,
        validation_size=ds.validation_size,
        split_seed=ds.split_seed,
        reference_values=dict(ds.reference_values),
        folds=ds.cross_validation_folds,
        categorical=list(ds.categorical),
    )
    try:
        summary = validate_dataset(dataclasses.replace(ref, path=local.path))
    except DatasetError as exc:
        hint = ""
        if inferred and ("is not numeric" in str(exc) or "looks like an identifier" in str(exc)):
            hint = (
                "; spec.dataset.features is not set, so every column but the labels is a "
                "feature: list the features to leave this column out"
            )
        raise DatasetProblem(f"spec.dataset: {exc}{hint}") from None
    ref = dataclasses.replace(ref, etag=local.etag, size=local.size)
    t = study.spec.training
    return Prepared(
        dataset=ref,
        training=TrainingOptions(epochs=t.epochs, patience=t.patience, threads=t.threads),
        rows=summary.rows,
        rows_dropped=summary.rows_dropped,
        notes=(*notes, *summary.notes),
    )
