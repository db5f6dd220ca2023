"""Datasets from the object store: downloaded once per process, checked every time.

A dataset replaced in the bucket mid-study would silently mix two datasets in
one ledger; every training therefore compares the object's ETag with the one
recorded when the study started (one HEAD request) before using its copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import threading
from pathlib import Path

from hpo.contract import DatasetRef, StoreRef
from hpo.store import StoreError, check_key, key_segment
from hpo_trainer.data import DatasetError

_lock = threading.Lock()
_copies: dict[tuple[str, str], Path] = {}


def split_s3_url(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise DatasetError(f"dataset URL {url!r} must look like s3://bucket/key.csv")
    try:
        check_key(key)
    except StoreError as exc:
        raise DatasetError(f"dataset URL {url!r}: {exc}") from None
    return bucket, key


def cache_dir() -> Path:
    return Path(os.environ.get("HPO_CACHE", Path(tempfile.gettempdir()) / "hpo-cache")) / "datasets"


def cached_copy(url: str, etag: str) -> Path:
    """The local file for one version of a dataset: always inside ``cache_dir()``.

    The folder is a digest of URL and ETag; the file keeps the key's last segment
    (checked by ``split_s3_url``) so its suffix still tells the format.
    """
    _, key = split_s3_url(url)
    digest = hashlib.sha256(f"{url}@{etag}".encode()).hexdigest()[:16]
    try:
        name = key_segment(key.rsplit("/", 1)[-1], "dataset file name")
    except StoreError as exc:
        raise DatasetError(f"dataset URL {url!r}: {exc}") from None
    return cache_dir() / digest / name


def localise(
    ref: DatasetRef, store: StoreRef | None, credentials: tuple[str, str] | None = None
) -> DatasetRef:
    """``ref`` with a local ``path``, its ``etag`` and ``size`` filled in.

    Local paths are returned as they are. For ``s3://`` the object is fetched
    from the study's endpoint (same credentials) unless this process already
    holds the same version.
    """
    if not ref.path.startswith("s3://"):
        return ref
    if store is None or store.kind != "s3":
        raise DatasetError(f"dataset {ref.path}: an s3:// dataset needs storage.type s3")
    from hpo.stores import open_store

    bucket, key = split_s3_url(ref.path)
    try:
        source = open_store(store, bucket=bucket, prefix="", credentials=credentials)
        etag = source.etag(key)
    except StoreError as exc:
        raise DatasetError(f"dataset {ref.path}: {exc}") from exc
    if etag is None:
        raise DatasetError(f"dataset not found: {ref.path}")
    if ref.etag is not None and etag != ref.etag:
        raise DatasetError(
            f"dataset {ref.path} changed since the study started (ETag {ref.etag} then, "
            f"{etag} now); restore it or start a new study"
        )
    with _lock:
        local = _copies.get((ref.path, etag))
    if local is None or not local.exists():
        local = cached_copy(ref.path, etag)
        if not local.exists():
            try:
                tmp = local.with_name(f".{local.name}.{os.getpid()}")
                source.get_file(key, tmp)
                os.replace(tmp, local)
            except StoreError as exc:
                raise DatasetError(f"dataset {ref.path}: {exc}") from exc
        with _lock:
            _copies[(ref.path, etag)] = local
    return dataclasses.replace(ref, path=str(local), etag=etag, size=local.stat().st_size)
