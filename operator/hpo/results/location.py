"""A study's place: a local folder or ``s3://bucket/prefix/NAME``, as a store and a key.

Opening goes through ``open_location`` (the browsing commands' way), and
every key is ``hpo.study.layout``'s, so the results API reads what ``hpo run`` and the
operator write, on either kind of store.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hpo.results.errors import ResultsError
from hpo.store import LocalStore, Store, StoreRef, open_store
from hpo.store.keys import StoreError
from hpo.study.layout import STUDY_FILE, study_of_best, study_of_ledger, study_of_scores
from hpo.study.spec import SpecError, Study
from hpo.study.storage import store_ref_for


def open_where(
    where: str | Path, *, endpoint: str | None = None, tls: bool | None = None
) -> tuple[Store, str]:
    """The store holding ``where`` and the key prefix of ``where`` inside it.

    A local folder is opened at its parent (the store's root), so the prefix is the
    study's name, as the runners lay it out; a URL keeps its bucket and prefix.
    """
    text = str(where)
    try:
        if text.startswith("s3://"):
            return open_location(text, endpoint=endpoint, tls=True if tls is None else tls)
        path = Path(text)
        if not path.is_dir():
            what = "is a file, not a study folder" if path.exists() else "no such folder"
            raise ResultsError(f"{text}: {what}")
        path = path.resolve()
        store, _ = open_location(str(path.parent))
        return store, path.name
    except SpecError as exc:
        raise ResultsError("; ".join(exc.problems)) from None
    except StoreError as exc:
        raise ResultsError(f"{text}: {exc}") from None


def reading_ref(study: Study, *, endpoint: str | None = None, tls: bool | None = None) -> StoreRef:
    """Where to read a study from its file: its spec's store (``store_ref_for``, the one
    ``hpo run`` wrote), never creating a bucket; ``endpoint`` and ``tls``, when given, win."""
    ref = store_ref_for(study)
    if ref.kind != "s3":
        return ref
    return dataclasses.replace(
        ref,
        endpoint=endpoint or ref.endpoint,
        tls=ref.tls if tls is None else tls,
        create_bucket=False,
    )


def studies_in(keys: list[str]) -> list[str]:
    """Study folders among listed keys: a ledger, a best.json or a training's scores.json."""
    found: set[str] = set()
    for key in keys:
        for of in (study_of_ledger, study_of_best, study_of_scores):
            folder = of(key)
            if folder is not None:
                found.add(folder)
        folder, _, name = key.rpartition("/")
        if name == STUDY_FILE and folder:
            found.add(folder)
    return sorted(found)


def find_studies(
    where: str | Path, *, endpoint: str | None = None, tls: bool | None = None
) -> list[str]:
    """Every study under a folder or an ``s3://bucket/prefix``, each usable with
    ``open_study`` (a folder path, or an ``s3://`` URL); sorted.

    A study is a folder with ``study.yaml``, a ledger, a ``best.json`` or a
    training's ``scores.json`` (a study whose ledger is not written yet counts).
    """
    text = str(where)
    if text.startswith("s3://"):
        store, prefix = open_where(text, endpoint=endpoint, tls=tls)
        bucket = text.removeprefix("s3://").partition("/")[0]
    else:
        path = Path(text)
        if not path.is_dir():
            raise ResultsError(f"{text}: no such folder")
        store, prefix = open_location(str(path.resolve()))[0], ""
    try:
        keys = list(store.list(prefix))
    except StoreError as exc:
        raise ResultsError(f"{text}: {exc}") from None
    folders = studies_in(keys)
    if text.startswith("s3://"):
        return [f"s3://{bucket}/{folder}" for folder in folders]
    root = Path(text).resolve()
    return [str(root / folder) for folder in folders]


def open_location(
    where: str,
    *,
    endpoint: str | None = None,
    tls: bool = True,
    region: str | None = None,
    ca_bundle: str | None = None,
) -> tuple[Store, str]:
    """A store and a key prefix inside it, from a folder or an ``s3://bucket/prefix`` URL.

    Used by the commands that browse results (``hpo ls``, ``hpo get``,
    ``hpo report``) rather than run a study.
    """
    if where.startswith("s3://"):
        bucket, _, prefix = where.removeprefix("s3://").partition("/")
        if not endpoint:
            raise SpecError([f"{where}: give --endpoint or set HPO_S3_ENDPOINT"])
        ref = StoreRef(
            kind="s3", endpoint=endpoint, bucket=bucket, tls=tls, region=region, ca_bundle=ca_bundle
        )
        return open_store(ref, prefix=""), prefix.strip("/")
    path = Path(where).resolve()
    if not path.exists():
        raise SpecError([f"{where}: no such folder"])
    return LocalStore(path), ""
