"""A local worker's store: it writes only while the run that started it is alive.

``PR_SET_PDEATHSIG`` kills a worker with its run on Linux; this is the
other half, and the whole of it elsewhere: a worker whose parent is gone (it
was re-parented) exits before it writes, so no result lands in a study that
no run owns any more.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from hpo.store import Store


class ParentGuard(Store):
    """Delegates to ``inner``; every write first checks the run (``parent``) is alive."""

    def __init__(self, inner: Store, parent: int) -> None:
        self.inner = inner
        self.parent = parent

    def _alive(self) -> None:
        if os.getppid() != self.parent:
            os._exit(1)  # orphaned: write nothing, leave at once

    @property
    def uri(self) -> str:
        return self.inner.uri

    def put_bytes(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        self._alive()
        return self.inner.put_bytes(key, data, if_match=if_match, if_none_match=if_none_match)

    def put_file(self, key: str, path: Path) -> str:
        self._alive()
        return self.inner.put_file(key, path)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def get_file(self, key: str, path: Path) -> Path:
        return self.inner.get_file(key, path)

    def etag(self, key: str) -> str | None:
        return self.inner.etag(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._alive()
        self.inner.delete(key)
