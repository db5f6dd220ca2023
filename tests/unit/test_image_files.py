"""What the images are built from (the images themselves: tests/images, `make image-test`):
the requirement files are current with pyproject.toml and the trainer's imports, and the
operator image exposes the ports the operator listens on."""

from __future__ import annotations

import fnmatch
import inspect
import re
from types import ModuleType

import pytest
import yaml

from helpers.scripts import load_script
from helpers.study import REPO
from hpo.cli import cluster


def _generator() -> ModuleType:
    return load_script(REPO / "images" / "requirements.py")


def test_requirement_files_are_current() -> None:
    generator = _generator()
    for image, text in generator.render().items():
        assert generator.OUT[image].read_text() == text, (
            f"{generator.OUT[image].relative_to(REPO)} is not current: "
            "run .venv/bin/python images/requirements.py"
        )


def test_the_trainer_gets_what_it_imports_and_nothing_of_the_operator() -> None:
    generator = _generator()
    names = {re.split(r"[=;]", line)[0] for line in generator.requirements()}
    assert {"tensorflow-cpu", "tensorflow", "minio", "numpy", "pandas"} <= names
    assert not names & {
        "kopf",
        "kubernetes",
        "prometheus-client",
        "scikit-optimize",
        "matplotlib",
        "openpyxl",
        "typer",
        "rich",
        # the spec model stays on the operator's side: the trainer reads only the contract
        "pydantic",
        "pyyaml",
    }
    imports = generator.trainer_imports()
    assert {"tensorflow", "minio", "pandas"} <= set(imports)
    assert "kopf" not in imports and "kubernetes" not in imports


def test_an_unpinned_import_of_the_trainer_is_named() -> None:
    generator = _generator()
    imports = {**generator.trainer_imports(), "hypothesis": {"hpo_trainer.model"}}
    with pytest.raises(LookupError, match=re.escape("hypothesis (imported by hpo_trainer.model)")):
        generator.requirements(imports)


def _default(command: object, parameter: str) -> object:
    return inspect.signature(command).parameters[parameter].default


def test_the_operator_image_exposes_its_ports() -> None:
    exposed = re.findall(r"^EXPOSE (.+)$", (REPO / "Dockerfile").read_text(), re.M)
    liveness = _default(cluster.operator, "liveness")
    metrics = _default(cluster.operator, "metrics_port")
    values = yaml.safe_load((REPO / "charts" / "hpo-operator" / "values.yaml").read_text())
    assert liveness == "http://0.0.0.0:8080/healthz"
    assert exposed == [f"8080 {metrics}"] and values["metrics"]["port"] == metrics


def test_the_build_context_leaves_a_checkout_out() -> None:
    ignore = (REPO / ".dockerignore").read_text().split("\n")
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert "*" in ignore and not {".venv", "runs", ".git", "tests"} & set(allowed)
    dockerfiles = (REPO / "Dockerfile").read_text() + (
        REPO / "trainer-image/Dockerfile"
    ).read_text()
    sources = [
        source
        for line in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfiles, re.M)
        for source in line.split()
    ]
    assert "operator" in sources and "images/requirements-trainer.txt" in sources
    for source in sources:  # what a build copies is in its context
        assert any(
            source == a or source.startswith(f"{a}/") or fnmatch.fnmatch(source, a) for a in allowed
        ), source


def test_the_gpu_trainer_gets_the_same_tensorflow_with_cuda_every_wheel_pinned() -> None:
    generator = _generator()
    cpu = generator.requirements()
    gpu = generator.gpu_requirements(cpu)
    assert "tensorflow[and-cuda]==2.21.0" in gpu and not any("tensorflow-cpu" in g for g in gpu)
    assert [line for line in cpu if "tensorflow" not in line] == [
        line for line in gpu if "tensorflow" not in line and not line.startswith("nvidia-")
    ]
    assert any(line.startswith("nvidia-cudnn-cu12==") for line in gpu)
    assert all(re.fullmatch(r"[a-z0-9\-\[\]]+==[0-9.]+", line) for line in gpu), gpu
    with pytest.raises(LookupError, match="is not the trainer's TensorFlow"):
        generator.gpu_requirements(["tensorflow-cpu==2.20.0; platform_machine != 'aarch64'"])
