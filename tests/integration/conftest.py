"""Fixtures of the integration tests that run the operator (a module may define its own
``kube`` instead, as ``test_bad_input_operator`` does)."""

from __future__ import annotations

from helpers.cluster import dataset, kube

__all__ = ["dataset", "kube"]
