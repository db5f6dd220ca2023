"""The images as a cluster runs them (`make image-test`; not part of `make test`).

The trainer image trains one real request of a study on the bundled dataset (in the
test S3 server) under the security context of the pod the operator builds for it
(``hpo.kube.pods.build_pod``): its user, a read-only root, all capabilities dropped, no
privilege escalation, and writable only the volumes the pod spec mounts; its scores
equal a run of the same request on this machine's venv to the last digit. The
operator image, run as the chart's Deployment runs it (its args, environment and
security context), talks to the emulated API server, serves /healthz and /metrics,
and exits cleanly on SIGTERM. Both also run under an arbitrary uid (group 0, as
OpenShift assigns them).

The containers share the host's network (the test servers listen on 127.0.0.1); the
operator's two ports are moved to free ones for that. Images and engine come from the
environment that `make image-test` sets: HPO_ENGINE, HPO_OPERATOR_IMAGE,
HPO_TRAINER_IMAGE.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from helpers.chart import CHART, render
from helpers.operator import study_body
from helpers.s3 import new_s3_store
from helpers.study import EXAMPLE_CSV
from hpo.kube.pods import DEFAULT_IMAGE, build_pod
from hpo.session import StudySession
from hpo.study.contract import SeedResult, TrainingRequest
from hpo.study.layout import StudyPaths
from hpo.study.spec import Study, parse_study
from hpo.study.storage import store_ref_for
from support.kube.server import KubeServer
from support.net import free_port, http_answer
from support.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server

ENGINE = os.environ.get("HPO_ENGINE", "podman")
OPERATOR_IMAGE = os.environ.get("HPO_OPERATOR_IMAGE", "ghcr.io/hpo-operator/operator:0.1.0")
TRAINER_IMAGE = os.environ.get("HPO_TRAINER_IMAGE", "ghcr.io/hpo-operator/trainer:0.1.0")
TRAINER_GPU_IMAGE = os.environ.get(
    "HPO_TRAINER_GPU_IMAGE", "ghcr.io/hpo-operator/trainer:0.1.0-gpu"
)
ARBITRARY_USER = "4242:0"
SECRETS = {"s3-creds": {"accessKey": TEST_ACCESS_KEY, "secretKey": TEST_SECRET_KEY}}
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _engine(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ENGINE, *args], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def images() -> None:
    for image in (OPERATOR_IMAGE, TRAINER_IMAGE, TRAINER_GPU_IMAGE):
        if _engine("image", "inspect", image).returncode != 0:
            pytest.fail(f"no image {image} in {ENGINE}: run make images", pytrace=False)


def run_args(
    pod: dict[str, Any],
    env: dict[str, str],
    files: dict[str, Path],
    *,
    user: str | None = None,
    name: str | None = None,
) -> list[str]:
    """``ENGINE run`` arguments for the pod's one container, as a kubelet would start it.

    ``env``: the container's environment, resolved (values, Secret and ConfigMap
    references); ``files``: host files for the paths the kubelet mounts itself (the
    termination log, a kubeconfig); ``user``: an arbitrary ``uid:gid`` instead of the
    pod's. Only ``emptyDir`` volumes are writable (tmpfs); the root is read-only if
    the container says so, with none of the engine's own tmpfs mounts.
    """
    spec = pod.get("spec", pod)
    (container,) = spec["containers"]
    pod_sc, sc = spec.get("securityContext") or {}, container.get("securityContext") or {}
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    assert uid not in (None, 0) and sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    args = ["run", "--network", "host", "--user", user or str(uid)]
    if name:
        args += ["--name", name]
    if sc.get("readOnlyRootFilesystem"):
        args += ["--read-only"] + (["--read-only-tmpfs=false"] if ENGINE == "podman" else [])
    for cap in sc["capabilities"]["drop"]:
        args += ["--cap-drop", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        assert set(volume) == {"name", "emptyDir"}, volume  # what this test knows how to mount
        args += ["--mount", f"type=tmpfs,destination={mount['mountPath']},tmpfs-mode=1777"]
    for destination, source in files.items():
        args += ["--mount", f"type=bind,source={source},destination={destination}"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    if container.get("command"):
        args += ["--entrypoint", json.dumps(container["command"])]
    return [*args, container["image"], *container.get("args", [])]


def container_env(
    container: dict[str, Any], configmaps: dict[str, dict[str, str]]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        env.update(configmaps[source["configMapRef"]["name"]])
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = SECRETS[ref["name"]][ref["key"]]
    return env


# -- the trainer ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def request_and_pod(s3_server: S3Server) -> tuple[Study, TrainingRequest, dict[str, Any]]:
    """The first request of a study on the example dataset, and the trainer pod the
    operator makes for it."""
    data = new_s3_store(s3_server, prefix="")
    data.put_file("transistor.csv", EXAMPLE_CSV)
    bucket = f"hpo-{uuid.uuid4().hex[:10]}"
    raw = study_body(
        "image-test",
        s3_server,
        f"s3://{data.bucket}/transistor.csv",
        bucket,
        training={"epochs": 4, "patience": 2, "seedsPerConfig": 1, "seedRacing": False},
        trainer={"image": TRAINER_IMAGE, "seedsPerPod": 1},
    )
    study = parse_study(raw)
    session = StudySession.open(
        study, store_ref_for(study), credentials=(TEST_ACCESS_KEY, TEST_SECRET_KEY)
    )
    session.start()
    request = session.request(session.take(1))
    return study, request, _pod(study, request)


def _pod(study: Study, request: TrainingRequest) -> dict[str, Any]:
    return build_pod(
        study=study.name,
        namespace="default",
        owner_uid="uid-1",
        spec=study.spec,
        request=request,
        attempt=1,
    )


def _on_host(request: TrainingRequest) -> SeedResult:
    env = {**os.environ, "HPO_S3_ACCESS_KEY": TEST_ACCESS_KEY, "HPO_S3_SECRET_KEY": TEST_SECRET_KEY}
    done = subprocess.run(
        [sys.executable, "-m", "hpo_trainer", "--request", request.to_json()],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.splitlines()
    return SeedResult.from_json(line)


@pytest.fixture(scope="module")
def host_result(request_and_pod: tuple[Study, TrainingRequest, dict[str, Any]]) -> SeedResult:
    _, request, _ = request_and_pod
    return _on_host(_renamed(request, "image-test-host"))


def _renamed(request: TrainingRequest, study: str) -> TrainingRequest:
    """The same training under another study's name: its results go to a folder of their
    own (the trainer checks that the output is the named study's trial folder)."""
    return dataclasses.replace(
        request, study=study, output_prefix=StudyPaths(study).trial(request.trial)
    )


@pytest.mark.parametrize("user", [None, ARBITRARY_USER], ids=["pod-uid", "arbitrary-uid"])
def test_the_trainer_trains_a_real_request_as_its_pod_does(
    request_and_pod: tuple[Study, TrainingRequest, dict[str, Any]],
    host_result: SeedResult,
    s3_server: S3Server,
    tmp_path: Path,
    user: str | None,
) -> None:
    study, request, _ = request_and_pod
    request = _renamed(request, f"image-test-{'pod' if user is None else 'any'}")
    pod = _pod(study, request)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == TRAINER_IMAGE
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    log = tmp_path / "termination-log"
    log.touch(mode=0o666)
    log.chmod(0o666)
    args = run_args(
        pod,
        container_env(container, {}),
        {container["terminationMessagePath"]: log},
        user=user,
    )
    done = _engine(*args[:1], "--rm", *args[1:], timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.splitlines()
    result = SeedResult.from_json(line)
    assert result.status == "succeeded", result.error
    # The same request on the host: the same scores to the last digit.
    assert (result.mae, result.per_label) == (host_result.mae, host_result.per_label)
    assert result.epochs_run == host_result.epochs_run
    # What the operator reads: the termination message and the seed's scores in the store.
    (summary,) = json.loads(log.read_text())
    assert summary["mae"] == result.mae and summary["status"] == "succeeded"
    ref = store_ref_for(study)
    store = new_s3_store(s3_server, bucket=ref.bucket, prefix=ref.prefix, create_bucket=False)
    scores = store.get_bytes(f"{request.artifacts_prefix(result.seed)}/scores.json")
    assert SeedResult.from_json(scores.decode()).mae == result.mae


def _run_pod(pod: dict[str, Any], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    (container,) = pod["spec"]["containers"]
    log = tmp_path / "termination-log"
    log.touch(mode=0o666)
    log.chmod(0o666)
    args = run_args(pod, container_env(container, {}), {container["terminationMessagePath"]: log})
    return _engine(*args[:1], "--rm", *args[1:], timeout=900), log


def test_the_gpu_trainer_trains_on_the_cpu_when_no_gpu_is_asked(
    request_and_pod: tuple[Study, TrainingRequest, dict[str, Any]],
    host_result: SeedResult,
    tmp_path: Path,
) -> None:
    """The GPU image (tensorflow[and-cuda]) on this GPU-less machine: it says it sees no
    GPU, and trains a request the pod did not ask a GPU for, to the host's scores."""
    study, request, _ = request_and_pod
    trainer = study.spec.trainer.model_copy(update={"image": TRAINER_GPU_IMAGE})
    gpu_study = study.model_copy(
        update={"spec": study.spec.model_copy(update={"trainer": trainer})}
    )
    pod = _pod(gpu_study, _renamed(request, "image-test-gpu-image"))
    done, _ = _run_pod(pod, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^TensorFlow sees \d+ CPU\(s\) and no GPU$", done.stderr, re.M)
    result = SeedResult.from_json(done.stdout.splitlines()[-1])
    assert result.status == "succeeded" and result.mae == host_result.mae


def test_a_gpu_pod_without_a_gpu_fails_with_the_message(
    request_and_pod: tuple[Study, TrainingRequest, dict[str, Any]], tmp_path: Path
) -> None:
    """The pod the operator builds for nvidia.com/gpu: 1 with the default image runs the
    GPU image, which refuses to train on the CPU, naming what it sees."""
    study, request, _ = request_and_pod
    limits = {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": 1}
    trainer = study.spec.trainer.model_copy(
        update={"image": DEFAULT_IMAGE, "resources": {"limits": limits}}
    )
    gpu_study = study.model_copy(
        update={"spec": study.spec.model_copy(update={"trainer": trainer})}
    )
    pod = _pod(gpu_study, _renamed(request, "image-test-gpu-asked"))
    assert pod["spec"]["containers"][0]["image"] == TRAINER_GPU_IMAGE
    done, log = _run_pod(pod, tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    (row,) = json.loads(log.read_text())
    assert row["status"] == "failed"
    assert row["error"].startswith("the pod asks for 1 GPU(s) (nvidia.com/gpu) but TensorFlow")
    assert "and no GPU; not training on the CPU instead" in row["error"]


def test_the_trainer_cannot_write_outside_its_volumes(
    request_and_pod: tuple[Study, TrainingRequest, dict[str, Any]],
) -> None:
    """The read-only root holds: the container may write /tmp (its emptyDir), nothing else."""
    _, _, pod = request_and_pod
    pod = json.loads(json.dumps(pod))
    (container,) = pod["spec"]["containers"]
    container["command"] = ["sh", "-c"]
    container["args"] = [
        "touch /tmp/ok && echo tmp-writable; "
        "for d in / /usr/local /home/hpo /var/tmp /run; do "
        "touch $d/probe 2>/dev/null && echo writable:$d; done; id -u"
    ]
    done = _engine("run", "--rm", *run_args(pod, {}, {})[1:], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tmp-writable", "1000"]


def test_both_images_run_as_a_non_root_user() -> None:
    for image in (OPERATOR_IMAGE, TRAINER_IMAGE):
        user = _engine("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
        assert user == "1000", image


def test_the_trainer_image_carries_nothing_of_the_operator() -> None:
    done = _engine(
        "run", "--rm", "--entrypoint", "python", TRAINER_IMAGE, "-c",
        "import importlib.util as u; print([m for m in ('kopf', 'kubernetes', 'prometheus_client',"
        " 'skopt', 'matplotlib', 'openpyxl', 'typer') if u.find_spec(m)])",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- the operator -----------------------------------------------------------------------


def _until_ok(url: str, name: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    seen = (0, "")
    while time.monotonic() < deadline:
        seen = http_answer(url)
        if seen[0] == 200:
            return seen[1]
        time.sleep(0.5)
    logs = _engine("logs", name).stderr[-3000:]
    raise AssertionError(f"no 200 from {url}: {seen}\n{logs}")


@pytest.fixture(scope="module")
def kube(hpo_crd: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The emulated API server and a kubeconfig the container can read."""
    server = KubeServer(crds=(hpo_crd,)).start()
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(server.kubeconfig_path.read_text())
    kubeconfig.chmod(0o644)
    yield kubeconfig
    server.stop()


@pytest.fixture(scope="module")
def operator_pod() -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """The chart's operator pod (metrics on) and its ConfigMaps."""
    with helm.Chart.load(CHART) as chart:
        objects = render(chart, {"metrics": {"enabled": True}})
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    return deployment["spec"]["template"], configmaps


@pytest.mark.parametrize("user", [None, ARBITRARY_USER], ids=["pod-uid", "arbitrary-uid"])
def test_the_operator_serves_health_and_metrics_and_stops_on_sigterm(
    operator_pod: tuple[dict[str, Any], dict[str, dict[str, str]]],
    kube: Path,
    user: str | None,
) -> None:
    pod, configmaps = operator_pod
    pod = json.loads(json.dumps(pod))
    (container,) = pod["spec"]["containers"]
    assert container["image"] == OPERATOR_IMAGE
    env = container_env(container, configmaps)
    health_port, metrics_port = free_port(), free_port()
    env |= {"HPO_METRICS_PORT": str(metrics_port), "KUBECONFIG": "/kube/config"}

    def expand(arg: str) -> str:
        return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env[m[1]], arg)

    container["args"] = [expand(a) for a in container["args"]]
    container["args"] += ["--liveness", f"http://0.0.0.0:{health_port}/healthz"]
    name = f"hpo-image-test-{uuid.uuid4().hex[:8]}"
    args = run_args(pod, env, {"/kube/config": kube}, user=user, name=name)
    started = _engine(*args[:1], "--detach", *args[1:])
    assert started.returncode == 0, started.stderr
    try:
        health = json.loads(_until_ok(f"http://127.0.0.1:{health_port}/healthz", name))
        assert health["apiServer"]["lastAnswerSecondsAgo"] <= health["apiServer"]["windowSeconds"]
        metrics = _until_ok(f"http://127.0.0.1:{metrics_port}/metrics", name)
        assert "# TYPE hpo_trainings_started_total counter" in metrics
        stopped = _engine("stop", "--time", "30", name, timeout=60)  # SIGTERM, then 30 s
        assert stopped.returncode == 0, stopped.stderr
        state = _engine("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        logs = _engine("logs", name)
        assert state == "0", logs.stdout[-2000:] + logs.stderr[-2000:]
    finally:
        _engine("rm", "--force", name)
