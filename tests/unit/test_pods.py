"""Trainer pods as manifests: names, labels, ownership, security, and reading them back."""

from __future__ import annotations

import json
import re

from helpers.study import s3_storage, study_dict
from hpo.engine import Engine
from hpo.kube.pods import (
    ANN_REQUEST,
    LABEL_SEED,
    LABEL_STAGE,
    LABEL_STUDY,
    LABEL_TRIAL,
    build_pod,
    group_tasks,
    pod_name,
    results_of,
    tasks_of,
)
from hpo.store import StoreRef
from hpo.study.contract import DatasetRef, SeedResult, TrainingOptions, TrainingRequest
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
