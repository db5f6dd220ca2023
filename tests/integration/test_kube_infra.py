"""The emulated cluster itself: kubectl, the kubernetes client, a kopf operator, the kubelet."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import kopf.testing
import pytest
from kubernetes.client.exceptions import ApiException

from hpo.kube.crd import PLURAL, VERSION
from hpo.study.spec import API_GROUP
from support.kube.kubelet import TestKubelet
from support.kube.server import KubeAPI, KubeServer
from support.polling import unique, wait_for

# kube_server, kube_api, kubeconfig, make_kubelet: support/kube/fixtures.py; the cluster
# serves the CRDs of the ``kube_crds`` fixture (tests/conftest.py: the HPOStudy CRD).
HPO_GROUP, HPO_VERSION, HPO_PLURAL = API_GROUP, VERSION, PLURAL

FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


def study(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{HPO_GROUP}/{HPO_VERSION}",
        "kind": "HPOStudy",
        "metadata": {"name": name},
        "spec": spec,
    }


def get_study(api: KubeAPI, name: str, namespace: str = "default") -> dict[str, Any] | None:
    try:
        return api.custom.get_namespaced_custom_object(
            HPO_GROUP, HPO_VERSION, namespace, HPO_PLURAL, name
        )
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def pod(name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "python:3.11-slim", "command": command, **extra}
    return {
        "metadata": {"name": name, "labels": {"test": "kubelet"}},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }


# -- kubectl --------------------------------------------------------------------------------

STUDY_YAML = """\
apiVersion: hpo-operator.dev/v1alpha1
kind: HPOStudy
metadata:
  name: demo
spec: {}
"""


def test_kubectl_apply_get_delete(kube_server: KubeServer, kubeconfig: Path) -> None:
    assert kubeconfig.exists()
    # A namespace of its own: other tests of this module leave studies in "default".
    ns = unique("kc")
    kube_server.call(kube_server.emulator.ensure_namespace, ns)
    out = kube_server.kubectl(
        "-n", ns, "apply", "--validate=false", "-f", "-", input=STUDY_YAML
    ).stdout
    assert "hpostudy.hpo-operator.dev/demo created" in out
    for name in ("hpostudies", "hpo", "hpos", "hpostudy"):
        listing = kube_server.kubectl("-n", ns, "get", name).stdout
        # The CRD's printer columns (the project's own CRD is registered).
        header = ["NAME", "PHASE", "STAGE", "TRAININGS", "RUNNING", "BEST", "MAE", "AGE"]
        assert listing.splitlines()[0].split() == header
        assert "demo" in listing
    again = kube_server.kubectl(
        "-n",
        ns,
        "apply",
        "--validate=false",
        "-f",
        "-",
        input=STUDY_YAML.replace("spec: {}", "spec: {x: 1}"),
    )
    assert "configured" in again.stdout
    stored = json.loads(kube_server.kubectl("-n", ns, "get", "hpo", "demo", "-o", "json").stdout)
    assert stored["spec"] == {"x": 1} and stored["metadata"]["generation"] == 2

    pods = "\n---\n".join(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: kc-{n}, labels: {{app: kc, idx: '{n}'}}}}\n"
        "spec: {containers: [{name: c, image: busybox}]}"
        for n in (1, 2)
    )
    kube_server.kubectl("-n", ns, "apply", "--validate=false", "-f", "-", input=pods)
    selected = kube_server.kubectl(
        "-n", ns, "get", "pods", "-l", "app=kc,idx=2", "-o", "name"
    ).stdout.split()
    assert selected == ["pod/kc-2"]
    assert "kc-1" in kube_server.kubectl("-n", ns, "get", "pods", "-l", "idx in (1,3)").stdout

    assert (
        'hpostudy.hpo-operator.dev "demo" deleted'
        in kube_server.kubectl("-n", ns, "delete", "hpostudy", "demo").stdout
    )
    assert "No resources found" in kube_server.kubectl("-n", ns, "get", "hpostudies").stderr
    kube_server.kubectl("-n", ns, "delete", "pods", "-l", "app=kc")
    assert kube_server.list_objects("v1/pods", ns, "app=kc") == []


# -- the kubernetes client ------------------------------------------------------------------


def test_create_is_201_with_server_metadata(kube_api: KubeAPI) -> None:
    name = unique("s")
    created = kube_api.custom.create_namespaced_custom_object(
        HPO_GROUP, HPO_VERSION, "default", HPO_PLURAL, study(name, a=1)
    )
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    _, status, _ = kube_api.core.create_namespaced_config_map_with_http_info(
        "default", {"metadata": {"name": unique("cm")}}
    )
    assert status == 201
    with pytest.raises(ApiException) as exc:
        kube_api.custom.create_namespaced_custom_object(
            HPO_GROUP, HPO_VERSION, "default", HPO_PLURAL, study(name)
        )
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as exc:
        kube_api.core.create_namespaced_pod("default", pod("Bad_Name", ["true"]))
    assert exc.value.status == 422


def test_generate_name_and_label_selectors(kube_api: KubeAPI) -> None:
    run = unique("sel")
    names = []
    for n, tier in enumerate(["a", "b", "c"]):
        body = {
            "metadata": {
                "generateName": f"{run}-",
                "labels": {"run": run, "tier": tier, **({"gpu": "1"} if n else {})},
            }
        }
        body["spec"] = {"containers": [{"name": "c", "image": "busybox"}]}
        created = kube_api.core.create_namespaced_pod("default", body)
        assert (
            created.metadata.name.startswith(f"{run}-")
            and len(created.metadata.name) == len(run) + 6
        )
        names.append(created.metadata.name)
    assert len(set(names)) == 3

    def select(label_selector: str = "", field_selector: str = "") -> list[str]:
        pods = kube_api.core.list_namespaced_pod(
            "default",
            label_selector=f"run={run},{label_selector}".rstrip(","),
            field_selector=field_selector,
        )
        return sorted(p.metadata.name for p in pods.items)

    assert select() == sorted(names)
    assert select("tier=b") == [names[1]]
    assert select("tier==b") == [names[1]]
    assert select("tier!=b") == sorted([names[0], names[2]])
    assert select("tier in (a, c)") == sorted([names[0], names[2]])
    assert select("tier notin (a,c)") == [names[1]]
    assert select("gpu") == sorted(names[1:])
    assert select("!gpu") == [names[0]]
    assert select(field_selector=f"metadata.name={names[2]}") == [names[2]]
    assert select(field_selector="status.phase=Pending") == sorted(names)
    page = kube_api.core.list_namespaced_pod("default", label_selector=f"run={run}", limit=2)
    assert len(page.items) == 2 and page.metadata._continue
    rest = kube_api.core.list_namespaced_pod(
        "default", label_selector=f"run={run}", limit=2, _continue=page.metadata._continue
    )
    assert len(rest.items) == 1 and not rest.metadata._continue


def test_patches_versions_and_the_status_subresource(kube_api: KubeAPI) -> None:
    name = unique("st")
    api = kube_api.custom
    args = (HPO_GROUP, HPO_VERSION, "default", HPO_PLURAL, name)
    created = api.create_namespaced_custom_object(
        *args[:4], {**study(name, a=1), "status": {"ignored": True}}
    )
    assert "status" not in created
    rv0 = int(created["metadata"]["resourceVersion"])

    s = api.patch_namespaced_custom_object_status(
        *args, {"status": {"phase": "Running"}, "spec": {"a": 2}}
    )
    assert s["status"] == {"phase": "Running"} and s["spec"] == {"a": 1}
    assert int(s["metadata"]["resourceVersion"]) > rv0 and s["metadata"]["generation"] == 1

    s = api.patch_namespaced_custom_object(*args, {"spec": {"a": 2}, "status": {"phase": "Hacked"}})
    assert (
        s["spec"] == {"a": 2}
        and s["status"] == {"phase": "Running"}
        and s["metadata"]["generation"] == 2
    )
    s2 = api.patch_namespaced_custom_object(*args, {"metadata": {"labels": {"x": "y"}}})
    assert (
        s2["metadata"]["generation"] == 2
        and s2["metadata"]["resourceVersion"] != s["metadata"]["resourceVersion"]
    )
    same = api.patch_namespaced_custom_object(*args, {"spec": {"a": 2}})
    assert (
        same["metadata"]["resourceVersion"] == s2["metadata"]["resourceVersion"]
    )  # a no-op writes nothing

    # JSON patch with a stale resourceVersion test: 422, as kopf expects (not 500).
    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": str(rv0)},
        {"op": "add", "path": "/spec/b", "value": 1},
    ]
    with pytest.raises(ApiException) as exc:
        api.patch_namespaced_custom_object(
            *args, stale, _content_type="application/json-patch+json"
        )
    assert exc.value.status == 422
    fresh = [{**stale[0], "value": s2["metadata"]["resourceVersion"]}, stale[1]]
    assert api.patch_namespaced_custom_object(
        *args, fresh, _content_type="application/json-patch+json"
    )["spec"] == {"a": 2, "b": 1}

    # PUT (replace) with optimistic concurrency.
    current = api.get_namespaced_custom_object(*args)
    current["spec"] = {"replaced": True}
    replaced = api.replace_namespaced_custom_object(*args, current)
    assert replaced["spec"] == {"replaced": True} and replaced["status"] == {"phase": "Running"}
    with pytest.raises(ApiException) as exc:
        api.replace_namespaced_custom_object(*args, current)  # the old resourceVersion
    assert exc.value.status == 409


def test_finalizers_deletion_timestamp_and_garbage_collection(kube_api: KubeAPI) -> None:
    name = unique("fin")
    args = (HPO_GROUP, HPO_VERSION, "default", HPO_PLURAL, name)
    owner = kube_api.custom.create_namespaced_custom_object(
        *args[:4], {**study(name), "metadata": {"name": name, "finalizers": ["test/hold"]}}
    )
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": "HPOStudy",
        "name": name,
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    child = pod(unique("child"), ["true"])
    child["metadata"]["ownerReferences"] = [ref]
    kube_api.core.create_namespaced_pod("default", child)

    kube_api.custom.delete_namespaced_custom_object(*args)
    deleting = kube_api.custom.get_namespaced_custom_object(*args)
    assert deleting["metadata"]["deletionTimestamp"] and deleting["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as exc:  # no new finalizers on a deleting object
        kube_api.custom.patch_namespaced_custom_object(
            *args, {"metadata": {"finalizers": ["test/hold", "more"]}}
        )
    assert exc.value.status == 422
    assert kube_api.core.read_namespaced_pod(
        child["metadata"]["name"], "default"
    )  # the owner still exists

    kube_api.custom.patch_namespaced_custom_object(*args, {"metadata": {"finalizers": None}})
    assert get_study(kube_api, name) is None
    with pytest.raises(ApiException) as exc:
        kube_api.core.read_namespaced_pod(child["metadata"]["name"], "default")
    assert exc.value.status == 404


def test_watch_resumes_from_a_resource_version(kube_server: KubeServer, kube_api: KubeAPI) -> None:
    run = unique("w")
    listing = kube_api.core.list_namespaced_pod("default", label_selector=f"run={run}")
    body = pod(f"{run}-1", ["true"])
    body["metadata"]["labels"] = {"run": run}
    kube_api.core.create_namespaced_pod("default", body)
    kube_api.core.patch_namespaced_pod(
        f"{run}-1", "default", {"metadata": {"labels": {"run": "other"}}}
    )
    response = kube_api.core.list_namespaced_pod(
        "default",
        label_selector=f"run={run}",
        watch=True,
        resource_version=listing.metadata.resource_version,
        timeout_seconds=1,
        _preload_content=False,
    )
    started = time.monotonic()
    events = [json.loads(line) for line in response]
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]  # it stopped matching the selector
    assert time.monotonic() - started < 2.5  # timeoutSeconds ends the stream


def test_requests_are_counted_per_verb(kube_server: KubeServer, kube_api: KubeAPI) -> None:
    mark = kube_server.mark()
    before = kube_server.count("create", "configmaps")
    name = unique("cm")
    kube_api.core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    kube_api.core.read_namespaced_config_map(name, "default")
    kube_api.core.patch_namespaced_config_map(name, "default", {"data": {"a": "b"}})
    kube_api.core.list_namespaced_config_map("default")
    kube_api.core.delete_namespaced_config_map(name, "default")
    assert [(r.verb, r.resource, r.status) for r in kube_server.requests_since(mark)] == [
        ("create", "configmaps", 201),
        ("get", "configmaps", 200),
        ("patch", "configmaps", 200),
        ("list", "configmaps", 200),
        ("delete", "configmaps", 200),
    ]
    assert kube_server.count("create", "configmaps") == before + 1


# -- kopf ----------------------------------------------------------------------------------


@pytest.fixture
def operator(kube_server: KubeServer) -> Iterator[dict[str, Any]]:
    """A minimal operator: on create, a pod owned by the study and a status; on delete, a note."""
    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    namespace = unique("op")  # its own namespace: the module's server keeps other tests' studies
    calls: dict[str, Any] = {"created": [], "deleted": [], "namespace": namespace}
    api = kube_server.api()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kube_server.connection_info()

    @kopf.on.create(HPO_GROUP, HPO_VERSION, HPO_PLURAL, id="create", registry=registry)
    def create(
        name: str, namespace: str, body: kopf.Body, patch: kopf.Patch, **_: Any
    ) -> dict[str, str]:
        manifest = {
            "metadata": {"name": f"{name}-trainer"},
            "spec": {"containers": [{"name": "t", "image": "trainer:1"}]},
        }
        kopf.adopt(manifest, owner=body)
        api.core.create_namespaced_pod(namespace, manifest)
        patch.status["phase"] = "Running"
        calls["created"].append(name)
        return {"pod": manifest["metadata"]["name"]}

    @kopf.on.delete(HPO_GROUP, HPO_VERSION, HPO_PLURAL, id="delete", registry=registry)
    def delete(name: str, **_: Any) -> None:
        calls["deleted"].append(name)

    calls["runner"] = kopf.testing.KopfRunner(
        ["run", "-n", namespace, "--standalone", "--verbose"],
        registry=registry,
        settings=settings,
        timeout=60,
    )
    yield calls
    api.close()


@pytest.mark.parametrize("attempt", range(10))
def test_kopf_lifecycle(
    kube_server: KubeServer, kube_api: KubeAPI, operator: dict[str, Any], attempt: int
) -> None:
    name, ns, runner = unique(f"life{attempt}"), operator["namespace"], operator["runner"]
    with runner:
        kube_api.custom.create_namespaced_custom_object(
            HPO_GROUP, HPO_VERSION, ns, HPO_PLURAL, study(name)
        )
        done = wait_for(
            lambda: (
                (s := get_study(kube_api, name, ns)) and s.get("status", {}).get("create") and s
            ),
            what="the create handler",
        )
        assert done["status"]["phase"] == "Running"
        assert done["status"]["create"] == {"pod": f"{name}-trainer"}
        assert FINALIZER in done["metadata"]["finalizers"]
        trainer = kube_api.core.read_namespaced_pod(f"{name}-trainer", ns)
        (ref,) = trainer.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.controller) == (
            "HPOStudy",
            name,
            done["metadata"]["uid"],
            True,
        )

        kube_api.custom.delete_namespaced_custom_object(
            HPO_GROUP, HPO_VERSION, ns, HPO_PLURAL, name
        )
        wait_for(
            lambda: get_study(kube_api, name, ns) is None,
            what="the study to go (kopf's finalizer released)",
        )
        assert kube_server.get_object("v1/pods", ns, f"{name}-trainer") is None  # garbage-collected
        stopping = time.monotonic()
    shutdown = time.monotonic() - stopping
    assert operator["created"] == [name] and operator["deleted"] == [name]
    assert runner.exit_code == 0 and runner.exception is None
    assert shutdown < 2.0, f"kopf took {shutdown:.1f} s to stop"


# -- the kubelet ---------------------------------------------------------------------------

WRITE_HELLO = (
    "import sys,os; open(os.environ['KUBELET_TERMINATION_LOG'],'w').write('hello'); sys.exit(0)"
)


def modes(pod: dict[str, Any]) -> str:
    return pod["metadata"].get("annotations", {}).get("mode", "run")


def test_kubelet_runs_pods_for_real(
    kube_api: KubeAPI, make_kubelet: Callable[..., TestKubelet]
) -> None:
    ns = unique("kl")  # the module's server keeps other tests' pods: serve only ours
    kubelet = make_kubelet(namespace=ns)
    ok, bad = unique("ok"), unique("bad")
    kube_api.core.create_namespaced_pod(ns, pod(ok, ["python", "-c", WRITE_HELLO]))
    kube_api.core.create_namespaced_pod(
        ns,
        pod(
            bad,
            ["python", "-c", "print('to the log'); raise SystemExit(3)"],
            terminationMessagePolicy="FallbackToLogsOnError",
        ),
    )

    record = kubelet.wait(ok, ns)
    assert record.steps == ["creating", "running", "succeeded"]
    status = kube_api.core.read_namespaced_pod(ok, ns).status
    assert status.phase == "Succeeded" and status.start_time is not None
    (cs,) = status.container_statuses
    assert cs.state.terminated.exit_code == 0 and cs.state.terminated.reason == "Completed"
    assert cs.state.terminated.message == "hello" and cs.image_id and cs.restart_count == 0

    kubelet.wait(bad, ns)
    status = kube_api.core.read_namespaced_pod(bad, ns).status
    assert status.phase == "Failed"
    terminated = status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (
        3,
        "Error",
        "to the log",
    )
    assert kube_api.core.read_namespaced_pod_log(bad, ns) == "to the log\n"


def test_kubelet_resolves_secrets_and_waits_for_missing_ones(
    kube_api: KubeAPI, make_kubelet: Callable[..., TestKubelet]
) -> None:
    ns = unique("kl")  # the module's server keeps other tests' pods: serve only ours
    kubelet = make_kubelet(namespace=ns)
    secret = unique("creds")
    kube_api.core.create_namespaced_secret(
        ns, {"metadata": {"name": secret}, "stringData": {"key": "s3cr3t"}}
    )
    show = "import os; open(os.environ['KUBELET_TERMINATION_LOG'],'w').write(os.environ['TOKEN'] + ':' + os.environ['PLAIN'])"
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "key"}}},
        {"name": "PLAIN", "value": "v"},
    ]
    name = unique("env")
    kube_api.core.create_namespaced_pod(ns, pod(name, ["python", "-c", show], env=env))
    assert kubelet.wait(name, ns).message == "s3cr3t:v"

    late = unique("late")
    missing = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": late, "key": "key"}}},
        {"name": "PLAIN", "value": "w"},
    ]
    waiting_pod = unique("waits")
    kube_api.core.create_namespaced_pod(ns, pod(waiting_pod, ["python", "-c", show], env=missing))
    record = kubelet.wait(waiting_pod, ns, settled=True)
    status = kube_api.core.read_namespaced_pod(waiting_pod, ns).status
    assert status.phase == "Pending"
    waiting = status.container_statuses[0].state.waiting
    assert (waiting.reason, waiting.message) == (
        "CreateContainerConfigError",
        f'secret "{late}" not found',
    )
    kube_api.core.create_namespaced_secret(
        ns, {"metadata": {"name": late}, "stringData": {"key": "later"}}
    )
    assert kubelet.wait(waiting_pod, ns).message == "later:w" and record.phase == "Succeeded"


@pytest.mark.parametrize(
    ("mode", "phase", "state", "reason", "code", "message"),
    [
        ("oom", "Failed", "terminated", "OOMKilled", 137, None),
        ("fail:2:boom", "Failed", "terminated", "Error", 2, "boom"),
        ('instant:{"mae": 0.1}', "Succeeded", "terminated", "Completed", 0, '{"mae": 0.1}'),
        ("pending", "Pending", "waiting", "ContainerCreating", None, None),
        (
            "unpullable",
            "Pending",
            "waiting",
            "ImagePullBackOff",
            None,
            'Back-off pulling image "python:3.11-slim"',
        ),
        ("unknown", "Unknown", "running", None, None, None),
    ],
)
def test_kubelet_modes(
    kube_api: KubeAPI,
    make_kubelet: Callable[..., TestKubelet],
    mode: str,
    phase: str,
    state: str,
    reason: str | None,
    code: int | None,
    message: str | None,
) -> None:
    ns = unique("kl")
    kubelet = make_kubelet(behaviour=modes, namespace=ns)
    name = unique("mode")
    body = pod(name, ["never-run"])
    body["metadata"]["annotations"] = {"mode": mode}
    kube_api.core.create_namespaced_pod(ns, body)
    kubelet.wait(name, ns, settled=True)
    status = kube_api.core.read_namespaced_pod(name, ns).status
    assert status.phase == phase
    details = getattr(status.container_statuses[0].state, state)
    if reason is not None:
        assert details.reason == reason
    if code is not None:
        assert details.exit_code == code
    if message is not None:
        assert details.message == message


def test_kubelet_result_callable_concurrency_and_deletion(
    kube_api: KubeAPI, make_kubelet: Callable[..., TestKubelet]
) -> None:
    ns = unique("kl")
    kubelet = make_kubelet(
        behaviour=modes,
        result=lambda p: (0, json.dumps({"pod": p["metadata"]["name"]})),
        max_running=1,
        namespace=ns,
    )
    instant = unique("res")
    body = pod(instant, ["x"])
    body["metadata"]["annotations"] = {"mode": "instant"}
    kube_api.core.create_namespaced_pod(ns, body)
    assert json.loads(kubelet.wait(instant, ns).message) == {"pod": instant}

    slow, queued = unique("slow"), unique("queued")
    kube_api.core.create_namespaced_pod(
        ns, pod(slow, ["python", "-c", "import time; time.sleep(60)"])
    )
    kube_api.core.create_namespaced_pod(ns, pod(queued, ["python", "-c", "pass"]))
    wait_for(
        lambda: (r := kubelet.record(slow, ns)) and "running" in r.steps, what="the slow pod to run"
    )
    wait_for(
        lambda: (r := kubelet.record(queued, ns)) and r.steps == ["queued"],
        what="the second pod to queue",
    )
    conditions = kube_api.core.read_namespaced_pod(queued, ns).status.conditions
    assert conditions[0].type == "PodScheduled" and conditions[0].reason == "Unschedulable"

    kube_api.core.delete_namespaced_pod(slow, ns)
    record = kubelet.wait(slow, ns, timeout=120)
    assert record.deleted and record.process is not None and record.process.returncode == -9
    assert kubelet.wait(queued, ns).steps == ["queued", "creating", "running", "succeeded"]
    assert not kubelet.errors
