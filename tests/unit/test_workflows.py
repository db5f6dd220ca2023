"""The GitHub Actions workflows (.github/workflows): they cannot run here, so they are
linted (actionlint, pinned in pyproject) and their essentials read back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from helpers.study import REPO

WORKFLOWS = REPO / ".github" / "workflows"


def _actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert found, "actionlint is missing: make install-test"
    return found


def _workflow(name: str) -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def _steps(job: dict[str, Any]) -> str:
    """The job's actions and commands, as written."""
    return "\n".join(
        f"{step.get('uses', '')}\n{step.get('run', '')}\n{step.get('with', '')}"
        for step in job["steps"]
    )


def test_workflows_lint_clean() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["pull-request.yml", "release.yml"]
    result = subprocess.run(
        [_actionlint(), "-no-color", *map(str, files)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_finds_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo ${{ github.evnt.name }}\n"
    )
    result = subprocess.run([_actionlint(), "-no-color", str(broken)], capture_output=True)
    assert result.returncode == 1 and b"evnt" in result.stdout


def test_release_pushes_both_images_for_two_platforms_and_the_chart() -> None:
    release = _workflow("release.yml")
    assert release[True]["push"]["tags"] == ["v[0-9]+.[0-9]+.[0-9]+*"]  # `on:` reads as True
    images = release["jobs"]["images"]
    builds = {
        (m["image"], m["variant"]): (m["dockerfile"], m["suffix"], m["platforms"])
        for m in images["strategy"]["matrix"]["include"]
    }
    both = "linux/amd64,linux/arm64"
    assert builds == {
        ("operator", "cpu"): ("Dockerfile", "", both),
        ("trainer", "cpu"): ("trainer-image/Dockerfile", "", both),
        # the GPU trainer (tensorflow[and-cuda]: amd64 wheels), tagged <version>-gpu as
        # hpo.kube.pods.DEFAULT_GPU_IMAGE names it
        ("trainer", "gpu"): ("trainer-image/Dockerfile", "-gpu", "linux/amd64"),
    }
    for path, _, _ in builds.values():
        assert (REPO / path).is_file()
    (build,) = [s for s in images["steps"] if s.get("uses", "").startswith("docker/build-push")]
    assert build["with"]["platforms"] == "${{ matrix.platforms }}" and build["with"]["push"]
    assert build["with"]["build-args"] == "VARIANT=${{ matrix.variant }}"
    (meta,) = [s for s in images["steps"] if s.get("uses", "").startswith("docker/metadata")]
    assert "${{ steps.version.outputs.version }}${{ matrix.suffix }}" in meta["with"]["tags"]
    assert "appVersion" in _steps(images)  # the tag must be the chart's appVersion
    chart = _steps(release["jobs"]["chart"])
    assert "helm package charts/hpo-operator" in chart
    assert 'helm push dist/hpo-operator-*.tgz "oci://ghcr.io/$owner/charts"' in chart


def test_pull_requests_run_the_example_on_kind_with_fresh_images() -> None:
    pr = _workflow("pull-request.yml")
    assert set(pr[True]) == {"pull_request"}
    steps = _steps(pr["jobs"]["kind"])
    for expected in (
        'docker build -t "ghcr.io/hpo-operator/trainer:$version" -f trainer-image/Dockerfile .',
        "helm/kind-action",
        "kind load docker-image",
        "-f examples/kind/values.yaml",
        "bash examples/kind/example.sh",
        '"$phase" = Succeeded',
    ):
        assert expected in steps, expected
    for path in ("examples/kind/values.yaml", "examples/kind/example.sh"):
        assert (REPO / path).is_file()
