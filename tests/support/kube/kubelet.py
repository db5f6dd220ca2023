"""``TestKubelet``: a node for the emulator that plays each new pod's lifecycle.

It watches pods (via the ``kubernetes`` client, over HTTP) in a background
thread and writes their status through the status subresource, as a kubelet
would: ``phase``, ``startTime``, ``conditions``, ``hostIP``/``podIP`` and
``containerStatuses`` (``name``, ``image``, ``imageID``, ``containerID``,
``ready``, ``started``, ``restartCount``, ``state``).

What happens to a pod is chosen per pod by ``behaviour(pod) -> str``:

- ``"run"`` (default): run the first container's ``command`` + ``args`` as a
  subprocess (a leading ``python``/``python3`` becomes ``sys.executable``), with its
  ``env`` (``value``, ``$(VAR)`` expansion, ``valueFrom.secretKeyRef`` /
  ``configMapKeyRef`` / ``fieldRef``, ``envFrom``) over this process's environment,
  in ``workingDir`` or a scratch folder. The ``terminationMessagePath`` is mapped
  to a file in that folder: replaced wherever it appears in command/args, and
  exported as ``KUBELET_TERMINATION_LOG``. Exit 0 → Succeeded/Completed, else
  Failed/Error; the file (max 4096 bytes) is the termination message, or the log
  tail under ``FallbackToLogsOnError``. A missing Secret/ConfigMap or key keeps
  the pod Pending (``CreateContainerConfigError``) and is retried, as a kubelet does.
  At most ``max_running`` run at once; the others wait in Pending (Unschedulable).
  ``spec.activeDeadlineSeconds`` kills a pod (Failed, DeadlineExceeded).
- ``"instant"``: Running, then at once Succeeded with ``result(pod) -> (exit_code,
  message)`` (default ``(0, "")``); ``"instant:<message>"`` gives the message inline.
- ``"fail:<code>:<message>"``: Running, then Failed/Error with that exit code and message.
- ``"oom"``: Running, then Failed/OOMKilled, exit code 137.
- ``"pending"``: stays Pending (``ContainerCreating``).
- ``"unpullable"``: stays Pending (``ErrImagePull``, then ``ImagePullBackOff`` with
  ``Back-off pulling image "<image>"``).
- ``"unknown"``: Running briefly, then phase ``Unknown`` (node lost).
- ``"hold"``: Running until ``finish(name)`` (then as ``"instant"``), a disruption or deletion.
- ``"sleep:<seconds>"``: Running that long, then as ``"instant"``.

Scheduling, as a cluster's scheduler and queueing system would have it:

- ``capacity``: at most that many pods are bound at once (any mode); the others wait
  Pending, ``PodScheduled=False`` reason ``Unschedulable``, no ``nodeName``, and are bound
  in arrival order as bound pods end or are deleted.
- A pod with ``spec.schedulingGates`` (Kueue's ``kueue.x-k8s.io/admission``) is not
  scheduled (``PodScheduled=False`` reason ``SchedulingGated``) until the gates are removed
  (``ungate(name)`` does what Kueue does on admission: it patches them away).
- ``bad_images``: images whose pull fails (``ErrImagePull``, then ``ImagePullBackOff``),
  retried every ``config_retry`` seconds until the image leaves the set.
- ``configMap`` and ``secret`` volumes (any mode): while one names an object that does not
  exist (and is not ``optional``), the pod stays Pending (``ContainerCreating``) and a
  ``FailedMount`` Warning event on the pod says so in the kubelet's words
  (``MountVolume.SetUp failed for volume "v" : configmap "c" not found``), its ``count``
  and ``lastTimestamp`` renewed at each try, every ``config_retry`` seconds until it exists.
- ``disrupt(name, reason)``: the ``DisruptionTarget`` condition with ``reason``
  (``PreemptionByScheduler``, ``PreemptionByKueue``, ``EvictionByEvictionAPI``,
  ``DeletionByTaintManager``, ``TerminationByKubelet``), the container killed, then the pod
  deleted (as the scheduler, Kueue and the eviction API do; after ``grace_s``, as a grace
  period would) or, with ``delete=False``, left ``Failed`` (as the kubelet leaves a pod
  it terminated).

A pod deleted while it runs has its process group killed; ``stop()`` kills all.
``records`` keep what happened to every pod (steps, argv, env, exit code,
message, output) for test assertions. Restart policies are not played: a
container runs once. Only the first container runs.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Self

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .emulator import now_rfc3339

Behaviour = Callable[[dict[str, Any]], str]
Result = Callable[[dict[str, Any]], tuple[int, str]]
OutputSink = Callable[[str, str, str], None]

MESSAGE_LIMIT = 4096
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class _ConfigError(Exception):
    """The container's configuration cannot be resolved yet (CreateContainerConfigError)."""


@dataclasses.dataclass
class PodRecord:
    """What the kubelet did with one pod (one uid)."""

    namespace: str
    name: str
    uid: str
    mode: str = ""
    steps: list[str] = dataclasses.field(default_factory=list)
    phase: str = "Pending"
    reason: str | None = None  # waiting or terminated reason
    exit_code: int | None = None
    message: str = ""
    argv: list[str] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # the pod's own env, resolved
    output: str = ""  # stdout + stderr of a "run" pod
    deleted: bool = False
    disrupted: str = ""  # the DisruptionTarget reason, once disrupted
    gated: bool = False  # held by scheduling gates (not scheduled yet)
    bound: bool = False  # holds one of the node's ``capacity`` slots
    active: bool = False  # a worker plays it now (it sets ``done`` when it ends)
    settled: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    done: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    release: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False)
    process: subprocess.Popen[bytes] | None = dataclasses.field(default=None, repr=False)

    def step(self, text: str) -> None:
        self.steps.append(text)


class TestKubelet:
    """Watch pods and play their lifecycle (see the module docstring)."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        behaviour: Behaviour | None = None,
        result: Result | None = None,
        max_running: int = 2,
        namespace: str | None = None,
        node_name: str = "test-node",
        config_retry: float = 0.5,
        on_output: OutputSink | None = None,
        keep_files: bool = False,
        capacity: int | None = None,
        bad_images: set[str] | None = None,
    ) -> None:
        """``namespace`` limits the pods served (default: all); ``on_output(ns, name, text)``
        receives each run pod's output (``KubeServer`` wiring: ``pods/log``); ``capacity``
        and ``bad_images``: see the module docstring (both may change while it runs)."""
        self.core = client.CoreV1Api(api_client)
        self.behaviour = behaviour or (lambda pod: "run")
        self.result = result
        self.max_running = max_running
        self.namespace = namespace
        self.node_name = node_name
        self.config_retry = config_retry
        self.on_output = on_output
        self.keep_files = keep_files
        self.capacity = capacity
        self.bad_images: set[str] = bad_images if bad_images is not None else set()
        self._unbound: list[tuple[PodRecord, dict[str, Any]]] = []  # waiting for capacity
        self._bound = 0
        self.records: dict[str, PodRecord] = {}  # by uid, in arrival order
        self.errors: list[str] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._running = 0
        self._watch_response: Any = None
        self._thread: threading.Thread | None = None
        self._runner = concurrent.futures.ThreadPoolExecutor(
            max_running, thread_name_prefix="kubelet-run"
        )
        self._quick = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="kubelet-quick")
        self._dir = Path(tempfile.mkdtemp(prefix="kubelet-"))
        self._ip = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Start watching; return once the pods that exist already are taken in."""
        self._thread = threading.Thread(target=self._watch, name="kubelet-watch", daemon=True)
        self._thread.start()
        if not self._synced.wait(timeout):
            raise RuntimeError(f"TestKubelet could not list pods: {self.errors}")
        return self

    def stop(self) -> None:
        """Stop watching, kill every process, wait for the workers."""
        self._stop.set()
        with self._lock:
            response = self._watch_response
            records = list(self.records.values())
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
        for record in records:
            _kill(record)
        self._runner.shutdown(wait=True, cancel_futures=True)
        self._quick.shutdown(wait=True, cancel_futures=True)
        if self._thread is not None:
            self._thread.join(5)
        if not self.keep_files:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> Literal[False]:
        self.stop()
        return False

    # -- queries --------------------------------------------------------------------------

    def record(self, name: str, namespace: str = "default") -> PodRecord | None:
        """The latest record of a pod by name (a re-created pod has a new record)."""
        with self._lock:
            found = [
                r for r in self.records.values() if r.name == name and r.namespace == namespace
            ]
        return found[-1] if found else None

    def wait(
        self,
        name: str,
        namespace: str = "default",
        *,
        timeout: float = 120.0,
        settled: bool = False,
    ) -> PodRecord:
        """Wait until the pod is done (terminal or deleted) or, with ``settled``, parked."""
        deadline = time.monotonic() + timeout
        while (record := self.record(name, namespace)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the kubelet never saw pod {namespace}/{name}")
            time.sleep(0.01)
        event = record.settled if settled else record.done
        if not event.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(
                f"pod {namespace}/{name} not {'settled' if settled else 'done'}: {record.steps}"
            )
        return record

    def bound(self) -> int:
        """Pods holding a slot of ``capacity`` now."""
        with self._lock:
            return self._bound

    def unschedulable(self) -> list[str]:
        """Names of the pods waiting for capacity now, in the order they will be bound."""
        with self._lock:
            return [r.name for r, _ in self._unbound]

    def set_capacity(self, capacity: int | None) -> None:
        """Change the node's room (``None``: unlimited); waiting pods are bound if they fit."""
        with self._lock:
            self.capacity = capacity
        self._bind_waiting()

    def finish(self, name: str, namespace: str = "default", timeout: float = 30.0) -> None:
        """Let a ``"hold"`` pod end (as ``"instant"``)."""
        self._await_record(name, namespace, timeout).release.set()

    def ungate(self, name: str, namespace: str = "default") -> None:
        """Remove the pod's scheduling gates, as Kueue does when it admits a pod."""
        self.core.patch_namespaced_pod(
            name, namespace, {"spec": {"schedulingGates": None}}, _preload_content=False
        )

    def disrupt(
        self,
        name: str,
        namespace: str = "default",
        *,
        reason: str = "PreemptionByScheduler",
        message: str | None = None,
        delete: bool = True,
        grace_s: float = 0.0,
        timeout: float = 30.0,
    ) -> PodRecord:
        """Disrupt a pod the way the cluster does (see the module docstring). With
        ``grace_s`` the deletion comes that much later (a termination grace period: the
        pod is still there, with its condition, for its controller to see)."""
        record = self._await_record(name, namespace, timeout)
        raw = json.loads(
            self.core.read_namespaced_pod(name, namespace, _preload_content=False).data
        )
        status = raw.get("status") or {}
        text = message or _DISRUPTION_MESSAGES.get(reason, f"{reason}: disrupted by the test")
        conditions = [
            c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"
        ]
        conditions.append(_condition("DisruptionTarget", True, reason, text))
        with self._lock:
            record.disrupted = reason
        record.step(f"disrupted:{reason}")
        update: dict[str, Any] = {"conditions": conditions}
        if not delete:
            update.update(
                phase="Failed",
                reason="Terminated" if reason == "TerminationByKubelet" else "Evicted",
                message=text,
            )
            for cs in status.get("containerStatuses") or []:
                if "running" in (cs.get("state") or {}):
                    cs["state"] = {"terminated": {"exitCode": 137, "reason": "Error"}}
                    cs["ready"] = False
            if status.get("containerStatuses"):
                update["containerStatuses"] = status["containerStatuses"]
        _kill(record)
        record.release.set()
        self._write(record, update)
        if delete and grace_s > 0:
            self._quick.submit(self._delete_later, record, grace_s)
        elif delete:
            self._delete(record)
        else:
            self._unbind(record)
            record.settled.set()
            record.done.set()
        return record

    def _delete(self, record: PodRecord) -> None:
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(record.name, record.namespace, _preload_content=False)

    def _delete_later(self, record: PodRecord, grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        while not record.deleted and time.monotonic() < deadline:
            if self._stop.wait(0.05):
                return
        if not record.deleted:
            self._delete(record)

    def _await_record(self, name: str, namespace: str, timeout: float) -> PodRecord:
        deadline = time.monotonic() + timeout
        while (record := self.record(name, namespace)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the kubelet never saw pod {namespace}/{name}")
            time.sleep(0.01)
        return record

    # -- scheduling -----------------------------------------------------------------------

    def _schedule(self, record: PodRecord, pod: dict[str, Any]) -> None:
        """Bind the pod if the node has room, else keep it waiting (Unschedulable)."""
        with self._lock:
            if record.deleted or record.bound:
                return
            full = self.capacity is not None and self._bound >= self.capacity
            if not full:
                record.bound = True
                self._bound += 1
        if not full:
            record.settled.clear()
            self._dispatch(record, pod)
            return
        # Written Unschedulable before it joins the waiting line: once in it, a freed slot
        # binds it at once, and this write, landing after its Running, would put it back to
        # Pending for good (so a study waited forever for a pod this kubelet held running).
        record.step("unschedulable")
        self._write(record, self._queued_status())
        with self._lock:
            if record.deleted:
                return
            self._unbound.append((record, pod))
        record.settled.set()
        self._bind_waiting()  # a slot may have freed during the write

    def _unbind(self, record: PodRecord) -> None:
        """The pod no longer holds the node (it ended or is gone): bind the next waiting one."""
        with self._lock:
            self._unbound = [(r, p) for r, p in self._unbound if r is not record]
            if not record.bound:
                return
            record.bound = False
            self._bound -= 1
        self._bind_waiting()

    def _bind_waiting(self) -> None:
        while True:
            with self._lock:
                if not self._unbound or (
                    self.capacity is not None and self._bound >= self.capacity
                ):
                    return
                record, pod = self._unbound.pop(0)
                if record.deleted:
                    continue
                record.bound = True
                self._bound += 1
            record.step("bound")
            record.settled.clear()
            self._dispatch(record, pod)

    def _pull_errors(
        self, record: PodRecord, pod: dict[str, Any], started: str, image: str
    ) -> None:
        """What a kubelet reports for an image it cannot pull: ErrImagePull, then
        ImagePullBackOff (the pod stays in ContainerCreating)."""
        record.step("image-pull-error")
        self._creating(
            record,
            pod,
            started,
            "ErrImagePull",
            f'failed to pull and unpack image "{image}": not found',
        )
        record.step("image-pull-backoff")
        self._creating(
            record, pod, started, "ImagePullBackOff", f'Back-off pulling image "{image}"'
        )

    def _pull(self, record: PodRecord, pod: dict[str, Any], started: str) -> bool:
        """Wait while the image is in ``bad_images`` (ErrImagePull, then ImagePullBackOff);
        False if the pod went away meanwhile."""
        image = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("image", "")
        if image not in self.bad_images:
            return True
        self._pull_errors(record, pod, started, image)
        record.settled.set()
        while image in self.bad_images:
            if self._stop.wait(self.config_retry) or record.deleted or record.disrupted:
                return False
        record.settled.clear()
        record.step("image-pulled")
        return self._creating(record, pod, started)

    def _missing_volume(self, pod: dict[str, Any]) -> str:
        """The kubelet's FailedMount message for the first configMap/secret volume whose
        object does not exist ("" if all do, or are optional)."""
        namespace = (pod.get("metadata") or {}).get("namespace", "default")
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            for key, kind, name_key, read in (
                ("configMap", "configmap", "name", self.core.read_namespaced_config_map),
                ("secret", "secret", "secretName", self.core.read_namespaced_secret),
            ):
                ref = volume.get(key)
                if ref is None or ref.get("optional"):
                    continue
                try:
                    read(ref.get(name_key, ""), namespace, _preload_content=False)
                except ApiException as e:
                    if e.status != 404:
                        raise
                    return (
                        f'MountVolume.SetUp failed for volume "{volume.get("name")}" : '
                        f'{kind} "{ref.get(name_key)}" not found'
                    )
        return ""

    def _mount(self, record: PodRecord, pod: dict[str, Any], started: str) -> bool:
        """Wait while a configMap/secret volume's object is missing (ContainerCreating and a
        ``FailedMount`` event, renewed at each try); False if the pod went away meanwhile."""
        message = self._missing_volume(pod)
        if not message:
            return True
        record.step("mount-failed")
        record.message = message
        if not self._creating(record, pod, started):
            return False
        meta = pod.get("metadata") or {}
        event = f"{record.name}.{hashlib.sha1(message.encode()).hexdigest()[:10]}"
        count = 0
        while message:
            count += 1
            self._failed_mount(meta, event, message, count)
            record.settled.set()
            if self._stop.wait(self.config_retry) or record.deleted or record.disrupted:
                return False
            message = self._missing_volume(pod)
        record.settled.clear()
        record.step("mounted")
        return True

    def _failed_mount(self, meta: dict[str, Any], event: str, message: str, count: int) -> None:
        """The ``FailedMount`` event on the pod, as a kubelet writes it (one per message)."""
        now = now_rfc3339()
        namespace = meta.get("namespace", "default")
        if count > 1:
            self.core.patch_namespaced_event(
                event, namespace, {"count": count, "lastTimestamp": now}, _preload_content=False
            )
            return
        body = {
            "metadata": {"name": event, "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": "Warning",
            "reason": "FailedMount",
            "message": message,
            "source": {"component": "kubelet", "host": self.node_name},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": count,
        }
        self.core.create_namespaced_event(namespace, body, _preload_content=False)

    # -- watching -------------------------------------------------------------------------

    def _list(self, **kwargs: Any) -> Any:
        if self.namespace:
            return self.core.list_namespaced_pod(self.namespace, _preload_content=False, **kwargs)
        return self.core.list_pod_for_all_namespaces(_preload_content=False, **kwargs)

    def _watch(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            response = None
            try:
                if version is None:
                    listing = json.loads(self._list().data)
                    version = listing["metadata"]["resourceVersion"]
                    for pod in listing.get("items") or []:
                        self._on_event("ADDED", pod)
                    self._synced.set()
                response = self._list(
                    watch=True, resource_version=version, allow_watch_bookmarks=True
                )
                with self._lock:
                    self._watch_response = response
                if self._stop.is_set():
                    break
                for line in response:
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        version = None  # 410 Gone: list again
                        break
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event.get("type") != "BOOKMARK":
                        self._on_event(event["type"], obj)
            except Exception as e:
                if self._stop.is_set():
                    break
                self.errors.append(f"watch: {e!r}")
                time.sleep(0.2)
            finally:
                with self._lock:
                    self._watch_response = None
                if response is not None:
                    with contextlib.suppress(Exception):
                        response.release_conn()

    def _on_event(self, type_: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        gated = bool((pod.get("spec") or {}).get("schedulingGates"))
        ungated = False
        with self._lock:
            record = self.records.get(uid)
            if type_ == "DELETED":
                if record is not None and not record.deleted:
                    record.deleted = True
                    record.step("deleted")
                    _kill(record)
                    record.release.set()
                    if not record.active:
                        record.done.set()
                if record is None:
                    return
            elif record is not None:
                if record.gated and not gated and not meta.get("deletionTimestamp"):
                    record.gated = False  # admitted: schedule it now
                    record.step("ungated")
                    ungated = True
                else:
                    return
            elif meta.get("deletionTimestamp"):
                return
            elif (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return  # finished before this kubelet started
            else:
                record = PodRecord(
                    namespace=meta.get("namespace", ""), name=meta.get("name", ""), uid=uid
                )
                record.gated = gated
                self.records[uid] = record
        if type_ == "DELETED":
            self._unbind(record)
            return
        if ungated:
            self._schedule(record, pod)
            return
        try:
            record.mode = self.behaviour(pod)
        except Exception as e:
            record.mode = f"fail:1:behaviour() raised {e!r}"
        if record.gated:
            record.step("gated")
            self._write(
                record,
                {
                    "phase": "Pending",
                    "conditions": [
                        _condition(
                            "PodScheduled",
                            False,
                            "SchedulingGated",
                            "Scheduling is blocked due to non-empty scheduling gates",
                        )
                    ],
                },
            )
            record.settled.set()
            return
        self._schedule(record, pod)

    def _dispatch(self, record: PodRecord, pod: dict[str, Any]) -> None:
        """Play a bound pod's lifecycle in a worker."""
        kind = record.mode.split(":", 1)[0]
        if kind == "run":
            with self._lock:
                queued = self._running >= self.max_running
                self._running += 1
            if queued:
                record.step("queued")
                self._write(record, self._queued_status())
            self._runner.submit(self._guard, self._run, record, pod)
        elif kind in _QUICK_MODES:
            self._quick.submit(self._guard, self._play, record, pod)
        else:
            self.errors.append(f"{record.name}: unknown behaviour {record.mode!r}")
            record.step(f"unknown behaviour {record.mode!r}")
            record.settled.set()

    def _guard(
        self,
        fn: Callable[[PodRecord, dict[str, Any]], None],
        record: PodRecord,
        pod: dict[str, Any],
    ) -> None:
        with self._lock:
            record.active = True
        try:
            fn(record, pod)
        except Exception as e:
            self.errors.append(f"{record.name}: {e!r}")
            record.step(f"kubelet error: {e!r}")
            record.settled.set()
            record.done.set()
        finally:
            with self._lock:
                record.active = False
                if fn == self._run:
                    self._running -= 1
            if record.deleted or record.disrupted:
                record.done.set()
            if record.done.is_set():
                self._unbind(record)

    # -- status writing -------------------------------------------------------------------

    def _write(self, record: PodRecord, status: dict[str, Any]) -> bool:
        """Merge-patch the status (lists replace whole); False if the pod is gone (or
        disrupted: only ``disrupt`` writes then)."""
        if record.deleted or self._stop.is_set():
            return False
        if record.disrupted and "DisruptionTarget" not in str(status.get("conditions")):
            return False
        try:
            self.core.patch_namespaced_pod_status(
                record.name,
                record.namespace,
                {"status": status},
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        except ApiException as e:
            if e.status == 404:
                record.deleted = True  # the worker's guard sets ``done``
                return False
            raise
        record.phase = status.get("phase", record.phase)
        return True

    def _queued_status(self) -> dict[str, Any]:
        return {
            "phase": "Pending",
            "conditions": [
                _condition(
                    "PodScheduled",
                    False,
                    "Unschedulable",
                    "0/1 nodes are available: 1 Insufficient cpu.",
                ),
            ],
        }

    def _status(
        self,
        pod: dict[str, Any],
        phase: str,
        state: dict[str, Any],
        *,
        started: str,
        ready: bool = False,
        reason: str | None = None,
        message: str | None = None,
    ) -> dict[str, Any]:
        containers = (pod.get("spec") or {}).get("containers") or []
        running = "running" in state
        terminal = phase in ("Succeeded", "Failed")
        ready_reason = (
            None
            if ready
            else "PodCompleted"
            if phase == "Succeeded"
            else "PodFailed"
            if terminal
            else "ContainersNotReady"
        )
        status: dict[str, Any] = {
            "phase": phase,
            "startTime": started,
            "hostIP": "10.0.0.1",
            "podIP": self._pod_ip(pod),
            "qosClass": "BestEffort",
            "conditions": [
                _condition("PodScheduled", True),
                _condition("Initialized", True),
                _condition("ContainersReady", ready, ready_reason),
                _condition("Ready", ready, ready_reason),
            ],
            "containerStatuses": [
                {
                    "name": c.get("name", ""),
                    "image": c.get("image", ""),
                    "imageID": _image_id(c.get("image", ""))
                    if running or "terminated" in state
                    else "",
                    **(
                        {"containerID": _container_id(pod, c)}
                        if running or "terminated" in state
                        else {}
                    ),
                    "ready": ready,
                    "started": running,
                    "restartCount": 0,
                    "state": state,
                }
                for c in containers
            ],
        }
        if reason:
            status["reason"] = reason
        if message:
            status["message"] = message
        return status

    def _pod_ip(self, pod: dict[str, Any]) -> str:
        digest = int(
            hashlib.sha256(str((pod.get("metadata") or {}).get("uid")).encode()).hexdigest(), 16
        )
        return f"10.244.{digest % 250}.{digest // 250 % 250 + 2}"

    def _creating(
        self,
        record: PodRecord,
        pod: dict[str, Any],
        started: str,
        reason: str = "ContainerCreating",
        message: str | None = None,
    ) -> bool:
        waiting: dict[str, Any] = {"reason": reason}
        if message:
            waiting["message"] = message
        record.reason = reason
        return self._write(
            record, self._status(pod, "Pending", {"waiting": waiting}, started=started)
        )

    def _terminate(
        self,
        record: PodRecord,
        pod: dict[str, Any],
        started: str,
        running_since: str,
        code: int,
        reason: str,
        message: str,
    ) -> None:
        phase = "Succeeded" if code == 0 else "Failed"
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": running_since,
            "finishedAt": now_rfc3339(),
            "containerID": _container_id(
                pod, ((pod.get("spec") or {}).get("containers") or [{}])[0]
            ),
        }
        if message:
            terminated["message"] = message
        record.exit_code, record.reason, record.message = code, reason, message
        record.step(phase.lower())
        self._write(record, self._status(pod, phase, {"terminated": terminated}, started=started))
        record.settled.set()
        record.done.set()

    # -- scripted modes -------------------------------------------------------------------

    def _play(self, record: PodRecord, pod: dict[str, Any]) -> None:
        kind, _, arg = record.mode.partition(":")
        started = now_rfc3339()
        image = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("image", "")
        if not self._pull(record, pod, started) or not self._mount(record, pod, started):
            return
        if kind == "pending":
            record.step("creating")
            self._creating(record, pod, started)
            record.settled.set()
            return
        if kind == "unpullable":
            self._pull_errors(record, pod, started, image)
            record.settled.set()
            return
        record.step("running")
        if not self._write(
            record,
            self._status(
                pod, "Running", {"running": {"startedAt": started}}, started=started, ready=True
            ),
        ):
            return
        if kind == "unknown":
            time.sleep(0.1)
            record.step("unknown")
            status = self._status(
                pod, "Unknown", {"running": {"startedAt": started}}, started=started
            )
            status["reason"] = "NodeLost"
            status["message"] = (
                f"Node {self.node_name} which was running pod {record.name} is unresponsive"
            )
            self._write(record, status)
            record.settled.set()
            record.done.set()
            return
        if kind in ("hold", "sleep"):
            record.settled.set()
            timeout = float(arg) if kind == "sleep" else None
            while not record.release.wait(0.05 if timeout is None else min(0.05, timeout)):
                if self._stop.is_set() or record.deleted or record.disrupted:
                    return
                if timeout is not None:
                    timeout -= 0.05
                    if timeout <= 0:
                        break
            if record.deleted or record.disrupted or self._stop.is_set():
                return
            record.settled.clear()
            kind, arg = "instant", ""
        if kind == "instant":
            code, message = (0, arg) if arg or self.result is None else self.result(pod)
            self._terminate(
                record,
                pod,
                started,
                started,
                code,
                "Completed" if code == 0 else "Error",
                message[:MESSAGE_LIMIT],
            )
        elif kind == "fail":
            code_text, _, message = arg.partition(":")
            code = int(code_text or 1)
            self._terminate(
                record,
                pod,
                started,
                started,
                code,
                "Error" if code else "Completed",
                message[:MESSAGE_LIMIT],
            )
        elif kind == "oom":
            self._terminate(record, pod, started, started, 137, "OOMKilled", "")

    # -- running for real -----------------------------------------------------------------

    def _run(self, record: PodRecord, pod: dict[str, Any]) -> None:
        if record.deleted or self._stop.is_set():
            return
        spec = pod.get("spec") or {}
        container = (spec.get("containers") or [{}])[0]
        started = now_rfc3339()
        record.step("creating")
        if not self._creating(record, pod, started) or not self._pull(record, pod, started):
            return
        if not self._mount(record, pod, started):
            return

        # The configuration: a missing Secret/ConfigMap keeps the pod Pending, retried.
        reported = False
        while True:
            try:
                env = self._resolve_env(pod, container)
                break
            except _ConfigError as e:
                if not reported:
                    record.step("config-error")
                    record.message = str(e)
                    if not self._creating(
                        record, pod, started, "CreateContainerConfigError", str(e)
                    ):
                        return
                    record.settled.set()
                    reported = True
                if self._stop.wait(self.config_retry) or record.deleted:
                    return
        if reported:
            self._creating(record, pod, started)

        folder = Path(tempfile.mkdtemp(prefix=f"{record.name[:40]}-", dir=self._dir))
        term_path = str(container.get("terminationMessagePath") or "/dev/termination-log")
        term_file = folder / "termination-log"
        term_file.touch()
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        argv = [_expand(a, env).replace(term_path, str(term_file)) for a in argv]
        if argv and _PYTHON.fullmatch(os.path.basename(argv[0])):
            argv[0] = sys.executable
        record.argv, record.env = argv, dict(env)
        full_env = {
            **os.environ,
            "HOSTNAME": record.name,
            **env,
            "KUBELET_TERMINATION_LOG": str(term_file),
        }
        full_env.pop("KUBECONFIG", None)
        cwd = container.get("workingDir") or str(folder)
        log_path = folder / "output.log"
        running_since = now_rfc3339()
        with open(log_path, "wb") as log:
            try:
                if not argv:
                    raise FileNotFoundError(
                        "no command: the emulator cannot use an image's entrypoint"
                    )
                process = subprocess.Popen(
                    argv,
                    env=full_env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                message = f"failed to create containerd task: exec: {e}"
                self._terminate(record, pod, started, running_since, 128, "StartError", message)
                self._cleanup(folder)
                return
            record.process = process
            if record.deleted or self._stop.is_set():
                _kill(record)
            record.step("running")
            self._write(
                record,
                self._status(
                    pod,
                    "Running",
                    {"running": {"startedAt": running_since}},
                    started=started,
                    ready=True,
                ),
            )
            deadline = spec.get("activeDeadlineSeconds")
            limit = time.monotonic() + float(deadline) if deadline else None
            expired = False
            while process.poll() is None:
                if limit is not None and time.monotonic() > limit:
                    expired = True
                    _kill(record)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(0.05)
        code = process.returncode
        code = 128 - code if code < 0 else code  # killed by a signal N: 128+N
        record.output = log_path.read_bytes().decode("utf-8", errors="replace")
        if self.on_output is not None:
            with contextlib.suppress(Exception):
                self.on_output(record.namespace, record.name, record.output)
        if record.deleted or record.disrupted or self._stop.is_set():
            record.exit_code = code
            record.step("killed")
            record.done.set()
            self._cleanup(folder)
            return
        message = term_file.read_bytes()[:MESSAGE_LIMIT].decode("utf-8", errors="replace")
        if (
            not message
            and code != 0
            and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            tail = record.output.splitlines()[-80:]
            message = "\n".join(tail)[-2048:]
        if expired:
            record.step("deadline-exceeded")
            self._terminate(record, pod, started, running_since, code, "Error", message)
            self._write(
                record,
                {
                    "phase": "Failed",
                    "reason": "DeadlineExceeded",
                    "message": "Pod was active on the node longer than the specified deadline",
                },
            )
        else:
            self._terminate(
                record,
                pod,
                started,
                running_since,
                code,
                "Completed" if code == 0 else "Error",
                message,
            )
        self._cleanup(folder)

    def _cleanup(self, folder: Path) -> None:
        if not self.keep_files:
            shutil.rmtree(folder, ignore_errors=True)

    def _resolve_env(self, pod: dict[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
        """The container's env as a kubelet resolves it; _ConfigError if something is missing."""
        namespace = (pod.get("metadata") or {}).get("namespace", "default")
        env: dict[str, str] = {}
        sources: dict[tuple[str, str], dict[str, str] | None] = {}

        def source(kind: str, name: str) -> dict[str, str] | None:
            if (kind, name) not in sources:
                try:
                    if kind == "Secret":
                        raw = json.loads(
                            self.core.read_namespaced_secret(
                                name, namespace, _preload_content=False
                            ).data
                        )
                        data = {
                            k: base64.b64decode(v).decode()
                            for k, v in (raw.get("data") or {}).items()
                        }
                    else:
                        raw = json.loads(
                            self.core.read_namespaced_config_map(
                                name, namespace, _preload_content=False
                            ).data
                        )
                        data = dict(raw.get("data") or {})
                except ApiException as e:
                    if e.status != 404:
                        raise
                    data = None
                sources[(kind, name)] = data
            return sources[(kind, name)]

        def referenced(kind: str, ref: dict[str, Any]) -> dict[str, str] | None:
            """The data of the Secret or ConfigMap ``ref`` names; None if missing but optional."""
            data = source(kind, ref.get("name", ""))
            if data is None and not ref.get("optional"):
                raise _ConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
            return data

        for item in container.get("envFrom") or []:
            for kind, ref_key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                ref = item.get(ref_key)
                if ref is None:
                    continue
                data = referenced(kind, ref)
                if data is None:
                    continue
                for k, v in data.items():
                    env[item.get("prefix", "") + k] = v

        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item:
                env[name] = _expand(str(item["value"]), env)
                continue
            value_from = item.get("valueFrom") or {}
            for kind, ref_key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                ref = value_from.get(ref_key)
                if ref is None:
                    continue
                data = referenced(kind, ref)
                if data is None:
                    break
                if ref.get("key") not in data:
                    if ref.get("optional"):
                        break
                    raise _ConfigError(
                        f"couldn't find key {ref.get('key')} in {kind} {namespace}/{ref.get('name')}"
                    )
                env[name] = data[ref["key"]]
                break
            else:
                field = (value_from.get("fieldRef") or {}).get("fieldPath")
                if field:
                    env[name] = _field(pod, field)
                elif not value_from:
                    env[name] = ""
        return env


_QUICK_MODES = ("instant", "fail", "oom", "pending", "unpullable", "unknown", "hold", "sleep")

#: The messages Kubernetes writes with each ``DisruptionTarget`` reason.
_DISRUPTION_MESSAGES = {
    "PreemptionByScheduler": "Preempted by a higher-priority pod on node test-node",
    "PreemptionByKueue": "Preempted to accommodate a workload in the ClusterQueue",
    "EvictionByEvictionAPI": "Eviction API: evicting",
    "DeletionByTaintManager": "Taint manager: deleting due to NoExecute taint",
    "TerminationByKubelet": "Pod was terminated in response to imminent node shutdown.",
}


def _condition(
    type_: str, ok: bool, reason: str | None = None, message: str | None = None
) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": type_,
        "status": "True" if ok else "False",
        "lastTransitionTime": now_rfc3339(),
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _image_id(image: str) -> str:
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"{image.split(':')[0]}@sha256:{digest}"


def _container_id(pod: Mapping[str, Any], container: Mapping[str, Any]) -> str:
    uid = (pod.get("metadata") or {}).get("uid", "")
    return "containerd://" + hashlib.sha256(f"{uid}/{container.get('name')}".encode()).hexdigest()


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command, args and env values (``$$`` escapes)."""
    return _VAR_REF.sub(lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def _field(pod: Mapping[str, Any], path: str) -> str:
    meta = pod.get("metadata") or {}
    if m := re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path):
        return str((meta.get(m[1]) or {}).get(m[2], ""))
    node: Any = pod
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None and path == "spec.nodeName":
        return "test-node"
    return "" if node is None else str(node)


def _kill(record: PodRecord) -> None:
    process = record.process
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
