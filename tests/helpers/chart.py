"""The Helm chart under test and what the operator must get from it (its RBAC rules),
stated once for tests/unit/test_chart.py, test_manifests.py and the operator's RBAC check."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import yaml

from helpers.study import REPO

CHART = REPO / "charts" / "hpo-operator"
MANIFESTS = REPO / "manifests"
RELEASE, NAMESPACE = "hpo-operator", "hpo-system"
KUBE_VERSION = "1.32"  # a version kubernetes-validate ships schemas for


# Exactly what the operator uses (tests/e2e/test_operator.py checks these against the API calls
# it makes): studies get/list/watch/patch and their status patch; pods
# list/watch/create/patch/delete; secrets get; events create (core and events.k8s.io).
OPERATOR_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["hpo-operator.dev"],
        "resources": ["hpostudies"],
        "verbs": ["list", "watch", "patch"],
    },
    {"apiGroups": ["hpo-operator.dev"], "resources": ["hpostudies/status"], "verbs": ["patch"]},
    {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list", "create"]},
]
# Cluster-scoped: in the ClusterRole, or a ClusterRole of its own in namespaced mode.
DISCOVERY_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    }
]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (kubectl and the API server refuse them)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        assert not duplicates, f"duplicate keys {sorted(duplicates)} at {node.start_mark}"
        return super().construct_mapping(node, deep=deep)


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(text, Loader=_UniqueKeyLoader) if doc]


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += load_all(text)
    return objects
