"""The test kubelet as a busy shared cluster: room for N pods, Kueue's scheduling gates,
preemption and eviction with the real ``DisruptionTarget`` condition, images that cannot
be pulled. The operator's tests (test_cluster_waiting.py) and the scale benchmark build on
these, so each is checked against the API here, as a client sees it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from support.kube.kubelet import TestKubelet
from support.kube.server import KubeAPI
from support.polling import unique, wait_for

GATE = "kueue.x-k8s.io/admission"


def pod(name: str, mode: str, *, image: str = "trainer:1", gated: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": image, "command": ["x"]}],
    }
    if gated:
        spec["schedulingGates"] = [{"name": GATE}]
    return {"metadata": {"name": name, "annotations": {"mode": mode}}, "spec": spec}


def modes(body: dict[str, Any]) -> str:
    return str(body["metadata"]["annotations"]["mode"])


def read(api: KubeAPI, name: str, ns: str) -> dict[str, Any]:
    return json.loads(api.core.read_namespaced_pod(name, ns, _preload_content=False).data)


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(
        (c for c in body.get("status", {}).get("conditions") or [] if c["type"] == type_), {}
    )


def test_capacity_holds_pods_unschedulable_and_binds_them_in_order(
    kube_api: KubeAPI, make_kubelet: Callable[..., TestKubelet]
) -> None:
    ns = unique("cap")
    kubelet = make_kubelet(behaviour=modes, namespace=ns, capacity=2)
    names = [unique(f"p{i}") for i in range(4)]
    for name in names:
        kube_api.core.create_namespaced_pod(ns, pod(name, "hold"))
    wait_for(lambda: kubelet.unschedulable() == names[2:], what="two pods waiting")
    waiting = read(kube_api, names[3], ns)
    assert waiting["status"]["phase"] == "Pending"
    scheduled = condition(waiting, "PodScheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    wait_for(lambda: read(kube_api, names[0], ns)["status"]["phase"] == "Running")
    kubelet.finish(names[0], ns)
    assert kubelet.wait(names[0], ns).phase == "Succeeded"
    wait_for(lambda: kubelet.unschedulable() == names[3:], what="the first waiting pod bound")
    wait_for(lambda: read(kube_api, names[2], ns)["status"]["phase"] == "Running")
    kube_api.core.delete_namespaced_pod(names[1], ns)  # a deleted pod frees its slot too
    wait_for(lambda: not kubelet.unschedulable(), what="the last pod bound")
    assert kubelet.bound() == 2


def test_gated_pods_wait_until_admitted(
    kube_api: KubeAPI, make_kubelet: Callable[..., TestKubelet]
) -> None:
    ns = unique("gate")
    kubelet = make_kubelet(behaviour=modes, namespace=ns)
    name = unique("gated")
    kube_api.core.create_namespaced_pod(ns, pod(name, "instant", gated=True))
    record = kubelet.wait(name, ns, settled=True)
    body = read(kube_api, name, ns)
    assert condition(body, "PodScheduled")["reason"] == "SchedulingGated"
    assert record.steps == ["gated"] and body["spec"]["schedulingGates"] == [{"name": GATE}]
    kubelet.ungate(name, ns)
    assert kubelet.wait(name, ns).phase == "Succeeded"
    assert not read(kube_api, name, ns)["spec"].get("schedulingGates")


def test_disruptions_carry_the_condition_and_delete_or_fail_the_pod(
    kube_api: KubeAPI, make_kubelet: Callable[..., TestKubelet]
) -> None:
    ns = unique("disrupt")
    kubelet = make_kubelet(behaviour=modes, namespace=ns, capacity=1)
    preempted, evicted, waiting = unique("pre"), unique("evi"), unique("wait")
    kube_api.core.create_namespaced_pod(ns, pod(preempted, "hold"))
    kube_api.core.create_namespaced_pod(ns, pod(waiting, "hold"))
    wait_for(lambda: read(kube_api, preempted, ns)["status"]["phase"] == "Running")
    record = kubelet.disrupt(preempted, ns, reason="PreemptionByKueue")
    assert record.disrupted == "PreemptionByKueue"
    wait_for(lambda: record.done.is_set(), what="the preempted pod gone")
    try:
        read(kube_api, preempted, ns)
        raise AssertionError("a preempted pod is deleted")
    except ApiException as e:
        assert e.status == 404
    assert "disrupted:PreemptionByKueue" in record.steps and "deleted" in record.steps
    # The slot it held goes to the waiting pod; a kubelet termination leaves it Failed.
    wait_for(lambda: read(kube_api, waiting, ns)["status"]["phase"] == "Running")
    kube_api.core.create_namespaced_pod(ns, pod(evicted, "hold"))
    kubelet.disrupt(waiting, ns, reason="TerminationByKubelet", delete=False)
    body = read(kube_api, waiting, ns)
    target = condition(body, "DisruptionTarget")
    assert (target["status"], target["reason"]) == ("True", "TerminationByKubelet")
    assert body["status"]["phase"] == "Failed" and body["status"]["reason"] == "Terminated"
    wait_for(lambda: read(kube_api, evicted, ns)["status"]["phase"] == "Running")


def test_a_bad_image_is_pulled_once_it_exists(
    kube_api: KubeAPI, make_kubelet: Callable[..., TestKubelet]
) -> None:
    ns = unique("pull")
    bad = {"trainer:missing"}
    kubelet = make_kubelet(behaviour=modes, namespace=ns, bad_images=bad, config_retry=0.05)
    name = unique("pull")
    kube_api.core.create_namespaced_pod(ns, pod(name, "instant", image="trainer:missing"))
    record = kubelet.wait(name, ns, settled=True)
    waiting = read(kube_api, name, ns)["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {
        "reason": "ImagePullBackOff",
        "message": 'Back-off pulling image "trainer:missing"',
    }
    assert record.steps[:2] == ["image-pull-error", "image-pull-backoff"]
    bad.clear()  # pushed to the registry
    assert kubelet.wait(name, ns).phase == "Succeeded"


class SlowWaits(client.CoreV1Api):
    """The kubelet's API client, whose Unschedulable status writes are answered only once
    ``answer`` is set (a loaded API server, or the writing thread descheduled)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        super().__init__(api_client)
        self.answer = threading.Event()
        self.answered = threading.Event()

    def patch_namespaced_pod_status(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        if "Unschedulable" not in json.dumps(body):
            return super().patch_namespaced_pod_status(name, namespace, body, **kw)
        assert self.answer.wait(30), "the test never let the write through"
        try:
            return super().patch_namespaced_pod_status(name, namespace, body, **kw)
        finally:
            self.answered.set()


def test_a_pod_bound_while_its_wait_is_written_never_goes_back_to_pending(
    kube_api: KubeAPI, make_kubelet: Callable[..., TestKubelet]
) -> None:
    """A pod that must wait is written Unschedulable while a slot may free at once: that
    write must not land after the pod's Running (a pod back to Pending for good, its
    study waiting forever for it, was the many-studies benchmark's hang)."""
    ns = unique("race")
    kubelet = make_kubelet(behaviour=modes, namespace=ns, capacity=1)
    slow = SlowWaits(kube_api.client)
    kubelet.core = slow
    first, second = unique("first"), unique("second")
    kube_api.core.create_namespaced_pod(ns, pod(first, "hold"))
    kubelet.wait(first, ns, settled=True)
    kube_api.core.create_namespaced_pod(ns, pod(second, "hold"))
    waiting = wait_for(lambda: kubelet.record(second, ns), what="the second pod seen")
    kubelet.finish(first, ns)  # its slot frees while the second pod's wait is being written
    assert kubelet.wait(first, ns).phase == "Succeeded"
    wait_for(
        lambda: (
            waiting.phase == "Running"  # bound and written Running before its wait
            or (kubelet.bound() == 0 and not kubelet.unschedulable())
        ),  # or not waiting yet
        what="the first pod's slot free, or the second pod running",
    )
    slow.answer.set()
    wait_for(lambda: slow.answered.is_set(), what="the wait written")
    wait_for(lambda: waiting.settled.is_set() and "running" in waiting.steps, what="running")
    assert read(kube_api, second, ns)["status"]["phase"] == "Running"
    assert waiting.phase == "Running"
    kubelet.finish(second, ns)
    assert kubelet.wait(second, ns).phase == "Succeeded"
