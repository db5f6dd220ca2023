"""Trainer pods that cannot start for a missing ConfigMap or Secret volume.

A kubelet that cannot mount a volume leaves the pod ``ContainerCreating`` and says why
only in ``FailedMount`` events on the pod (``MountVolume.SetUp failed for volume "v" :
configmap "c" not found``), retried in place until the object exists. So the pods that
wait to start are looked up in those events (one list per namespace, at most every
``every_s``) and such a pod is *blocked*, like one whose image cannot be pulled: no
attempt is charged, no more pods are made, and it starts once the object is created.
"""

from __future__ import annotations

from typing import Any

from hpo.kube.api import Cluster
from hpo.kube.podstate import PodCondition


class MountWatch:
    """The last FailedMount message of each of one study's pods that wait to start."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._at: float | None = None
        #: Pod uid -> the kubelet's last FailedMount message.
        self.failed: dict[str, str] = {}

    def refresh(
        self, cluster: Cluster, namespace: str, waiting: bool, now: float, *, force: bool = False
    ) -> None:
        """Read the events again if pods wait to start (``waiting``) and ``every_s``
        passed (or ``force``); forget them once none waits."""
        if not waiting:
            self.failed.clear()
            self._at = None
            return
        if not force and self._at is not None and now - self._at < self.every_s:
            return
        self._at = now
        latest: dict[str, tuple[str, str]] = {}
        for e in cluster.mount_failures(namespace):
            uid = (e.get("involvedObject") or {}).get("uid") or ""
            when = str(e.get("lastTimestamp") or e.get("eventTime") or "")
            if uid and when >= latest.get(uid, ("", ""))[0]:
                latest[uid] = (when, str(e.get("message") or ""))
        self.failed = {uid: message for uid, (_, message) in latest.items()}

    def recheck(self, cluster: Cluster, namespace: str, pod: dict[str, Any], now: float) -> bool:
        """Whether a pod about to be charged as stuck has a FailedMount after all (the
        events read now: the last read may predate the kubelet's first event)."""
        self.refresh(cluster, namespace, True, now, force=True)
        uid = (pod.get("metadata") or {}).get("uid") or ""
        return uid in self.failed

    def state(self, pod: dict[str, Any], state: PodCondition) -> PodCondition:
        """``state``, or *blocked* for a pod waiting to start whose volume cannot be
        mounted (once running, its old events no longer matter)."""
        if state.kind != "starting":
            return state
        message = self.failed.get((pod.get("metadata") or {}).get("uid") or "")
        if message is None:
            return state
        return PodCondition("blocked", "FailedMount", message)
