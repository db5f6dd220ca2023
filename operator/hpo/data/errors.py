"""What goes wrong with a dataset, as exceptions every part of ``hpo.data`` raises."""

from __future__ import annotations


class DatasetError(ValueError):
    """The dataset cannot be used as described; the message says why and where."""


class DatasetMissing(DatasetError):
    """No file at the dataset's path (or not a file): ``spec.dataset.path`` is what is wrong."""


class DatasetUnreachable(DatasetError):
    """The store holding an ``s3://`` dataset did not answer (or refused the credentials):
    nothing is known about the dataset itself yet."""
