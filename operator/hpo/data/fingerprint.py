"""Which bytes a dataset is, and a local copy of them: a local file's sha256, an
``s3://`` object's ETag and its copy in the cache folder.

An ``s3://`` dataset is downloaded once per process and checked every time:
a dataset replaced in the bucket mid-study would silently mix two datasets in
one ledger, so every use compares the object's ETag with the one recorded
when the study started (one HEAD request) before using its copy. A local file
is fingerprinted the same way, by the sha256 of its bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import threading
from pathlib import Path

from hpo.data.errors import DatasetError, DatasetUnreachable
from hpo.store import StoreRef, open_store
from hpo.store.keys import StoreError, check_key, key_segment
from hpo.study.contract import DatasetRef

# --------------------------------------------------------------------------- s3:// datasets

_lock = threading.Lock()
_copies: dict[tuple[str, str], Path] = {}


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key); the key is checked like any store key."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise DatasetError(f"dataset URL {url!r} must look like s3://bucket/key.csv")
    try:
        check_key(key)
    except StoreError as exc:
        raise DatasetError(f"dataset URL {url!r}: {exc}") from None
    return bucket, key


def cache_dir() -> Path:
    """Where downloaded datasets are kept: ``$HPO_CACHE/datasets`` (default: the temp folder)."""
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


# --------------------------------------------------------------------------- local datasets

_digests: dict[tuple[str, int, int, int, int], str] = {}

#: How a local file's fingerprint is spelled in ``DatasetRef.etag`` (an S3 ETag never
#: starts so).
SHA256 = "sha256:"


def file_fingerprint(path: str | Path) -> tuple[str, int]:
    """``sha256:<hex>`` of the file's bytes and its size.

    Cached per process while the file's size, mtime, ctime and inode stay the
    same: a worker that trains many configurations reads the file once, yet a
    file edited, replaced or copied over (``cp -p`` keeps the mtime, not the
    ctime) is hashed again.
    """
    file = Path(path)
    try:
        st = file.stat()
        key = (str(file.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        with _lock:
            digest = _digests.get(key)
        if digest is None:
            h = hashlib.sha256()
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            digest = SHA256 + h.hexdigest()
            with _lock:
                _digests.clear()  # one dataset per study: keep the latest only
                _digests[key] = digest
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc.strerror or exc}") from exc
    return digest, st.st_size


def short_fingerprint(etag: str | None) -> str:
    """A fingerprint as shown in messages: ``sha256 1a2b3c4d5e6f`` or ``ETag "..."``."""
    if etag is None:
        return "no fingerprint"
    if etag.startswith(SHA256):
        return f"sha256 {etag.removeprefix(SHA256)[:12]}"
    return f"ETag {etag}"


def localise(
    ref: DatasetRef, store: StoreRef | None, credentials: tuple[str, str] | None = None
) -> DatasetRef:
    """``ref`` with a local ``path``, its ``etag`` and ``size`` filled in.

    A local file keeps its path; its ``etag`` is the sha256 of its bytes. For
    ``s3://`` the object is fetched from the study's endpoint (same credentials)
    unless this process already holds the same version. Either way a ``ref`` that
    carries a fingerprint (a training request) is refused if the data differs.
    """
    if not ref.path.startswith("s3://"):
        if not Path(ref.path).is_file():
            return ref  # read_table says what is wrong with the path
        digest, size = file_fingerprint(ref.path)
        if ref.etag is not None and digest != ref.etag:
            raise DatasetError(
                f"dataset {ref.path} changed since the study started "
                f"({short_fingerprint(ref.etag)}, {ref.size} bytes then; "
                f"{short_fingerprint(digest)}, {size} bytes now): not training on other data; "
                "restore the file, or start a new study (another metadata.name) on the new data"
            )
        return dataclasses.replace(ref, etag=digest, size=size)
    if store is None or store.kind != "s3":
        raise DatasetError(f"dataset {ref.path}: an s3:// dataset needs storage.type s3")
    bucket, key = split_s3_url(ref.path)
    try:
        source = open_store(store, bucket=bucket, prefix="", credentials=credentials)
        etag = source.etag(key)
    except StoreError as exc:
        raise DatasetUnreachable(f"dataset {ref.path}: {exc}") from exc
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
                raise DatasetUnreachable(f"dataset {ref.path}: {exc}") from exc
        with _lock:
            _copies[(ref.path, etag)] = local
    return dataclasses.replace(ref, path=str(local), etag=etag, size=local.stat().st_size)
