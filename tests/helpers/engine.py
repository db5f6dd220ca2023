"""Driving the engine in tests without training: a synthetic objective and the loop that
hands its tasks out and records their results, a few slots at a time."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hpo.engine import Engine, Task
from hpo.study.contract import SeedResult


def objective(config: dict[str, Any]) -> float:
    """A smooth bowl: best near lr=3e-3 and 64 neurons per layer."""
    lr_term = abs(math.log10(config["learning_rate"]) + 2.5) * 0.1
    return lr_term + sum(abs(n - 64) for n in config["neurons"]) / 1000


def drive_engine(
    engine: Engine, result: Callable[[Task], SeedResult], slots: int, limit: int = 10_000
) -> None:
    """Run ``engine`` to its end with ``slots`` tasks at a time, finishing the oldest first
    with ``result(task)``; fails the test if it stalls or does not end in ``limit`` steps."""
    running: list[Task] = []
    for _ in range(limit):
        if engine.finished:
            return
        running += engine.next_tasks(slots - len(running))
        assert running, "engine stalled: nothing running and not finished"
        engine.record(result(running.pop(0)))
    raise AssertionError("engine did not finish")
