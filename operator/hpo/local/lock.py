"""One ``hpo run`` per local study: an exclusive lock on ``<study>/.lock``, taken at start.

``flock`` is released by the kernel when its holder dies, however it dies
(SIGKILL included), so a crashed run never leaves the study locked; the file
itself stays (it says who took it last). A run refused before it wrote anything (a
warm start refused, the spec refused) leaves no trace: the lock file and the folders
this run made are removed, while it still holds the lock; a run that opened the same
file meanwhile finds it gone once it gets the lock, and takes a fresh one. A study in a
bucket has no such lock: its ledger's conditional writes catch a second writer there.
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


def folders_to_make(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` of ``folder`` would make, deepest first."""
    made = []
    for f in (folder, *folder.parents):
        if f.exists():
            break
        made.append(f)
    return made


def _take(path: Path) -> int:
    """An fd holding ``path``'s lock (``StudyBusy`` at once if taken), of the file that is
    at ``path`` now (not one a refused run removed meanwhile)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by workers
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StudyBusy(
                f"{path.parent}: this study is being run by another `hpo run` ({holder}); "
                "wait for it to end or stop it, then run again (a run that died releases "
                "the study by itself)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed by a refused run between our open and our lock: again


def remove_empty(made: list[Path]) -> None:
    """Remove the folders of ``made`` (deepest first) that hold nothing."""
    with contextlib.suppress(OSError):
        for f in made:
            f.rmdir()  # OSError when not empty (or gone): something was written, it stays


def _unmake(path: Path, made: list[Path]) -> None:
    """Remove the lock file and the folders this run made, if nothing else is in them."""
    # made[0] is the study's folder when this run made it (else its lock file stays).
    if made and made[0] == path.parent and os.listdir(path.parent) == [LOCK_FILE]:
        path.unlink()
        remove_empty(made)


@contextlib.contextmanager
def study_lock(folder: Path, made: list[Path] | None = None) -> Iterator[None]:
    """Hold ``folder``'s study for the ``with`` block; ``StudyBusy`` at once if taken.
    Left by an error with nothing written, the folders it made are removed (``made``:
    those ``folders_to_make`` named before the run made any)."""
    path = folder / LOCK_FILE
    made = folders_to_make(folder) if made is None else made
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _take(path)
    except OSError as exc:
        raise OutputUnwritable.of(exc, path) from exc
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S %z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode(), 0)
        yield
    except BaseException:
        _unmake(path, made)
        raise
    finally:
        os.close(fd)  # releases the lock
