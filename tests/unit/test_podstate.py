"""Sorting trainer pods by what their status says (``hpo.kube.podstate.classify``), on pods
shaped as the API server, the scheduler, Kueue and the kubelet write them."""

from __future__ import annotations

from typing import Any

import pytest

from hpo.kube.podstate import blocked_words, classify, disruption_words

CREATED = "2026-03-01T10:00:00Z"


def pod(
    phase: str = "Pending",
    *,
    conditions: list[dict[str, Any]] | None = None,
    waiting: dict[str, str] | None = None,
    gates: list[str] | None = None,
    node: str | None = None,
    running: bool = False,
    **status: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "trainer", "image": "reg/trainer:1"}]}
    if gates:
        spec["schedulingGates"] = [{"name": g} for g in gates]
    if node:
        spec["nodeName"] = node
    body: dict[str, Any] = {
        "metadata": {"name": "p", "creationTimestamp": CREATED},
        "spec": spec,
        "status": {"phase": phase, **status},
    }
    if conditions is not None:
        body["status"]["conditions"] = conditions
    if waiting is not None or running:
        state = {"waiting": waiting} if waiting is not None else {"running": {"startedAt": CREATED}}
        body["status"]["containerStatuses"] = [
            {
                "name": "trainer",
                "image": "reg/trainer:1",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": state,
            }
        ]
    return body


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-03-01T10:05:00Z",
    }


SCHEDULED = cond("PodScheduled", "True")


def test_waiting_for_capacity_is_queued() -> None:
    unschedulable = classify(
        pod(
            conditions=[
                cond(
                    "PodScheduled",
                    "False",
                    "Unschedulable",
                    "0/3 nodes: Insufficient nvidia.com/gpu",
                )
            ]
        )
    )
    assert (unschedulable.kind, unschedulable.reason) == ("queued", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in unschedulable.message and unschedulable.since == CREATED
    gated = classify(
        pod(
            gates=["kueue.x-k8s.io/admission"],
            conditions=[cond("PodScheduled", "False", "SchedulingGated", "Scheduling is blocked")],
        )
    )
    assert (gated.kind, gated.reason) == ("queued", "SchedulingGated")
    assert "kueue.x-k8s.io/admission" in gated.message
    assert classify(pod()).kind == "queued"  # just created: not bound, no status yet
    assert classify({"metadata": {"name": "p"}, "spec": {}}).kind == "queued"


@pytest.mark.parametrize(
    ("reason", "message", "words"),
    [
        ("ErrImagePull", 'failed to pull image "reg/trainer:1": not found', "cannot be pulled"),
        ("ImagePullBackOff", 'Back-off pulling image "reg/trainer:1"', "cannot be pulled"),
        ("InvalidImageName", 'Failed to apply default image tag "reg//x"', "is invalid"),
        ("CreateContainerConfigError", 'secret "s3-creds" not found', "cannot be created"),
        ("CreateContainerError", "context deadline exceeded", "cannot be created"),
    ],
)
def test_a_pod_that_cannot_start_is_blocked_naming_the_cause(
    reason: str, message: str, words: str
) -> None:
    state = classify(
        pod(conditions=[SCHEDULED], node="n1", waiting={"reason": reason, "message": message})
    )
    assert (state.kind, state.reason, state.message) == ("blocked", reason, message)
    text = blocked_words(state)
    assert words in text and message in text
    if "Image" in reason:
        assert "'reg/trainer:1'" in text


def test_bound_but_not_started_is_starting_timed_from_its_binding() -> None:
    state = classify(
        pod(conditions=[SCHEDULED], node="n1", waiting={"reason": "ContainerCreating"})
    )
    assert (state.kind, state.since) == ("starting", "2026-03-01T10:05:00Z")


@pytest.mark.parametrize(
    "reason",
    [
        "PreemptionByScheduler",
        "PreemptionByKueue",
        "EvictionByEvictionAPI",
        "DeletionByTaintManager",
        "TerminationByKubelet",
    ],
)
def test_the_disruption_target_condition_is_a_disruption_in_any_phase(reason: str) -> None:
    target = cond("DisruptionTarget", "True", reason, "gone")
    for phase in ("Running", "Failed", "Pending"):
        state = classify(pod(phase, conditions=[SCHEDULED, target], node="n1", running=True))
        assert (state.kind, state.reason) == ("disrupted", reason), phase
    assert not disruption_words(reason).startswith("disrupted (")
    # A pod that finished its training before it was disrupted has its result.
    assert classify(pod("Succeeded", conditions=[SCHEDULED, target])).kind == "finished"


def test_node_lost_is_a_disruption_and_a_failed_pod_is_finished() -> None:
    lost = classify(pod("Unknown", reason="NodeLost", message="node n1 is unresponsive"))
    assert (lost.kind, lost.reason) == ("disrupted", "NodeLost")
    failed = classify(pod("Failed", conditions=[SCHEDULED, cond("DisruptionTarget", "False")]))
    assert failed.kind == "finished"
    assert (
        classify(pod("Running", conditions=[SCHEDULED], node="n1", running=True)).kind == "running"
    )


def test_a_pod_whose_volume_cannot_be_mounted_is_blocked_naming_the_object() -> None:
    """The kubelet says it only in a FailedMount event (``hpo.kube.mounts``): the pod itself
    is ContainerCreating; once it runs, its old events no longer matter."""
    from hpo.kube.mounts import MountWatch

    message = 'MountVolume.SetUp failed for volume "creds" : secret "team-token" not found'
    watch = MountWatch()
    watch.failed = {"u1": message}  # as ``refresh`` reads them from the events
    creating = pod(conditions=[SCHEDULED], node="n1", waiting={"reason": "ContainerCreating"})
    creating["metadata"]["uid"] = "u1"
    state = watch.state(creating, classify(creating))
    assert (state.kind, state.reason, state.message) == ("blocked", "FailedMount", message)
    assert (
        blocked_words(state)
        == f"Secret 'team-token' of a volume is missing (FailedMount: {message})"
    )
    other = {**creating, "metadata": {**creating["metadata"], "uid": "u2"}}  # a new pod
    assert watch.state(other, classify(other)).kind == "starting"
    running = pod("Running", conditions=[SCHEDULED], node="n1", running=True)
    running["metadata"]["uid"] = "u1"
    assert watch.state(running, classify(running)).kind == "running"
