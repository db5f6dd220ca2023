"""Network odds and ends of the tests: a free port to listen on, and what a URL answers."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on (just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_answer(url: str, timeout: float = 5) -> tuple[int, str]:
    """``(status, body)`` of a GET, an error status too; ``(0, why)`` if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening (yet)
        return 0, str(exc)
