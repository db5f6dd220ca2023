"""Fixtures of the end-to-end tests: an emulated cluster for the operator, with the
product's CRD and the S3 credentials Secret, the example dataset in a bucket, and
``new_study`` (a study body on a results bucket of its own)."""

from __future__ import annotations

from helpers.cluster import dataset, kube, new_study

__all__ = ["dataset", "kube", "new_study"]
