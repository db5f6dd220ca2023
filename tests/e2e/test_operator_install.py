"""The operator's own dependencies: a fresh environment without TensorFlow runs it.

The operator image must stay small (no TensorFlow); this installs the package
without the ``trainer`` extra into a new venv and runs a study with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.operator import credentials_secret
from helpers.s3 import new_s3_store
from helpers.study import REPO, study_dict
from helpers.synthetic import synthetic
from support.kube.kubelet import TestKubelet
from support.kube.server import KubeServer
from support.s3server import S3Server

UV = Path(sys.executable).parent / "uv"


@pytest.fixture(scope="module")
def operator_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("operator-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(UV), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(REPO)],
        check=True,
        timeout=600,
    )
    return venv


def _run(
    venv: Path, program: str, *args: str, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """``program`` (``python``, ``hpo``) of the operator's environment, to its end."""
    return subprocess.run(
        [str(venv / "bin" / program), *args], capture_output=True, text=True, timeout=timeout
    )


def test_no_tensorflow_in_the_operator_environment(operator_venv: Path) -> None:
    probe = _run(operator_venv, "python", "-c", "import tensorflow")
    assert probe.returncode != 0 and "No module named 'tensorflow'" in probe.stderr
    help_ = _run(operator_venv, "hpo", "operator", "--help")
    assert help_.returncode == 0 and "Run the operator" in help_.stdout


def test_loading_a_model_without_tensorflow_says_what_to_install(operator_venv: Path) -> None:
    """The results API imports there; loading a model names the missing extra."""
    code = (
        "from hpo.results import ResultsError, open_study\n"
        "from hpo.results.keras_model import load_keras\n"
        "try:\n    load_keras(b'not read', 'model.keras')\n"
        "except ResultsError as exc:\n    print(exc)\n"
    )
    proc = _run(operator_venv, "python", "-c", code, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "loading a model needs TensorFlow" in proc.stdout
    assert "pip install 'hpo-operator[trainer]'" in proc.stdout


def test_parquet_export_without_pyarrow_says_what_to_install(
    operator_venv: Path, tmp_path: Path
) -> None:
    """pyarrow is the ``parquet`` extra (the operator image leaves it out): exporting to
    parquet there exits 2 naming it, before reading the study or writing a file."""
    out = tmp_path / "exports"
    proc = _run(
        operator_venv,
        "hpo",
        "export",
        str(tmp_path),
        "--format",
        "parquet",
        "--out",
        str(out),
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'hpo-operator[parquet]'" in proc.stderr
    assert not out.exists()


def test_the_dashboard_runs_from_that_environment(operator_venv: Path, tmp_path: Path) -> None:
    """What the chart's dashboard option runs from the operator image: its pages, Plotly.js
    from the installed package (a non-editable install: package data included)."""
    code = (
        "import sys\n"
        "from hpo.dashboard.app import HERE, plotly_js\n"
        "assert plotly_js().stat().st_size > 1_000_000\n"
        "assert (HERE / 'static' / 'dashboard.js').is_file()\n"
        "assert (HERE / 'templates' / 'study.html').is_file()\n"
        "assert 'site-packages' in str(HERE)\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    proc = _run(operator_venv, "python", "-c", code, timeout=120)
    assert proc.returncode == 0, proc.stderr
    help_ = _run(operator_venv, "hpo", "dashboard", "--help")
    assert help_.returncode == 0 and "read-only web dashboard" in help_.stdout


@pytest.fixture
def cluster(hpo_crd: dict[str, Any]) -> Iterator[KubeServer]:
    with KubeServer(crds=(hpo_crd,)) as kube:
        yield kube


def test_the_operator_runs_a_study_from_that_environment(
    operator_venv: Path, cluster: KubeServer, s3_server: S3Server, tmp_path: Path
) -> None:
    api = cluster.api()
    api.core.create_namespaced_secret("default", credentials_secret())
    data_bucket = f"data-{uuid.uuid4().hex[:10]}"
    new_s3_store(s3_server, bucket=data_bucket, prefix="").put_file(
        "d.csv", REPO / "examples" / "data" / "transistor.csv"
    )
    bucket = f"results-{uuid.uuid4().hex[:10]}"
    raw = study_dict(
        training={"seedsPerConfig": 1},
        randomStage={"configurations": 3},
        bayesianStage={"enabled": False},
        storage={
            "type": "s3",
            "endpoint": s3_server.endpoint,
            "tls": False,
            "bucket": bucket,
            "createBucket": True,
            "credentialsSecret": {"name": "s3-creds"},
        },
    )
    raw["spec"]["dataset"]["path"] = f"s3://{data_bucket}/d.csv"
    raw["metadata"] = {"name": "lean", "namespace": "default"}
    answer = synthetic(
        lambda: new_s3_store(s3_server, bucket=bucket, prefix="hpo/default", create_bucket=False)
    )
    node = TestKubelet(cluster.api_client(), behaviour=lambda pod: "instant", result=answer).start()
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig_path)}
    log = tmp_path / "operator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(operator_venv / "bin" / "hpo"),
                "operator",
                "--liveness",
                "",
                "--metrics-port",
                "0",
                "--poll",
                "0.3",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        api.custom.create_namespaced_custom_object(
            "hpo-operator.dev", "v1alpha1", "default", "hpostudies", raw
        )
        # A bound for a loaded machine (start-up alone took 75 s under other work), not a
        # timing check: the loop ends on the phase, or at once if the operator died.
        deadline = time.monotonic() + 600
        phase = ""
        while time.monotonic() < deadline and phase not in ("Succeeded", "Failed"):
            assert proc.poll() is None, f"the operator exited\n{log.read_text()[-4000:]}"
            obj = api.custom.get_namespaced_custom_object(
                "hpo-operator.dev", "v1alpha1", "default", "hpostudies", "lean"
            )
            phase = (obj.get("status") or {}).get("phase", "")
            time.sleep(0.3)
        assert phase == "Succeeded", f"phase {phase!r}\n{log.read_text()[-4000:]}"
        assert obj["status"]["trainings"] == "3/3"
    finally:
        proc.kill()
        proc.wait(30)
        node.stop()
