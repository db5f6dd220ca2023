"""What one live-status write costs (``<study>/status.json``, ``hpo.records.livestatus``).

Run: ``.venv/bin/python benchmarks/livestatus.py``

Each write is the document as the study session makes it (``StatusWriter.update``, every
count changed), to a local folder and to the S3 test server (``tests/support/s3server.py``,
over loopback). A running study writes it at most every 3 s (``status_every_s``), plus a
heartbeat every 10 s and at stage changes, so the cost per second of run is this / 3.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hpo.engine import StudyProgress
from hpo.records.livestatus import StatusWriter
from hpo.store import LocalStore, Store


def per_write_ms(store: Store, n: int) -> float:
    writer = StatusWriter(store, "s/status.json", "s", "local", every_s=0.0)
    started = time.perf_counter()
    for i in range(n):
        writer.update(StudyProgress("random", i, 0, 2, 0, n, None, None, None))
    return (time.perf_counter() - started) / n * 1000


def main() -> None:
    from helpers.s3 import new_s3_store
    from support.s3server import S3Server

    with tempfile.TemporaryDirectory() as folder:
        print(f"local folder: {per_write_ms(LocalStore(folder), 300):.2f} ms per write")
    with S3Server() as s3:
        print(f"S3 test server: {per_write_ms(new_s3_store(s3), 100):.2f} ms per write")


if __name__ == "__main__":
    main()
