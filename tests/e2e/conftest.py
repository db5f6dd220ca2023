"""Fixtures of the end-to-end tests: an emulated cluster for the operator, with the
product's CRD and the S3 credentials Secret, and the example dataset in a bucket."""

from __future__ import annotations

from helpers.cluster import dataset, kube

__all__ = ["dataset", "kube"]
