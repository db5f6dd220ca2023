"""Checked store keys: the leaf every module that builds a key can import.

Keys are always ``/``-separated and relative to a store's root. Every key a
``Store`` reads or writes passes ``check_key``, and every name or id built
into a key passes ``key_segment``, so nothing can point outside the store's
prefix or its study's folder. ``StoreError`` is defined here (and re-exported
by ``hpo.store``) so that checking a key needs no store: ``hpo.study.spec`` checks
names with it without importing the storage package, which imports the spec.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath
from urllib.parse import unquote


class StoreError(RuntimeError):
    """A store call failed or a key is unsafe; the message says which key and why."""


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
    """Whether ``check_key`` accepts ``key`` (for filtering listed keys without raising)."""
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
