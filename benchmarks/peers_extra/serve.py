"""The peer side of the JSON protocol: one study at a time, one JSON object a line.

Runs inside a peer's own environment (``benchmarks/.venv-smac``, ``.venv-hebo``),
so it uses the standard library only. Requests on stdin, one answer each on stdout:

    {"op": "start", "space": {...}, "seed": 3, "budget": 80}   -> {"ok": true}
    {"op": "ask"}                                             -> {"id": 0, "params": {...}}
    {"op": "tell", "id": 0, "loss": 0.12}                     -> {"ok": true}

``space`` maps each parameter to ``{"type": "int", "size": n}`` (an index into the
table's ordered values, 0..n-1) or ``{"type": "cat", "size": n}`` (unordered);
``params`` gives each parameter's index. A new ``start`` drops the previous study.
An error is answered as ``{"error": "..."}`` and the server goes on.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any, Protocol


class Study(Protocol):
    def ask(self) -> tuple[int, dict[str, int]]: ...

    def tell(self, ident: int, loss: float) -> None: ...


Factory = Callable[[dict[str, dict[str, Any]], int, int], Study]


def serve(factory: Factory) -> None:
    """Answer requests until stdin closes. The peer's own chatter goes to stderr, so
    stdout carries the protocol only."""
    out = sys.stdout
    sys.stdout = sys.stderr
    study: Study | None = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op = req["op"]
            if op == "start":
                study = factory(req["space"], int(req["seed"]), int(req["budget"]))
                answer: dict[str, Any] = {"ok": True}
            elif study is None:
                answer = {"error": f"{op!r} before 'start'"}
            elif op == "ask":
                ident, params = study.ask()
                answer = {"id": ident, "params": params}
            elif op == "tell":
                study.tell(int(req["id"]), float(req["loss"]))
                answer = {"ok": True}
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # the client shows it; the server stays up
            answer = {"error": f"{exc!r}\n{traceback.format_exc()}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
