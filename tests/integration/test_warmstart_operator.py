"""Warm start on a cluster: the operator reads the source study from the store (a real S3
server), with synthetic trainer pods answered at once by the test kubelet."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.operator import (
    OperatorStudy,
    conditions,
    create,
    finished,
    kubelet,
    ledger_rows,
    operator,
    pods,
    results_bucket,
    study,
    study_body,
    synthetic,
    wait_for,
)
from hpo.kube.pods import tasks_of
from support.kube.server import KubeServer
from support.s3server import S3Server

#: Two configurations of two seeds, no narrow stage: four trainings.
SMALL: dict[str, Any] = {"randomStage": {"configurations": 2}, "bayesianStage": {"enabled": False}}


def test_a_study_warm_started_from_another_in_its_bucket_trains_none_of_its_trainings(
    kube: KubeServer, s3_server: S3Server, dataset: str
) -> None:
    bucket = results_bucket()
    trained: list[tuple[str, int]] = []

    def result(pod: dict[str, Any]) -> tuple[int, str]:
        trained.extend((t.trial.config_key, t.seed) for t in tasks_of(pod))
        return answer(pod)

    answer = synthetic(s3_server, bucket, delay_s=0.0)
    with kubelet(kube, behaviour=lambda pod: "instant", result=result), operator(kube):
        create(kube, study_body("source", s3_server, dataset, bucket, **SMALL))
        assert finished(kube, "source", timeout=300)["status"]["phase"] == "Succeeded"
        before = {(r.config_key, r.seed) for r in ledger_rows(s3_server, bucket, "source")}
        trained.clear()
        warm = study_body(
            "warm", s3_server, dataset, bucket, **SMALL, warmStart={"studies": ["source"]}
        )
        create(kube, warm)
        obj = finished(kube, "warm", timeout=300)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert len(before) == 4 and len(trained) == 4 and not before & set(trained)
    rows = ledger_rows(s3_server, bucket, "warm")
    taken = [r for r in rows if r.source is not None]
    assert {(r.config_key, r.seed) for r in taken} == before
    assert {r.source for r in taken} == {f"s3://{bucket}/hpo/default/source"}
    cond = conditions(obj)["WarmStartReady"]
    assert cond["status"] == "True" and cond["message"].startswith("4 trainings counted")


def _refused(kube: KubeServer, s: OperatorStudy) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the study under an operator until it has a WarmStartReady condition: that
    condition, and the study then."""
    with (
        kubelet(kube, behaviour=lambda pod: "instant", result=s.trainer()),
        operator(kube),
    ):
        s.create()
        cond = wait_for(lambda: conditions(study(kube, s.name)).get("WarmStartReady"), timeout=300)
        return cond, study(kube, s.name)


def test_a_missing_source_stalls_the_study_with_a_condition_and_writes_nothing(
    kube: KubeServer, new_study: Callable[..., OperatorStudy]
) -> None:
    name = "warm-from-nothing"
    s = new_study(name, **SMALL, warmStart={"studies": ["never-ran"]})
    cond, obj = _refused(kube, s)
    assert cond["status"] == "False" and cond["reason"] == "InvalidWarmStart", cond
    assert "spec.warmStart.studies: never-ran: no study there" in cond["message"]
    assert f"s3://{s.bucket}/hpo/default/never-ran/study.yaml does not exist" in cond["message"]
    assert obj["status"]["phase"] == "Pending"
    assert conditions(obj)["Stalled"]["status"] == "True"
    assert not pods(kube, name)
    assert list(s.results().list(name)) == []


def test_a_folder_source_is_refused_by_the_operator_though_it_exists_there(
    kube: KubeServer, new_study: Callable[..., OperatorStudy], tmp_path: Path
) -> None:
    """A folder would be one of the operator pod's own filesystem: not a source."""
    name = "warm-from-folder"
    folder = tmp_path / "source"
    folder.mkdir()
    s = new_study(name, **SMALL, warmStart={"studies": [str(folder)]})
    cond, obj = _refused(kube, s)
    assert cond["status"] == "False" and cond["reason"] == "InvalidWarmStart", cond
    assert (
        f"spec.warmStart.studies: {folder}: a folder cannot be a source on a cluster"
        in (cond["message"])
    )
    assert conditions(obj)["Stalled"]["status"] == "True"
    assert not pods(kube, name)
