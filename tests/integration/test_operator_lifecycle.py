"""A study's life through a real kopf operator on the emulated cluster, with a real S3
server and synthetic trainer pods (answered at once by the test kubelet): how it looks
from its first status write, what it waits for that the user can fix, what a change to
its spec shows, how it is deleted, what the metrics count across a restart."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from prometheus_client import generate_latest

from helpers.operator import (
    NS,
    OperatorStudy,
    conditions,
    credentials_secret,
    events,
    kubelet,
    operator,
    pods,
    study,
    wait_for,
)
from hpo.kube.metrics import REGISTRY
from support.kube.emulator import ApiFaults
from support.kube.server import KubeServer

STUDIES = "hpo-operator.dev/v1alpha1/hpostudies"


#: Two configurations of two seeds, no narrow stage: four trainings, two pods.
SMALL: dict[str, Any] = {"randomStage": {"configurations": 2}, "bayesianStage": {"enabled": False}}


def _gone(kube: KubeServer, name: str) -> bool:
    return all(o["metadata"]["name"] != name for o in kube.list_objects(STUDIES, NS))


# -- deletion --------------------------------------------------------------------------


def test_deleting_a_running_study_stops_its_loop_at_once_and_cleans_up_once(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    """kopf holds the finalizer until the study's daemon has ended: a daemon that ends
    within kopf's instant-exit wait lets the deletion finish in one pass (before: the
    daemon outlived it, kopf came back after ``cancellation_timeout``, 30 s, and ran
    the deletion handler a second time)."""
    name = "deleted-running"
    s = new_study(name, **SMALL)
    with (
        kubelet(kube, behaviour=lambda pod: "pending", result=s.trainer()),
        operator(kube) as runner,
    ):
        s.create()
        wait_for(lambda: len(pods(kube, name)) == 2, timeout=300)
        started = time.monotonic()
        kube.api().custom.delete_namespaced_custom_object(
            "hpo-operator.dev", "v1alpha1", NS, "hpostudies", name
        )
        wait_for(lambda: _gone(kube, name), timeout=300)
        took = time.monotonic() - started
        assert not pods(kube, name)
    print(f"DELETE running study gone after {took:.1f}s")
    out = runner.output
    handled = [line for line in out.splitlines() if f"study default/{name} deleted;" in line]
    assert len(handled) == 1 and "2 pods removed" in handled[0], handled
    assert out.count("study_deleted_keeping_results' succeeded") == 1
    assert "Deletion is processed" in out and "is cancelled" not in out


def test_a_loop_that_fails_at_its_start_is_started_again(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    """The API server refuses the study's first status write (403, not retried): the loop
    raises, and kopf (``backoff``: ``retry_s``) starts the daemon again."""
    name = "retried-loop"
    s = new_study(name, **SMALL)
    faults = ApiFaults(agents=("hpo-operator/",), forbid={("patch", "hpostudies"): 1})
    with (
        kube.faulty(faults),
        kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer()),
        operator(kube, retry_s=1.0) as runner,
    ):
        s.create()
        obj = s.finished(timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert "study_daemon' failed with an exception" in runner.output


# -- the first status --------------------------------------------------------------------


def _watch_statuses(kube: KubeServer, name: str, seen: list[dict[str, Any]], stop: Any) -> None:
    """Every status the study has had, in order (a watch sees every write)."""
    api = kube.api()
    w = watch.Watch()
    for event in w.stream(
        api.custom.list_namespaced_custom_object,
        "hpo-operator.dev",
        "v1alpha1",
        NS,
        "hpostudies",
        timeout_seconds=60,
    ):
        obj = event["object"]
        status = obj.get("status")
        if obj["metadata"]["name"] == name and status and (not seen or seen[-1] != status):
            seen.append(status)
        if stop.is_set():
            w.stop()


def test_a_new_study_is_pending_from_its_first_status_write(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    """Before: the first write came after the Secret, store and dataset were read (seconds
    on a large dataset), and said RandomSearch; ``kubectl get`` showed no phase until then."""
    name = "first-status"
    s = new_study(name, **SMALL)
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_statuses, args=(kube, name, seen, stop))
    watcher.start()
    try:
        with (
            kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer()),
            operator(kube),
        ):
            s.create()
            assert s.finished(timeout=300)["status"]["phase"] == "Succeeded"
    finally:
        stop.set()
        s.patch({"metadata": {"labels": {"x": "y"}}})  # one more event: the watch ends
        watcher.join(70)
    phases = [st.get("phase") for st in seen]
    assert phases[0] == "Pending", phases
    assert None not in phases, seen
    assert phases[-1] == "Succeeded"


def test_the_datasets_notes_are_events_of_the_study(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    """What ``hpo run`` prints as notes (rows left out for missing values, categorical
    columns, a column with one category) a cluster user reads in the study's events."""
    name = "dataset-notes"
    s = new_study(name, **SMALL)
    with (
        kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer()),
        operator(kube),
    ):
        s.create()
        assert s.finished(timeout=300)["status"]["phase"] == "Succeeded"
    notes = [e["message"] for e in events(kube, name) if e["reason"] == "Note"]
    assert any("dataset rows have missing (empty, NaN) or infinite values" in n for n in notes)


# -- what the user can fix in place ----------------------------------------------------------


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return conditions(obj).get(type_) or {}


def test_a_study_applied_before_its_secret_waits_and_runs_once_the_secret_exists(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    name = "secret-later"
    secret = f"creds-{uuid.uuid4().hex[:6]}"
    s = new_study(name, **SMALL, storage={"credentialsSecret": {"name": secret}})
    with (
        kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer()),
        operator(kube, retry_s=1.0),
    ):
        s.create()
        wait_for(lambda: _condition(study(kube, name), "Stalled").get("status") == "True", 300)
        obj = study(kube, name)
        assert obj["status"]["phase"] == "Pending"
        store = _condition(obj, "StoreReady")
        assert (store["status"], store["reason"]) == ("False", "CredentialsMissing")
        message = obj["status"]["message"]
        assert f"Secret default/{secret} not found" in message, message
        assert "create it" in message and "'accessKey'" in message and "'secretKey'" in message
        assert "checked again every 1s" in message
        assert "Failed" not in conditions(obj) and not pods(kube, name)
        kube.api().core.create_namespaced_secret(NS, credentials_secret(secret))
        obj = s.finished(timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert _condition(obj, "StoreReady")["status"] == "True"
    assert (_condition(obj, "Stalled")["status"], _condition(obj, "Stalled")["reason"]) == (
        "False",
        "Resolved",
    )
    # One warning for the missing Secret, not one per re-check.
    warned = [e for e in events(kube, name) if e["reason"] == "CredentialsMissing"]
    assert len(warned) == 1, warned


def test_an_invalid_spec_waits_and_runs_once_corrected(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    name = "corrected"
    s = new_study(name, **SMALL, searchSpace={"neurons": {"min": 300, "max": 200}})
    with (
        kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer()),
        operator(kube),  # retry_s 15: the new generation, not a re-check, starts it
    ):
        s.create()
        wait_for(lambda: _condition(study(kube, name), "Valid").get("status") == "False", 300)
        obj = study(kube, name)
        valid = _condition(obj, "Valid")
        assert valid["reason"] == "InvalidSpec"
        assert "spec.searchSpace.neurons: min (300) must be <= max (200)" in valid["message"]
        assert "correct the spec" in valid["message"]
        assert obj["status"]["phase"] == "Pending"
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1
        s.patch({"spec": {"searchSpace": {"neurons": {"min": 8, "max": 32}}}})
        started = time.monotonic()
        obj = s.finished(timeout=300)
    print(f"CORRECTED spec: Succeeded {time.monotonic() - started:.1f}s after the fix")
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
    assert _condition(obj, "Valid")["status"] == "True"


def test_a_study_an_earlier_operator_failed_on_a_missing_secret_runs_once_it_exists(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    """What an operator before this fix left: phase Failed for a missing Secret."""
    name = "failed-before"
    s = new_study(name, **SMALL)
    s.create()
    message = "spec.storage.credentialsSecret: Secret default/s3-creds not found"
    failed = [
        {"type": t, "status": v, "reason": "CredentialsMissing", "message": message}
        for t, v in (("StoreReady", "False"), ("Failed", "True"), ("Progressing", "False"))
    ]
    _patch_status(kube, name, {"phase": "Failed", "message": message, "conditions": failed})
    with (
        kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer()),
        operator(kube),
    ):
        wait_for(lambda: study(kube, name)["status"]["phase"] == "Succeeded", timeout=300)
        obj = study(kube, name)
    assert "Failed" not in conditions(obj)


def _patch_status(kube: KubeServer, name: str, status: dict[str, Any]) -> None:
    kube.api().custom.patch_namespaced_custom_object_status(
        "hpo-operator.dev", "v1alpha1", NS, "hpostudies", name, {"status": status}
    )


# -- a refused change undone ---------------------------------------------------------------


def test_a_refused_change_undone_after_the_study_ended_clears_spec_change_refused(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    """Argo CD shows a study Degraded while ``SpecChangeRefused`` is True; before, nothing
    looked at a finished study again, so putting the spec back left it Degraded for good."""
    name = "undone"
    s = new_study(name, **SMALL, parallelism=1)
    gate = threading.Event()
    answer = s.trainer()

    def result(pod: dict[str, Any]) -> tuple[int, str]:
        gate.wait(300)  # the study runs until the change has been refused
        return answer(pod)

    def neurons(top: int) -> None:
        s.patch({"spec": {"searchSpace": {"neurons": {"min": 8, "max": top, "step": 8}}}})

    with kubelet(kube, behaviour=lambda pod: "instant", result=result), operator(kube):
        s.create()
        wait_for(lambda: pods(kube, name), timeout=300)
        neurons(64)
        refused = wait_for(
            lambda: _condition(study(kube, name), "SpecChangeRefused").get("status") == "True",
            300,
        )
        gate.set()
        obj = s.finished(timeout=300)
        assert obj["status"]["phase"] == "Succeeded"
        # Ended with the change still refused: what Git declares is not what ran.
        assert _condition(obj, "SpecChangeRefused")["status"] == "True", refused
        neurons(32)  # back as it was
        cond = wait_for(
            lambda: (
                (c := _condition(study(kube, name), "SpecChangeRefused"))["status"] == "False" and c
            ),
            300,
        )
    assert cond["reason"] == "Reverted"
    obj = study(kube, name)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["status"]["phase"] == "Succeeded"


def test_a_change_to_a_finished_study_is_flagged_with_a_condition_and_an_event(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    """Before, ``kubectl patch`` of a finished study's epochs changed nothing and said
    nothing: generation stayed ahead of observedGeneration, Argo CD showed Healthy."""
    name = "edited-after"
    s = new_study(name, **SMALL)
    with kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer()), operator(kube):
        s.create()
        assert s.finished(timeout=300)["status"]["phase"] == "Succeeded"
        s.patch({"spec": {"training": {"epochs": 7}}})
        cond = wait_for(
            lambda: (
                (c := _condition(study(kube, name), "SpecChangeRefused")).get("status") == "True"
                and c
            ),
            300,
        )
        said = wait_for(
            lambda: [e for e in events(kube, name) if e["reason"] == "SpecChangeRefused"], 120
        )
        then = (s.body["spec"].get("training") or {}).get("epochs")  # None: merge-patch drops
        s.patch({"spec": {"training": {"epochs": then}}})  # back as it was
        cleared = wait_for(
            lambda: (
                (c := _condition(study(kube, name), "SpecChangeRefused"))["status"] == "False" and c
            ),
            300,
        )
    assert cond["reason"] == "StudyEnded"
    assert "spec.training.epochs changed after the study ended" in cond["message"]
    assert "start a new study (another metadata.name)" in cond["message"]
    assert len(said) == 1 and said[0]["type"] == "Warning", said
    assert said[0]["message"] == cond["message"]
    assert cleared["reason"] == "Reverted"
    obj = study(kube, name)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["status"]["phase"] == "Succeeded"


# -- metrics across a restart ----------------------------------------------------------------


def _gauge(name: str, phase: str) -> str:
    return f'hpo_studies{{namespace="default",phase="{phase}",study="{name}"}} 1.0'


def test_finished_studies_are_counted_by_phase_after_a_restart_and_forgotten_when_deleted(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    """As an operator that starts finds them: studies a previous operator finished."""
    ended = {"ended-ok": "Succeeded", "ended-bad": "Failed"}
    for name, phase in ended.items():
        new_study(name, **SMALL).create()
        best = {"trial": "r0000", "maeMean": 0.25} if phase == "Succeeded" else None
        _patch_status(kube, name, {"phase": phase, "best": best})
    with operator(kube):
        wait_for(lambda: all(_gauge(n, p) in _metrics() for n, p in ended.items()), 300)
        assert 'hpo_best_mae{namespace="default",study="ended-ok"} 0.25' in _metrics()
        for name in ended:
            kube.api().custom.delete_namespaced_custom_object(
                "hpo-operator.dev", "v1alpha1", NS, "hpostudies", name
            )
        wait_for(lambda: not any(f'study="{n}"' in _studies_lines() for n in ended), 300)


def _metrics() -> str:
    return generate_latest(REGISTRY).decode()


def _studies_lines() -> str:
    return "\n".join(line for line in _metrics().splitlines() if line.startswith("hpo_"))


# -- the live status in the bucket -------------------------------------------------------


def test_the_operator_writes_the_live_status_next_to_the_ledger(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    """What the dashboard (read-only keys, no API access) reads: ``status.json`` in the
    bucket says running while the pods train, then finished with the ledger's counts."""
    from hpo.records.ledger import read_ledger
    from hpo.results import StudyResults

    name = "live-status"
    live = new_study(name, **SMALL)
    seen: list[tuple[str, str, int, int]] = []

    def status() -> Any:
        where = f"s3://{live.bucket}/hpo/default/{name}"
        try:
            s = StudyResults(live.results(), name, where).status()
        except Exception:  # the bucket or the study not there yet
            return None
        if s is not None and (not seen or seen[-1] != (s.phase, s.runner, s.running, s.done)):
            seen.append((s.phase, s.runner, s.running, s.done))
        return s

    # a pod trains for 1.5 s: some polls (0.3 s) and status writes (0.3 s apart) see it
    with (
        kubelet(kube, behaviour=lambda pod: "instant", result=live.trainer(1.5)),
        operator(kube),
    ):
        live.create()
        wait_for(lambda: (s := status()) is not None and s.running > 0, timeout=300)
        assert live.finished(timeout=300)["status"]["phase"] == "Succeeded"
        end = wait_for(lambda: (s := status()) is not None and s.phase != "running" and s, 300)
    rows = read_ledger(live.results(), f"{name}/ledger.xlsx")
    assert any(p == "running" and r > 0 for p, _, r, _ in seen), seen  # while pods trained
    assert {runner for _, runner, _, _ in seen} == {"operator"}
    assert (end.phase, end.runner, end.running, end.state()) == (
        "succeeded",
        "operator",
        0,
        "finished",
    )
    assert end.done == len(rows) == 4 and end.failed == 0
