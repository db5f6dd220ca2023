"""S3 stores of the product on the test S3 server (``support.s3server``)."""

from __future__ import annotations

import uuid
from typing import Any

from hpo.store.s3 import S3Store
from support.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server


def new_s3_store(server: S3Server, **options: Any) -> S3Store:
    """An ``S3Store`` on a fresh bucket of ``server`` (created), under prefix ``root``.

    ``options`` override ``S3Store``'s arguments (``bucket``, ``prefix``,
    ``timeout_s``, ``retries``...). moto does not check credentials.
    """
    args: dict[str, Any] = {
        "endpoint": server.endpoint,
        "bucket": f"test-{uuid.uuid4().hex[:16]}",
        "prefix": "root",
        "access_key": TEST_ACCESS_KEY,
        "secret_key": TEST_SECRET_KEY,
        "secure": False,
        "create_bucket": True,
        "timeout_s": 2.0,
        "retries": 3,
        "backoff_s": 0.1,
        "max_backoff_s": 1.0,
    }
    args.update(options)
    store = S3Store(**args)
    if args["create_bucket"]:
        store.ensure_bucket()
    return store
