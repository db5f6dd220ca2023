"""A folder standing in for the bucket: ``hpo run``'s embedded default.

Writes are atomic (a temporary file, then ``os.replace``) and conditional
writes of one key are serialised with a lock file beside it (``.<name>.lock``,
never listed), so a folder gives the same guarantees as S3's conditional
``put``. A write the file system refuses (no space left, quota, read-only, file
too large, no permission) raises ``OutputUnwritable`` naming the path, any other
failure ``StoreError``: never a bare ``OSError``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from hpo.store.base import OutputUnwritable, PreconditionFailed, Store
from hpo.store.files import write_atomically
from hpo.store.keys import StoreError, check_key


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class FolderError(StoreError):
    """The folder cannot serve as a store (a file is in the way, no permission): the
    user's choice of folder, not an outage."""


class LocalStore(Store):
    """A folder standing in for the bucket: ``hpo run``'s embedded default."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(os.path.abspath(root))
        if self.root.exists() and not self.root.is_dir():
            raise FolderError(f"{self.root}: is a file, not a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.root = self.root.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise FolderError(f"{self.root}: cannot be used as a folder ({reason})") from None

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def _locked(self, path: Path, conditional: bool) -> Iterator[None]:
        """Serialise conditional writes of one key (check and replace must be one step).

        The lock file sits beside the key, inside the study's own folder: no
        ``.locks`` folder in the run folder, and every writer of the key finds it."""
        if not conditional:
            yield
            return
        with open(path.parent / f".{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put_bytes(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        path = self._path(key)
        try:
            return self._put(key, path, data, if_match, if_none_match)
        except OSError as exc:
            raise OutputUnwritable.of(exc, path) from exc

    def _put(
        self, key: str, path: Path, data: bytes, if_match: str | None, if_none_match: bool
    ) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(path, if_match is not None or if_none_match):
            current = _md5(path.read_bytes()) if path.exists() else None
            if if_none_match and current is not None:
                raise PreconditionFailed(f"{key}: already exists (another writer created it)")
            if if_match is not None and current != if_match:
                raise PreconditionFailed(
                    f"{key}: changed since it was read (another writer); expected ETag "
                    f"{if_match}, found {current}"
                )
            write_atomically(path, (data,))
        return _md5(data)

    def put_file(self, key: str, path: Path) -> str:
        return self.put_bytes(key, self._read(Path(path)))

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.exists():
            raise StoreError(f"{key}: not found in {self.uri}")
        return self._read(path)

    def get_file(self, key: str, path: Path) -> Path:
        src = self._path(key)
        if not src.exists():
            raise StoreError(f"{key}: not found in {self.uri}")
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if src.resolve() != path.resolve():
                shutil.copyfile(src, path)
        except OSError as exc:
            raise OutputUnwritable.of(exc, path) from exc
        return path

    def etag(self, key: str) -> str | None:
        path = self._path(key)
        return _md5(self._read(path)) if path.is_file() else None

    def version(self, key: str) -> str | None:
        """One stat, where ``etag`` hashes the file: every write replaces the file (a new
        inode) or changes its time and size."""
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self._path(key)}: {exc.strerror or exc}") from exc
        return f"{st.st_ino}.{st.st_mtime_ns}.{st.st_size}"

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputUnwritable.of(exc, path) from exc

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return iter(())
        keys = (
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        return iter(sorted(keys))
