"""The Kubernetes runner alone: a small fake of the pods API, a local store, a fake clock.

No API server, no kopf, no training: the fake "kubelet" is the test itself,
which finishes pods by writing their ``scores.json`` to the store (as a
trainer would) and setting their phase. Each step is one ``KubeRunner.step``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import yaml
from kubernetes.client import ApiException
from prometheus_client import generate_latest

from helpers.study import EXAMPLE_CSV, LABELS, study_dict
from hpo.kube import metrics
from hpo.kube.metrics import REGISTRY
from hpo.kube.pods import LABEL_STUDY, pod_name, tasks_of
from hpo.kube.runner import KubeRunner
from hpo.session import FailureRecords
from hpo.store import LocalStore, StoreRef
from hpo.study.contract import NARROW_STAGE, SeedResult

NS = "default"
STUDY = "t"


class FakeCluster:
    """The calls ``KubeRunner`` makes, on pods kept in a dict; every create is logged."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []
        #: Every create call's pod name, also those answered "exists already".
        self.create_calls: list[str] = []
        self.deleted: list[str] = []
        self.events: list[tuple[str, str, str]] = []
        self.status: dict[str, Any] = {}
        #: Raised by the next creates, in order (then a create goes through).
        self.refusals: list[Exception] = []
        #: Create the pod, then raise this anyway (an answer lost on the way back).
        self.lose_answer: Exception | None = None
        #: Pods on a lost node: a graceful delete leaves them Terminating.
        self.lost: set[str] = set()
        self.forced: list[str] = []

    def list_pods(self, namespace: str, study: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(p)
            for p in self.pods.values()
            if p["metadata"]["labels"].get(LABEL_STUDY) == study
        ]

    def create_pod(self, namespace: str, manifest: dict[str, Any]) -> bool:
        self.create_calls.append(manifest["metadata"]["name"])
        if self.refusals:
            raise self.refusals.pop(0)
        name = manifest["metadata"]["name"]
        if name in self.pods:
            return False
        pod = copy.deepcopy(manifest)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod["metadata"]["creationTimestamp"] = stamp
        pod["status"] = {"phase": "Pending"}
        self.pods[name] = pod
        self.created.append(name)
        if self.lose_answer is not None:
            exc, self.lose_answer = self.lose_answer, None
            raise exc
        return True

    def delete_pod(self, namespace: str, name: str, force: bool = False) -> None:
        if name in self.lost and not force:  # no kubelet confirms it: it stays Terminating
            meta = self.pods[name]["metadata"]
            meta.setdefault("deletionTimestamp", _stamp(0))
            return
        self.pods.pop(name, None)
        self.deleted.append(name)
        if force:
            self.forced.append(name)

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self.pods[name]["metadata"].setdefault("annotations", {}).update(annotations)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.status = status

    def event(self, study: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    # -- the test's kubelet ------------------------------------------------------

    def succeed(self, name: str, store: LocalStore) -> None:
        """The pod's trainer wrote its scores and exited 0."""
        pod = self.pods[name]
        for task in tasks_of(pod):
            t = task.trial
            mae = 0.1 + 0.01 * task.seed
            result = SeedResult(
                study=STUDY,
                trial=t.id,
                stage=t.stage,
                parent=t.parent,
                config=t.config,
                config_key=t.config_key,
                seed=task.seed,
                status="succeeded",
                mae=mae,
                per_label={label: {"mae": mae, "pct": 10 * mae} for label in LABELS},
            )
            store.put_bytes(
                f"{STUDY}/trials/{t.id}/seed-{task.seed}/scores.json", result.to_json().encode()
            )
        pod["status"] = _terminated("Succeeded", 0, "[]")

    def fail(self, name: str) -> None:
        """The pod's trainer failed and said why in its termination message."""
        pod = self.pods[name]
        rows = [{"seed": t.seed, "status": "failed", "error": "boom"} for t in tasks_of(pod)]
        pod["status"] = _terminated("Failed", 1, json.dumps(rows))


def _terminated(phase: str, code: int, message: str) -> dict[str, Any]:
    return {
        "phase": phase,
        "containerStatuses": [
            {"state": {"terminated": {"exitCode": code, "reason": "Completed", "message": message}}}
        ],
    }


def _stamp(seconds_ago: float) -> str:
    then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    return then.strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _body(**spec: Any) -> dict[str, Any]:
    base = {
        "randomStage": {"configurations": 3, "seed": 1},
        "training": {"seedsPerConfig": 1},
        "bayesianStage": {"enabled": False},
        "parallelism": 2,
        "failurePolicy": {"retries": 1, "maxFailedTrainings": 10},
        "trainer": {"retryBackoffSeconds": 30},
    }
    base.update(spec)
    body = study_dict(**base)
    body["metadata"].update(namespace=NS, uid="uid-1", generation=1)
    return body


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _unstarted(
    cluster: FakeCluster, store: LocalStore, body: dict[str, Any], clock: Clock
) -> KubeRunner:
    """A runner of ``body`` on the fake cluster and the local store, not started yet."""
    return KubeRunner(
        cluster,  # type: ignore[arg-type]
        NS,
        STUDY,
        body=lambda: body,
        poll_s=0.01,
        store_ref=StoreRef(kind="local", root=str(store.root)),
        clock=clock,
    )


def _runner(
    cluster: FakeCluster, store: LocalStore, body: dict[str, Any], clock: Clock
) -> KubeRunner:
    runner = _unstarted(cluster, store, body, clock)
    assert runner.start(), cluster.events
    return runner


def _engine(runner: KubeRunner) -> Any:
    assert runner.session is not None
    return runner.session.engine


def test_tasks_become_pods_with_deterministic_names(store: LocalStore, tmp_path: Path) -> None:
    cluster, clock = FakeCluster(), Clock()
    runner = _runner(cluster, store, _body(), clock)
    runner.step()
    # parallelism 2: the first two trials, attempt 1, one seed each.
    expected = [pod_name(STUDY, f"r000{i}", [1], 1) for i in range(2)]
    assert cluster.created == expected
    assert sorted(runner.pods) == expected
    # Another operator on another store makes the very same names: creating is idempotent.
    other = FakeCluster()
    _runner(other, LocalStore(tmp_path / "other"), _body(), Clock()).step()
    assert other.created == expected
    runner.step()  # nothing finished: nothing more is created
    assert cluster.created == expected


def test_a_finished_pod_is_recorded_and_deleted(store: LocalStore) -> None:
    cluster, clock = FakeCluster(), Clock()
    runner = _runner(cluster, store, _body(), clock)
    runner.step()
    first = cluster.created[0]
    cluster.succeed(first, store)
    runner.step()
    engine = _engine(runner)
    assert engine.is_recorded(("r0000", 1))
    [result] = engine.recorded()
    assert (result.trial, result.status, result.mae) == ("r0000", "succeeded", pytest.approx(0.11))
    assert first in cluster.deleted and first not in cluster.pods
    # Its slot went to the next trial.
    assert cluster.created[-1] == pod_name(STUDY, "r0002", [1], 1)
    assert cluster.status["counts"]["succeeded"] == 1


def test_a_failed_pod_is_retried_only_when_its_backoff_is_due(store: LocalStore) -> None:
    cluster, clock = FakeCluster(), Clock()
    runner = _runner(cluster, store, _body(parallelism=1), clock)
    runner.step()
    first = pod_name(STUDY, "r0000", [1], 1)
    assert cluster.created == [first]
    cluster.fail(first)
    runner.step()
    engine = _engine(runner)
    assert not engine.is_recorded(("r0000", 1)), "a failure the policy retries is not final"
    # The failed attempt is in the store before anything else happens (restarts rely on it).
    assert FailureRecords(store, STUDY).load()[("r0000", 1)][0] == 1
    assert engine.due_at(("r0000", 1)) == pytest.approx(clock.t + 30)
    assert any("retry 1 in 30s" in e[2] for e in cluster.events)
    # The waiting retry keeps its slot (as the operator always did): nothing else starts.
    assert cluster.created == [first]
    clock.t += 29
    runner.step()
    retry = pod_name(STUDY, "r0000", [1], 2)
    assert cluster.created == [first]
    clock.t += 1
    runner.step()
    assert cluster.created == [first, retry]
    cluster.succeed(retry, store)
    runner.step()
    assert engine.recorded()[0].status == "succeeded"


def test_backoff_doubles_with_each_attempt(store: LocalStore) -> None:
    cluster, clock = FakeCluster(), Clock()
    body = _body(parallelism=1, failurePolicy={"retries": 2, "maxFailedTrainings": 10})
    runner = _runner(cluster, store, body, clock)
    runner.step()
    cluster.fail(pod_name(STUDY, "r0000", [1], 1))
    runner.step()
    assert _engine(runner).due_at(("r0000", 1)) == pytest.approx(clock.t + 30)
    clock.t += 30
    runner.step()
    second = pod_name(STUDY, "r0000", [1], 2)
    assert cluster.created[-1] == second
    cluster.fail(second)
    runner.step()
    assert _engine(runner).due_at(("r0000", 1)) == pytest.approx(clock.t + 60)


def test_a_forbidden_pod_create_is_not_an_attempt(store: LocalStore) -> None:
    cluster, clock = FakeCluster(), Clock()
    cluster.refusals = [ApiException(status=403, reason="Forbidden")]
    runner = _runner(cluster, store, _body(parallelism=1), clock)
    runner.retry_s = 15.0
    runner.step()
    assert cluster.created == []
    allowed = runner.conditions.items["PodsAllowed"]
    assert (allowed["status"], allowed["reason"]) == ("False", "PodCreateForbidden")
    engine = _engine(runner)
    assert engine.recorded() == [] and engine.progress().failed == 0
    clock.t += 14
    runner.step()
    assert cluster.created == [], "tried again before retry_s"
    clock.t += 1
    runner.step()
    # The same training, the same attempt: the refusal charged nothing.
    assert cluster.created == [pod_name(STUDY, "r0000", [1], 1)]
    assert engine.attempt_of(("r0000", 1)) == 1
    assert runner.conditions.items["PodsAllowed"]["status"] == "True"


def test_an_invalid_pod_is_a_failed_attempt(store: LocalStore) -> None:
    """The other side of the taxonomy: the API refuses the pod itself (422)."""
    cluster, clock = FakeCluster(), Clock()
    cluster.refusals = [ApiException(status=422, reason="Invalid")]
    runner = _runner(cluster, store, _body(parallelism=1), clock)
    runner.step()
    engine = _engine(runner)
    assert engine.attempt_of(("r0000", 1)) == 1
    assert engine.due_at(("r0000", 1)) == pytest.approx(clock.t + 30)
    assert FailureRecords(store, STUDY).load()[("r0000", 1)][0] == 1


def test_a_create_whose_answer_was_lost_is_adopted_not_made_twice(store: LocalStore) -> None:
    cluster, clock = FakeCluster(), Clock()
    cluster.lose_answer = ApiException(status=503, reason="Service Unavailable")
    runner = _runner(cluster, store, _body(parallelism=1), clock)
    runner.step()  # the pod exists, the runner does not know it
    first = pod_name(STUDY, "r0000", [1], 1)
    assert cluster.created == [first] and first not in runner.pods
    runner.step()  # listed: adopted
    assert first in runner.pods
    cluster.succeed(first, store)
    clock.t += 10  # past the retry of the create
    runner.step()
    assert _engine(runner).is_recorded(("r0000", 1))
    assert cluster.create_calls.count(first) == 1
    assert [r.trial for r in _engine(runner).recorded()] == ["r0000"]


def test_resume_after_a_restart_adopts_the_pods_it_finds(store: LocalStore) -> None:
    cluster, clock = FakeCluster(), Clock()
    body = _body()
    before = _runner(cluster, store, body, clock)
    before.step()
    made = list(cluster.created)
    assert len(made) == 2
    cluster.succeed(made[0], store)  # finishes while no operator runs
    # The operator restarts: a new runner on the same cluster and store.
    after = _runner(cluster, store, body, clock)
    assert sorted(after.pods) == sorted(made)
    engine = _engine(after)
    assert engine.is_running(tasks_of(cluster.pods[made[1]])[0])
    after.step()
    # The finished pod is recorded from the store, the running one kept, neither made again.
    assert engine.is_recorded(("r0000", 1))
    assert made[0] in cluster.deleted
    assert cluster.created == [*made, pod_name(STUDY, "r0002", [1], 1)]
    assert cluster.create_calls == cluster.created, "an existing pod was created again"
    assert made[1] in after.pods
    assert [r.trial for r in engine.recorded()] == ["r0000"]


def test_resume_counts_the_attempts_in_the_failure_records(store: LocalStore) -> None:
    """A failed pod deleted while the operator was down: its stored failure is an attempt
    used, so the next pod is the next attempt (not attempt 1 again)."""
    cluster, clock = FakeCluster(), Clock()
    body = _body(parallelism=1)
    before = _runner(cluster, store, body, clock)
    before.step()
    first = pod_name(STUDY, "r0000", [1], 1)
    cluster.fail(first)
    before.step()  # a failed attempt, stored; its pod kept for debugging
    del cluster.pods[first]  # then deleted (by a user, a TTL) while no operator runs
    after = _runner(cluster, store, body, clock)
    after.step()
    assert cluster.created == [first, pod_name(STUDY, "r0000", [1], 2)]
    assert _engine(after).attempt_of(("r0000", 1)) == 2


def test_operational_spec_changes_apply_and_the_rest_is_refused(store: LocalStore) -> None:
    cluster, clock = FakeCluster(), Clock()
    body = _body(parallelism=1)
    runner = _runner(cluster, store, body, clock)
    runner.step()
    assert len(cluster.created) == 1
    body["spec"]["parallelism"] = 2
    runner.step()
    assert len(cluster.created) == 2
    applied = runner.conditions.items["SpecChangeRefused"]
    assert (applied["status"], applied["reason"]) == ("False", "ChangesApplied")
    body["spec"]["randomStage"]["seed"] = 9
    runner.step()
    refused = runner.conditions.items["SpecChangeRefused"]
    assert (refused["status"], refused["reason"]) == ("True", "ImmutableField")
    assert "spec.randomStage.seed" in refused["message"]
    assert runner.session is not None and runner.session.study.spec.random_stage.seed == 1


def test_a_refused_change_undone_clears_spec_change_refused(store: LocalStore) -> None:
    cluster, clock = FakeCluster(), Clock()
    body = _body(parallelism=1)
    runner = _runner(cluster, store, body, clock)
    runner.step()
    accepted = cluster.status.get("acceptedSpec")
    body["spec"]["randomStage"]["seed"] = 9
    runner.step()
    assert runner.conditions.items["SpecChangeRefused"]["status"] == "True"
    refused_with = cluster.status.get("acceptedSpec")
    body["spec"]["randomStage"]["seed"] = 1  # put back as it was
    runner.step()
    cleared = runner.conditions.items["SpecChangeRefused"]
    assert (cleared["status"], cleared["reason"]) == ("False", "Reverted")
    # The spec it runs with (what a finished study compares a revert with).
    assert accepted and refused_with == accepted == cluster.status["acceptedSpec"]
    assert accepted["randomStage"]["seed"] == 1


def test_a_restart_goes_on_with_the_spec_it_ran_not_a_refused_change(store: LocalStore) -> None:
    """Before: a restarted loop took the spec as it then was, refused change and all (a new
    dataset or search space mid-study), while the condition still said it was refused."""
    cluster, clock = FakeCluster(), Clock()
    body = _body(parallelism=1)
    runner = _runner(cluster, store, body, clock)
    runner.step()
    body["spec"]["randomStage"]["seed"] = 9
    runner.step()
    assert runner.conditions.items["SpecChangeRefused"]["status"] == "True"
    body["status"] = copy.deepcopy(cluster.status)  # what the API server keeps
    restarted = _runner(cluster, store, body, clock)
    assert restarted.session is not None
    assert restarted.session.study.spec.random_stage.seed == 1
    restarted.step()
    refused = restarted.conditions.items["SpecChangeRefused"]
    assert refused["status"] == "True" and "spec.randomStage.seed" in refused["message"]
    body["spec"]["randomStage"]["seed"] = 1
    restarted.step()
    assert restarted.conditions.items["SpecChangeRefused"]["reason"] == "Reverted"


def test_the_study_as_recorded_keeps_its_identity_not_the_api_servers_bookkeeping(
    store: LocalStore,
) -> None:
    """The spec as run (study.yaml) and the ledger's Study sheet: name, namespace, uid and
    labels of the study, not its annotations (kubectl's whole last-applied copy),
    resourceVersion, managedFields or finalizers."""
    cluster, clock = FakeCluster(), Clock()
    body = _body()
    body["metadata"].update(
        uid="uid-1",
        labels={"team": "ml"},
        resourceVersion="4711",
        creationTimestamp="2026-01-01T00:00:00Z",
        finalizers=["kopf.zalando.org/KopfFinalizerMarker"],
        managedFields=[{"manager": "kubectl", "operation": "Apply"}],
        annotations={
            "kubectl.kubernetes.io/last-applied-configuration": json.dumps(body),
            "kopf.zalando.org/last-handled-configuration": "{}",
        },
    )
    runner = _runner(cluster, store, body, clock)
    runner._flush(force=True)
    as_run = yaml.safe_load(store.get_bytes(f"{STUDY}/study.yaml"))
    assert as_run["metadata"] == {
        "name": STUDY,
        "namespace": NS,
        "uid": "uid-1",
        "labels": {"team": "ml"},
    }
    book = openpyxl.load_workbook(store.root / STUDY / "ledger.xlsx")
    fields = [row[0] for row in book["Study"].iter_rows(min_row=2, values_only=True)]
    meta = sorted(f for f in fields if f.startswith("metadata."))
    assert meta == ["metadata.labels.team", "metadata.name", "metadata.namespace", "metadata.uid"]
    assert any(f.startswith("spec.") for f in fields)


def test_a_dataset_replaced_under_a_running_study_stalls_it_with_its_own_advice(
    store: LocalStore, tmp_path: Path
) -> None:
    """A restarted loop finds other data than its recorded trainings were trained on: it
    waits (Stalled, DatasetChanged) saying to restore the data or start a new study, not
    the advice for records of another study."""
    from hpo.kube.runner import Stalled

    data = tmp_path / "data.csv"
    shutil.copy(EXAMPLE_CSV, data)
    cluster, clock = FakeCluster(), Clock()
    body = _body()
    body["spec"]["dataset"]["path"] = str(data)
    runner = _runner(cluster, store, body, clock)
    runner.step()
    cluster.succeed(cluster.created[0], store)
    runner.step()
    runner.session.flush(force=True)  # type: ignore[union-attr]
    lines = data.read_text().splitlines()
    data.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # one row fewer
    body["status"] = copy.deepcopy(cluster.status)
    again = _unstarted(cluster, store, body, clock)
    with pytest.raises(Stalled) as stalled:
        again.start()
    assert (stalled.value.condition, stalled.value.reason) == ("DatasetReady", "DatasetChanged")
    assert "the data changed since this study started" in stalled.value.message
    assert "new study" in stalled.value.message and "place of its own" not in stalled.value.message


def test_a_status_an_older_operator_wrote_in_the_narrow_stage_resumes_under_the_new_name(
    store: LocalStore,
) -> None:
    """Before the rename the narrow stage's phase was ``BayesianSearch``: a study that ran
    across the upgrade is set up again (not taken for ended), its status then says
    ``NarrowSearch`` (``stage`` keeps the stored name), and ``hpo_studies`` counts it under
    the new name only (a sum over the phases stays one per study)."""
    cluster, clock = FakeCluster(), Clock()
    body = _body(bayesianStage={"topK": 1, "trialsPerConfig": 2}, parallelism=3)
    before = _runner(cluster, store, body, clock)
    before.step()
    for name in list(cluster.pods):
        cluster.succeed(name, store)
    before.step()  # the random stage recorded: the narrow stage starts
    assert _engine(before).phase == NARROW_STAGE
    assert cluster.status["phase"] == "NarrowSearch"
    assert ("Normal", "NarrowSearch", "narrow stage started") in cluster.events
    # What an older operator wrote for the same study.
    old = copy.deepcopy(cluster.status)
    old["phase"] = "BayesianSearch"
    for condition in old["conditions"]:
        if condition["type"] == "Progressing":
            condition["reason"] = "BayesianSearch"
    body["status"] = old
    after = _runner(cluster, store, body, clock)
    assert _engine(after).phase == NARROW_STAGE
    after.step()
    status = cluster.status
    assert (status["phase"], status["stage"]) == ("NarrowSearch", NARROW_STAGE)
    progressing = after.conditions.items["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("True", "NarrowSearch")
    # A status read back with the old name (as at an operator start) counts the same.
    metrics.finished(NS, "older", {"phase": "BayesianSearch"})
    lines = generate_latest(REGISTRY).decode().splitlines()
    gauges = [line for line in lines if line.startswith("hpo_studies{") and 'study="older"' in line]
    assert f'hpo_studies{{namespace="{NS}",phase="NarrowSearch",study="older"}} 1.0' in gauges
    assert not any('phase="BayesianSearch"' in line for line in lines)
    assert sum(float(line.rsplit(" ", 1)[1]) for line in gauges) == 1.0
    metrics.forget(NS, "older")


def _disrupt(cluster: FakeCluster, name: str) -> None:
    """Kueue preempts the pod (its ``DisruptionTarget`` condition)."""
    cluster.pods[name]["status"] = {
        "phase": "Running",
        "conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByKueue"}
        ],
    }


def test_a_restart_goes_on_counting_the_disruptions_of_adopted_pods(store: LocalStore) -> None:
    """Before: the pods adopted at startup lost their disruption count, so
    ``trainer.maxDisruptions`` began again from 0 after each operator restart."""
    cluster, clock = FakeCluster(), Clock()
    body = _body(parallelism=1, trainer={"retryBackoffSeconds": 30, "maxDisruptions": 1})
    before = _runner(cluster, store, body, clock)
    before.step()
    first = pod_name(STUDY, "r0000", [1], 1)
    _disrupt(cluster, first)
    before.step()  # deleted
    before.step()  # gone: requeued (disruption 1 of at most 1), its pod made again
    again = cluster.pods[first]["metadata"]["annotations"]
    assert again["hpo-operator.dev/disruptions"] == "1"
    # The operator restarts; the new pod is adopted at startup and disrupted once more.
    after = _runner(cluster, store, body, clock)
    assert first in after.pods
    _disrupt(cluster, first)
    after.step()
    after.step()
    # Past the cap: a failed attempt (retried after its backoff), not requeued once more.
    failed = [m for kind, reason, m in cluster.events if reason == "TrainingFailed"]
    assert len(failed) == 1, cluster.events
    assert "disrupted 2 times, more than trainer.maxDisruptions (1)" in failed[0]
    assert "requeued 2x" in failed[0]


@pytest.mark.parametrize(
    ("trainer", "requeued"),
    [({}, False), ({"maxDisruptions": 1}, True)],
    ids=["cluster-default", "study-own-wins"],
)
def test_the_clusters_disruption_cap_applies_where_the_study_sets_none(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, trainer: dict[str, Any], requeued: bool
) -> None:
    """trainerDefaults.maxDisruptions (HPO_TRAINER_MAX_DISRUPTIONS, here 0: the first
    disruption is a failed attempt) caps a study without trainer.maxDisruptions only."""
    monkeypatch.setenv("HPO_TRAINER_MAX_DISRUPTIONS", "0")
    cluster, clock = FakeCluster(), Clock()
    body = _body(parallelism=1, trainer={"retryBackoffSeconds": 30, **trainer})
    runner = _runner(cluster, store, body, clock)
    runner.step()
    first = pod_name(STUDY, "r0000", [1], 1)
    _disrupt(cluster, first)
    runner.step()  # deleted
    runner.step()  # gone: requeued, or past the cap a failed attempt
    failed = [m for kind, reason, m in cluster.events if reason == "TrainingFailed"]
    if requeued:
        assert not failed, cluster.events
        assert cluster.pods[first]["metadata"]["annotations"]["hpo-operator.dev/disruptions"] == "1"
    else:
        assert len(failed) == 1, cluster.events
        assert "more than the operator's trainerDefaults.maxDisruptions (0)" in failed[0]


@pytest.mark.parametrize(
    ("trainer", "too_long"),
    [({}, True), ({"maxQueueSeconds": 86400}, False)],
    ids=["cluster-default", "study-own-wins"],
)
def test_the_clusters_queue_limit_applies_where_the_study_sets_none(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, trainer: dict[str, Any], too_long: bool
) -> None:
    """trainerDefaults.maxQueueSeconds (HPO_TRAINER_MAX_QUEUE_SECONDS) sets QueuedTooLong
    for a study without trainer.maxQueueSeconds; the study's own limit wins."""
    monkeypatch.setenv("HPO_TRAINER_MAX_QUEUE_SECONDS", "3600")
    cluster, clock = FakeCluster(), Clock()
    body = _body(parallelism=1, trainer={"retryBackoffSeconds": 30, **trainer})
    runner = _runner(cluster, store, body, clock)
    runner.step()
    first = pod_name(STUDY, "r0000", [1], 1)
    pod = cluster.pods[first]
    pod["metadata"]["creationTimestamp"] = _stamp(2 * 3600)  # waiting for two hours
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    pod["status"] = {"phase": "Pending", "conditions": [unschedulable]}
    runner.step()
    queued = runner.conditions.items.get("QueuedTooLong") or {}
    if too_long:
        assert queued.get("status") == "True", runner.conditions.items
        assert (
            "longer than the operator's trainerDefaults.maxQueueSeconds (3600s)"
            in queued["message"]
        )
    else:
        assert queued.get("status") != "True", runner.conditions.items
    assert not [e for e in cluster.events if e[1] == "TrainingFailed"]  # never a failure


def test_a_pod_of_a_lost_node_is_force_deleted_once_past_its_deadline(store: LocalStore) -> None:
    """Before: a disrupted pod on an unreachable node stayed Terminating (its kubelet never
    confirms), holding its training's pod name and slot forever. Within its grace period
    it is left alone (a working kubelet may still be stopping it: never twice at once)."""
    cluster, clock = FakeCluster(), Clock()
    runner = _runner(cluster, store, _body(parallelism=1), clock)
    runner.step()
    first = pod_name(STUDY, "r0000", [1], 1)
    cluster.lost.add(first)
    _disrupt(cluster, first)
    runner.step()  # deleted gracefully: it stays, Terminating
    assert first in cluster.pods and cluster.pods[first]["metadata"]["deletionTimestamp"]
    runner.step()
    assert cluster.forced == [] and cluster.create_calls == [first]
    cluster.pods[first]["metadata"]["deletionTimestamp"] = _stamp(60)  # its grace long over
    runner.step()  # forced
    assert cluster.forced == [first]
    runner.step()  # gone: its training runs again, not as an attempt
    assert cluster.create_calls == [first, first]
    assert cluster.pods[first]["metadata"]["annotations"]["hpo-operator.dev/disruptions"] == "1"
    assert _engine(runner).attempt_of(("r0000", 1)) == 1
