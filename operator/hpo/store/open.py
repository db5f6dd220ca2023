"""Opens the store a ``StoreRef`` describes; the one place that knows every kind."""

from __future__ import annotations

import os

from hpo.store.base import Store
from hpo.store.local import LocalStore
from hpo.store.ref import StoreRef


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
