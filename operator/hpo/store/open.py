"""Opens the store a spec or a ``StoreRef`` describes; the one place that knows every kind."""

from __future__ import annotations

import os
from pathlib import Path

from hpo.contract import StoreRef
from hpo.keys import StoreError, join_key, key_segment
from hpo.spec import SpecError, Study
from hpo.store.base import Store
from hpo.store.local import FolderError, LocalStore


def namespace_prefix(prefix: str, namespace: str, where: str) -> str:
    """``<prefix>/<namespace>``, checked: the namespace is one segment, the prefix a safe key.

    Every key of a study lies under it (``<prefix>/<namespace>/<study>/...``), so no
    study writes into another namespace's folder.
    """
    try:
        key_segment(namespace, "namespace")
        prefix = prefix.strip("/")
        return join_key(prefix, namespace) if prefix else namespace
    except StoreError as exc:
        raise SpecError([f"{where}: {exc}"]) from None


def store_ref_for(study: Study, out: str | Path | None = None) -> StoreRef:
    """The study's store: ``--out`` (a folder or ``s3://bucket/prefix``) wins over the spec.

    In a bucket, studies live under ``<prefix>/<namespace>/<study>/``; a local
    folder plays ``<prefix>/<namespace>`` (``DIR/<study>/``).
    """
    storage = study.spec.storage
    namespace = study.metadata.namespace
    if out is not None and str(out).startswith("s3://"):
        bucket, _, prefix = str(out).removeprefix("s3://").partition("/")
        if storage.endpoint is None:
            raise SpecError([f"spec.storage.endpoint: is required to write to {out}"])
        return StoreRef(
            kind="s3",
            endpoint=storage.endpoint,
            bucket=bucket,
            prefix=namespace_prefix(prefix, namespace, str(out)),
            tls=storage.tls,
            region=storage.region,
            ca_bundle=storage.ca_bundle,
            create_bucket=storage.create_bucket,
        )
    if out is not None or storage.type == "local":
        where = Path(out if out is not None else storage.path)
        try:
            root = where.resolve()
        except RuntimeError:  # Python 3.11: a symlink loop
            raise FolderError(f"{where}: is a symbolic link loop") from None
        return StoreRef(kind="local", root=str(root))
    assert storage.endpoint is not None and storage.bucket is not None
    return StoreRef(
        kind="s3",
        endpoint=storage.endpoint,
        bucket=storage.bucket,
        prefix=namespace_prefix(storage.prefix, namespace, "spec.storage.prefix"),
        tls=storage.tls,
        region=storage.region,
        ca_bundle=storage.ca_bundle,
        create_bucket=storage.create_bucket,
    )


def open_store(
    ref: StoreRef,
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    credentials: tuple[str, str] | None = None,
) -> Store:
    """Open ``ref`` and check its bucket; ``bucket``/``prefix`` reach another bucket on
    the same endpoint (datasets).

    Credentials: given (the operator reads them from a Secret), else from the
    environment (``HPO_S3_ACCESS_KEY`` / ``HPO_S3_SECRET_KEY``). ``HPO_S3_TIMEOUT``
    and ``HPO_S3_RETRIES`` tune how long an outage is waited out.
    """
    if ref.kind == "local":
        return LocalStore(ref.root)
    from hpo.store.s3 import S3Store, env_credentials  # minio loads only when needed

    access, secret = credentials or env_credentials()
    store = S3Store(
        ref.endpoint,
        bucket or ref.bucket,
        ref.prefix if prefix is None else prefix,
        access_key=access,
        secret_key=secret,
        secure=ref.tls,
        region=ref.region,
        ca_bundle=ref.ca_bundle,
        create_bucket=ref.create_bucket and bucket is None,
        timeout_s=float(os.environ.get("HPO_S3_TIMEOUT", "10")),
        retries=int(os.environ.get("HPO_S3_RETRIES", "5")),
    )
    store.ensure_bucket()
    return store


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
