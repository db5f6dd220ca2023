"""Where studies keep their ledger, artifacts and plots: one interface, two kinds.

- ``base``: the ``Store`` interface and ``PreconditionFailed``
  (``StoreError`` and the key checks come from ``hpo.keys``);
- ``local``: a folder standing in for the bucket (``hpo run``'s default);
- ``s3``: an S3 bucket (MinIO, AWS); imported only when a study uses one,
  so minio is not loaded otherwise;
- ``open``: the store a spec or a ``StoreRef`` describes.

The public names are re-exported here: ``from hpo.store import Store, open_store``.
"""

from hpo.keys import StoreError, check_key, is_valid_key, join_key, key_segment
from hpo.store.base import OutputUnwritable, PreconditionFailed, Store
from hpo.store.local import FolderError, LocalStore
from hpo.store.open import namespace_prefix, open_location, open_store, store_ref_for

__all__ = [
    "FolderError",
    "LocalStore",
    "OutputUnwritable",
    "PreconditionFailed",
    "Store",
    "StoreError",
    "check_key",
    "is_valid_key",
    "join_key",
    "key_segment",
    "namespace_prefix",
    "open_location",
    "open_store",
    "store_ref_for",
]
