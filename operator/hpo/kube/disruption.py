"""How often each training's pod was disrupted, and what the ledger says of it.

A disrupted training (preempted, evicted, its node lost, its pod deleted) runs again
under the same attempt; this log caps that per training (``trainer.maxDisruptions``),
carries the count across an operator restart on the next pod's annotation, and writes
"preempted by Kueue, requeued 1x" into the result's error column.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hpo.engine import Task, TrainingId
from hpo.kube.podstate import ANN_DISRUPTIONS, disruption_words
from hpo.kube.status import age_s
from hpo.study.contract import SeedResult

#: Seconds a deleted pod may outlive its deadline (its ``deletionTimestamp``: when it was
#: deleted plus its grace period) before its node is taken as lost.
STUCK_S = 30.0


def stuck(pod: dict[str, Any]) -> bool:
    """Whether a deleted pod is to be deleted again without grace: past its deadline by
    ``STUCK_S``, no kubelet confirmed it. A pod on a lost (unreachable) node stays
    Terminating until someone deletes the node object, and its trainings with it (their
    pod name is taken, their slot held). A working kubelet has killed the container by
    the deadline, so forcing only then never runs a training twice at once."""
    deadline = (pod.get("metadata") or {}).get("deletionTimestamp")
    return bool(deadline) and age_s(deadline) >= STUCK_S


class DisruptionLog:
    """The disruptions (their reasons, in order) of each training of one study."""

    def __init__(self) -> None:
        self.reasons: dict[TrainingId, list[str]] = {}

    def count(self, tasks: list[Task], reason: str, cap: int) -> tuple[list[Task], list[Task]]:
        """Count one disruption of each of ``tasks``: (to run again, past the cap)."""
        again: list[Task] = []
        over: list[Task] = []
        for t in tasks:
            seen = self.reasons.setdefault(t.id, [])
            seen.append(reason)
            (over if len(seen) > cap else again).append(t)
        return again, over

    def times(self, tasks: list[Task]) -> int:
        """The most disruptions among ``tasks`` (0 if none)."""
        return max((len(self.reasons.get(t.id, ())) for t in tasks), default=0)

    def annotate(self, manifest: dict[str, object], tasks: list[Task]) -> None:
        """Put the count on a new pod of ``tasks``: it survives an operator restart."""
        n = self.times(tasks)
        meta = manifest["metadata"]
        if n and isinstance(meta, dict):
            meta.setdefault("annotations", {})[ANN_DISRUPTIONS] = str(n)

    def restore(self, tasks: list[Task], annotations: dict[str, str]) -> None:
        """Counts from an adopted pod's annotation (an operator restart)."""
        try:
            n = int(annotations.get(ANN_DISRUPTIONS, "0"))
        except ValueError:
            return
        for t in tasks:
            seen = self.reasons.setdefault(t.id, [])
            seen.extend(["Deleted"] * max(0, n - len(seen)))

    def noted(self, result: SeedResult) -> SeedResult:
        """The result with its training's disruptions in its error column."""
        reasons = self.reasons.get(result.key)
        if not reasons:
            return result
        words = "; ".join(dict.fromkeys(disruption_words(r) for r in reasons))
        note = f"{words}, requeued {len(reasons)}x"
        if result.error and note in result.error:
            return result
        error = f"{result.error}; {note}" if result.error else note
        return dataclasses.replace(result, error=error)
