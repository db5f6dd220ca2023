"""Find a secret wherever it may hide: raw, base64 (as in a Secret), URL-quoted,
JSON-escaped, and inside zip containers (xlsx workbooks, .keras models)."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator
from urllib.parse import quote


def _needles(secrets: list[str]) -> list[bytes]:
    """A secret as it may appear: raw, base64 (as in a Secret), URL-quoted, JSON-escaped."""
    out = []
    for s in secrets:
        raw = s.encode()
        out += [
            raw,
            base64.b64encode(raw),
            quote(s, safe="").encode(),
            json.dumps(s)[1:-1].encode(),
        ]
    return list(dict.fromkeys(out))


def _readable(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """``data`` and, for zip containers (xlsx, .keras), each member uncompressed."""
    yield name, data
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for member in z.namelist():
                    yield f"{name}!{member}", z.read(member)
        except zipfile.BadZipFile:
            pass


def find_leaks(blobs: dict[str, bytes | str], secrets: list[str]) -> list[str]:
    """Where any of ``secrets`` shows up in ``blobs`` (name -> content)."""
    needles = _needles(secrets)
    found = []
    for name, blob in blobs.items():
        data = blob.encode("utf-8", "replace") if isinstance(blob, str) else blob
        for where, text in _readable(name, data):
            found += [f"{where}: {n[:12]!r}..." for n in needles if n in text]
    return found
