"""The few Kubernetes API calls the operator makes, on the official client.

Everything returns plain dicts (``_preload_content=False``): the operator
reads a handful of fields, and the client's models validate strictly and
cost time at scale. Every verb here is one the RBAC manifest grants.

Every call has a timeout and is retried on what heals by waiting (429, 5xx, a
409 write conflict, a broken or timed-out connection), honouring
``Retry-After``: the kubernetes client retries none of these itself. Creating a
pod is idempotent: its name is deterministic, so a 409 AlreadyExists (e.g. on
the retry of a create whose answer was lost) means the pod is there: adopt it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from hpo.kube.crd import PLURAL, VERSION
from hpo.kube.pods import LABEL_STUDY
from hpo.study.spec import API_GROUP

USER_AGENT = "hpo-operator/0.1.0"
#: (connect, read) seconds for one request; a hung API server must not hang a study.
REQUEST_TIMEOUT = (10.0, 30.0)
#: Tries per call (the first + retries) and the cap of one wait between them.
ATTEMPTS = 8
MAX_WAIT_S = 10.0

#: Connections to the API server the operator keeps for reuse. Every study's loop runs on
#: a thread of its own and calls the API; the client's default (5 per CPU, 10 on a small
#: node) made most of 50 studies' calls open and drop a connection ("Connection pool is
#: full, discarding connection"). Past this many studies calls still work, as those did.
POOL_CONNECTIONS = 128

log = logging.getLogger("hpo.operator")
T = TypeVar("T")
_backoff = wait_random_exponential(multiplier=0.1, max=5.0)


def pooled_api_client(configuration: client.Configuration) -> client.ApiClient:
    """An API client that keeps a connection for each study thread (``POOL_CONNECTIONS``)."""
    configuration.connection_pool_maxsize = max(
        configuration.connection_pool_maxsize or 0, POOL_CONNECTIONS
    )
    return client.ApiClient(configuration)


class SecretProblem(RuntimeError):
    """The Secret named by spec.storage.credentialsSecret is missing or incomplete."""


def _json(response: Any) -> Any:
    return json.loads(response.data)


def _reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("reason") or "")
    except (ValueError, AttributeError):
        return ""


def transient(exc: BaseException) -> bool:
    """Whether the same call may succeed if made again later."""
    if isinstance(exc, ApiException):
        if exc.status == 409:  # a write conflict heals; an existing name does not
            return _reason(exc) != "AlreadyExists"
        return exc.status in (0, 429, 500, 502, 503, 504)
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


def not_allowed(exc: BaseException) -> bool:
    """Refused for now by the cluster (quota used up, no RBAC: 401, 403), not by the call."""
    return getattr(exc, "status", None) in (401, 403)


def api_message(exc: BaseException) -> str:
    """The API server's own words (``Status.message``), else the exception's text."""
    body = getattr(exc, "body", None)
    try:
        message = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError):
        message = None
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return f"{reason}: {message or str(body or exc)[:300]}"


def refusal(exc: BaseException) -> str:
    """Why the API refused a call (admission, invalid): its reason and body, cut short."""
    reason = getattr(exc, "reason", None) or type(exc).__name__
    body_text = getattr(exc, "body", "") or str(exc)
    return f"{reason}: {str(body_text)[:300]}"


def _wait(state: RetryCallState) -> float:
    """``Retry-After`` when the server names a wait (429, 503), else jittered backoff."""
    exc = state.outcome.exception() if state.outcome else None
    headers = getattr(exc, "headers", None) or {}
    try:
        wait = float(headers.get("Retry-After", ""))
    except ValueError:  # absent, or an HTTP date: our own backoff
        return _backoff(state)
    if not math.isfinite(wait) or wait < 0:  # "nan", "-5": not a wait a server can mean
        return _backoff(state)
    return min(wait, MAX_WAIT_S)


def retrying(what: str, fn: Callable[[], T]) -> T:
    """``fn()``, retried while it fails transiently (at most ``ATTEMPTS`` tries)."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        status = getattr(exc, "status", None) or type(exc).__name__
        log.info("API %s failed (%s); retry %d", what, status, state.attempt_number)

    return Retrying(
        stop=stop_after_attempt(ATTEMPTS),
        wait=_wait,
        retry=retry_if_exception(transient),
        before_sleep=before_sleep,
        reraise=True,
    )(fn)


class Cluster:
    """Every Kubernetes call the operator makes, over CoreV1Api and CustomObjectsApi.

    Each call has a request timeout and retries transient errors (``retrying``);
    the user agent tells the operator's calls apart in audit logs and tests.
    """

    def __init__(self, api: client.ApiClient, user_agent: str = USER_AGENT) -> None:
        api.user_agent = user_agent  # so the operator's calls can be told apart (audit logs, tests)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    # -- studies -------------------------------------------------------------

    def get_study(self, namespace: str, name: str) -> dict[str, Any] | None:
        def call() -> dict[str, Any] | None:
            try:
                return _json(
                    self.custom.get_namespaced_custom_object(
                        API_GROUP,
                        VERSION,
                        namespace,
                        PLURAL,
                        name,
                        _preload_content=False,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        return retrying(f"get study {namespace}/{name}", call)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        retrying(
            f"patch status of {namespace}/{name}",
            lambda: self.custom.patch_namespaced_custom_object_status(
                API_GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": status},
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )

    # -- pods ----------------------------------------------------------------

    def list_pods(self, namespace: str, study: str) -> list[dict[str, Any]]:
        raw = retrying(
            f"list pods of {namespace}/{study}",
            lambda: _json(
                self.core.list_namespaced_pod(
                    namespace,
                    label_selector=f"{LABEL_STUDY}={study}",
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            ),
        )
        return list(raw.get("items") or [])

    def _pod_exists(self, namespace: str, name: str) -> bool:
        # A list by name, not a get: the operator's RBAC grants list, watch, create,
        # patch and delete on pods, and nothing more is needed.
        raw = _json(
            self.core.list_namespaced_pod(
                namespace,
                field_selector=f"metadata.name={name}",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
        return bool(raw.get("items"))

    def create_pod(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """Create; False if a pod of that name exists already: an earlier run, or an
        earlier try of this call whose answer was lost, made it (adopt it)."""
        name = manifest["metadata"]["name"]

        def create() -> None:
            # The signature names the client's model (V1Pod), but its pydantic validate_call
            # turns a dict into one: the operator builds plain manifests (hpo.kube.pods).
            self.core.create_namespaced_pod(
                namespace,
                manifest,  # type: ignore[arg-type]
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )

        def call() -> bool:
            try:
                create()
                return True
            except ApiException as exc:
                if exc.status != 409:
                    raise
                if self._pod_exists(namespace, name):
                    return False
            create()  # that pod went away between the two calls: its name is free again
            return True

        return retrying(f"create pod {namespace}/{name}", call)

    def delete_pod(self, namespace: str, name: str, force: bool = False) -> None:
        """Delete a pod; ``force``: without grace (a lost node's kubelet never confirms)."""

        def call() -> None:
            try:
                self.core.delete_namespaced_pod(
                    name,
                    namespace,
                    grace_period_seconds=0 if force else None,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise

        retrying(f"delete pod {namespace}/{name}", call)

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        def call() -> None:
            try:
                self.core.patch_namespaced_pod(
                    name,
                    namespace,
                    {"metadata": {"annotations": annotations}},
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise

        retrying(f"annotate pod {namespace}/{name}", call)

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
            raw = retrying(
                f"read secret {namespace}/{secret}",
                lambda: _json(
                    self.core.read_namespaced_secret(
                        secret, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                    )
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                raise SecretProblem(
                    f"spec.storage.credentialsSecret: Secret {namespace}/{secret} not found; "
                    f"create it in namespace {namespace} with the keys {access_key!r} and "
                    f"{secret_key!r} (the store's access and secret keys), or name another"
                ) from None
            raise
        data = raw.get("data") or {}
        values = []
        for key in (access_key, secret_key):
            if key not in data:
                raise SecretProblem(
                    f"spec.storage.credentialsSecret: Secret {namespace}/{secret} has no key "
                    f"{key!r} (keys: {', '.join(sorted(data)) or 'none'}); add it, or name the "
                    "key that holds it (credentialsSecret.accessKeyKey or .secretKeyKey)"
                )
            values.append(base64.b64decode(data[key]).decode())
        return values[0], values[1]

    def mount_failures(self, namespace: str) -> list[dict[str, Any]]:
        """The kubelet's ``FailedMount`` events on pods in ``namespace`` (a ConfigMap or
        Secret volume whose object is missing): the only place a kubelet says so."""
        raw = retrying(
            f"list FailedMount events in {namespace}",
            lambda: _json(
                self.core.list_namespaced_event(
                    namespace,
                    field_selector="involvedObject.kind=Pod,reason=FailedMount",
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            ),
        )
        return list(raw.get("items") or [])

    def event(self, study: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the study (best effort: events are not worth failing for)."""
        meta = study["metadata"]
        log.log(
            logging.WARNING if type_ == "Warning" else logging.INFO,
            "study %s/%s: %s: %s",
            meta["namespace"],
            meta["name"],
            reason,
            message,
        )
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
        with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError):
            # As for pods: the signature names CoreV1Event; validate_call takes the dict.
            self.core.create_namespaced_event(
                meta["namespace"],
                body,  # type: ignore[arg-type]
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
