"""Fixtures of the integration tests that run the operator (a module may define its own
``kube`` instead, as ``test_bad_input_operator`` does); ``new_study``: a study body on a
results bucket of its own."""

from __future__ import annotations

from helpers.cluster import dataset, kube, new_study

__all__ = ["dataset", "kube", "new_study"]
