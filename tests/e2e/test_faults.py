"""Faults, end to end: the operator killed at many points, an API server answering
errors, an object store frozen or answering 503, trainers failing in every way.

Each test prints one line (with ``capsys.disabled``, so it shows in any pytest
run): the fault, how often it was injected, the outcome. Trainers are synthetic
(instant, with scores written where the real trainer writes them): these tests
are about what the operator does when things break, not about training.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from helpers.operator import (
    HPO_OPERATOR,
    NS,
    OperatorStudy,
    check_complete,
    events,
    kubelet,
    operator,
    pods,
    wait_for,
)
from helpers.s3 import new_s3_store
from helpers.synthetic import synthetic as synthetic_trainer
from hpo.kube.api import ATTEMPTS, MAX_WAIT_S, Cluster, retrying
from hpo.kube.pods import ANN_ATTEMPT, ANN_REQUEST, LABEL_TRIAL
from support.faultproxy import FaultProxy
from support.kube.emulator import ApiFaults
from support.kube.server import KubeServer
from support.s3server import S3Server

Behaviour = Callable[[dict[str, Any]], str]
#: The clients whose requests the emulator may answer wrongly: the operator's and kopf's.
OPERATOR_AGENTS = ("hpo-operator/", "kopf/")


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[..., None]:
    """``report(fault, injected=..., outcome=..., lost=...)``: one line in the test output."""

    def say(fault: str, **facts: Any) -> None:
        with capsys.disabled():
            print(f"\nFAULT {fault}: " + "; ".join(f"{k}={v}" for k, v in facts.items()))

    return say


def _trial(pod: dict[str, Any]) -> str:
    return pod["metadata"]["labels"][LABEL_TRIAL]


def _attempt(pod: dict[str, Any]) -> int:
    return int(pod["metadata"]["annotations"][ANN_ATTEMPT])


def _recorded(s: OperatorStudy) -> int:
    counts = s.status().get("counts") or {}
    return int(counts.get("succeeded", 0)) + int(counts.get("failed", 0))


def _ended(s: OperatorStudy) -> bool:
    return s.status().get("phase") in ("Succeeded", "Failed")


class Played:
    """A kubelet ``behaviour`` that notes every pod it plays: what ran, and how it ended."""

    def __init__(self, choose: Behaviour) -> None:
        self.choose = choose
        self.pods: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, pod: dict[str, Any]) -> str:
        mode = self.choose(pod)
        request = json.loads(pod["metadata"]["annotations"][ANN_REQUEST])
        with self._lock:
            self.pods.append(
                {
                    "name": pod["metadata"]["name"],
                    "trial": request["trial"],
                    "seeds": list(request["seeds"]),
                    "attempt": _attempt(pod),
                    "config_key": request["config_key"],
                    "mode": mode,
                }
            )
        return mode

    def check(self, rows: list[Any]) -> int:
        """No result lost, nothing trained twice: every training of a pod that succeeded
        is a ledger row of the same configuration, each in exactly one such pod; no pod
        name was created twice. Returns the number of pods."""
        names = [p["name"] for p in self.pods]
        assert len(names) == len(set(names)), collections.Counter(names).most_common(3)
        ran = collections.Counter(
            (p["trial"], seed, p["config_key"])
            for p in self.pods
            if p["mode"].startswith("instant")
            for seed in p["seeds"]
        )
        recorded = {(r.trial, r.seed, r.config_key) for r in rows if r.status == "succeeded"}
        assert set(ran) == recorded, set(ran) ^ recorded
        assert max(ran.values(), default=1) == 1, ran.most_common(3)
        return len(names)


def check_study(rows: list[Any], configs: int, budget: int, seeds: int = 2) -> None:
    """Both stages ran; no training and no configuration twice.

    How many narrow-stage trials a study gets depends on its narrow spaces (a small one
    is exhausted before the budget), so only the bounds are checked here.
    """
    check_complete(rows, len(rows), seeds)
    assert len([r for r in rows if r.stage == "random"]) == configs * seeds
    assert 1 <= len({r.trial for r in rows if r.stage == "bayesian"}) <= budget


def _all_succeeded(s: OperatorStudy, obj: dict[str, Any], configs: int, budget: int) -> list[Any]:
    """The study Succeeded with both stages complete, every training of it succeeded
    (``check_study``); its ledger rows."""
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    rows = s.rows()
    check_study(rows, configs, budget)
    assert all(r.status == "succeeded" for r in rows)
    return rows


def _scores_present(s: OperatorStudy, rows: list[Any]) -> bool:
    store = s.results()
    return all(store.exists(f"{r.artifacts}/scores.json") for r in rows)


def _deleted(s: OperatorStudy) -> bool:
    try:
        s.status()
    except ApiException as exc:
        return exc.status == 404
    return False


def _run_to_end(
    s: OperatorStudy,
    behaviour: Behaviour,
    delay_s: float,
    *,
    timeout: float,
    faults: ApiFaults | None = None,
    retry_s: float = 15.0,
    **kubelet_options: Any,
) -> dict[str, Any]:
    """Create the study and run it to its end: pods played by ``behaviour`` (synthetic
    trainers, ``delay_s`` a training), one operator, the API server answering ``faults``."""
    with (
        kubelet(s.kube, behaviour=behaviour, result=s.trainer(delay_s), **kubelet_options),
        operator(s.kube, retry_s=retry_s),
        s.kube.faulty(faults),
    ):
        s.create()
        return s.finished(timeout)


def _spawn(kube: KubeServer, log: Path, crash_at: str = "") -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig_path)}
    env.pop("HPO_CRASH_AT", None)
    if crash_at:
        env["HPO_CRASH_AT"] = crash_at
    with open(log, "ab") as out:
        stamp = time.strftime("%H:%M:%S")
        out.write(f"\n=== {stamp} operator start (HPO_CRASH_AT={crash_at!r}) ===\n".encode())
        out.flush()
        return subprocess.Popen(
            [*HPO_OPERATOR, "--metrics-port", "0"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)


# -- the operator killed ---------------------------------------------------------------

#: The kill schedule: named dangerous moments (hpo/crashpoints.py; the process exits there)
#: and, at ``RANDOM``, a SIGKILL after a random number of trainings plus a random pause.
RANDOM = "random"
SCHEDULE = [
    "failure-stored:1",  # a failed attempt stored, its pod not yet deleted
    "pod-reported:Succeeded:2",  # between pod success and the ledger write
    RANDOM,
    "pod-reported:Failed:1",  # a failure reported, its pod still there
    "pod-create:random:2",  # a training chosen, its pod not created
    RANDOM,
    "s3-put:ledger.xlsx:1",  # mid ledger write: the PUT about to go
    "pod-create:bayesian:1",  # between optimiser ask and pod creation
    RANDOM,
    "pod-created:bayesian:2",  # a pod created, the operator has not noted it
    "s3-put-done:ledger.xlsx:1",  # mid ledger write: landed, its answer not acted on
]


def _kill_after(s: OperatorStudy, log: Path, more: int, pause: float) -> None:
    """Run the operator until ``more`` trainings more are recorded, wait ``pause``, SIGKILL."""
    before = _recorded(s)
    proc = _spawn(s.kube, log)
    try:
        wait_for(lambda: _recorded(s) >= before + more or _ended(s), timeout=300, every=0.05)
        time.sleep(pause)
    finally:
        _stop(proc)


def _crash_at(s: OperatorStudy, log: Path, point: str) -> bool:
    """Run the operator armed at ``point``; whether it died there."""
    proc = _spawn(s.kube, log, point)
    try:
        wait_for(lambda: proc.poll() is not None or _ended(s), timeout=300)
    finally:
        _stop(proc)
    return proc.returncode == 137


# Twelve operator starts one after the other (each imports kopf, kubernetes and skopt):
# ~4 minutes alone on 2 cores, more than the default 600 s timeout when the cores are shared.
@pytest.mark.timeout(1500)
def test_operator_killed_at_many_points_loses_nothing_and_repeats_nothing(
    kube: KubeServer,
    new_study: Callable[..., OperatorStudy],
    tmp_path: Path,
    report: Callable[..., None],
) -> None:
    # A narrow stage of up to 12 trials (24 trainings): the schedule's narrow-stage points
    # need pods still to create after the first ledger write. With 4 trials, trainings as
    # fast as CI's let one operator life finish the stage, and a later point never fired.
    configs, budget = 7, 12
    s = new_study(
        "killed",
        searchSpace={
            "hiddenLayers": {"min": 1, "max": 3},
            "neurons": {"min": 8, "max": 64, "step": 8},
            "activations": ["relu", "tanh"],
            "learningRate": {"min": 0.001, "max": 0.03},
            "batchSizes": [32, 64],
        },
        randomStage={"configurations": configs},
        bayesianStage={"trialsPerConfig": budget, "neuronsRadius": 16},
        trainer={"seedsPerPod": 1, "failedPodTtlSeconds": 0},
        failurePolicy={"retries": 1, "maxFailedTrainings": 10},
    )
    fails_once = {"r0001", "r0004", "b0001"}  # first attempts fail: retries across restarts

    def choose(pod: dict[str, Any]) -> str:
        if _trial(pod) in fails_once and _attempt(pod) == 1:
            return "fail:2:RuntimeError: first attempt fails"
        return "instant"

    played = Played(choose)

    rng = random.Random(20261128)
    log = tmp_path / "operator.log"
    kills: list[str] = []
    missed: list[str] = []
    with kubelet(kube, behaviour=played, result=s.trainer(0.2), max_running=4):
        s.create()
        for point in SCHEDULE:
            if point == RANDOM:
                more, pause = rng.randint(1, 3), rng.uniform(0, 0.4)
                _kill_after(s, log, more, pause)
                kills.append(f"SIGKILL after +{more} trainings, +{pause:.2f}s")
            else:
                (kills if _crash_at(s, log, point) else missed).append(point)
            if _ended(s):
                status = s.status()
                raise AssertionError(
                    f"the study ended before the kills: {kills}; phase {status.get('phase')}, "
                    f"trainings {status.get('trainings')}, conditions "
                    f"{status.get('conditions')}\n{log.read_text()[-6000:]}"
                )
        proc = _spawn(kube, log)
        try:
            obj = s.finished(timeout=300)
        except AssertionError:
            raise AssertionError(log.read_text()[-6000:]) from None
        finally:
            _stop(proc)
    assert not missed and len(kills) >= 10, (kills, missed)
    rows = _all_succeeded(s, obj, configs, budget)
    assert obj["status"]["trainings"] == f"{len(rows)}/{len(rows)}"
    assert _scores_present(s, rows), "a ledger row without its scores.json"
    n_pods = played.check(rows)
    failed_first = [p for p in played.pods if p["mode"].startswith("fail")]
    assert n_pods == len(rows) + len(failed_first)
    report(
        "operator killed",
        kills=len(kills),
        named_points=len(kills) - sum(k.startswith("SIGKILL") for k in kills),
        random_sigkills=sum(k.startswith("SIGKILL") for k in kills),
        outcome=f"Succeeded, {len(rows)} trainings, {n_pods} pods "
        f"({len(failed_first)} failed first attempts retried)",
        lost=0,
        trained_twice=0,
    )


# -- the API server answering errors ---------------------------------------------------


def test_api_errors_on_a_tenth_of_requests_do_not_stop_a_study(
    kube: KubeServer, new_study: Callable[..., OperatorStudy], report: Callable[..., None]
) -> None:
    s = new_study(
        "api-errors", randomStage={"configurations": 8}, bayesianStage={"trialsPerConfig": 3}
    )
    faults = ApiFaults(agents=OPERATOR_AGENTS, rate=0.1, seed=7)
    played = Played(lambda pod: "instant")
    mark = kube.mark()
    obj = _run_to_end(s, played, 0.1, faults=faults, timeout=300)
    rows = _all_succeeded(s, obj, 8, 3)
    # No error became a failed attempt: one pod per two seeds, no TrainingFailed event.
    assert played.check(rows) == len(rows) // 2
    assert not [e for e in events(kube, s.name) if e["reason"] == "TrainingFailed"]
    by_status = collections.Counter(status for _, _, status in faults.injected)
    served = [
        r for r in kube.requests_since(mark) if r.user_agent.startswith(("hpo-operator/", "kopf/"))
    ]
    # A tenth of the operator's and kopf's requests (409 only for writes: patches).
    assert len(faults.injected) >= max(5, len(served) // 20), (by_status, len(served))
    assert set(by_status) <= {500, 409, 429} and len(by_status) >= 2, by_status
    report(
        "API errors 10%",
        requests=len(served),
        injected=dict(sorted(by_status.items())),
        outcome=f"Succeeded, {len(rows)} trainings, 0 failed attempts, 0 extra pods",
        lost=0,
    )


# -- the object store frozen or refusing -----------------------------------------------


def test_object_store_frozen_for_30s_mid_study(
    kube: KubeServer,
    s3_server: S3Server,
    new_study: Callable[..., OperatorStudy],
    monkeypatch: pytest.MonkeyPatch,
    report: Callable[..., None],
) -> None:
    monkeypatch.setenv("HPO_S3_TIMEOUT", "2")
    monkeypatch.setenv("HPO_S3_RETRIES", "1")
    s = new_study("frozen", randomStage={"configurations": 4}, bayesianStage={"trialsPerConfig": 2})
    played = Played(lambda pod: "instant")

    # The trainers wait the outage out (a real trainer's store retries too).
    def trainer_store() -> Any:
        return new_s3_store(
            s3_server,
            bucket=s.bucket,
            prefix="hpo/default",
            create_bucket=False,
            timeout_s=5,
            retries=20,
            max_backoff_s=3,
        )

    seen_unready = []
    with (
        kubelet(kube, behaviour=played, result=synthetic_trainer(trainer_store, 0.2)),
        operator(kube),
    ):
        s.create()
        wait_for(lambda: _recorded(s) >= 4, timeout=300)
        s3_server.freeze()
        frozen_at = _recorded(s)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                conds = {c["type"]: c for c in s.status().get("conditions") or []}
                if conds.get("StoreReady", {}).get("status") == "False":
                    seen_unready.append(conds["StoreReady"]["message"])
                time.sleep(0.5)
        finally:
            s3_server.thaw()
        obj = s.finished(timeout=300)
    rows = _all_succeeded(s, obj, 4, 2)
    assert frozen_at < len(rows), "the study ended before the freeze"
    assert _scores_present(s, rows)
    played.check(rows)
    report(
        "object store frozen 30s",
        injected="1 freeze of 30s (SIGSTOP)",
        recorded_before=frozen_at,
        store_ready_false_seen=bool(seen_unready),
        outcome=f"Succeeded, {len(rows)} trainings",
        lost=0,
    )


def test_object_store_503_on_a_tenth_of_requests(
    s3_server: S3Server, new_study: Callable[..., OperatorStudy], report: Callable[..., None]
) -> None:
    with FaultProxy(s3_server.endpoint, rate=0.1, seed=3) as proxy:
        s = new_study(
            "slowdown", randomStage={"configurations": 5}, bayesianStage={"trialsPerConfig": 2}
        )
        s.body["spec"]["storage"]["endpoint"] = proxy.endpoint
        played = Played(lambda pod: "instant")
        obj = _run_to_end(s, played, 0.1, timeout=300)
        requests, injected = proxy.requests, proxy.injected
    rows = _all_succeeded(s, obj, 5, 2)
    assert _scores_present(s, rows)
    played.check(rows)
    store = s.results()
    assert store.exists(f"{s.name}/best.json") and store.exists(f"{s.name}/plots/convergence.png")
    assert injected >= 5, (requests, injected)
    report(
        "object store 503 SlowDown 10%",
        requests=requests,
        injected=injected,
        outcome=f"Succeeded, {len(rows)} trainings",
        lost=0,
    )


# -- trainer failures of every kind ----------------------------------------------------

#: The trainer's own failures. An image that cannot be pulled, a lost node and a deleted
#: pod are not (issue 26): tests/integration/test_cluster_waiting.py.
KINDS = {
    "r0000": "fail:3:ValueError: boom",
    "r0001": "oom",
    "r0002": "pending",  # stuck Pending (ContainerCreating)
}


def test_every_kind_of_trainer_failure_is_counted_and_retried_as_the_policy_says(
    kube: KubeServer, new_study: Callable[..., OperatorStudy], report: Callable[..., None]
) -> None:
    """Each kind fails on both attempts (retries: 1): two attempts per training, then one
    failed row each; the study stays under its failure limit and ends Succeeded."""
    s = new_study(
        "every-failure",
        randomStage={"configurations": 4},
        bayesianStage={"enabled": False},
        parallelism=8,
        trainer={"seedsPerPod": 2, "pendingTimeoutSeconds": 10, "failedPodTtlSeconds": 0},
        failurePolicy={"retries": 1, "maxFailedTrainings": 12},
    )
    name = s.name
    created: list[str] = []

    def behaviour(pod: dict[str, Any]) -> str:
        created.append(pod["metadata"]["name"])
        return KINDS.get(_trial(pod), "instant")

    with (
        kubelet(kube, behaviour=behaviour, result=s.trainer(0.1), max_running=16),
        operator(kube),
    ):
        s.create()
        obj = s.finished(timeout=300)
    st = obj["status"]
    assert st["phase"] == "Succeeded", st
    rows = s.rows()
    check_complete(rows, 8)
    failed = sorted({r.trial for r in rows if r.status == "failed"})
    assert failed == sorted(KINDS), failed
    assert st["counts"]["failed"] == 2 * len(KINDS) and st["counts"]["succeeded"] == 2
    # Two attempts (pods) per failing training and one for the good one: nothing more.
    per_trial = collections.Counter(n.split(f"{name}-", 1)[1].split("-")[0] for n in created)
    assert per_trial == {**{t: 2 for t in KINDS}, "r0003": 1}, per_trial
    texts = [e["message"] for e in events(kube, name) if e["reason"] == "TrainingFailed"]
    retried = [t for t in texts if "; retry 1 in" in t]
    final = [t for t in texts if "failed for good" in t]
    assert len(retried) == len(final) == 2 * len(KINDS), texts
    for what in ("ValueError: boom", "OOMKilled", "ContainerCreating"):
        assert any(what in t for t in final), what
    report(
        "trainer failures (exit, OOM, stuck Pending)",
        injected=f"{2 * len(KINDS)} failed attempts ({len(KINDS)} kinds x 2 seeds, twice each)",
        outcome=f"{len(retried)} retried, {len(final)} recorded failed, study Succeeded",
        lost=0,
    )


# -- bugs found in review, each with the test that showed it ----------------------------


def test_failed_annotate_after_a_report_does_not_count_the_failure_twice(
    kube: KubeServer, new_study: Callable[..., OperatorStudy], report: Callable[..., None]
) -> None:
    s = new_study(
        "annotate-fails",
        randomStage={"configurations": 2},
        bayesianStage={"enabled": False},
        failurePolicy={"retries": 1, "maxFailedTrainings": 5},
    )

    def behaviour(pod: dict[str, Any]) -> str:
        if _trial(pod) == "r0000" and _attempt(pod) == 1:
            return "fail:1:RuntimeError: first attempt fails"
        return "instant"

    # Every try of the first annotate call fails: the call gives up after the report.
    faults = ApiFaults(agents=OPERATOR_AGENTS, refuse={("patch", "pods"): ATTEMPTS})
    obj = _run_to_end(s, behaviour, 0.1, faults=faults, timeout=300)
    assert len(faults.injected) == ATTEMPTS
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    rows = s.rows()
    check_complete(rows, 4)
    assert all(r.status == "succeeded" for r in rows), [(r.key, r.error) for r in rows]
    texts = [e["message"] for e in events(kube, s.name) if e["reason"] == "TrainingFailed"]
    assert len(texts) == 2 and all("retry 1" in t for t in texts), texts
    report(
        "pod annotate refused after a report",
        injected=len(faults.injected),
        outcome="the failure counted once per seed, retried once, Succeeded",
        lost=0,
    )


def test_pod_create_whose_answer_is_lost_is_adopted_not_a_failed_attempt(
    kube: KubeServer, new_study: Callable[..., OperatorStudy], report: Callable[..., None]
) -> None:
    s = new_study(
        "create-lost", randomStage={"configurations": 3}, bayesianStage={"enabled": False}
    )
    created: list[str] = []

    def behaviour(pod: dict[str, Any]) -> str:
        created.append(pod["metadata"]["name"])
        return "instant"

    # The API server makes the first two pods, then answers 504 (its own timeout).
    faults = ApiFaults(agents=OPERATOR_AGENTS, lose={("create", "pods"): 2})
    obj = _run_to_end(s, behaviour, 0.5, faults=faults, timeout=300)
    assert len(faults.injected) == 2
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    check_complete(s.rows(), 6)
    assert sorted(created) == sorted(f"{s.name}-r000{i}-s1-2-a1" for i in range(3)), created
    assert not [e for e in events(kube, s.name) if e["reason"] == "TrainingFailed"]
    report(
        "pod create answered 504 after the pod was made",
        injected=len(faults.injected),
        outcome="adopted (409 on the retry), no failed attempt, no second pod",
        lost=0,
    )


def test_pod_create_forbidden_waits_with_a_condition_and_burns_no_attempt(
    kube: KubeServer, new_study: Callable[..., OperatorStudy], report: Callable[..., None]
) -> None:
    """An exhausted ResourceQuota (or missing RBAC) answers 403: the cluster's doing, so the
    study says so and waits; no training is charged an attempt, none recorded failed."""
    s = new_study(
        "create-forbidden",
        randomStage={"configurations": 3},
        bayesianStage={"enabled": False},
        parallelism=3,
    )
    faults = ApiFaults(agents=OPERATOR_AGENTS, forbid={("create", "pods"): 3})
    mark = kube.mark()
    with (
        kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer(0.1)),
        operator(kube, retry_s=2),
        kube.faulty(faults),
    ):
        s.create()
        waiting = wait_for(
            lambda: (
                (st := s.status())
                and "PodsAllowed" in {c["type"] for c in st.get("conditions") or []}
                and st
            ),
            timeout=300,
        )
        obj = s.finished(timeout=300)
    assert len(faults.injected) == 3
    refused = {c["type"]: c for c in waiting["conditions"]}["PodsAllowed"]
    assert refused["status"] == "False" and refused["reason"] == "PodCreateForbidden"
    assert waiting["message"] == refused["message"]  # what Argo CD and kubectl get show
    assert "exceeded quota" in refused["message"], refused
    assert "not counted as a failed attempt" in refused["message"], refused
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    final = {c["type"]: c for c in obj["status"]["conditions"]}["PodsAllowed"]
    assert final["status"] == "True", final
    rows = s.rows()
    check_complete(rows, 6)
    assert all(r.status == "succeeded" for r in rows)
    reasons = [e["reason"] for e in events(kube, s.name)]
    assert "TrainingFailed" not in reasons and {"PodCreateForbidden", "PodsCreated"} <= set(reasons)
    # Once refused, the other pods of that round wait too rather than ask again: one
    # refused create per round, then the three pods.
    creates = [
        r
        for r in kube.requests_since(mark)
        if r.verb == "create" and r.resource == "pods" and r.user_agent.startswith("hpo-operator/")
    ]
    assert len(creates) == 3 + 3, [(r.name, r.status) for r in creates]
    report(
        "pod create answered 403 (quota exceeded)",
        injected=len(faults.injected),
        outcome="PodsAllowed=False with the API's message, retried every 2s, no failed "
        "attempt, study Succeeded",
        lost=0,
    )


def test_restart_after_a_final_failure_does_not_retrain_it(
    kube: KubeServer,
    new_study: Callable[..., OperatorStudy],
    tmp_path: Path,
    report: Callable[..., None],
) -> None:
    s = new_study(
        "final-failure",
        randomStage={"configurations": 4},
        bayesianStage={"enabled": False},
        parallelism=1,
        trainer={"seedsPerPod": 2, "failedPodTtlSeconds": 0},
        failurePolicy={"retries": 0, "maxFailedTrainings": 5},
    )
    created: list[str] = []

    def behaviour(pod: dict[str, Any]) -> str:
        created.append(pod["metadata"]["name"])
        return "fail:1:RuntimeError: never works" if _trial(pod) == "r0000" else "instant"

    log = tmp_path / "operator.log"
    with kubelet(kube, behaviour=behaviour, result=s.trainer(1.0)):
        s.create()
        proc = _spawn(kube, log)
        try:
            # The failure is final and its pod deleted; the ledger's batch is not written.
            wait_for(
                lambda: (
                    (s.status().get("counts") or {}).get("failed") == 2
                    and not any(_trial(p) == "r0000" for p in pods(kube, s.name))
                ),
                timeout=300,
                every=0.05,
            )
        finally:
            _stop(proc)
        assert s.status().get("phase") not in ("Succeeded", "Failed")
        proc = _spawn(kube, log)
        try:
            obj = s.finished(timeout=300)
        finally:
            _stop(proc)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    rows = s.rows()
    check_complete(rows, 8)
    assert sorted(r.seed for r in rows if r.status == "failed" and r.trial == "r0000") == [1, 2]
    assert created.count(f"{s.name}-r0000-s1-2-a1") == 1, created
    report(
        "restart inside the ledger's batch window after a final failure",
        injected="1 SIGKILL",
        outcome="the failure recovered from the store, not retrained",
        lost=0,
    )


def test_deleting_a_study_waits_for_its_loop_before_removing_results(
    kube: KubeServer,
    s3_server: S3Server,
    new_study: Callable[..., OperatorStudy],
    report: Callable[..., None],
) -> None:
    def behaviour(pod: dict[str, Any]) -> str:
        return "instant" if _trial(pod).startswith("r") else "pending"

    with FaultProxy(s3_server.endpoint) as proxy:
        s = new_study("delete-race", randomStage={"configurations": 2}, parallelism=2)
        s.body["spec"]["storage"]["endpoint"] = proxy.endpoint
        s.body["spec"]["storage"]["keepOnDelete"] = False
        # The ledger write at the hand-over to the narrow stage is held in flight.
        proxy.hold("ledger.xlsx", 6.0)
        with (
            kubelet(kube, behaviour=behaviour, result=s.trainer(0.1)),
            operator(kube),
        ):
            s.create()
            assert proxy.held.wait(60), "no ledger write"
            kube.api().custom.delete_namespaced_custom_object(
                "hpo-operator.dev", "v1alpha1", NS, "hpostudies", s.name
            )
            wait_for(lambda: _deleted(s), timeout=300)
            time.sleep(7)  # past the held write
        left = list(s.results().list(s.name))
        removals = [t for t, _, m, p in proxy.log if m == "DELETE" or "?delete" in p]
        writes = [e for _, e, m, _ in proxy.log if m == "PUT"]
    assert left == [], left
    # Every write of the study landed before its results were removed, none after.
    assert removals and writes and max(writes) < min(removals), (writes, removals)
    report(
        "study deleted (keepOnDelete: false) during a ledger write",
        injected="1 ledger PUT held 6s",
        outcome="the removal waited for the study's loop; nothing left",
        lost="n/a (removal asked for)",
    )


def test_crash_points_are_inert_unless_armed() -> None:
    code = "from hpo import crashpoints; crashpoints.reached('x'); print('alive', flush=True)"
    env = {k: v for k, v in os.environ.items() if k != "HPO_CRASH_AT"}
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "alive" in ok.stdout
    armed = subprocess.run(
        [sys.executable, "-c", code + "; crashpoints.reached('x'); print('still', flush=True)"],
        capture_output=True,
        text=True,
        env={**os.environ, "HPO_CRASH_AT": "x:2"},
    )
    assert armed.returncode == 137 and "alive" in armed.stdout and "still" not in armed.stdout
    assert "crash point x reached" in armed.stderr
    for typo in ("x", "x:two", "x:0", ":3"):
        bad = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "HPO_CRASH_AT": typo},
        )
        assert bad.returncode == 1 and "alive" not in bad.stdout, typo
        assert f"HPO_CRASH_AT: {typo!r} is not point:n" in bad.stderr, bad.stderr


@pytest.mark.parametrize("header", ["1", "-5", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT", ""])
def test_any_retry_after_answer_is_waited_out_and_retried(header: str) -> None:
    """A 429 is retried whatever its Retry-After says (a bad one means our own backoff)."""
    answers = iter([429, 429, 200])

    def call() -> str:
        status = next(answers)
        if status == 200:
            return "served"
        exc = ApiException(status=status, reason="Too Many Requests")
        exc.headers = {"Retry-After": header} if header else {}
        raise exc

    start = time.monotonic()
    assert retrying("get thing", call) == "served"
    assert time.monotonic() - start < 2 * MAX_WAIT_S


def test_a_pod_name_taken_by_a_pod_now_gone_is_created_not_failed(kube: KubeServer) -> None:
    """409 AlreadyExists, but the pod of that name is gone by the time we look (it was
    deleted): the name is free, so the create is made again, not charged as a failure."""
    cluster = Cluster(kube.api_client())
    name = f"taken-{uuid.uuid4().hex[:6]}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"},
    }
    faults = ApiFaults(agents=OPERATOR_AGENTS, taken={("create", "pods"): 1})
    with kube.faulty(faults):
        made = cluster.create_pod(NS, manifest)
    assert faults.injected == [("create", "pods", 409)]
    assert made is True  # made by us now, not adopted
    listed = kube.api().core.list_namespaced_pod(NS, field_selector=f"metadata.name={name}")
    assert [p.metadata.name for p in listed.items] == [name]
    # A name whose pod does exist is still adopted (False), never created twice.
    assert cluster.create_pod(NS, manifest) is False
    cluster.delete_pod(NS, name)
