"""A stand-in for ``hpo.results`` (RESULTS_API.md) until that package is on this branch.

Thin on purpose: it answers the part of the contract the dashboard uses with the
project's own readers (``hpo.ledger.read_ledger``, ``hpo.report.final_group``,
``hpo.ledger.configurations_frame``), not a parser of its own. ``hpo.dashboard.source``
uses ``hpo.results`` whenever it can be imported; delete this module once it can.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hpo.keys import StoreError
from hpo.layout import BEST_FILE, LEDGER_FILE, STUDY_FILE, StudyPaths
from hpo.store import LocalStore, Store, open_location


class ResultsError(ValueError):
    """No study there, an unreadable ledger, an unreachable store: the message says which."""


def _open(where: str, endpoint: str | None, tls: bool | None) -> tuple[Store, str]:
    try:
        return open_location(where, endpoint=endpoint, tls=True if tls is None else tls)
    except (StoreError, ValueError) as exc:
        raise ResultsError(f"{where}: {exc}") from None


def find_studies(where: str, *, endpoint: str | None = None, tls: bool | None = None) -> list[str]:
    """Every study folder (study.yaml and/or ledger.xlsx) under a folder or s3://bucket/prefix."""
    if not where.startswith("s3://") and not Path(where).is_dir():
        raise ResultsError(f"{where}: no such folder")
    store, prefix = _open(where, endpoint, tls)
    try:
        keys = list(store.list(prefix))
    except StoreError as exc:
        raise ResultsError(f"{where}: {exc}") from None
    folders = set()
    for key in keys:
        folder, _, file = key.rpartition("/")
        if file in (STUDY_FILE, LEDGER_FILE) and folder and f"/{folder}/".find("/trials/") < 0:
            folders.add(folder)
    if where.startswith("s3://"):
        bucket = where.removeprefix("s3://").split("/", 1)[0]
        return [f"s3://{bucket}/{f}" for f in sorted(folders)]
    root = Path(store.uri)
    return [str(root / f) for f in sorted(folders)]


class StudyResults:
    """One study, read on demand (the contract's names; only what the dashboard reads)."""

    def __init__(self, store: Store, root: str, where: str) -> None:
        self.store, self.paths, self.where = store, StudyPaths.at(root), where
        self.name = self.paths.name

    def _stat(self, key: str) -> str:
        if isinstance(self.store, LocalStore):
            try:
                st = os.stat(Path(self.store.uri) / key)
            except FileNotFoundError:
                return "-"
            return f"{st.st_mtime_ns}:{st.st_size}"
        return self.store.etag(key) or "-"

    def revision(self) -> str:
        try:
            return "|".join(self._stat(k) for k in (self.paths.ledger, self.paths.best))
        except StoreError as exc:
            raise ResultsError(f"{self.where}: {exc}") from None

    @property
    def spec(self) -> dict[str, Any]:
        try:
            return yaml.safe_load(self.store.get_bytes(self.paths.study)) or {}
        except (StoreError, yaml.YAMLError) as exc:
            raise ResultsError(f"{self.where}/{STUDY_FILE}: {exc}") from None

    def _results(self) -> list[Any]:
        from hpo.ledger import read_ledger

        try:
            if not self.store.exists(self.paths.ledger):
                return []
            return read_ledger(self.store, self.paths.ledger)
        except StoreError as exc:
            raise ResultsError(str(exc)) from None

    def _labels(self) -> list[str]:
        return list(((self.spec.get("spec") or {}).get("dataset") or {}).get("labels") or [])

    def trainings(self) -> pd.DataFrame:
        from hpo.ledger.frames import trials_frame

        frame = trials_frame(self._results(), self._labels()).drop(columns=["finished"])
        frame = frame.rename(columns={"mae": "test_mae", "finished_at": "finished"})
        frame["started"] = frame["finished"] - frame["runtime_s"].fillna(0)
        return frame

    def configurations(self) -> pd.DataFrame:
        from hpo.ledger.frames import configurations_frame

        return configurations_frame(self._results(), self._labels())

    @property
    def finished(self) -> bool:
        try:
            return self.store.exists(self.paths.best)
        except StoreError as exc:
            raise ResultsError(str(exc)) from None

    def final_group(self) -> pd.DataFrame:
        if not self.finished:
            return pd.DataFrame()
        try:
            return pd.DataFrame(json.loads(self.store.get_bytes(self.paths.best)))
        except (StoreError, ValueError) as exc:
            raise ResultsError(f"{self.where}/{BEST_FILE}: {exc}") from None

    def artifacts(self, trial: str, seed: int) -> dict[str, str]:
        prefix = self.paths.seed(trial, seed)
        return {k.rsplit("/", 1)[-1]: k for k in self.store.list(prefix)}

    def read_artifact(self, trial: str, seed: int, name: str) -> bytes:
        return self.store.get_bytes(self.paths.artifact(trial, seed, name))


def open_study(
    where: str | Path, *, endpoint: str | None = None, tls: bool | None = None
) -> StudyResults:
    where = str(where)
    if where.startswith("s3://"):
        store, root = _open(where, endpoint, tls)
    else:
        path = Path(where).resolve()
        if not path.is_dir():
            raise ResultsError(f"{where}: no such study folder")
        store, root = LocalStore(path.parent), path.name
    study = StudyResults(store, root, where)
    try:
        if not (store.exists(study.paths.study) or store.exists(study.paths.ledger)):
            raise ResultsError(f"{where}: not a study (no {STUDY_FILE} or {LEDGER_FILE})")
    except StoreError as exc:
        raise ResultsError(f"{where}: {exc}") from None
    return study
