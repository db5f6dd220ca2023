"""Hostile keys and names (path traversal in every spelling) and the test of what
"stays under its root" means, however a server reads a key."""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath
from urllib.parse import unquote

HOSTILE_KEYS = [
    "..",
    ".",
    "",
    "../x",
    "/abs",
    "/etc/passwd",
    "a/../../b",
    "a/./b",
    "a//b",
    "a/",
    "%2e%2e",
    "a/%2e%2e/b",
    "%2E%2E/x",
    "..%2fx",
    "\u2024\u2024",
    "a/\u2024\u2024/b",
    "\uff0e\uff0e/x",
    "\uff05\uff12\uff45\uff05\uff12\uff45",
    "a\x00b",
    "a\nb",
    "a\\..\\..\\b",
    "..\\x",
    "C:\\x",
    "x" * 300,
    "a/" * 600,
    "\ud800",
]

HOSTILE_SEGMENTS = [*HOSTILE_KEYS, "a/b", "a\uff0fb", "a%2fb", "a%2Fb", "x/../.."]


def readings(key: str) -> set[str]:
    nfkc = unicodedata.normalize("NFKC", key)
    return {key, nfkc, unquote(key), unquote(nfkc), unicodedata.normalize("NFKC", unquote(key))}


def safe_under(key: str) -> bool:
    """A key that, however a server reads it, names something under its root."""
    for form in readings(key):
        if PurePosixPath(form).is_absolute() or "\\" in form or "\x00" in form:
            return False
        if any(part in ("", ".", "..") for part in form.split("/")):
            return False
    return True
