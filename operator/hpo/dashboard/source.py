"""The studies the dashboard shows, read through the results API and cached by revision.

A refresh costs one ``revisions()`` per study (a stat or a HEAD per file): the
frames are read and the page data built again only when the ledger or the final
group changes, so the cost of a refresh stays flat as a ledger grows; a new live
status (``status.json``, rewritten within seconds as trainings start and finish)
only updates the summary, and so does its heartbeat going stale. Finding the
studies lists the whole prefix (every artifact key), so it is redone at most every
``discover_every`` seconds, and never more often than keeps it under 5% of the time
(20x its last duration).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.dashboard import views
from hpo.records.livestatus import LiveStatus
from hpo.results import ResultsError, find_studies, open_study

log = logging.getLogger(__name__)


def problem(exc: BaseException) -> str:
    """An exception as a message for the page: never a stack trace."""
    if isinstance(exc, (ResultsError, OSError, ValueError, KeyError)):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Entry:
    """One study: its handle and the page data of the last revision that could be read."""

    sid: str
    where: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    handle: Any = None
    revision: str | None = None
    #: The ledger's and final group's part of ``revision``: what ``detail`` was built from.
    data_revision: str | None = None
    #: ``build``'s summary, before the live status went over it.
    base: dict[str, Any] | None = None
    detail: dict[str, Any] | None = None
    read_at: float | None = None
    error: str | None = None
    #: The study page's JSON as sent, for ``tag``: encoded once per revision.
    body: bytes | None = None
    tag: str | None = None

    def encoded(self) -> tuple[str, bytes]:
        """The study page's JSON and its tag (revision and error)."""
        tag = f"{self.revision}:{self.error}"
        if self.tag != tag or self.body is None:
            data = {"detail": self.detail, "error": self.error, "read_at": self.read_at}
            self.body, self.tag = json.dumps(data, separators=(",", ":")).encode(), tag
        return tag, self.body


class Source:
    """The studies under one folder or bucket prefix."""

    def __init__(
        self,
        where: str,
        *,
        endpoint: str | None = None,
        tls: bool | None = None,
        discover_every: float = 5.0,
    ) -> None:
        self.where = where
        self.endpoint, self.tls = endpoint, tls
        self.discover_every = discover_every
        self._entries: dict[str, Entry] = {}
        self._found_at = -1e9
        self._took = 0.0  # seconds the last look took
        self._discover_error: str | None = None
        self._lock = threading.Lock()

    def _sid(self, found: str) -> str:
        base = self.where.rstrip("/")
        if found.startswith("s3://"):
            rest = found.removeprefix(base).strip("/")
        else:
            try:
                rest = Path(found).resolve().relative_to(Path(base).resolve()).as_posix()
            except ValueError:
                rest = Path(found).name
        return rest if rest not in ("", ".") else Path(found).name

    def discover(self, *, soon: bool = False) -> str | None:
        """Find the studies again if the last look is older than ``discover_every`` (a
        second if ``soon``); returns the reason when they cannot be listed."""
        with self._lock:
            wait = max(1.0 if soon else self.discover_every, 20 * self._took)
            if time.monotonic() - self._found_at < wait:
                return self._discover_error
            started = time.monotonic()
            try:
                found = find_studies(self.where, endpoint=self.endpoint, tls=self.tls)
                if not found and self._is_study():
                    found = [self.where]  # pointed at one study's own folder
                self._discover_error = None
            except Exception as exc:  # shown on the page; keep serving
                self._discover_error = problem(exc)
                found = [e.where for e in self._entries.values()]
            self._found_at = time.monotonic()
            self._took = self._found_at - started
            for where in found:
                sid = self._sid(where)
                if sid not in self._entries:
                    self._entries[sid] = Entry(sid, where)
            return self._discover_error

    def _is_study(self) -> bool:
        try:
            open_study(self.where, endpoint=self.endpoint, tls=self.tls)
        except ResultsError:
            return False
        return True

    def ids(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, sid: str) -> Entry | None:
        if sid not in self._entries:
            self.discover(soon=True)  # a study created since the last look?
        return self._entries.get(sid)

    def revisions(self, entry: Entry) -> tuple[str, str, LiveStatus | None]:
        """(the ledger's and final group's revision, the live status's version and its
        state now: live turns stale with time alone, the live status); raises what
        ``open_study`` raises."""
        if entry.handle is None:
            entry.handle = open_study(entry.where, endpoint=self.endpoint, tls=self.tls)
        data, version = entry.handle.revisions()
        status = entry.handle.status(version) if version != "-" else None
        return str(data), f"{version}:{status.state() if status else '-'}", status

    def revision(self, entry: Entry) -> str:
        """The study's revision now (``revisions``' two tags joined)."""
        data, live, _ = self.revisions(entry)
        return f"{data}:{live}"

    def read(self, entry: Entry) -> Entry:
        """``entry`` brought up to date: rebuilt only if its revision changed. A read that
        fails keeps the last good page data and sets ``error`` (shown beside it)."""
        with entry.lock:
            try:
                data, live, status = self.revisions(entry)
                rev = f"{data}:{live}"
                if rev == entry.revision and entry.detail is not None:
                    return entry
                started = time.perf_counter()
                if data != entry.data_revision or entry.detail is None or entry.base is None:
                    detail = views.build(entry.handle)
                    detail["summary"]["id"] = entry.sid
                    entry.base, entry.data_revision = detail["summary"], data
                else:
                    detail = dict(entry.detail)
                detail["summary"] = views.live(entry.base, status)
                entry.detail, entry.revision, entry.read_at = detail, rev, time.time()
                entry.error = None
                log.debug("%s: built in %.3fs", entry.sid, time.perf_counter() - started)
            except Exception as exc:  # a message on the page, never a trace
                log.info(
                    "%s: %s", entry.sid, problem(exc), exc_info=not isinstance(exc, ValueError)
                )
                entry.error = problem(exc)
                entry.handle = None if entry.detail is None else entry.handle
            return entry

    def list_revision(self) -> str:
        """One tag for the whole list: the ids and every study's revision."""
        parts = [self._discover_error or ""]
        for sid in self.ids():
            entry = self._entries[sid]
            try:
                parts.append(f"{sid}={self.revision(entry)}")
            except Exception as exc:
                parts.append(f"{sid}!{problem(exc)}")
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()
