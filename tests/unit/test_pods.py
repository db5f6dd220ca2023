"""Trainer pods as manifests: names, labels, ownership, security, and reading them back."""

from __future__ import annotations

import json
import re

import pytest

from helpers.study import s3_storage, study_dict
from hpo.engine import Engine
from hpo.kube.pods import (
    ANN_REQUEST,
    DEFAULT_GPU_IMAGE,
    DEFAULT_IMAGE,
    LABEL_SEED,
    LABEL_STAGE,
    LABEL_STUDY,
    LABEL_TRIAL,
    PodDefaults,
    build_pod,
    group_tasks,
    pod_name,
    results_of,
    tasks_of,
)
from hpo.store import StoreRef
from hpo.study.contract import (
    GPUS_ENV,
    DatasetRef,
    SeedResult,
    TrainingOptions,
    TrainingRequest,
)
from hpo.study.spec import parse_study, refused_changes

DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _spec(**kw: object):
    raw = study_dict(
        storage=s3_storage(credentialsSecret={"name": "creds"}),
        trainer={
            "image": "example/trainer:1",
            "nodeSelector": {"pool": "cpu"},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "serviceAccountName": "trainer",
            "env": [{"name": "EXTRA", "value": "1"}],
        },
        **kw,
    )
    return parse_study(raw).spec


def _request(seeds: list[int]) -> TrainingRequest:
    return TrainingRequest(
        study="demo",
        trial="r0003",
        stage="random",
        config={
            "hidden_layers": 1,
            "neurons": [8],
            "activation": "relu",
            "learning_rate": 0.01,
            "batch_size": 32,
            "optimizer": "adam",
        },
        config_key="L1|8|relu|lr=0.01|bs=32|adam",
        seeds=seeds,
        dataset=DatasetRef(path="s3://d/x.csv", features=["a"], labels=["b"]),
        training=TrainingOptions(),
        output_prefix="demo/trials/r0003",
        store=StoreRef(kind="s3", endpoint="minio:9000", bucket="hpo", prefix="hpo/ns"),
    )


def test_names_are_deterministic_dns_labels_of_at_most_63() -> None:
    assert pod_name("demo", "r0003", [1], 1) == "demo-r0003-s1-a1"
    long = pod_name("a" * 60, "b0012", [1, 2, 3], 2)
    assert len(long) <= 63 and DNS.match(long)
    assert long == pod_name("a" * 60, "b0012", [1, 2, 3], 2)
    assert long != pod_name("a" * 60, "b0012", [1, 2, 3], 3)


def test_pod_manifest() -> None:
    spec = _spec()
    pod = build_pod(
        study="demo",
        namespace="ns",
        owner_uid="uid-1",
        spec=spec,
        request=_request([1, 2]),
        attempt=1,
    )
    meta = pod["metadata"]
    assert meta["name"] == "demo-r0003-s1-2-a1"
    assert meta["labels"][LABEL_STUDY] == "demo" and meta["labels"][LABEL_STAGE] == "random"
    assert meta["labels"][LABEL_TRIAL] == "r0003" and meta["labels"][LABEL_SEED] == "1-2"
    assert meta["annotations"]["sidecar.istio.io/inject"] == "false"
    assert (
        meta["ownerReferences"][0]["uid"] == "uid-1"
        and meta["ownerReferences"][0]["controller"] is True
    )
    ps = pod["spec"]
    assert ps["restartPolicy"] == "Never"
    assert ps["nodeSelector"] == {"pool": "cpu"} and ps["serviceAccountName"] == "trainer"
    assert ps["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    (c,) = ps["containers"]
    assert c["image"] == "example/trainer:1"
    assert c["command"] == ["python", "-m", "hpo_trainer"]
    request = json.loads(c["args"][c["args"].index("--request") + 1])
    assert request["seeds"] == [1, 2] and request["store"]["bucket"] == "hpo"
    env = {e["name"]: e for e in c["env"]}
    assert env["HPO_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "creds",
        "key": "secretKey",
    }
    assert env["EXTRA"]["value"] == "1"
    assert "value" not in env["HPO_S3_SECRET_KEY"]  # the pod spec never holds the secret itself


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = build_pod(
        study="demo", namespace="ns", owner_uid="u", spec=_spec(), request=_request([1]), attempt=1
    )
    ps = pod["spec"]
    assert ps["securityContext"]["runAsNonRoot"] is True
    assert ps["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert not ps.get("hostNetwork") and not ps.get("hostPID") and not ps.get("hostIPC")
    for c in ps["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc.get("privileged")
    for v in ps["volumes"]:
        assert set(v) <= {
            "name",
            "emptyDir",
            "configMap",
            "secret",
            "projected",
            "persistentVolumeClaim",
        }


def test_tasks_round_trip_through_the_pod() -> None:
    # Every seed at once (seed racing would give each configuration its first seed only).
    spec = _spec(training={"seedsPerConfig": 3, "seedRacing": False})
    engine = Engine(spec)
    tasks = engine.next_tasks(6)
    groups = group_tasks(tasks, 2)
    assert [len(g) for g in groups] == [2, 1, 2, 1]
    assert all(len({t.trial.id for t in g}) == 1 for g in groups)
    g = groups[0]
    req = _request([t.seed for t in g])
    req = TrainingRequest(
        **{
            **req.__dict__,
            "trial": g[0].trial.id,
            "config": g[0].trial.config,
            "config_key": g[0].trial.config_key,
        }
    )
    pod = build_pod(study="demo", namespace="ns", owner_uid="u", spec=spec, request=req, attempt=1)
    assert [(t.trial.id, t.seed, t.attempt) for t in tasks_of(pod)] == [
        (t.trial.id, t.seed, 1) for t in g
    ]
    assert (
        json.loads(pod["metadata"]["annotations"][ANN_REQUEST])["config_key"]
        == g[0].trial.config_key
    )


def _finished(pod: dict, phase: str, **terminated: object) -> dict:
    pod = json.loads(json.dumps(pod))
    pod["status"] = {
        "phase": phase,
        "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}],
    }
    return pod


def test_results_of_finished_pods() -> None:
    base = build_pod(
        study="demo",
        namespace="ns",
        owner_uid="u",
        spec=_spec(),
        request=_request([1, 2]),
        attempt=1,
    )
    ok = SeedResult(
        study="demo",
        trial="r0003",
        stage="random",
        parent=None,
        config={},
        config_key="k",
        seed=1,
        status="succeeded",
        mae=0.1,
    )
    message = json.dumps(
        [
            {"seed": 1, "status": "succeeded"},
            {"seed": 2, "status": "failed", "error": "ValueError: boom"},
        ]
    )
    rs = results_of(
        _finished(base, "Failed", exitCode=1, reason="Error", message=message),
        "demo",
        {1: ok, 2: None},
    )
    assert rs[0] is ok
    assert rs[1].status == "failed" and rs[1].error == "ValueError: boom"
    oom = results_of(
        _finished(base, "Failed", exitCode=137, reason="OOMKilled"), "demo", {1: None, 2: None}
    )
    assert all("OOMKilled" in r.error for r in oom)
    crash = results_of(
        _finished(
            base, "Failed", exitCode=3, reason="Error", message="Traceback...\nImportError: no tf"
        ),
        "demo",
        {},
    )
    assert crash[0].error == "trainer failed (Error, exit code 3): ImportError: no tf"


def test_only_operational_fields_may_change_while_running() -> None:
    old = {
        "parallelism": 2,
        "searchSpace": {"neurons": {"min": 8}},
        "dataset": {"path": "a"},
        "failurePolicy": {"retries": 1},
    }
    new = {
        "parallelism": 5,
        "searchSpace": {"neurons": {"min": 8}},
        "dataset": {"path": "a"},
        "failurePolicy": {"retries": 3},
    }
    assert refused_changes(old, new) == []
    new2 = {**new, "searchSpace": {"neurons": {"min": 16}}, "dataset": {"path": "b"}}
    assert refused_changes(old, new2) == ["spec.dataset.path", "spec.searchSpace.neurons.min"]


def test_trainer_pod_passes_the_same_restricted_checker_as_the_chart() -> None:
    from support.podsecurity import restricted_violations, writable_roots

    pod = build_pod(
        study="demo", namespace="ns", owner_uid="u", spec=_spec(), request=_request([1]), attempt=1
    )
    assert restricted_violations(pod["spec"]) == []
    # A read-only root: what the trainer writes goes to the pod's volumes only (the image
    # test, tests/images, trains a real request in the image this way).
    assert writable_roots(pod["spec"]) == []
    (c,) = pod["spec"]["containers"]
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp"]
    del c["securityContext"]["readOnlyRootFilesystem"]
    assert writable_roots(pod["spec"]) == ["trainer: readOnlyRootFilesystem is not true"]


def _pod(spec_kw: dict[str, object] | None = None, defaults: PodDefaults | None = None) -> dict:
    raw = study_dict(trainer=spec_kw or {})
    return build_pod(
        study="demo",
        namespace="ns",
        owner_uid="u",
        spec=parse_study(raw).spec,
        request=_request([1]),
        attempt=1,
        defaults=defaults or PodDefaults(),
    )


def test_queue_priority_scheduler_labels_and_annotations_reach_the_pod() -> None:
    pod = _pod(
        {
            "queueName": "team-a",
            "priorityClassName": "research",
            "schedulerName": "volcano",
            "podLabels": {"example.com/team": "a"},
            "podAnnotations": {"scheduling.volcano.sh/queue-name": "research"},
        }
    )
    meta, ps = pod["metadata"], pod["spec"]
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert meta["labels"]["example.com/team"] == "a"
    assert meta["annotations"]["scheduling.volcano.sh/queue-name"] == "research"
    assert (ps["priorityClassName"], ps["schedulerName"]) == ("research", "volcano")
    # the operator's own labels and annotations are all still there
    assert meta["labels"][LABEL_STUDY] == "demo" and ANN_REQUEST in meta["annotations"]
    assert meta["annotations"]["sidecar.istio.io/inject"] == "false"
    from support.podsecurity import restricted_violations

    assert restricted_violations(ps) == []


def test_without_settings_the_pod_has_no_queue_priority_or_scheduler() -> None:
    pod = _pod()
    assert "kueue.x-k8s.io/queue-name" not in pod["metadata"]["labels"]
    assert "priorityClassName" not in pod["spec"] and "schedulerName" not in pod["spec"]


def test_cluster_defaults_fill_in_what_the_study_leaves_unset() -> None:
    defaults = PodDefaults.from_env(
        {
            "HPO_TRAINER_QUEUE_NAME": "shared",
            "HPO_TRAINER_PRIORITY_CLASS_NAME": "low",
            "HPO_TRAINER_SCHEDULER_NAME": "volcano",
            "HPO_TRAINER_POD_LABELS": '{"team": "platform", "cost-center": "42"}',
            "HPO_TRAINER_POD_ANNOTATIONS": '{"scheduling.volcano.sh/queue-name": "shared"}',
        }
    )
    unset = _pod(defaults=defaults)
    assert unset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "shared"
    assert unset["metadata"]["labels"]["team"] == "platform"
    assert unset["spec"]["priorityClassName"] == "low"
    assert unset["spec"]["schedulerName"] == "volcano"
    own = _pod({"queueName": "mine", "podLabels": {"team": "ml"}}, defaults=defaults)
    labels = own["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "mine"  # the study's own wins
    assert (labels["team"], labels["cost-center"]) == ("ml", "42")  # merged per key
    assert own["metadata"]["annotations"]["scheduling.volcano.sh/queue-name"] == "shared"


def test_build_pod_reads_the_defaults_from_the_operators_environment(monkeypatch) -> None:
    monkeypatch.setenv("HPO_TRAINER_QUEUE_NAME", "from-env")
    pod = build_pod(
        study="demo", namespace="ns", owner_uid="u", spec=_spec(), request=_request([1]), attempt=1
    )
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "from-env"


def test_cluster_waiting_limits_apply_where_the_study_sets_none() -> None:
    """trainerDefaults' maxQueueSeconds and maxDisruptions: the study's own value wins (0
    too), unset falls back to the cluster's, and without either to no limit and 5."""
    trainer = _spec().trainer
    assert (trainer.max_queue_seconds, trainer.max_disruptions) == (None, None)
    none = PodDefaults.from_env({})
    assert (none.queue_limit(trainer), none.disruption_cap(trainer)) == (None, 5)
    cluster = PodDefaults.from_env(
        {"HPO_TRAINER_MAX_QUEUE_SECONDS": "3600", "HPO_TRAINER_MAX_DISRUPTIONS": "2"}
    )
    assert (cluster.max_queue_seconds, cluster.max_disruptions) == (3600, 2)
    assert (cluster.queue_limit(trainer), cluster.disruption_cap(trainer)) == (3600, 2)
    own = parse_study(study_dict(trainer={"maxQueueSeconds": 60, "maxDisruptions": 0})).spec.trainer
    assert (cluster.queue_limit(own), cluster.disruption_cap(own)) == (60, 0)
    assert PodDefaults.from_env({"HPO_TRAINER_MAX_DISRUPTIONS": "0"}).disruption_cap(trainer) == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"HPO_TRAINER_MAX_DISRUPTIONS": "-1"},
            "HPO_TRAINER_MAX_DISRUPTIONS: Input should be greater than or equal to 0 (got '-1')",
        ),
        (
            {"HPO_TRAINER_MAX_DISRUPTIONS": "two"},
            "HPO_TRAINER_MAX_DISRUPTIONS: not a whole number: 'two'",
        ),
        (
            {"HPO_TRAINER_MAX_QUEUE_SECONDS": "1.5"},
            "HPO_TRAINER_MAX_QUEUE_SECONDS: not a whole number: '1.5'",
        ),
        (
            {"HPO_TRAINER_MAX_QUEUE_SECONDS": "0"},
            "HPO_TRAINER_MAX_QUEUE_SECONDS: Input should be greater than or equal to 1 (got '0')",
        ),
        (
            {"HPO_TRAINER_MAX_QUEUE_SECONDS": "2592001"},
            "HPO_TRAINER_MAX_QUEUE_SECONDS: Input should be less than or equal to 2592000",
        ),
        ({"HPO_TRAINER_QUEUE_NAME": "Team_A"}, "HPO_TRAINER_QUEUE_NAME: String should match"),
        ({"HPO_TRAINER_SCHEDULER_NAME": "a b"}, "HPO_TRAINER_SCHEDULER_NAME: String should"),
        ({"HPO_TRAINER_POD_LABELS": "team=a"}, "HPO_TRAINER_POD_LABELS: not a JSON object"),
        (
            {"HPO_TRAINER_POD_LABELS": '{"hpo-operator.dev/study": "x"}'},
            "HPO_TRAINER_POD_LABELS: label 'hpo-operator.dev/study' cannot be set here",
        ),
    ],
)
def test_wrong_cluster_defaults_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PodDefaults.from_env(env)


def test_a_gpu_pod_tells_the_trainer_and_gets_the_gpu_image() -> None:
    gpu = {"limits": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": 1}}
    pod = _pod({"resources": gpu, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]})
    (c,) = pod["spec"]["containers"]
    assert {"name": GPUS_ENV, "value": "1"} in c["env"]
    assert c["image"] == DEFAULT_GPU_IMAGE == DEFAULT_IMAGE + "-gpu"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    own_image = _pod({"resources": gpu, "image": "example/trainer:cuda"})
    assert own_image["spec"]["containers"][0]["image"] == "example/trainer:cuda"
    (cpu,) = _pod()["spec"]["containers"]
    assert cpu["image"] == DEFAULT_IMAGE and GPUS_ENV not in {e["name"] for e in cpu["env"]}


@pytest.mark.parametrize(
    ("var", "value"),
    [("HPO_TRAINER_PRIORITY_CLASS_NAME", "High_Priority"), ("HPO_TRAINER_MAX_DISRUPTIONS", "-1")],
)
def test_the_operator_refuses_to_start_with_a_wrong_cluster_default(
    monkeypatch, var: str, value: str
) -> None:
    """A wrong trainerDefaults value stops `hpo operator` at once, naming the variable,
    rather than failing every pod it would build."""
    from hpo.kube.operator import run_operator

    monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit, match=f"hpo operator: {var}: "):
        run_operator(
            namespaces=[],
            liveness="",
            liveness_window_s=60,
            json_logs=False,
            poll_s=1,
            metrics_port=0,
            verbose=False,
        )
