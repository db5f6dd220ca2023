"""Named crash points, for fault tests that kill the operator at a chosen moment.

Inert unless the environment variable ``HPO_CRASH_AT`` is set (never in
production): ``HPO_CRASH_AT="s3-put:ledger.xlsx:2"`` makes the process exit at
once (``os._exit(137)``, as after SIGKILL: no ``finally``, no flush) the 2nd
time the point ``s3-put:ledger.xlsx`` is reached; several comma-separated
``point:n`` pairs arm several points. A SIGKILL at a random time can hardly
hit these moments; a test needs them hit on purpose.

The points (where ``reached`` is called):

- ``pod-reported:<Succeeded|Failed|Disrupted|Pending|Deleted>``: a pod's outcome
  is in the engine (and a success in its ``scores.json``), the ledger not
  written, the pod not yet deleted (kube/runner.py);
- ``failure-stored``: a failed attempt's record is in the store, its pod not yet
  deleted (kube/runner.py), or the engine not yet told (local/runner.py);
- ``pod-create:<random|bayesian>``: the engine (for ``bayesian``, the narrow stage's
  stored name: its strategy) chose the training, its pod is not created yet (kube/runner.py);
- ``pod-created:<random|bayesian>``: the pod exists, the operator has not noted it;
- ``local-train:<trial>:<seed>:<attempt>``: a worker of ``hpo run`` took that training
  (the run counts it running), before it trains (local/runner.py);
- ``s3-put:<file name>`` / ``s3-put-done:<file name>``: a store write is about to be
  sent / was answered but not yet acted upon (hpo/store/s3.py); for ``ledger.xlsx``
  these are the two sides of a ledger write (an S3 PUT is atomic: there is no
  half-written object to crash in between).
"""

from __future__ import annotations

import os
import sys
import threading


def _plan(raw: str) -> dict[str, int]:
    """``point:n,...``; a typo stops the process with a message naming it, rather than
    leaving a fault test to run with a point that never fires."""
    plan: dict[str, int] = {}
    for item in filter(None, (i.strip() for i in raw.split(","))):
        point, _, n = item.rpartition(":")
        if not point or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"HPO_CRASH_AT: {item!r} is not point:n (n a whole number >= 1)")
        plan[point] = int(n)
    return plan


_PLAN = _plan(os.environ.get("HPO_CRASH_AT") or "")
_seen: dict[str, int] = {}
_lock = threading.Lock()


def reached(point: str) -> None:
    """Exit the process here if ``HPO_CRASH_AT`` armed this point for this time."""
    if point not in _PLAN:
        return
    with _lock:
        _seen[point] = n = _seen.get(point, 0) + 1
        if n == _PLAN[point]:
            sys.stderr.write(f"hpo: crash point {point} reached ({n}x): exiting (HPO_CRASH_AT)\n")
            sys.stderr.flush()
            os._exit(137)
