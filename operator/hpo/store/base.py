"""The ``Store`` interface every study writes through, and its errors.

The engine, the runners and the trainer see only this interface, so a local
folder (``hpo.store.local``) and an S3 bucket (``hpo.store.s3``) behave the
same to them. Keys are ``/``-separated and relative to the store's root; they
are built by ``hpo.study.layout`` and checked by ``hpo.store.keys``.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from hpo.store.keys import StoreError


class PreconditionFailed(StoreError):
    """A conditional write lost: someone else wrote the object first."""


class OutputUnwritable(StoreError):
    """The run's own output cannot be written here (no space left, quota, read-only
    file system, file too large, no permission): no fault of the training, so a runner
    stops instead of charging it a failed attempt; running again resumes."""

    def __init__(self, path: str, errno: int | None, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.errno, self.reason = path, errno, reason

    def __reduce__(self) -> tuple[type[OutputUnwritable], tuple[str, int | None, str]]:
        # Travels from a worker process to the runner: pickled with its own arguments.
        return (type(self), (self.path, self.errno, self.reason))

    @classmethod
    def of(cls, exc: OSError, path: str | Path) -> OutputUnwritable:
        return cls(str(exc.filename or path), exc.errno, exc.strerror or str(exc))


class Store(ABC):
    """Object-store interface; implementations must make ``put_*`` atomic."""

    @property
    @abstractmethod
    def uri(self) -> str:
        """Human-readable location of the store's root."""

    @abstractmethod
    def put_bytes(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        """Write ``data`` and return its ETag.

        ``if_match`` writes only over that ETag; ``if_none_match`` only if the
        key does not exist yet. A lost condition raises ``PreconditionFailed``.
        """

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def etag(self, key: str) -> str | None:
        """ETag of the object, or None if it does not exist."""

    def version(self, key: str) -> str | None:
        """A tag that changes whenever the object does (None if it does not exist), as
        cheap as the store allows: readers that poll (the dashboard) cache by it. Not a
        condition for writes: that is ``etag``."""
        return self.etag(key)

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (recursively), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; a missing one is not an error."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many."""
        keys = list(self.list(prefix))
        for key in keys:
            self.delete(key)
        return len(keys)

    def exists(self, key: str) -> bool:
        return self.etag(key) is not None

    def put_file(self, key: str, path: Path) -> str:
        return self.put_bytes(key, Path(path).read_bytes())

    def get_file(self, key: str, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.get_bytes(key))
        return path

    def put_dir(self, prefix: str, folder: Path) -> builtins.list[str]:  # ``list`` is a method
        """Upload every file of ``folder`` under ``prefix``; returns the keys."""
        keys = []
        for file in sorted(Path(folder).rglob("*")):
            if file.is_file():
                key = f"{prefix}/{file.relative_to(folder).as_posix()}"
                self.put_file(key, file)
                keys.append(key)
        return keys
