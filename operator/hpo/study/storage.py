"""Where a study's store is: its spec's ``storage`` section (or ``--out``) as a ``StoreRef``."""

from __future__ import annotations

from pathlib import Path

from hpo.store import FolderError, StoreError, StoreRef, join_key, key_segment
from hpo.study.spec import SpecError, Study


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
