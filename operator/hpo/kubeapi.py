"""The few Kubernetes API calls the operator makes, on the official client.

Everything returns plain dicts (``_preload_content=False``): the operator
reads a handful of fields, and the client's models validate strictly and
cost time at scale. Every verb here is one the RBAC manifest grants.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hpo.crd import PLURAL, VERSION
from hpo.pods import LABEL_STUDY
from hpo.spec import API_GROUP

USER_AGENT = "hpo-operator/0.1.0"


class SecretProblem(RuntimeError):
    """The Secret named by spec.storage.credentialsSecret is missing or incomplete."""


def _json(response: Any) -> Any:
    return json.loads(response.data)


class Cluster:
    """A thin, counted wrapper over CoreV1Api and CustomObjectsApi."""

    def __init__(self, api: client.ApiClient, user_agent: str = USER_AGENT) -> None:
        api.user_agent = user_agent  # so the operator's calls can be told apart (audit logs, tests)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    # -- studies -------------------------------------------------------------

    def get_study(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(
                self.custom.get_namespaced_custom_object(
                    API_GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            API_GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )

    # -- pods ----------------------------------------------------------------

    def list_pods(self, namespace: str, study: str) -> list[dict[str, Any]]:
        raw = _json(
            self.core.list_namespaced_pod(
                namespace, label_selector=f"{LABEL_STUDY}={study}", _preload_content=False
            )
        )
        return list(raw.get("items") or [])

    def create_pod(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """Create; False if a pod of that name exists already (an earlier run made it)."""
        try:
            self.core.create_namespaced_pod(namespace, manifest, _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        try:
            self.core.patch_namespaced_pod(
                name, namespace, {"metadata": {"annotations": annotations}}, _preload_content=False
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_study_pods(self, namespace: str, study: str) -> int:
        pods = self.list_pods(namespace, study)
        for pod in pods:
            self.delete_pod(namespace, pod["metadata"]["name"])
        return len(pods)

    # -- secrets and events ------------------------------------------------

    def read_credentials(
        self, namespace: str, secret: str, access_key: str, secret_key: str
    ) -> tuple[str, str]:
        try:
            raw = _json(self.core.read_namespaced_secret(secret, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                raise SecretProblem(
                    f"spec.storage.credentialsSecret: Secret {namespace}/{secret} not found"
                ) from None
            raise
        data = raw.get("data") or {}
        values = []
        for key in (access_key, secret_key):
            if key not in data:
                raise SecretProblem(
                    f"spec.storage.credentialsSecret: Secret {namespace}/{secret} has no key "
                    f"{key!r} (keys: {', '.join(sorted(data)) or 'none'})"
                )
            values.append(base64.b64decode(data[key]).decode())
        return values[0], values[1]

    def event(self, study: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the study (best effort: events are not worth failing for)."""
        meta = study["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": study.get("apiVersion"),
                "kind": study.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1000],
            "source": {"component": "hpo-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        with contextlib.suppress(ApiException):
            self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False)
