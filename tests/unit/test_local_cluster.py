"""The local-cluster install (README "On a cluster", examples/kind/): the chart renders and
lints with examples/kind/values.yaml, and the names the steps rely on agree with what the
chart renders, what `make images` tags and what the example study names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from helpers.chart import CHART, KUBE_VERSION, MANIFESTS, NAMESPACE, load_all, render
from helpers.study import REPO
from hpo.study.spec import Trainer, parse_study
from support.podsecurity import restricted_violations, writable_roots

KIND = REPO / "examples" / "kind"


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load((KIND / "values.yaml").read_text())


@pytest.fixture(scope="module")
def objects(values: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    with helm.Chart.load(CHART) as chart:
        yield render(chart, values)


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _make_default(name: str) -> str:
    match = re.search(rf"^{name} \?= (.+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, name
    return match.group(1).strip()


def test_the_values_lint_and_render_valid_objects(
    values: dict[str, Any], objects: list[dict[str, Any]]
) -> None:
    report = helm.lint(
        CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}.0"
    )
    assert report["errors"] == [] and not [m for m in report["messages"] if m["severity"] >= 2]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {
        ("Deployment", "hpo-operator"),
        ("Deployment", "hpo-operator-minio"),
        ("Service", "hpo-operator-minio"),
        ("Secret", "hpo-operator-minio"),
        ("Service", "hpo-operator-metrics"),
    } <= kinds


def test_the_operator_runs_the_image_make_images_tags(objects: list[dict[str, Any]]) -> None:
    deployment = _one(objects, "Deployment", "hpo-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    repo = _make_default("IMAGE_REPO")
    assert container["image"] == f"{repo}/operator:{version}"
    assert container["imagePullPolicy"] == "IfNotPresent"  # a loaded image is not pulled
    # The trainer image the example study runs (the CRD's default) is the other one tagged.
    assert Trainer().image == f"{repo}/trainer:{version}"


def test_the_dataset_job_uses_the_charts_minio_and_is_restricted(
    objects: list[dict[str, Any]],
) -> None:
    (job,) = load_all((KIND / "dataset-job.yaml").read_text())
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    assert job["metadata"]["namespace"] == NAMESPACE
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == [] and writable_roots(pod) == []
    (container,) = pod["containers"]
    assert container["image"] == Trainer().image
    secret = _one(objects, "Secret", "hpo-operator-minio")
    for env in container["env"]:
        ref = env["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["data"]
    service = _one(objects, "Service", "hpo-operator-minio")
    port = service["spec"]["ports"][0]["port"]
    assert f'Minio("{service["metadata"]["name"]}:{port}"' in container["args"][0]
    assert "/data/transistor.csv" in container["args"][0]


def test_the_example_study_reaches_the_charts_minio(objects: list[dict[str, Any]]) -> None:
    study = parse_study(yaml.safe_load((MANIFESTS / "example-study.yaml").read_text()))
    service = _one(objects, "Service", "hpo-operator-minio")
    port = service["spec"]["ports"][0]["port"]
    assert study.spec.storage.endpoint == f"hpo-operator-minio.{NAMESPACE}.svc:{port}"
    assert study.spec.storage.tls is False
    assert study.spec.dataset.path == "s3://datasets/transistor.csv"
    script = (KIND / "example.sh").read_text()
    assert "--from-file=examples/data/transistor.csv" in script
    assert f"secret generic {study.spec.storage.credentials_secret.name}" in script
