"""The CRD is generated from the spec model and enforces the same bounds."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml

from helpers.study import REPO
from hpo.kube.crd import crd


def test_manifest_is_the_current_output_of_hpo_crd() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hpo.cli", "crd"], capture_output=True, text=True, check=True
    )
    assert (REPO / "manifests" / "crd.yaml").read_text() == out.stdout, (
        "run: hpo crd > manifests/crd.yaml"
    )


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        if "type" in node or "properties" in node:
            out.append((path, node))
        for k, v in node.get("properties", {}).items():
            out += _walk(v, f"{path}.{k}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural() -> None:
    version = crd()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        assert "type" in node, f"{path} has no type"
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path
    assert version["subresources"] == {"status": {}}
    names = crd()["spec"]["names"]
    assert names["shortNames"] == ["hpo", "hpos"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Stage", "Trainings", "Running", "Best MAE", "Age"]


def test_bounds_match_the_python_validation() -> None:
    spec = yaml.safe_load((REPO / "manifests" / "crd.yaml").read_text())["spec"]["versions"][0]
    props = spec["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    neurons = props["searchSpace"]["properties"]["neurons"]["properties"]
    assert (neurons["min"]["minimum"], neurons["min"]["maximum"]) == (1, 4096)
    seeds = props["training"]["properties"]["seedsPerConfig"]
    assert (seeds["minimum"], seeds["maximum"]) == (1, 100)
    test_size = props["dataset"]["properties"]["testSize"]
    assert test_size["exclusiveMinimum"] is True and test_size["exclusiveMaximum"] is True
    assert props["dataset"]["required"] == ["path", "labels"]
    assert props["bayesianStage"]["properties"]["selection"]["enum"] == ["perDepth", "overall"]
    assert props["storage"]["properties"]["type"]["enum"] == ["local", "s3"]
    assert (
        props["trainer"]["properties"]["resources"]["x-kubernetes-preserve-unknown-fields"] is True
    )


def test_the_api_server_refuses_bad_queue_priority_and_scheduler_names() -> None:
    """The CRD's own copy of the trainer's scheduling rules (the spec's, tests/unit/test_spec.py)."""
    props = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    trainer = props["properties"]["trainer"]["properties"]
    subdomain = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    assert (trainer["queueName"]["pattern"], trainer["queueName"]["maxLength"]) == (subdomain, 63)
    for name in ("priorityClassName", "schedulerName"):
        assert (trainer[name]["pattern"], trainer[name]["maxLength"]) == (subdomain, 253)
    labels = trainer["podLabels"]
    assert labels["maxProperties"] == 64
    assert labels["additionalProperties"]["maxLength"] == 63
    assert labels["additionalProperties"]["pattern"] == (
        r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
    )
    assert trainer["podAnnotations"]["maxProperties"] == 64
