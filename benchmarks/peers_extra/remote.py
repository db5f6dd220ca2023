"""SMAC3 and HEBO as peers of the exact benchmark, each run in its own environment.

Each peer needs packages ours cannot share (HEBO an old numpy), so it runs as a
subprocess of its own venv (``make bench-peers`` makes them) that answers one study
at a time over the JSON protocol of ``serve.py``; the table lookups stay here. The
peer sees each table parameter as an index: ordered numeric values as an integer
(a user would declare them as an ordinal or log-scale range), the rest categorical.
Registered in ``event_sim.PEERS`` as ``smac`` and ``hebo`` on import.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from event_sim import AskTell, ask_tell, register
from fcnet.table import Table

HERE = Path(__file__).resolve().parent
#: Peer name -> (its venv under benchmarks/, its server script here).
SERVERS = {"smac": (".venv-smac", "smac_server.py"), "hebo": (".venv-hebo", "hebo_server.py")}


class PeerError(RuntimeError):
    pass


class Remote:
    """One server process, started on first use and kept for every later study."""

    def __init__(self, name: str) -> None:
        venv, script = SERVERS[name]
        python = HERE.parent / venv / "bin" / "python"
        if not python.exists():
            raise PeerError(f"{python} is missing: run `make bench-peers` first")
        self.proc = subprocess.Popen(
            [str(python), str(HERE / script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            # One thread: the benchmark runs studies side by side, one per core.
            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        atexit.register(self.close)

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise PeerError(f"the peer server exited (code {self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise PeerError(answer["error"])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


_REMOTES: dict[str, Remote] = {}


def remote(name: str) -> Remote:
    if name not in _REMOTES:
        _REMOTES[name] = Remote(name)
    return _REMOTES[name]


def peer_space(table: Table) -> dict[str, dict[str, Any]]:
    """Each table parameter as the protocol's ``int`` (ordered numbers) or ``cat``."""
    out = {}
    for name, values in table.space.items():
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        ordered = len(numbers) == len(values) and numbers == sorted(set(numbers))
        out[name] = {"type": "int" if ordered else "cat", "size": len(values)}
    return out


class RemotePeer:
    """A remote peer as the event simulation's ``AskTell``."""

    def __init__(self, name: str, table: Table, budget: int, seed: int) -> None:
        self.remote = remote(name)
        self.table = table
        space = peer_space(table)
        self.remote.send({"op": "start", "space": space, "seed": seed, "budget": budget})

    def ask(self) -> tuple[Any, int]:
        answer = self.remote.send({"op": "ask"})
        digits = [int(answer["params"][name]) for name in self.table.space]
        return answer["id"], int(np.ravel_multi_index(digits, self.table.sizes))

    def tell(self, token: Any, loss: float) -> None:
        self.remote.send({"op": "tell", "id": token, "loss": loss})


def _factory(name: str) -> Any:
    def make(table: Table, budget: int, seed: int) -> AskTell:
        return RemotePeer(name, table, budget, seed)

    return make


for _name in SERVERS:
    register(_name, ask_tell(_factory(_name)))
