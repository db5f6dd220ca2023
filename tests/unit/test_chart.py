"""The Helm chart (charts/hpo-operator), checked offline with Helm's own engine.

helm-python-sdk binds Helm's Go SDK (v4): the chart is linted and rendered exactly as
`helm lint` and `helm template` would, and values are checked against values.schema.json
by Helm itself. Every rendered object is validated against the Kubernetes schemas
(kubernetes-validate) and every pod spec against the "restricted" Pod Security Standard.
The chart is the only source of the install manifests: manifests/install.yaml is its render
(charts/render_manifests.py; tests/unit/test_manifests.py checks it), so what the operator must
get (its RBAC rules, its pod) is stated here as literal values.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from helpers.chart import (
    CHART,
    DISCOVERY_RULES,
    KUBE_VERSION,
    MANIFESTS,
    NAMESPACE,
    OPERATOR_RULES,
    RELEASE,
    load_all,
    render,
)
from hpo.kube.pods import PodDefaults
from support.podsecurity import restricted_violations

OPTIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "minio": {"minio": {"enabled": True}},
    "metrics": {"metrics": {"enabled": True}},
    "serviceMonitor": {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True}}},
    "namespaced": {"rbac": {"clusterWide": False}, "watchNamespaces": ["a", "b"]},
    "dashboard": {
        "dashboard": {
            "enabled": True,
            "bucket": "s3://hpo-results/hpo",
            "endpoint": "s3.example.com:443",
            "credentialsSecret": {"name": "store-keys"},
        }
    },
    "everything": {
        "minio": {"enabled": True},
        "dashboard": {
            "enabled": True,
            "bucket": "s3://hpo-results/hpo",
            "credentialsSecret": {"name": "dashboard-readonly"},
        },
        "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}},
        "rbac": {"clusterWide": False},
        "watchNamespaces": ["a", "b"],
        "trainerDefaults": {
            "queueName": "team-a",
            "priorityClassName": "research",
            "schedulerName": "volcano",
            "podLabels": {"example.com/team": "a"},
            "podAnnotations": {"scheduling.volcano.sh/queue-name": "research"},
            "maxQueueSeconds": 3600,
            "maxDisruptions": 2,
        },
    },
}

STANDARD_LABELS = {
    "helm.sh/chart": "hpo-operator-0.1.0",
    "app.kubernetes.io/name": "hpo-operator",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/version": "0.1.0",
    "app.kubernetes.io/managed-by": "Helm",
}


# -- helpers ---------------------------------------------------------------------------


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    found = [
        o
        for o in _of_kind(objects, kind)
        if component is None
        or o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"{len(found)} {kind} ({component}) rendered"
    return found[0]


def _operator(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(objects, "Deployment", "operator")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _container_sc(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["containers"][0]["securityContext"])


# The operator's pod with default values ("restricted", a writable /tmp only).
OPERATOR_POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
OPERATOR_CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
OPERATOR_VOLUMES = [{"name": "tmp", "emptyDir": {}}]
OPERATOR_VOLUME_MOUNTS = [{"name": "tmp", "mountPath": "/tmp"}]
OPERATOR_ENV = [
    {"name": "HOME", "value": "/tmp"},
    {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
    {"name": "HPO_CACHE", "value": "/tmp/hpo-cache"},
]
OPERATOR_RESOURCES = {
    "requests": {"cpu": "200m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}
OPERATOR_LIVENESS_PROBE = {
    "httpGet": {"path": "/healthz", "port": "health"},
    "initialDelaySeconds": 10,
    "periodSeconds": 20,
}


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _resolved_args(objects: list[dict[str, Any]]) -> list[str]:
    """The operator's args as the kubelet runs them: $(VAR) expanded from the container's
    environment (its envFrom ConfigMap, then its env), $$ an escaped $."""
    container = _container(_operator(objects))
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        (configmap,) = [o for o in _of_kind(objects, "ConfigMap") if o["metadata"]["name"] == name]
        env.update(configmap["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})

    def expand(arg: str) -> str:
        return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m[1], m.group(0)), arg)

    return [expand(a) for a in container["args"]]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def rendered(chart: helm.Chart) -> dict[str, list[dict[str, Any]]]:
    return {option: render(chart, values) for option, values in OPTIONS.items()}


# -- the chart as a whole ----------------------------------------------------------------


def test_chart_metadata(chart: helm.Chart) -> None:
    meta = chart.metadata
    assert (meta["apiVersion"], meta["name"], meta["version"], meta["appVersion"]) == (
        "v2",
        "hpo-operator",
        "0.1.0",
        "0.1.0",
    )
    assert chart.schema is not None
    assert chart.schema["additionalProperties"] is False


def test_crd_is_a_byte_identical_copy_of_the_manifest(chart: helm.Chart) -> None:
    copy = CHART / "crds" / "hpostudies.yaml"
    assert copy.read_bytes() == (MANIFESTS / "crd.yaml").read_bytes(), (
        "run: cp manifests/crd.yaml charts/hpo-operator/crds/hpostudies.yaml"
    )
    # Helm sees it as the chart's only CRD, and the API server would accept it.
    (crd,) = chart.crds
    assert crd["filename"] == "hpo-operator/crds/hpostudies.yaml"
    (doc,) = load_all(crd["data"])
    assert doc["metadata"]["name"] == "hpostudies.hpo-operator.dev"
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_lint_passes_strictly(option: str) -> None:
    report = helm.lint(
        CHART,
        OPTIONS[option],
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}.0",
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert report["total_charts_linted"] == 1
    assert problems == [] and report["errors"] == [], report


@pytest.mark.parametrize(
    ("option", "kinds"),
    [
        (
            "defaults",
            ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "ServiceAccount"],
        ),
        (
            "minio",
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "Deployment",
                "PersistentVolumeClaim",
                "Secret",
                "Service",
                "ServiceAccount",
            ],
        ),
        (
            "metrics",
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "Service",
                "ServiceAccount",
            ],
        ),
        (
            "serviceMonitor",
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "Service",
                "ServiceAccount",
                "ServiceMonitor",
            ],
        ),
        (
            "dashboard",
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "Deployment",
                "Service",
                "ServiceAccount",
            ],
        ),
        (
            "namespaced",
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "Role",
                "Role",
                "RoleBinding",
                "RoleBinding",
                "ServiceAccount",
            ],
        ),
    ],
)
def test_rendered_kinds(rendered: dict[str, list[dict[str, Any]]], option: str, kinds: list[str]):
    assert sorted(o["kind"] for o in rendered[option]) == kinds


def test_every_object_has_the_standard_labels(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for obj in rendered["everything"]:
        labels = obj["metadata"]["labels"]
        assert STANDARD_LABELS.items() <= labels.items(), obj["metadata"]["name"]
        if obj["kind"] == "Deployment":
            pod_labels = obj["spec"]["template"]["metadata"]["labels"]
            assert STANDARD_LABELS.items() <= pod_labels.items()
            assert _matches(obj["spec"]["selector"]["matchLabels"], pod_labels)
        if obj["metadata"].get("namespace") is None:
            assert obj["kind"] in ("ClusterRole", "ClusterRoleBinding")


# -- the operator ------------------------------------------------------------------------


def test_operator_deployment(rendered: dict[str, list[dict[str, Any]]]):
    objects = rendered["defaults"]
    deployment = _operator(objects)
    assert (deployment["metadata"]["name"], deployment["metadata"]["namespace"]) == (
        "hpo-operator",
        "hpo-system",
    )
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == OPERATOR_POD_SECURITY_CONTEXT
    assert pod["volumes"] == OPERATOR_VOLUMES
    assert pod["serviceAccountName"] == _one(objects, "ServiceAccount")["metadata"]["name"]
    assert pod["serviceAccountName"] == "hpo-operator"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/inject"] == "false"
    container = _container(deployment)
    assert container["image"] == "ghcr.io/hpo-operator/operator:0.1.0"
    expected = {
        "livenessProbe": OPERATOR_LIVENESS_PROBE,
        "resources": OPERATOR_RESOURCES,
        "securityContext": OPERATOR_CONTAINER_SECURITY_CONTEXT,
        "env": OPERATOR_ENV,
        "volumeMounts": OPERATOR_VOLUME_MOUNTS,
    }
    for field, value in expected.items():
        assert container[field] == value, field
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert _resolved_args(objects) == [
        *["operator", "--log-format", "json"],
        *["--poll", "2", "--metrics-port", "0"],
        *["--liveness-window", "60"],
    ]


def test_settings_come_from_the_configmap(chart: helm.Chart) -> None:
    default = render(chart, {})
    changed = render(chart, {"operator": {"pollSeconds": 0.5, "logFormat": "plain"}})
    assert _resolved_args(changed)[:5] == ["operator", "--log-format", "plain", "--poll", "0.5"]
    configmap = _one(changed, "ConfigMap")["data"]
    assert (configmap["HPO_S3_TIMEOUT"], configmap["HPO_S3_RETRIES"]) == ("10", "5")

    def checksum(objects: list[dict[str, Any]]) -> str:
        return _operator(objects)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum(default) != checksum(changed)  # a new ConfigMap restarts the operator


def test_trainer_defaults_reach_the_operator_and_its_pods(chart: helm.Chart) -> None:
    """trainerDefaults become HPO_TRAINER_* in the ConfigMap (none while empty), which the
    operator reads as the defaults of the pods it builds."""
    assert not any(k.startswith("HPO_TRAINER_") for k in _configmap_data(render(chart, {})))
    defaults = {
        "queueName": "team-a",
        "priorityClassName": "research",
        "schedulerName": "volcano",
        "podLabels": {"team": "a"},
        "podAnnotations": {"scheduling.volcano.sh/queue-name": "research"},
        "maxQueueSeconds": 2592000,
        "maxDisruptions": 0,
    }
    data = _configmap_data(render(chart, {"trainerDefaults": defaults}))
    # Numbers as integers (Helm's values are floats: not "2.592e+06"), and 0 is a value.
    assert data["HPO_TRAINER_MAX_QUEUE_SECONDS"] == "2592000"
    assert data["HPO_TRAINER_MAX_DISRUPTIONS"] == "0"
    got = PodDefaults.from_env({k: v for k, v in data.items() if k.startswith("HPO_TRAINER_")})
    assert got == PodDefaults(
        queue_name="team-a",
        priority_class_name="research",
        scheduler_name="volcano",
        labels={"team": "a"},
        annotations={"scheduling.volcano.sh/queue-name": "research"},
        max_queue_seconds=2592000,
        max_disruptions=0,
    )
    # null (the default) sets no variable: no queue limit, and 5 disruptions.
    unset = {"maxQueueSeconds": None, "maxDisruptions": None}
    assert not any(
        k.startswith("HPO_TRAINER_")
        for k in _configmap_data(render(chart, {"trainerDefaults": unset}))
    )


def _configmap_data(objects: list[dict[str, Any]]) -> dict[str, str]:
    return dict(_one(objects, "ConfigMap")["data"])


def test_image_tag_and_resources_come_from_values(chart: helm.Chart) -> None:
    resources = {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "2", "memory": "512Mi"},
    }
    objects = render(
        chart, {"image": {"repository": "example.org/hpo", "tag": "1.2.3"}, "resources": resources}
    )
    container = _container(_operator(objects))
    assert container["image"] == "example.org/hpo:1.2.3"
    assert container["resources"] == resources


def test_cluster_wide_rbac_has_exactly_the_operator_rules(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["defaults"]
    role, binding = _one(objects, "ClusterRole"), _one(objects, "ClusterRoleBinding")
    assert role["rules"] == OPERATOR_RULES + DISCOVERY_RULES
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = _one(objects, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    ]
    assert not _of_kind(objects, "Role") and not _of_kind(objects, "RoleBinding")
    assert "--namespace" not in _resolved_args(objects)


def test_namespaced_rbac_has_a_role_in_each_watched_namespace(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["namespaced"]
    # Only CRD discovery is cluster-wide; everything the operator touches is per namespace.
    (cluster_role,) = _of_kind(objects, "ClusterRole")
    assert cluster_role["rules"] == DISCOVERY_RULES
    (cluster_binding,) = _of_kind(objects, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    roles = {r["metadata"]["namespace"]: r for r in _of_kind(objects, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in _of_kind(objects, "RoleBinding")}
    assert set(roles) == set(bindings) == {"a", "b"}
    account = _one(objects, "ServiceAccount")["metadata"]
    for namespace in ("a", "b"):
        assert roles[namespace]["rules"] == OPERATOR_RULES
        assert bindings[namespace]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[namespace]["metadata"]["name"],
        }
        assert bindings[namespace]["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
        ]
    args = _resolved_args(objects)
    assert args[:3] == ["operator", "--log-format", "json"]
    assert args[-4:] == ["--namespace", "a", "--namespace", "b"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"rbac": {"clusterWide": False}},
            "rbac.clusterWide is false: list the namespaces to watch in watchNamespaces",
        ),
        (
            {"metrics": {"serviceMonitor": {"enabled": True}}},
            "metrics.serviceMonitor.enabled needs metrics.enabled",
        ),
        (
            {"metrics": {"enabled": True, "port": 8080}},
            "metrics.port 8080 is the liveness endpoint's port",
        ),
        (
            {"serviceAccount": {"create": False}},
            "serviceAccount.name: name the existing ServiceAccount",
        ),
        ({"dashboard": {"enabled": True}}, "dashboard.enabled: set dashboard.bucket"),
        (
            {"dashboard": {"enabled": True, "bucket": "s3://bkt/p"}},
            "dashboard.enabled: set dashboard.endpoint",
        ),
        (
            {"dashboard": {"enabled": True, "bucket": "s3://bkt/p", "endpoint": "s3:443"}},
            "dashboard.enabled: set dashboard.credentialsSecret.name to a Secret with read-only",
        ),
        (  # the dev MinIO's root keys are not lent to the dashboard either
            {"minio": {"enabled": True}, "dashboard": {"enabled": True, "bucket": "s3://bkt/p"}},
            "dashboard.enabled: set dashboard.credentialsSecret.name to a Secret with read-only",
        ),
        (
            {
                "minio": {"enabled": True},
                "dashboard": {
                    "enabled": True,
                    "bucket": "s3://bkt/p",
                    "credentialsSecret": {"name": f"{RELEASE}-minio"},
                },
            },
            "that is the dev MinIO's root keys",
        ),
    ],
)
def test_contradictory_values_fail_the_render(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_watching_some_namespaces_with_cluster_wide_rbac(chart: helm.Chart) -> None:
    objects = render(chart, {"watchNamespaces": ["team-a"]})
    assert _one(objects, "ClusterRole")["rules"] == OPERATOR_RULES + DISCOVERY_RULES
    assert _resolved_args(objects)[-2:] == ["--namespace", "team-a"]


# -- optional pieces ---------------------------------------------------------------------


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_minio(chart: helm.Chart, rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["minio"]
    deployment = _one(objects, "Deployment", "minio")
    service, pvc = _one(objects, "Service", "minio"), _one(objects, "PersistentVolumeClaim")
    secret = _one(objects, "Secret")
    name = deployment["metadata"]["name"]
    assert service["metadata"]["name"] == pvc["metadata"]["name"] == secret["metadata"]["name"]

    container = _container(deployment)
    assert re.fullmatch(
        r"quay\.io/minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", container["image"]
    ), container["image"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": name}} in pod["spec"]["volumes"]
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
    assert env["MINIO_ROOT_USER"] == {"name": name, "key": "accessKey"}
    assert env["MINIO_ROOT_PASSWORD"] == {"name": name, "key": "secretKey"}

    assert service["spec"]["ports"] == [
        {"name": "s3", "port": 9000, "targetPort": "s3", "protocol": "TCP"}
    ]
    assert _matches(service["spec"]["selector"], pod["metadata"]["labels"])
    # The operator's selector and MinIO's do not pick each other's pods.
    operator_pod = _operator(objects)["spec"]["template"]["metadata"]["labels"]
    assert not _matches(service["spec"]["selector"], operator_pod)
    assert not _matches(
        _operator(objects)["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]
    )
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"

    # Keys are generated (offline, lookup finds no Secret to keep, so each render differs).
    keys = _decoded(secret)
    assert set(keys) == {"accessKey", "secretKey"}
    assert re.fullmatch(r"[A-Za-z0-9]{20}", keys["accessKey"])
    assert re.fullmatch(r"[A-Za-z0-9]{40}", keys["secretKey"])
    again = _decoded(_one(render(chart, OPTIONS["minio"]), "Secret"))
    assert again["secretKey"] != keys["secretKey"]
    source = (CHART / "templates" / "minio-secret.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in source


def test_dashboard(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["dashboard"]
    deployment, service = _one(objects, "Deployment", "dashboard"), _one(objects, "Service")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == _container(_operator(objects))["image"]  # the operator's image
    assert container["args"] == [
        "dashboard",
        "s3://hpo-results/hpo",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--refresh",
        "5",
        "--endpoint",
        "s3.example.com:443",
        "--tls",
    ]
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert keys == {
        "HPO_S3_ACCESS_KEY": {"name": "store-keys", "key": "accessKey"},
        "HPO_S3_SECRET_KEY": {"name": "store-keys", "key": "secretKey"},
    }
    # No write access anywhere: no Kubernetes API token, no RBAC of its own, a read-only
    # root filesystem (only /tmp is writable).
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    assert len(_of_kind(objects, "ClusterRole")) == 1  # the operator's only
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(service["spec"]["selector"], labels)
    assert _matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert not _matches(
        service["spec"]["selector"], _operator(objects)["spec"]["template"]["metadata"]["labels"]
    )
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert (
        container["ports"][0]["name"] == "http" and container["ports"][0]["containerPort"] == 8080
    )


def test_dashboard_on_the_dev_minio(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["everything"]
    (container,) = _one(objects, "Deployment", "dashboard")["spec"]["template"]["spec"][
        "containers"
    ]
    minio = _one(objects, "Secret")["metadata"]["name"]
    assert container["args"][-3:] == ["--endpoint", f"{minio}.{NAMESPACE}.svc:9000", "--no-tls"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert refs == {"dashboard-readonly"}  # its own read-only keys, never MinIO's root keys


def test_minio_storage_class(chart: helm.Chart) -> None:
    values = {"minio": {"enabled": True, "persistence": {"size": "1Gi", "storageClass": "fast"}}}
    pvc = _one(render(chart, values), "PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_metrics(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["metrics"]
    service = _one(objects, "Service", "metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    operator = _operator(objects)
    assert _matches(service["spec"]["selector"], operator["spec"]["template"]["metadata"]["labels"])
    ports = _container(operator)["ports"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in ports
    assert _resolved_args(objects)[5:7] == ["--metrics-port", "9090"]
    assert not _of_kind(objects, "ServiceMonitor")


def test_service_monitor(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["serviceMonitor"]
    monitor = _one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    service = _one(objects, "Service", "metrics")
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]


# -- values.schema.json ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "at '/replicaCount': maximum: got 2, want 1"),
        (
            {"image": {"pullPolicy": "Sometimes"}},
            "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        ({"rbac": {"clusterWide": "yes"}}, "at '/rbac/clusterWide': got string, want boolean"),
        ({"replicas": 1}, "at '': additional properties 'replicas' not allowed"),
        (
            {"rbac": {"clusterwide": False}},
            "at '/rbac': additional properties 'clusterwide' not allowed",
        ),
        (
            {"operator": {"logFormat": "xml"}},
            "at '/operator/logFormat': value must be one of 'json', 'plain'",
        ),
        (
            {"operator": {"pollSeconds": 0}},
            "at '/operator/pollSeconds': exclusiveMinimum: got 0, want 0",
        ),
        ({"metrics": {"port": 80}}, "at '/metrics/port': minimum: got 80, want 1,024"),
        (
            {"watchNamespaces": ["Team_A"]},
            "at '/watchNamespaces/0': 'Team_A' does not match pattern",
        ),
        (
            {"minio": {"persistence": {"size": "lots"}}},
            "at '/minio/persistence/size': 'lots' does not match pattern",
        ),
        (
            {"minio": {"image": {"tag": "latest"}}},
            "at '/minio/image/tag': 'latest' does not match pattern",
        ),
        (
            {"trainerDefaults": {"queueName": "Team_A"}},
            "at '/trainerDefaults/queueName': 'Team_A' does not match pattern",
        ),
        (
            {"trainerDefaults": {"schedulerName": "my scheduler"}},
            "at '/trainerDefaults/schedulerName': 'my scheduler' does not match pattern",
        ),
        (
            {"trainerDefaults": {"podLabels": {"hpo-operator.dev/study": "x"}}},
            # Helm's validator names no location for a key
            "at '': invalid propertyName 'hpo-operator.dev/study'",
        ),
        (
            {"trainerDefaults": {"podLabels": {"team": "a b"}}},
            "at '/trainerDefaults/podLabels/team': 'a b' does not match pattern",
        ),
        (
            {"trainerDefaults": {"maxQueueSeconds": 0}},
            "at '/trainerDefaults/maxQueueSeconds': minimum: got 0, want 1",
        ),
        (
            {"trainerDefaults": {"maxQueueSeconds": "1h"}},
            "at '/trainerDefaults/maxQueueSeconds': got string, want null or integer",
        ),
        (
            {"trainerDefaults": {"maxDisruptions": -1}},
            "at '/trainerDefaults/maxDisruptions': minimum: got -1, want 0",
        ),
        (
            {"trainerDefaults": {"maxDisruptions": 1.5}},
            "at '/trainerDefaults/maxDisruptions': got number, want null or integer",
        ),
    ],
)
def test_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    text = str(caught.value)
    assert text.startswith("values don't meet the specifications of the schema(s)"), text
    assert f"hpo-operator:\n- {message}" in text, text
    # helm lint reports the same, as an error.
    report = helm.lint(CHART, values)
    assert any(message in e for e in report["errors"]), report


def test_schema_accepts_every_option(chart: helm.Chart) -> None:
    for values in OPTIONS.values():
        chart.validate_schema(values)
    chart.validate_schema(chart.values)


# -- Kubernetes schemas and Pod Security -------------------------------------------------

# kubernetes-validate knows the built-in kinds only; ServiceMonitor is a CRD-typed object
# (the Prometheus Operator's monitoring.coreos.com/v1), so it is checked by the assertions
# of test_service_monitor instead.
_NOT_BUILT_IN = {"ServiceMonitor"}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_manifest_meets_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], option: str
) -> None:
    checked = 0
    for obj in rendered[option]:
        if obj["kind"] in _NOT_BUILT_IN:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")
        checked += 1
    assert checked >= 5


def test_the_kubernetes_validation_is_strict(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = yaml.safe_load(yaml.safe_dump(_operator(rendered["defaults"])))
    _container(deployment)["livenessProbe"]["httpGet"]["paht"] = "/healthz"  # a typo
    with pytest.raises(kubernetes_validate.ValidationError, match="'paht' was unexpected"):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_pod_meets_the_restricted_pod_security_standard(
    rendered: dict[str, list[dict[str, Any]]], option: str
) -> None:
    deployments = _of_kind(rendered[option], "Deployment")
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert restricted_violations(pod) == [], deployment["metadata"]["name"]
    # the dev MinIO and the dashboard are checked too
    assert len(deployments) == {"minio": 2, "dashboard": 2, "everything": 3}.get(option, 1)


def test_the_restricted_checker_catches_violations(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    pod = _operator(rendered["defaults"])["spec"]["template"]["spec"]

    def broken(**changes: Any) -> dict[str, Any]:
        """A copy of the pod with fields replaced (c_FIELD: the container's)."""
        bad = yaml.safe_load(yaml.safe_dump(pod))
        container = bad["containers"][0]
        for key, value in changes.items():
            target, field = (container, key[2:]) if key.startswith("c_") else (bad, key)
            target[field] = value
        return bad

    assert restricted_violations(pod) == []
    cases = {
        "hostNetwork is set": broken(hostNetwork=True),
        "hostPID is set": broken(hostPID=True),
        "hostIPC is set": broken(hostIPC=True),
        "volume host: hostPath": broken(volumes=[{"name": "host", "hostPath": {"path": "/"}}]),
        "operator: privileged": broken(
            c_securityContext={**_container_sc(pod), "privileged": True}
        ),
        "operator: allowPrivilegeEscalation is not false": broken(
            c_securityContext={**_container_sc(pod), "allowPrivilegeEscalation": True}
        ),
        "operator: capabilities do not drop ALL": broken(
            c_securityContext={**_container_sc(pod), "capabilities": {"drop": ["NET_RAW"]}}
        ),
        "operator: runAsNonRoot is not true": broken(
            securityContext={"seccompProfile": {"type": "RuntimeDefault"}}
        ),
        "operator: seccompProfile is None, not RuntimeDefault or Localhost": broken(
            securityContext={"runAsNonRoot": True}
        ),
        "operator: hostPort 8080": broken(c_ports=[{"containerPort": 8080, "hostPort": 8080}]),
    }
    for expected, bad in cases.items():
        assert expected in restricted_violations(bad), expected


def test_notes_tell_how_to_start(chart: helm.Chart) -> None:
    notes = chart.render({}, name=RELEASE, namespace=NAMESPACE)["hpo-operator/templates/NOTES.txt"]
    assert "kubectl create secret generic minio-credentials" in notes
    assert "kubectl get hpostudies" in notes
    assert "kubectl apply -f manifests/example-study.yaml" in notes
    minio_notes = chart.render(OPTIONS["minio"], name=RELEASE, namespace=NAMESPACE)[
        "hpo-operator/templates/NOTES.txt"
    ]
    assert "hpo-operator-minio.hpo-system.svc:9000" in minio_notes
