"""``StudyResults``: one study's records, read back through its store (folder or bucket).

Everything is read from the study's own keys (``hpo.study.layout``): ``study.yaml``,
``dataset.json``, the ledger (``hpo.records.ledger.read_ledger``, the parser resume
uses), ``best.json`` and the trainings' artifacts. Trainings whose
``scores.json`` is stored but whose row the ledger does not hold yet (it is
written in batches) are included, as a resuming study would count them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hpo.data.encoding import FeatureEncoding
from hpo.data.scaling import Scaler
from hpo.records.ledger import LedgerUnreadable, read_ledger
from hpo.records.livestatus import VERSION as STATUS_VERSION
from hpo.records.livestatus import LiveStatus
from hpo.records.recorder import stored_results
from hpo.results import frames
from hpo.results.errors import ResultsError
from hpo.results.features import encoding_of
from hpo.results.keras_model import load_keras
from hpo.results.location import open_where
from hpo.results.predictor import Member, Predictor
from hpo.store import Store
from hpo.store.keys import StoreError
from hpo.study.contract import SeedResult
from hpo.study.layout import (
    ARTIFACT_FILES,
    BEST_FILE,
    FEATURES_FILE,
    LEDGER_FILE,
    STATUS_FILE,
    STUDY_FILE,
    StudyPaths,
)
from hpo.study.spec import SpecError, load_yaml

_SHOWN = 20
log = logging.getLogger(__name__)


def _listed(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOWN])
    return (shown + (", ..." if len(items) > _SHOWN else "")) or "none"


def recorded_results(
    store: Store, paths: StudyPaths, *, fall_back: bool = False
) -> tuple[list[SeedResult], str | None]:
    """Every recorded training by (trial, seed): the ledger's rows plus the stored
    ``scores.json`` files it lacks yet (it is written in batches), and None; with no
    ledger, the ``scores.json`` files alone and why ("no ledger.xlsx yet").

    An unreadable ledger raises ``LedgerUnreadable``; with ``fall_back`` the results are
    then the ``scores.json`` files alone, and the reason is the ledger's error.
    """
    why: str | None = None
    try:
        ledger = read_ledger(store, paths.ledger)
        if not ledger and not store.exists(paths.ledger):
            why = f"no {LEDGER_FILE} yet"
    except LedgerUnreadable as exc:
        if not fall_back:
            raise
        ledger, why = [], str(exc)
    extra = stored_results(store, paths, {r.key for r in ledger})
    return sorted(ledger + extra, key=lambda r: r.key), why


class StudyResults:
    """A study's trainings, configurations, final group and models (see ``open_study``)."""

    def __init__(self, store: Store, root: str, where: str) -> None:
        try:
            self._paths = StudyPaths.at(root)
        except StoreError as exc:
            raise ResultsError(f"{where}: not a study folder ({exc})") from None
        self._store = store
        self.where = where
        self.name: str = self._paths.name
        self._cache: tuple[str, list[SeedResult]] | None = None
        self._spec: dict[str, Any] | None = None
        self._status: tuple[str, LiveStatus | None] | None = None
        #: Why ``status()`` answered None for a ``status.json`` that is there (torn,
        #: foreign, newer); None when it was read or is absent.
        self.status_note: str | None = None

    def __repr__(self) -> str:
        return f"StudyResults({self.where!r})"

    # ------------------------------------------------------------------ reading

    def _get(self, key: str) -> bytes:
        try:
            return self._store.get_bytes(key)
        except StoreError as exc:
            raise ResultsError(f"{self.where}: {exc}") from None

    def _exists(self, key: str) -> bool:
        try:
            return self._store.exists(key)
        except StoreError as exc:
            raise ResultsError(f"{self.where}: {exc}") from None

    @property
    def spec(self) -> dict[str, Any]:
        """``study.yaml`` as recorded when the study ran (the whole resource, parsed)."""
        if self._spec is None:
            if not self._exists(self._paths.study):
                raise ResultsError(f"{self.where}: no {STUDY_FILE} recorded")
            try:
                raw = load_yaml(self._get(self._paths.study).decode("utf-8"))
            except SpecError as exc:
                raise ResultsError(
                    f"{self.where}/{STUDY_FILE}: {'; '.join(exc.problems)}"
                ) from None
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise ResultsError(f"{self.where}/{STUDY_FILE}: cannot be read ({exc})") from None
            if not isinstance(raw, dict):
                raise ResultsError(f"{self.where}/{STUDY_FILE}: not a study resource")
            self._spec = raw
        return self._spec

    @property
    def labels(self) -> list[str]:
        """The study's labels, in the ledger's order (without ``study.yaml``: those the
        recorded trainings scored)."""
        if not self._exists(self._paths.study):
            return sorted({label for r in self.results() for label in r.per_label})
        try:
            return [str(x) for x in self.spec["spec"]["dataset"]["labels"]]
        except (KeyError, TypeError):
            raise ResultsError(f"{self.where}/{STUDY_FILE}: has no spec.dataset.labels") from None

    @property
    def dataset(self) -> dict[str, Any]:
        """``dataset.json``: the dataset's path, fingerprint and size when the study
        started ({} if not recorded)."""
        if not self._exists(self._paths.dataset):
            return {}
        try:
            raw = json.loads(self._get(self._paths.dataset).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def data_revision(self) -> str:
        """Changes whenever the ledger or ``best.json`` changes (a stat each in a folder,
        a HEAD each on a bucket): what ``results()`` is cached by.

        A ``scores.json`` the ledger lacks does not change it (seeing one would take a
        LIST of ``trials/``, tens of requests at 5,000 trainings): it shows with the next
        ledger write, which a running study makes at most ``Recorder.max_delay_s`` (30 s)
        after a result, sooner after a batch, and at each stage change."""
        try:
            ledger = self._store.version(self._paths.ledger)
            best = self._store.version(self._paths.best)
        except StoreError as exc:
            raise ResultsError(f"{self.where}: {exc}") from None
        return f"{ledger or '-'}:{best or '-'}"

    def _status_version(self) -> str | None:
        try:
            return self._store.version(self._paths.status)
        except StoreError as exc:
            raise ResultsError(f"{self.where}: {exc}") from None

    def revisions(self) -> tuple[str, str]:
        """(``data_revision``, the live status's version or "-")."""
        return self.data_revision(), self._status_version() or "-"

    def revision(self) -> str:
        """``data_revision`` and the live status's version: changes as trainings start and
        finish while the study runs (its runner rewrites ``status.json`` within seconds),
        not only when the ledger is written. Cache by it (one more stat or HEAD)."""
        return ":".join(self.revisions())

    def status(self, version: str | None = None) -> LiveStatus | None:
        """The live status its runner wrote (``hpo.records.livestatus.LiveStatus``: phase, stage,
        done/planned/running/failed, best, heartbeat; ``.state()`` says live, stale,
        finished or interrupted). None for a study run before ``status.json`` existed, and
        for a torn, foreign or newer file (``status_note`` says which). Cached by version;
        ``version``: the one ``revisions()`` just gave ("-": absent), which saves a stat or
        HEAD."""
        if version is None:
            version = self._status_version()
        elif version == "-":
            version = None
        if version is None:
            self._status, self.status_note = None, None
            return None
        if self._status is not None and self._status[0] == version:
            return self._status[1]
        status, note = None, None
        try:
            raw = json.loads(self._get(self._paths.status).decode("utf-8"))
            if isinstance(raw, dict) and int(raw.get("version", 0)) > STATUS_VERSION:
                note = f"version {raw['version']} is newer than this reader's ({STATUS_VERSION})"
            else:
                status = LiveStatus.model_validate(raw)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            note = f"cannot be read ({str(exc).splitlines()[0]})"
        if note is not None:
            self.status_note = f"{self.where}/{STATUS_FILE}: {note}"
            log.warning("%s", self.status_note)
        else:
            self.status_note = None
        self._status = (version, status)
        return status

    def results(self) -> list[SeedResult]:
        """Every recorded training as the ledger holds it (plus stored ``scores.json``
        files the ledger lacks yet), by (trial, seed); cached per ``data_revision``."""
        revision = self.data_revision()
        if self._cache is not None and self._cache[0] == revision:
            return self._cache[1]
        try:
            results, _ = recorded_results(self._store, self._paths)
        except LedgerUnreadable as exc:
            raise ResultsError(
                f"{exc}; `hpo run STUDY.yaml --rebuild-ledger` rebuilds it from the "
                "trainings' scores.json files"
            ) from None
        except StoreError as exc:
            raise ResultsError(f"{self.where}: {exc}") from None
        self._cache = (revision, results)
        return results

    # ------------------------------------------------------------------ frames

    def trainings(self) -> pd.DataFrame:
        """One row per training (failed ones with their error), in the order run."""
        return frames.trainings_frame(self.results(), self.labels)

    def configurations(self) -> pd.DataFrame:
        """One row per configuration, ranked on mean validation MAE."""
        return frames.configurations_table(self.results(), self.labels)

    @property
    def finished(self) -> bool:
        """True once the study wrote its final group (``best.json``)."""
        return self._exists(self._paths.best)

    def final_group(self) -> pd.DataFrame:
        """The ranked final group as ``best.json`` holds it; empty until finished."""
        columns = frames.final_group_columns(self.labels)
        if not self.finished:
            return frames.final_group_frame([], columns)
        try:
            records = json.loads(self._get(self._paths.best).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ResultsError(f"{self.where}/{BEST_FILE}: cannot be read ({exc})") from None
        if not isinstance(records, list):
            raise ResultsError(f"{self.where}/{BEST_FILE}: not a list of configurations")
        return frames.final_group_frame(records, columns)

    # ------------------------------------------------------------------ artifacts

    def _trial_seeds(self) -> dict[str, list[int]]:
        """Successful seeds per trial (the trainings that have artifacts)."""
        seeds: dict[str, list[int]] = {}
        for r in self.results():
            seeds.setdefault(r.trial, [])
            if r.status == "succeeded":
                seeds[r.trial].append(r.seed)
        return seeds

    def _check_training(self, trial: str, seed: int | None) -> list[int]:
        """The successful seeds of ``trial`` (just ``seed`` if given); refused by name."""
        seeds = self._trial_seeds()
        if trial not in seeds:
            raise ResultsError(
                f"{self.where}: no trial {trial!r} (trials: {_listed(sorted(seeds))})"
            )
        ok = sorted(seeds[trial])
        if not ok:
            raise ResultsError(f"{self.where}: trial {trial} has no successful training")
        if seed is not None and seed not in ok:
            raise ResultsError(
                f"{self.where}: trial {trial} has no successful seed {seed} (seeds: {_listed(ok)})"
            )
        return ok if seed is None else [seed]

    def artifacts(self, trial: str, seed: int) -> dict[str, str]:
        """Artifact file name -> store key of one training (``hpo.study.layout.ARTIFACT_FILES``)."""
        self._check_training(trial, seed)
        try:
            folder = self._paths.seed(trial, seed)
            keys = list(self._store.list(folder))
        except StoreError as exc:
            raise ResultsError(f"{self.where}: {exc}") from None
        return {k.removeprefix(folder + "/"): k for k in keys if "/" not in k[len(folder) + 1 :]}

    def read_artifact(self, trial: str, seed: int, name: str) -> bytes:
        """One artifact's bytes, e.g. ``read_artifact("r0001", 1, "config.json")``."""
        found = self.artifacts(trial, seed)
        if name not in found:
            raise ResultsError(
                f"{self.where}: trial {trial} seed {seed} has no {name!r} "
                f"(it has: {_listed(sorted(found))}; a training writes {_listed(ARTIFACT_FILES)})"
            )
        return self._get(found[name])

    # ------------------------------------------------------------------ models

    def resolve(
        self, *, rank: int | None = None, trial: str | None = None, seed: int | None = None
    ) -> tuple[str, list[int]]:
        """The trial and seeds ``load_model`` would load, refused by name if unknown."""
        if rank is not None and trial is not None:
            raise ResultsError("give a rank or a trial, not both")
        if trial is None:
            rank = 1 if rank is None else rank
            group = self.final_group()
            if group.empty:
                raise ResultsError(
                    f"{self.where}: the study has not finished (no final group yet): "
                    "name a trial to load one of its configurations"
                )
            if not 1 <= rank <= len(group):
                raise ResultsError(
                    f"{self.where}: no rank {rank}: the final group has ranks 1 to {len(group)}"
                )
            trial = str(group.loc[group["rank"] == rank, "trial"].iloc[0])
        return trial, self._check_training(trial, seed)

    def load_model(
        self, *, rank: int | None = None, trial: str | None = None, seed: int | None = None
    ) -> Predictor:
        """A configuration's model: rank 1 (the best of the final group) by default, or
        ``trial``; ``seed`` None loads every successful seed as an ensemble that
        averages their predictions. Needs TensorFlow (the trainer extra)."""
        trial, seeds = self.resolve(rank=rank, trial=trial, seed=seed)
        return Predictor(trial, [self._member(trial, s) for s in seeds])

    def _member(self, trial: str, seed: int) -> Member:
        def scaler(name: str) -> Scaler:
            try:
                return Scaler.from_json(self.read_artifact(trial, seed, name).decode("utf-8"))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise ResultsError(
                    f"{self.where}: trial {trial} seed {seed}: {name} cannot be read ({exc})"
                ) from None

        features, labels = scaler("feature_scaler.json"), scaler("label_scaler.json")
        encoding = self.feature_encoding(trial, seed, features)
        where = f"{self.where}: trial {trial} seed {seed}: model.keras"
        model = load_keras(self.read_artifact(trial, seed, "model.keras"), where)
        return Member(seed, features, labels, model, encoding)

    def feature_encoding(
        self, trial: str, seed: int, feature_scaler: Scaler | None = None
    ) -> FeatureEncoding:
        """How a training's raw feature columns become its inputs: its ``features.json``,
        or, for a training recorded before that file existed, its feature scaler's
        columns as numeric features. Cheap (no TensorFlow)."""
        if feature_scaler is None:
            raw = self.read_artifact(trial, seed, "feature_scaler.json")
            try:
                feature_scaler = Scaler.from_json(raw.decode("utf-8"))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise ResultsError(
                    f"{self.where}: trial {trial} seed {seed}: feature_scaler.json cannot be "
                    f"read ({exc})"
                ) from None
        recorded = FEATURES_FILE in self.artifacts(trial, seed)
        data = self.read_artifact(trial, seed, FEATURES_FILE) if recorded else None
        return encoding_of(data, feature_scaler, f"{self.where}: trial {trial} seed {seed}")


def open_study(
    where: str | Path, *, endpoint: str | None = None, tls: bool | None = None
) -> StudyResults:
    """The study in a local folder or at ``s3://bucket/prefix/NAME``.

    ``endpoint`` (``HOST:PORT``) and ``tls`` are for ``s3://`` (credentials from
    ``HPO_S3_ACCESS_KEY``/``HPO_S3_SECRET_KEY``). Raises ``ResultsError`` when there is no
    study there (neither ``study.yaml`` nor a ledger), or the store cannot be read.
    """
    text = str(where)
    store, root = open_where(text, endpoint=endpoint, tls=tls)
    if not root:
        raise ResultsError(f"{text}: give a study's folder (s3://bucket/prefix/NAME)")
    study = StudyResults(store, root, text)
    paths = StudyPaths.at(root)
    if not (study._exists(paths.study) or study._exists(paths.ledger)):
        raise ResultsError(
            f"{text}: no study there (no {STUDY_FILE} and no {LEDGER_FILE}); "
            "give a study's folder such as runs/NAME"
        )
    return study
