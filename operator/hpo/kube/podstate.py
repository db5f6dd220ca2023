"""What a trainer pod's status says about its trainings: waiting, blocked, disrupted or done.

On a shared cluster most Pending pods are not failing: they wait for capacity (the
scheduler found no room, a queueing system such as Kueue holds them by a scheduling
gate). Some cannot start until someone fixes something (an image that cannot be pulled,
a missing Secret or ConfigMap). Some end because of the infrastructure, not the
training (preemption, eviction, a node lost). Only a pod that runs and fails, or one
bound to a node that never starts its container, costs a training an attempt.
A pure function of the pod (a dict as the API returns it), so it is unit-tested on
real-shaped pods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

#: How often the pod's trainings were disrupted before (survives an operator restart).
ANN_DISRUPTIONS = "hpo-operator.dev/disruptions"

#: Container waiting reasons that do not pass by waiting: someone must fix the pod's
#: image or configuration (the kubelet keeps retrying, so a fix is picked up in place).
CANNOT_START = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)

#: The ``DisruptionTarget`` reasons, as Kubernetes and Kueue write them, in plain words.
DISRUPTIONS = {
    "PreemptionByScheduler": "preempted by the scheduler",
    "PreemptionByKueue": "preempted by Kueue",
    "EvictionByEvictionAPI": "evicted",
    "DeletionByTaintManager": "deleted for a NoExecute taint",
    "TerminationByKubelet": "terminated by the kubelet",
    "NodeLost": "its node was lost",
    "Deleted": "deleted before it finished",
}

#: The object a kubelet's ``FailedMount`` message names (``configmap "c" not found``).
_MISSING = re.compile(r'(configmap|secret) "([^"]+)" not found', re.IGNORECASE)

Kind = Literal["queued", "starting", "blocked", "running", "disrupted", "finished"]


@dataclass(frozen=True)
class PodCondition:
    """A pod, reduced to what the operator does with it.

    - ``queued``: waiting for capacity (gated, unschedulable, not bound yet): no attempt;
    - ``starting``: bound, its container not started yet (a timeout applies);
    - ``blocked``: cannot start until fixed (``reason`` and ``message`` from the kubelet,
      ``image`` the container's): no attempt, no more pods;
    - ``running``; ``finished`` (Succeeded or Failed: the trainer's own outcome);
    - ``disrupted``: ended or ending by the infrastructure (``reason``): started again
      without an attempt.
    """

    kind: Kind
    reason: str = ""
    message: str = ""
    image: str = ""
    #: When the current state began, as the API wrote it (for queue and start timeouts).
    since: str | None = None


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def _waiting(status: dict[str, Any]) -> tuple[str, str, str]:
    """The first container (init containers first) waiting for a reason that does not pass
    by itself: (reason, message, image)."""
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in CANNOT_START:
                return waiting["reason"], waiting.get("message") or "", cs.get("image") or ""
    return "", "", ""


def classify(pod: dict[str, Any]) -> PodCondition:
    """Sort one pod (see ``PodCondition``)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    created = meta.get("creationTimestamp")
    target = _condition(status, "DisruptionTarget")
    if phase == "Succeeded":
        return PodCondition("finished", since=created)
    if target is not None and target.get("status") == "True":
        reason = target.get("reason") or "DisruptionTarget"
        return PodCondition("disrupted", reason, target.get("message") or "")
    if phase == "Unknown":
        return PodCondition("disrupted", "NodeLost", status.get("message") or "")
    if phase == "Failed":
        return PodCondition("finished", status.get("reason") or "", status.get("message") or "")
    if phase == "Running":
        return PodCondition("running")
    gates = spec.get("schedulingGates") or []
    scheduled = _condition(status, "PodScheduled")
    if gates:
        names = ", ".join(str(g.get("name")) for g in gates)
        return PodCondition(
            "queued", "SchedulingGated", f"held by scheduling gates: {names}", "", created
        )
    if scheduled is not None and scheduled.get("status") == "False":
        return PodCondition(
            "queued",
            scheduled.get("reason") or "Unschedulable",
            scheduled.get("message") or "",
            since=created,
        )
    if scheduled is None and not spec.get("nodeName"):
        return PodCondition("queued", "NotScheduled", "not scheduled yet", since=created)
    reason, message, image = _waiting(status)
    if reason:
        return PodCondition("blocked", reason, message, image)
    since = scheduled.get("lastTransitionTime") if scheduled else None
    waiting = next(
        (
            w.get("reason") or ""
            for cs in status.get("containerStatuses") or []
            if (w := (cs.get("state") or {}).get("waiting"))
        ),
        "",
    )
    return PodCondition("starting", waiting, since=since or status.get("startTime") or created)


def disruption_words(reason: str) -> str:
    """A ``DisruptionTarget`` reason in plain words ("preempted by Kueue")."""
    return DISRUPTIONS.get(reason, f"disrupted ({reason})")


def blocked_words(c: PodCondition) -> str:
    """What stops a blocked pod, naming the image or the missing object (a ConfigMap or
    Secret of a volume: ``hpo.kube.mounts``)."""
    if "Image" in c.reason:
        what = (
            f"image {c.image!r} cannot be pulled"
            if "Pull" in c.reason
            else (f"image {c.image!r} is invalid")
        )
    elif c.reason == "FailedMount":  # hpo.kube.mounts: the kubelet's event says it
        m = _MISSING.search(c.message)
        kind = {"configmap": "ConfigMap", "secret": "Secret"}[m.group(1).lower()] if m else ""
        what = (
            f"{kind} {m.group(2)!r} of a volume is missing" if m else "a volume cannot be mounted"
        )
    else:
        what = "its container cannot be created"
    return f"{what} ({c.reason}: {c.message})" if c.message else f"{what} ({c.reason})"
