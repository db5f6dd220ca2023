"""Waiting on a condition with a generous bound, and names no other test uses.

Bounds are generous on purpose: the suite must pass while other work loads the cores.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any


def unique(prefix: str) -> str:
    """A name of its own for one test's objects (the cluster outlives the test)."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_for(condition: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    """``condition()``'s first truthy value; fails naming ``what`` past ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
