"""Where studies keep their ledger, artifacts and plots.

The engine, the runners and the trainer see only the ``Store`` interface, so
a local folder and an S3 bucket behave the same to them. Keys are always
``/``-separated and relative to the store's root (``<study>/ledger.xlsx``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote


class StoreError(RuntimeError):
    """A store call failed; the message says which key and why."""


class PreconditionFailed(StoreError):
    """A conditional write lost: someone else wrote the object first."""


#: S3's limit on a key, and the usual filesystem limit on one path segment (bytes).
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")


def _readings(key: str) -> dict[str, None]:
    """``key`` as written and as it may be read after NFKC and/or one URL decoding."""
    nfkc = unicodedata.normalize("NFKC", key)
    decoded = unquote(key)
    forms = (key, nfkc, decoded, unquote(nfkc), unicodedata.normalize("NFKC", decoded))
    return dict.fromkeys(forms)


def _key_problem(key: str) -> str | None:
    """Why ``key`` is unsafe, or None; checked as written and as a server, proxy or
    filesystem may read it (NFKC folds ``\u2024`` into ``.`` and ``\uff0f`` into ``/``;
    ``%2e%2e`` decodes to ``..``)."""
    if not isinstance(key, str) or not key:
        return "must be a non-empty string"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    if size > MAX_KEY_BYTES:
        return f"is longer than {MAX_KEY_BYTES} bytes"
    for form in _readings(key):
        if _FORBIDDEN.search(form):
            return "must not contain control characters or backslashes"
        if PurePosixPath(form).is_absolute():
            return "must be a relative path"
        parts = form.split("/")
        if any(part in ("", ".", "..") for part in parts):
            return "must not have empty, '.' or '..' segments"
        if any(len(part.encode("utf-8", "replace")) > MAX_SEGMENT_BYTES for part in parts):
            return f"has a segment longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def check_key(key: str) -> str:
    """Refuse keys that could escape the store's root (or its study's folder).

    Every key a ``Store`` reads or writes passes here, so names and ids built
    into keys (study, trial, file names) cannot reach outside the store's prefix.
    """
    problem = _key_problem(key)
    if problem is not None:
        raise StoreError(f"invalid store key {key!r}: {problem} (a relative path without '..')")
    return key


def is_valid_key(key: str) -> bool:
    return _key_problem(key) is None


def key_segment(value: str, what: str) -> str:
    """``value`` as one segment of a key (a study name, a trial id): no ``/`` either."""
    problem = _key_problem(value)
    if problem is None and any("/" in form for form in _readings(value)):
        problem = "must not contain '/'"
    if problem is not None:
        raise StoreError(f"invalid {what} {value!r} in a store key: {problem}")
    return value


def join_key(*parts: str) -> str:
    """``parts`` joined with ``/``; the result is checked with ``check_key``."""
    return check_key("/".join(parts))


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

    def put_dir(self, prefix: str, folder: Path) -> list[str]:
        """Upload every file of ``folder`` under ``prefix``; returns the keys."""
        keys = []
        for file in sorted(Path(folder).rglob("*")):
            if file.is_file():
                key = f"{prefix}/{file.relative_to(folder).as_posix()}"
                self.put_file(key, file)
                keys.append(key)
        return keys

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for the key when the store is a folder, else None."""
        return None


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LocalStore(Store):
    """A folder standing in for the bucket: ``hpo run``'s embedded default."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path:
        return self._path(key)

    @contextlib.contextmanager
    def _locked(self, key: str, conditional: bool) -> Iterator[None]:
        """Serialise conditional writes of one key (check and replace must be one step)."""
        if not conditional:
            yield
            return
        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        name = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
        with open(locks / name, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put_bytes(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(key, if_match is not None or if_none_match):
            current = _md5(path.read_bytes()) if path.exists() else None
            if if_none_match and current is not None:
                raise PreconditionFailed(f"{key}: already exists (another writer created it)")
            if if_match is not None and current != if_match:
                raise PreconditionFailed(
                    f"{key}: changed since it was read (another writer); expected ETag "
                    f"{if_match}, found {current}"
                )
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return _md5(data)

    def put_file(self, key: str, path: Path) -> str:
        return self.put_bytes(key, Path(path).read_bytes())

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"{key}: not found in {self.uri}") from exc

    def get_file(self, key: str, path: Path) -> Path:
        src = self._path(key)
        if not src.exists():
            raise StoreError(f"{key}: not found in {self.uri}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != path.resolve():
            shutil.copyfile(src, path)
        return path

    def etag(self, key: str) -> str | None:
        path = self._path(key)
        return _md5(path.read_bytes()) if path.is_file() else None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

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
