"""The one error of ``hpo.results``: a clear message naming what is wrong."""

from __future__ import annotations


class ResultsError(ValueError):
    """No study there, an unreadable ledger, an unknown trial, seed or rank, missing
    columns, an unreachable bucket: the message says which, and where."""
