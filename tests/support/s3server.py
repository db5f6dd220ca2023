"""A real S3 server for tests: moto's ``moto_server`` in a process of its own.

moto lives in its own virtualenv, ``.venv-s3`` (not the product's ``.venv``):
botocore, which moto pulls in, wants ``python-dateutil<3`` while the
``kubernetes`` client wants ``>=3``. The Makefile creates it; so does
``python tests/support/s3server.py --install``.

The server is a real HTTP process, so tests can freeze it (SIGSTOP) to play an
outage: the kernel still accepts connections, nothing answers, clients time
out; ``thaw()`` (SIGCONT) lets it answer everything that waited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __package__:
    from .net import free_port
else:  # run as a script (`python tests/support/s3server.py --install`): no package around it
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from net import free_port

REPO = Path(__file__).resolve().parents[2]
S3_VENV = REPO / ".venv-s3"
MOTO_REQUIREMENT = "moto[server]==5.2.5"
INSTALL_HINT = (
    f"python3 -m venv {S3_VENV} && {S3_VENV}/bin/pip install '{MOTO_REQUIREMENT}'"
    "  (or `python tests/support/s3server.py --install`)"
)


class S3ServerUnavailable(RuntimeError):
    """The S3 test server cannot be started (its venv is missing or it did not answer)."""


def moto_server_binary(venv: Path = S3_VENV) -> Path:
    """``moto_server`` of the S3 venv; fails with the command that creates it."""
    binary = venv / "bin" / "moto_server"
    if not binary.is_file():
        raise S3ServerUnavailable(
            f"the S3 test server needs moto in its own venv, and {binary} is missing; "
            f"create it with: {INSTALL_HINT}"
        )
    return binary


def install_s3_venv(venv: Path = S3_VENV) -> Path:
    """Create ``.venv-s3`` with the pinned moto, if it is not there yet."""
    if not (venv / "bin" / "moto_server").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, MOTO_REQUIREMENT], check=True)
    return moto_server_binary(venv)


class S3Server:
    """``moto_server -H 127.0.0.1 -p PORT`` as a subprocess; a context manager too."""

    def __init__(self, venv: Path = S3_VENV, startup_timeout_s: float = 30.0) -> None:
        self.binary = moto_server_binary(venv)
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._logdir = tempfile.TemporaryDirectory(prefix="moto-")
        self.log_path = Path(self._logdir.name) / "moto_server.log"
        self._frozen = False

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("S3 server not started")
        return self.process.pid

    def start(self) -> S3Server:
        last = ""
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            # A file, not a pipe: a full pipe would block the server.
            with open(self.log_path, "ab") as out:
                self.process = subprocess.Popen(
                    [str(self.binary), "-H", "127.0.0.1", "-p", str(self.port)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            if self._wait_ready():
                return self
            last = self.log_tail()
            self._kill()
        raise S3ServerUnavailable(f"moto_server did not answer; its log ends with:\n{last}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/", timeout=1) as response,
            ):
                if response.status == 200:
                    return True
            time.sleep(0.05)
        return False

    def freeze(self) -> None:
        """Stop the process (SIGSTOP): connections are accepted, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """Continue the process (SIGCONT): it answers everything that waited."""
        os.kill(self.pid, signal.SIGCONT)
        self._frozen = False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            if self._frozen:
                self.thaw()
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._kill()
        self.process = None
        self._logdir.cleanup()

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


TEST_ACCESS_KEY = "test-access-key"
TEST_SECRET_KEY = "SECRET-do-not-leak-1234"  # recognisable: tests scan messages for it


if __name__ == "__main__":
    if sys.argv[1:] == ["--install"]:
        print(install_s3_venv())
    else:
        with S3Server() as server:
            print(f"moto S3 server at {server.url} (pid {server.pid}); Ctrl-C stops it")
            with contextlib.suppress(KeyboardInterrupt):
                server.process.wait()  # type: ignore[union-attr]
