"""The kopf operator end to end: the Kubernetes API emulator, a test kubelet and a real
S3 server. Trainer pods run the real trainer (few epochs) or, where a test is about
scheduling and failures rather than training, answer at once with synthetic scores
written to the store exactly where the trainer writes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from helpers.operator import (
    HPO_OPERATOR,
    NS,
    OperatorStudy,
    check_complete,
    conditions,
    create,
    credentials_secret,
    events,
    finished,
    kubelet,
    ledger_rows,
    operator,
    phase,
    pods,
    study,
    study_body,
    synthetic,
    wait_for,
)
from helpers.s3 import new_s3_store
from helpers.study import REPO
from hpo.kube.metrics import REGISTRY
from hpo.kube.pods import ANN_ATTEMPT, LABEL_STUDY
from support.kube.emulator import RequestRecord
from support.kube.server import KubeServer
from support.s3server import TEST_SECRET_KEY, S3Server, free_port

# -- the whole path ------------------------------------------------------------


def test_study_runs_through_both_stages_with_real_trainers(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    s = new_study("real")
    with operator(kube), kubelet(kube, max_running=2) as node:
        s.create()
        obj = s.finished(timeout=400)
        wait_for(lambda: not pods(kube, "real"), timeout=300)
    st = obj["status"]
    assert st["phase"] == "Succeeded", st
    assert st["trainings"] == "8/8"
    assert st["counts"] == {"pending": 0, "queued": 0, "running": 0, "succeeded": 8, "failed": 0}
    assert st["best"]["maeMean"] > 0 and st["best"]["trial"] in {t["trial"] for t in st["top"]}
    assert st["best"]["valMaeMean"] > 0, "the status shows the selection score too"
    assert len(st["top"]) <= 5
    assert st["ledger"] == f"s3://{s.bucket}/hpo/default/real/ledger.xlsx"
    assert st["observedGeneration"] == obj["metadata"]["generation"]
    conds = conditions(obj)
    for t in ("Valid", "StoreReady", "DatasetReady", "Succeeded"):
        assert conds[t]["status"] == "True", conds[t]
        assert conds[t]["lastTransitionTime"] and conds[t]["reason"]
    assert conds["Progressing"]["status"] == "False"
    rows = s.rows()
    check_complete(rows, 8)
    assert {r.stage for r in rows} == {"random", "bayesian"}
    store = s.results()
    keys = set(store.list("real"))
    for png in ("mae_vs_hidden_layers.png", "best_seeds_boxplot.png", "convergence.png"):
        assert f"real/plots/{png}" in keys
    for r in rows:
        assert f"{r.artifacts}/model.keras" in keys
    # Seeds were grouped two per pod: 4 configurations, 4 pods.
    assert len(node.records) == 4
    text = generate_latest(REGISTRY).decode()
    assert 'hpo_trainings_succeeded_total{namespace="default",study="real"} 8.0' in text
    assert 'hpo_trainings_started_total{namespace="default",study="real"} 8.0' in text
    assert 'hpo_studies{namespace="default",phase="Succeeded",study="real"} 1.0' in text
    reasons = {e["reason"] for e in events(kube, "real")}
    assert {"RandomSearch", "NarrowSearch", "StudySucceeded"} <= reasons


def test_kubectl_applies_the_example_and_gets_it(kube: KubeServer) -> None:
    kube.kubectl("apply", "--validate=false", "-f", str(REPO / "manifests" / "example-study.yaml"))
    out = kube.kubectl("get", "hpostudies").stdout
    assert "quickstart" in out
    assert "quickstart" in kube.kubectl("get", "hpo").stdout
    body = yaml.safe_load(kube.kubectl("get", "hpostudy", "quickstart", "-o", "yaml").stdout)
    assert body["spec"]["storage"]["credentialsSecret"] == {"name": "minio-credentials"}
    kube.kubectl("delete", "hpostudy", "quickstart")


def test_invalid_study_gets_a_condition_naming_the_field_and_no_pod(
    kube: KubeServer, s3_server: S3Server, dataset: str
) -> None:
    body = study_body(
        "invalid",
        s3_server,
        dataset,
        "results-x",
        searchSpace={"neurons": {"min": 300, "max": 200, "step": 8}},
    )
    with operator(kube), kubelet(kube, behaviour=lambda pod: "instant"):
        create(kube, body)
        cond = wait_for(lambda: _false(study(kube, "invalid"), "Valid"), timeout=300)
        time.sleep(1)
        assert not pods(kube, "invalid")
    assert cond["reason"] == "InvalidSpec"
    assert "spec.searchSpace.neurons: min (300) must be <= max (200)" in cond["message"]
    assert phase(kube, "invalid") == "Pending"  # waits for a corrected spec


def _false(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    cond = conditions(obj).get(type_)
    return cond if cond and cond["status"] == "False" else None


def test_missing_secret_is_named(kube: KubeServer, s3_server: S3Server, dataset: str) -> None:
    body = study_body("nosecret", s3_server, dataset, "results-y")
    body["spec"]["storage"]["credentialsSecret"] = {"name": "absent"}
    with operator(kube):
        create(kube, body)
        cond = wait_for(lambda: _false(study(kube, "nosecret"), "StoreReady"), timeout=300)
        obj = study(kube, "nosecret")
    assert "Secret default/absent not found" in cond["message"]
    assert TEST_SECRET_KEY not in json.dumps(obj)


# -- restarts ------------------------------------------------------------------


@contextmanager
def operator_process(
    kube: KubeServer, log: Path, metrics_port: int = 0
) -> Iterator[subprocess.Popen[bytes]]:
    """``hpo operator`` as its own process, so that it can be killed (SIGKILL, no goodbye)."""
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig_path)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*HPO_OPERATOR, "--metrics-port", str(metrics_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.kill()
            proc.wait(30)


def _restart_when(
    kube: KubeServer,
    name: str,
    condition: Callable[[dict[str, Any]], bool],
    log: Path,
    gap: Callable[[], None] | None = None,
) -> None:
    """Run the operator until ``condition(status)``, kill it, optionally ``gap``, start it again."""
    with operator_process(kube, log):
        wait_for(lambda: condition(study(kube, name).get("status") or {}), timeout=300, every=0.05)
    assert phase(kube, name) != "Succeeded", "the study ended before the kill: nothing was tested"
    if gap:
        gap()
    port = free_port()
    with operator_process(kube, log, metrics_port=port):
        try:
            finished(kube, name, timeout=300)
        except AssertionError:
            raise AssertionError(log.read_text()[-5000:]) from None
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
        assert f'hpo_studies{{namespace="default",phase="Succeeded",study="{name}"}} 1.0' in text


@pytest.mark.parametrize("moment", ["random", "bayesian", "after-pod-success"])
def test_operator_restart_loses_nothing_and_repeats_nothing(
    moment: str, kube: KubeServer, new_study: Callable[..., OperatorStudy], tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    name = f"restart-{moment}"
    s = new_study(
        name,
        randomStage={"configurations": 5},
        bayesianStage={"trialsPerConfig": 3},
        trainer={"seedsPerPod": 1},
    )
    expected = (5 + 3) * 2
    created: list[str] = []
    hold = threading.Event()

    def behaviour(pod: dict[str, Any]) -> str:
        created.append(pod["metadata"]["name"])
        return "pending" if hold.is_set() else "instant"

    with kubelet(kube, behaviour=behaviour, result=s.trainer(), max_running=4) as node:
        s.create()
        if moment == "random":
            _restart_when(kube, name, lambda st: st.get("counts", {}).get("succeeded", 0) >= 3, log)
        elif moment == "bayesian":
            _restart_when(kube, name, lambda st: st.get("stage") == "bayesian", log)
        else:
            # Pods finish while no operator runs: their results reach the store (scores.json),
            # not the ledger; the restarted operator must take them from there, once.
            def gap() -> None:
                time.sleep(1.0)

            _restart_when(
                kube, name, lambda st: st.get("counts", {}).get("running", 0) >= 2, log, gap
            )
        obj = study(kube, name)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
        rows = s.rows()
        check_complete(rows, expected)
        assert obj["status"]["counts"]["succeeded"] == expected
        # No pod created twice: deterministic names, and each seen by the kubelet once.
        assert len(created) == len(set(created)) == expected
        assert len(node.records) == expected
    text = log.read_text()
    assert f"study default/{name}: StudySucceeded: best" in text  # the study's events are logged
    assert "pod_event' succeeded" not in text  # kopf's line for every pod event is not


def test_studies_past_kopfs_default_thread_pool_still_run(
    kube: KubeServer, s3_server: S3Server, dataset: str
) -> None:
    """Each running study's daemon holds a handler thread for the study's whole life."""
    default_pool = min(32, (os.cpu_count() or 1) + 4)
    stuck = [f"stuck-{i}" for i in range(default_pool)]
    late = ["late-0", "late-1"]
    bucket = f"results-{uuid.uuid4().hex[:10]}"

    def behaviour(pod: dict[str, Any]) -> str:
        study_name = pod["metadata"]["labels"][LABEL_STUDY]
        return "pending" if study_name in stuck else "instant"

    result = synthetic(s3_server, bucket, delay_s=0.1)
    with kubelet(kube, behaviour=behaviour, result=result, max_running=64), operator(kube):
        for name in stuck:
            create(kube, study_body(name, s3_server, dataset, bucket))
        # Every stuck study is running (its daemon holds a thread) before the late ones come.
        wait_for(lambda: all(phase(kube, n) == "RandomSearch" for n in stuck), 60)
        for name in late:
            create(kube, study_body(name, s3_server, dataset, bucket))
        for name in late:
            obj = finished(kube, name, timeout=300)
            assert obj["status"]["phase"] == "Succeeded", (name, obj["status"])
            check_complete(ledger_rows(s3_server, bucket, name), 8)
        assert all(phase(kube, n) == "RandomSearch" for n in stuck)
        for name in stuck:
            kube.api().custom.delete_namespaced_custom_object(
                "hpo-operator.dev", "v1alpha1", NS, "hpostudies", name
            )


# -- failures ------------------------------------------------------------------


def test_each_kind_of_failure_is_a_retried_attempt(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    name = "failures"
    s = new_study(
        name,
        randomStage={"configurations": 6},
        bayesianStage={"enabled": False},
        parallelism=6,
        trainer={"seedsPerPod": 2, "pendingTimeoutSeconds": 10},
        failurePolicy={"retries": 1, "maxFailedTrainings": 10},
    )
    first_attempt = {
        "r0000": "fail:3:ValueError: boom",
        "r0001": "oom",
        "r0002": "pending",  # bound, never started: stuck
        "r0003": "pending",  # deleted by someone below: a disruption, not an attempt
        "r0004": "unknown",  # node lost: a disruption, not an attempt
    }

    def behaviour(pod: dict[str, Any]) -> str:
        trial = pod["metadata"]["labels"]["hpo-operator.dev/trial"]
        if pod["metadata"]["annotations"][ANN_ATTEMPT] == "1" and trial in first_attempt:
            return first_attempt[trial]
        return "instant"

    with (
        kubelet(kube, behaviour=behaviour, result=s.trainer(), max_running=8),
        operator(kube),
    ):
        s.create()
        victim = wait_for(
            lambda: [p for p in pods(kube, name) if "-r0003-" in p["metadata"]["name"]], timeout=300
        )
        time.sleep(0.5)
        kube.api().core.delete_namespaced_pod(victim[0]["metadata"]["name"], NS)
        obj = s.finished(timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    rows = s.rows()
    check_complete(rows, 12)
    assert all(r.status == "succeeded" for r in rows)
    text = "\n".join(e["message"] for e in events(kube, name))
    assert "ValueError: boom" in text
    assert "OOMKilled" in text
    assert "pod stuck Pending (ContainerCreating" in text
    assert "deleted before it finished" in text and "its node was lost" in text
    assert "not counted as an attempt" in text
    # Failed pods are kept (for debugging) until their time is up; recorded ones are marked.
    kept = pods(kube, name)
    assert kept and all("hpo-operator.dev/recorded" in p["metadata"]["annotations"] for p in kept)


def test_past_the_failure_limit_the_study_fails_with_the_reason(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    s = new_study("doomed", failurePolicy={"retries": 0, "maxFailedTrainings": 2})
    with kubelet(kube, behaviour=lambda pod: "fail:1:RuntimeError: no luck"), operator(kube):
        s.create()
        obj = s.finished(timeout=300)
    st = obj["status"]
    assert st["phase"] == "Failed"
    cond = conditions(obj)["Failed"]
    assert cond["status"] == "True" and cond["reason"] == "TooManyFailures"
    assert "more than failurePolicy.maxFailedTrainings (2)" in cond["message"]
    assert "RuntimeError: no luck" in cond["message"]


# -- changes and deletion --------------------------------------------------------


def test_running_study_takes_operational_changes_and_refuses_the_rest(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    name = "changes"
    s = new_study(
        name,
        randomStage={"configurations": 8},
        bayesianStage={"enabled": False},
        parallelism=1,
        trainer={"seedsPerPod": 1},
    )
    most = {"before": 0, "after": 0}
    with (
        kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer(0.4), max_running=8),
        operator(kube),
    ):
        s.create()
        wait_for(lambda: pods(kube, name), timeout=300)  # running: watch it for 3 s
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            most["before"] = max(most["before"], len(pods(kube, name)))
            time.sleep(0.05)
        patch = {
            "spec": {"parallelism": 4, "searchSpace": {"neurons": {"min": 8, "max": 64, "step": 8}}}
        }
        s.patch(patch)
        refused = wait_for(
            lambda: conditions(study(kube, name)).get("SpecChangeRefused"), timeout=300
        )
        assert refused["status"] == "True" and "spec.searchSpace.neurons.max" in refused["message"]
        # Undo the refused part: parallelism alone is applied.
        s.patch({"spec": {"searchSpace": {"neurons": {"min": 8, "max": 32, "step": 8}}}})
        while phase(kube, name) not in ("Succeeded", "Failed"):
            most["after"] = max(most["after"], len(pods(kube, name)))
            time.sleep(0.05)
    assert most["before"] == 1
    assert most["after"] >= 2
    assert conditions(study(kube, name))["SpecChangeRefused"]["status"] == "False"
    rows = s.rows()
    check_complete(rows, 16)
    assert all(max(r.config["neurons"]) <= 32 for r in rows)  # the original space


@pytest.mark.parametrize("keep", [True, False])
def test_deleting_a_study_removes_its_pods_and_keeps_its_results(
    keep: bool, kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    name = f"deleted-{str(keep).lower()}"
    s = new_study(name, parallelism=3, trainer={"seedsPerPod": 2}, storage={"keepOnDelete": keep})

    def behaviour(pod: dict[str, Any]) -> str:
        return "instant" if "-r0000-" in pod["metadata"]["name"] else "pending"

    with kubelet(kube, behaviour=behaviour, result=s.trainer()), operator(kube):
        s.create()
        wait_for(lambda: s.status().get("counts", {}).get("succeeded") == 2, timeout=300)
        wait_for(lambda: len(pods(kube, name)) == 2, timeout=300)
        s.delete()
        wait_for(lambda: not pods(kube, name), timeout=300)
        store = s.results()
        if not keep:
            wait_for(lambda: not list(store.list(name)), timeout=300)
    if keep:
        rows = s.rows()
        assert [(r.trial, r.seed) for r in rows] == [("r0000", 1), ("r0000", 2)]
        assert store.exists(f"{name}/study.yaml")
    else:
        assert not list(store.list(name))


def test_deleting_a_finished_study_removes_its_results_when_asked(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    """A finished study's loop is gone; the deletion must still remove its results."""
    name = "deleted-finished"
    s = new_study(
        name,
        randomStage={"configurations": 2},
        bayesianStage={"enabled": False},
        storage={"keepOnDelete": False},
    )
    store = s.results()
    with kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer()), operator(kube):
        s.create()
        assert s.finished()["status"]["phase"] == "Succeeded"
        assert store.exists(f"{name}/ledger.xlsx")
        time.sleep(1.0)  # the daemon has returned; only the finalizer can bring the deletion
        s.delete()
        wait_for(lambda: not list(store.list(name)), timeout=300)


def test_hpo_status_shows_where_a_study_stands(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    name = "shown"
    s = new_study(name)
    with kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer(0)), operator(kube):
        s.create()
        s.finished(timeout=300)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpo.cli",
            "status",
            name,
            "--kubeconfig",
            str(kube.kubeconfig_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"default/{name}: Succeeded (done), trainings 8/8" in out
    assert "best: " in out and f"ledger: s3://{s.bucket}/hpo/default/{name}/ledger.xlsx" in out
    assert "Succeeded=True StudyComplete" in out
    get = kube.kubectl("get", "hpostudies", name).stdout
    assert "Succeeded" in get and "8/8" in get


def test_a_store_problem_at_start_is_reported_and_retried(
    kube: KubeServer, s3_server: S3Server, new_study: Callable[..., OperatorStudy]
) -> None:
    name = "waits"
    s = new_study(name, storage={"createBucket": False})
    bucket = s.bucket
    registry_retry = 1.0
    with (
        kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer(0)),
        operator(kube, retry_s=registry_retry),
    ):
        mark = kube.mark()
        s.create()
        cond = wait_for(
            lambda: (
                conditions(study(kube, name)).get("StoreReady")
                if study(kube, name).get("status")
                else None
            ),
            timeout=300,
        )
        assert cond["status"] == "False" and f"bucket '{bucket}' does not exist" in cond["message"]
        assert phase(kube, name) == "Pending" and not pods(kube, name)

        def tries() -> int:  # each try to start reads the study's Secret
            reads = kube.requests_since(mark)
            return sum(r.resource == "secrets" and r.verb == "get" for r in reads)

        wait_for(lambda: tries() >= 3, timeout=300)
        new_s3_store(s3_server, bucket=bucket, prefix="")  # the bucket appears
        obj = s.finished(timeout=300)
    assert obj["status"]["phase"] == "Succeeded"
    assert conditions(obj)["StoreReady"]["status"] == "True"
    check_complete(s.rows(), 8)
    # Retried every second, told once (one event per new problem).
    warned = [e for e in events(kube, name) if e["reason"] == "StoreUnavailable"]
    assert len(warned) == 1, [e["message"] for e in warned]


# -- least privilege -------------------------------------------------------------------


def _granted() -> set[tuple[str, str, str]]:
    for name in ("install.yaml", "rbac.yaml"):
        path = REPO / "manifests" / name
        if path.exists():
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "ClusterRole":
                    return {
                        (group, resource, verb)
                        for rule in doc["rules"]
                        for group in rule["apiGroups"]
                        for resource in rule["resources"]
                        for verb in rule["verbs"]
                    }
    raise AssertionError("no ClusterRole in manifests/")


def _used(requests: list[RequestRecord]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of every call the operator made."""
    return {
        (r.group or "", r.resource + (f"/{r.subresource}" if r.subresource else ""), r.verb)
        for r in requests
        if r.resource and r.user_agent.startswith(("kopf/", "hpo-operator/"))
    }


@pytest.fixture(autouse=True)
def _every_call_is_granted(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test of this module that drives the operator on ``kube``: every API call
    it made is one the install's RBAC allows (the other half needs a scenario: below)."""
    if "kube" not in request.fixturenames:
        yield
        return
    kube: KubeServer = request.getfixturevalue("kube")
    mark = kube.mark()
    yield
    assert _used(kube.requests_since(mark)) - _granted() == set(), "calls the RBAC does not allow"


@pytest.fixture(scope="module")
def every_path(hpo_crd: dict[str, Any], s3_server: S3Server, dataset: str) -> list[RequestRecord]:
    """A cluster of its own where the operator goes through every path that calls the API:
    discovery and watches, a study through both stages with pods created, patched and
    deleted, a failed pod and a stuck one retried, its Secret read, events (created, and
    the kubelet's FailedMount listed), status patches, then the
    study deleted (finalizer). Returns every request the emulator saw."""
    name = "every-path"
    bucket = f"results-{uuid.uuid4().hex[:10]}"
    trainer = {"seedsPerPod": 2, "pendingTimeoutSeconds": 10}
    body = study_body(name, s3_server, dataset, bucket, trainer=trainer)

    def behaviour(pod: dict[str, Any]) -> str:
        first = pod["metadata"]["annotations"][ANN_ATTEMPT] == "1"
        if first and "-r0001-" in pod["metadata"]["name"]:
            return "pending"  # stuck starting: its FailedMount events are looked up
        return (
            "fail:1:RuntimeError: planted"
            if first and "-r0000-" in pod["metadata"]["name"]
            else "instant"
        )

    with KubeServer(crds=(hpo_crd,)) as cluster:
        api = cluster.api()
        api.core.create_namespaced_secret(NS, credentials_secret())
        with (
            kubelet(cluster, behaviour=behaviour, result=synthetic(s3_server, bucket)),
            operator(cluster),
        ):
            create(cluster, body)
            obj = finished(cluster, name, timeout=300)
            assert obj["status"]["phase"] == "Succeeded", obj["status"]
            assert "RuntimeError: planted" in "\n".join(e["message"] for e in events(cluster, name))
            api.custom.delete_namespaced_custom_object(
                "hpo-operator.dev", "v1alpha1", NS, "hpostudies", name
            )
            wait_for(lambda: not cluster.list_objects("hpo-operator.dev/v1alpha1/hpostudies", NS))
            wait_for(lambda: not pods(cluster, name), timeout=300)
        api.close()
        return list(cluster.requests)


def test_rbac_grants_exactly_the_calls_the_operator_made(every_path: list[RequestRecord]) -> None:
    used = _used(every_path)
    granted = _granted()
    assert used - granted == set(), "calls the RBAC does not allow"
    assert granted - used == set(), "grants the operator never used"
