"""A small HTTP reverse proxy that injects S3 faults in front of the moto server.

moto answers every request it can; a flaky object store cannot be played
with it alone. ``FaultProxy(upstream)`` forwards each request (method, path,
headers, body) to ``upstream`` and its answer back, except:

- a seeded ``rate`` of requests is answered ``503 SlowDown`` (the S3 error
  XML, as AWS and MinIO send it under load) without reaching the server;
- ``hold(suffix, seconds, method)`` delays requests (``PUT`` by default) whose
  path ends with ``suffix`` before they are forwarded (``held`` is set while
  one waits), to hold a write in flight at a chosen moment.

Counters (``requests``, ``injected``) say what happened, for the test output;
``log`` keeps ``(started, ended, method, path)`` of every forwarded request
(``time.monotonic()``), to check the order in which writes and removals landed.
It runs in a thread of the test process (``http.server``, one thread per
connection); signatures stay valid because the Host header is passed through
unchanged and moto does not check them.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>faultproxy</RequestId>"
    b"</Error>"
)
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    """``with FaultProxy("127.0.0.1:PORT", rate=0.1, seed=1) as proxy: proxy.endpoint``."""

    def __init__(self, upstream: str, *, rate: float = 0.0, seed: int = 0) -> None:
        self.upstream = upstream
        self.rate = rate
        self.random = random.Random(seed)
        self.requests = 0
        self.injected = 0
        self.held = threading.Event()
        self.log: list[tuple[float, float, str, str]] = []
        self._hold: tuple[str, float, str] | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def hold(self, suffix: str | None, seconds: float = 0.0, method: str = "PUT") -> None:
        """Delay ``method`` requests to paths ending with ``suffix`` (None: stop)."""
        self._hold = (suffix, seconds, method) if suffix else None

    def _fault(self) -> bool:
        with self._lock:
            self.requests += 1
            hit = self.rate > 0 and self.random.random() < self.rate
            self.injected += hit
            return hit

    def start(self) -> Self:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy._fault():
                    payload = b"" if self.command == "HEAD" else SLOW_DOWN
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.send_header("Retry-After", "1")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                hold = proxy._hold
                if hold and self.command == hold[2] and self.path.split("?")[0].endswith(hold[0]):
                    proxy.held.set()
                    threading.Event().wait(hold[1])
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=120)
                started = time.monotonic()
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    with proxy._lock:
                        proxy.log.append((started, time.monotonic(), self.command, self.path))
                    self.send_response(response.status, response.reason)
                    head = self.command == "HEAD"  # its Content-Length is the object's size
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP and (head or key.lower() != "content-length"):
                            self.send_header(key, value)
                    if not head:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
