"""Where studies keep their ledger, artifacts and plots: one interface, two kinds.

- ``base``: the ``Store`` interface and ``PreconditionFailed``
  (``StoreError`` and the key checks come from ``hpo.store.keys``);
- ``files``: writing a local file whole or not at all (both stores);
- ``local``: a folder standing in for the bucket (``hpo run``'s default);
- ``s3``: an S3 bucket (MinIO, AWS); imported only when a study uses one,
  so minio is not loaded otherwise;
- ``ref``: ``StoreRef``, where a store is (``hpo.study.storage`` makes one from a spec);
- ``open``: the store a ``StoreRef`` describes.

The public names are re-exported here: ``from hpo.store import Store, open_store``.
"""

from hpo.store.base import OutputUnwritable, PreconditionFailed, Store
from hpo.store.keys import StoreError, check_key, is_valid_key, join_key, key_segment
from hpo.store.local import FolderError, LocalStore
from hpo.store.open import open_store
from hpo.store.ref import StoreRef

__all__ = [
    "FolderError",
    "LocalStore",
    "OutputUnwritable",
    "PreconditionFailed",
    "Store",
    "StoreError",
    "StoreRef",
    "check_key",
    "is_valid_key",
    "join_key",
    "key_segment",
    "open_store",
]
