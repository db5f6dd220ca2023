"""One ``hpo run`` per local study: an exclusive lock on ``<study>/.lock``, taken at start.

``flock`` is released by the kernel when its holder dies, however it dies
(SIGKILL included), so a crashed run never leaves the study locked; the file
itself stays (deleting it would race with a run taking it) and says who took
it last. A study in a bucket has no such lock: its ledger's conditional writes
catch a second writer there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from hpo.store import OutputUnwritable

LOCK_FILE = ".lock"


class StudyBusy(RuntimeError):
    """Another process runs this study now."""


@contextlib.contextmanager
def study_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s study for the ``with`` block; ``StudyBusy`` at once if taken."""
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by workers
    except OSError as exc:
        raise OutputUnwritable.of(exc, path) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise StudyBusy(
                f"{folder}: this study is being run by another `hpo run` ({holder}); "
                "wait for it to end or stop it, then run again (a run that died releases "
                "the study by itself)"
            ) from None
        started = time.strftime("%Y-%m-%d %H:%M:%S %z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
