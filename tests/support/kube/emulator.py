"""A kmock ``KubernetesEmulator`` that behaves enough like a real API server for kopf,
the ``kubernetes`` client and ``kubectl``.

The stock emulator (kmock 0.8) keeps objects and serves discovery, but it sets no
uid/resourceVersion/creationTimestamp, answers 500 to a failed JSON-patch ``test``,
200 to a create, 404 to PUT, and ignores generateName, selectors, the status
subresource and owner references; it also crashes on ``/api/v1/namespaces``.
This subclass replaces its object handling (list, watch, get, create, replace,
patch, delete, deletecollection) and keeps the rest of kmock: discovery, the
resource registry (``emulator.resources``), the object store with history
(``emulator.objects[...]``) and the DSL: reactions that a test adds
(``emulator['patch', kmock.resource('v1/pods')] << 500``) answer before the
emulator does, and an intercepted request changes nothing.

What it does, as Kubernetes does:

- ``metadata.uid``, ``resourceVersion`` (one counter, bumped on every write),
  ``creationTimestamp``, ``generation`` (bumped on changes outside metadata and,
  for resources with a status subresource, outside status);
- create answers 201; ``generateName``; 409 on an existing name; names and labels
  are validated (422);
- merge patch, JSON patch (a failed ``test`` answers 422), strategic merge patch
  (approximated: lists of dicts keyed by ``name``/``type``/``uid`` merge,
  others replace; 415 on custom resources), PUT (``replace_*``), resourceVersion
  preconditions (409), no-op writes bump nothing;
- the status subresource: writes to ``/status`` change only status; writes to the
  main resource keep status; status is dropped on create;
- finalizers: DELETE sets ``deletionTimestamp`` and keeps the object until its
  finalizers are gone; no new finalizers on a deleting object (422);
- garbage collection by ``ownerReferences`` (background, synchronous; Orphan
  honoured); deleting a namespace deletes what is in it;
- ``labelSelector`` (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``) and
  ``fieldSelector`` (any dotted path with ``=``, ``==``, ``!=``) on list, watch and
  deletecollection; watch sends ADDED/DELETED when an object starts/stops matching;
- list pagination (``limit``/``continue``); watch from a resourceVersion (410 when
  too old), ``timeoutSeconds``, ``sendInitialEvents`` with its bookmark;
  ``Table`` answers for ``kubectl get``;
- a created CustomResourceDefinition registers its resource.

Simplifications: pods are deleted at once (no grace period: a kubelet is not
needed to finish a deletion); Foreground propagation acts as Background; no
admission (but ``mutators``, a mutating webhook's stand-in), quota, RBAC, managedFields
or server-side apply (415).

Every request is recorded in ``emulator.request_log`` (method, path, query, verb,
status) so tests and benchmarks can count API calls per verb.

Faults, for reliability tests: set ``emulator.faults = ApiFaults(...)`` and the
emulator answers a seeded fraction of the requests of chosen clients (by
User-Agent prefixes in ``agents``, e.g. an operator's and not the test's) with 500, 409 or 429
(``Retry-After: 1``) instead of serving them, or serves chosen requests and then
answers 504 (a write applied whose answer is lost, as a real API server's
timeout does). ``faults.injected`` lists what was answered so.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import dataclasses
import datetime as dt
import json
import math
import random
import re
import sys
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
from kmock._internal import parsing, rendering
from typing_extensions import override

PODS = kmock.resource("", "v1", "pods")
NAMESPACES = kmock.resource("", "v1", "namespaces")
SECRETS = kmock.resource("", "v1", "secrets")
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")

CR_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
Key = tuple[kmock.resource, str | None, str]

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_SEL_EXISTS = re.compile(r"(!?)\s*([A-Za-z0-9][-A-Za-z0-9_./]*)")
_SEL_SET = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_./]*)\s+(in|notin)\s*\(([^)]*)\)")
_SEL_EQ = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_./]*)\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)")
_FIELD_EQ = re.compile(r"([A-Za-z0-9_.\[\]'\"/-]+)\s*(==|!=|=)\s*(.*)")


# -- errors --------------------------------------------------------------------------------


@attrs.frozen
class ApiError(kmock.KubernetesError):
    """An API error answered as a Kubernetes ``Status`` (``details`` is a StatusDetails)."""

    status: int = 500
    reason: str | None = "InternalError"
    message: str | None = None
    details: Any | None = None


def _qualified(resource: kmock.resource) -> str:
    return f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)


def _not_found(resource: kmock.resource, name: str | None) -> ApiError:
    what = _qualified(resource)
    return ApiError(
        404,
        "NotFound",
        f'{what} "{name}" not found',
        {"name": name, "group": resource.group, "kind": resource.plural},
    )


def _conflict(resource: kmock.resource, name: str, why: str) -> ApiError:
    message = f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": {why}'
    return ApiError(
        409, "Conflict", message, {"name": name, "group": resource.group, "kind": resource.plural}
    )


def _invalid(resource: kmock.resource, kind: str, name: str, field: str, why: str) -> ApiError:
    message = f'{kind} "{name}" is invalid: {field}: {why}'
    details = {
        "name": name,
        "group": resource.group,
        "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "message": why, "field": field}],
    }
    return ApiError(422, "Invalid", message, details)


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


# -- small helpers -------------------------------------------------------------------------


def now_rfc3339() -> str:
    """The current time as Kubernetes writes timestamps (seconds, UTC, ``Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_version(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, ``None`` deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


_SMP_KEYS = ("name", "type", "uid", "containerPort", "mountPath", "devicePath", "ip", "topologyKey")
_SMP_SET_LISTS = {"finalizers"}


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """An approximation of Kubernetes' strategic merge patch.

    Lists of dicts that share a merge key (``name``, ``type``, ``uid``, ...) merge by
    that key; ``finalizers`` merge as a set; other lists replace; ``$``-directives
    are dropped except ``$patch: delete|replace`` on dicts and list items.
    """
    if isinstance(patch, Mapping):
        directive = patch.get("$patch")
        if directive == "delete":
            return None
        body = {k: v for k, v in patch.items() if not k.startswith("$")}
        if directive == "replace" or not isinstance(target, Mapping):
            base: dict[str, Any] = {}
        else:
            base = dict(target)
        for key, value in body.items():
            if value is None:
                base.pop(key, None)
            else:
                merged = strategic_merge_patch(base.get(key), value, key)
                if merged is None and isinstance(value, Mapping):
                    base.pop(key, None)
                else:
                    base[key] = merged
        return base
    if isinstance(patch, list):
        if field in _SMP_SET_LISTS and isinstance(target, list):
            return list(target) + [item for item in patch if item not in target]
        if not isinstance(target, list) or not patch:
            return [
                strategic_merge_patch(None, item) for item in patch if item != {"$patch": "delete"}
            ]
        if not all(isinstance(i, Mapping) for i in [*patch, *target]):
            return copy.deepcopy(patch)
        merge_key = next(
            (
                k
                for k in _SMP_KEYS
                if all(k in i for i in patch if "$patch" not in i) and all(k in i for i in target)
            ),
            None,
        )
        if merge_key is None:
            return copy.deepcopy(patch)
        result = [dict(i) for i in target]
        for item in patch:
            position = next(
                (n for n, i in enumerate(result) if i.get(merge_key) == item.get(merge_key)), None
            )
            if item.get("$patch") == "delete":
                if position is not None:
                    del result[position]
            elif position is None:
                result.append(strategic_merge_patch(None, item))
            else:
                result[position] = strategic_merge_patch(result[position], item)
        return result
    return copy.deepcopy(patch)


def _split_selector(text: str) -> list[str]:
    parts: list[str] = []
    depth, current = 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


Predicate = Callable[[Mapping[str, Any]], bool]


def parse_label_selector(text: str) -> list[Predicate]:
    """Label selector requirements as predicates over an object (all must hold)."""
    predicates: list[Predicate] = []
    for req in _split_selector(text):
        if m := _SEL_SET.fullmatch(req):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",") if v.strip()}
            if op == "in":
                predicates.append(lambda o, k=key, vs=values: _labels(o).get(k) in vs)
            else:
                predicates.append(lambda o, k=key, vs=values: _labels(o).get(k) not in vs)
        elif m := _SEL_EQ.fullmatch(req):
            key, op, value = m[1], m[2], m[3]
            if op == "!=":
                predicates.append(lambda o, k=key, v=value: _labels(o).get(k) != v)
            else:
                predicates.append(lambda o, k=key, v=value: _labels(o).get(k) == v)
        elif m := _SEL_EXISTS.fullmatch(req):
            key, negated = m[2], bool(m[1])
            predicates.append(lambda o, k=key, n=negated: (k in _labels(o)) != n)
        else:
            raise _bad_request(f"unable to parse requirement: {req!r}")
    return predicates


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """A dotted path's value as a field selector sees it (absent: empty string)."""
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def parse_field_selector(text: str) -> list[Predicate]:
    """Field selector requirements (any dotted path; ``=``, ``==``, ``!=``) as predicates."""
    predicates: list[Predicate] = []
    for req in _split_selector(text):
        m = _FIELD_EQ.fullmatch(req)
        if not m:
            raise _bad_request(f"invalid selector: {req!r}; can't understand it")
        path, op, value = m[1], m[2], m[3].strip()
        if op == "!=":
            predicates.append(lambda o, p=path, v=value: field_value(o, p) != v)
        else:
            predicates.append(lambda o, p=path, v=value: field_value(o, p) == v)
    return predicates


def parse_api_path(path: str) -> parsing.ParsedPath:
    """Like kmock's parser, but right about ``/api/v1/namespaces[/name[/status]]``."""
    parts = [p for p in path.strip("/").split("/")]
    if len(parts) < 2 or parts[0] not in ("api", "apis"):
        return parsing.ParsedPath()
    if parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    else:
        group, version, rest = parts[1], (parts[2] if len(parts) > 2 else None), parts[3:]
    namespace = None
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return parsing.ParsedPath(group, version, plural, namespace, name, subresource)


def _verb(method: str, parsed: parsing.ParsedPath, query: Mapping[str, str]) -> str:
    if parsed.plural is None:
        return "discovery"
    if method == "GET":
        return "watch" if query.get("watch") in ("true", "1") else "get" if parsed.name else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if parsed.name else "deletecollection",
    }.get(method, method.lower())


@dataclasses.dataclass
class RequestRecord:
    """One API request as the emulator saw it (``status`` is set once answered)."""

    method: str
    path: str
    query: dict[str, str]
    verb: str  # get list watch create update patch delete deletecollection discovery ...
    resource: str | None  # plural, e.g. "pods"
    namespace: str | None
    name: str | None
    subresource: str | None
    status: int | None = None
    group: str | None = None  # "" for the core API
    user_agent: str = ""


@dataclasses.dataclass
class ApiFaults:
    """What the emulator answers wrongly on purpose (see the module docstring).

    ``rate``: the fraction of requests from ``agents`` answered with one of
    ``statuses`` (chosen by a ``random.Random(seed)``) instead of being served; 409
    only for patch and update, as a real API server answers a write conflict (never
    to a read).
    ``lose[(verb, plural)] = n``: the next ``n`` such requests are served, then
    answered 504. ``refuse[(verb, plural)] = n``: the next ``n`` are answered 500
    unserved; ``forbid[(verb, plural)] = n``: 403, as an exhausted ResourceQuota or
    missing RBAC answers; ``taken[(verb, plural)] = n``: 409 AlreadyExists, as for a
    name whose old object goes away at once. ``verbs``: limit ``rate`` to these verbs (None: all, watches too).
    """

    rate: float = 0.0
    seed: int = 0
    statuses: tuple[int, ...] = (500, 409, 429)
    agents: tuple[str, ...] = ()  # User-Agent prefixes; () for every client
    verbs: frozenset[str] | None = None
    lose: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    refuse: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    forbid: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    taken: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    injected: list[tuple[str, str | None, int]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def _take(self, table: dict[tuple[str, str], int], record: RequestRecord) -> bool:
        key = (record.verb, record.resource or "")
        if table.get(key, 0) > 0:
            table[key] -= 1
            return True
        return False

    def before(self, record: RequestRecord) -> int | None:
        """The status to answer instead of serving ``record``, or None to serve it."""
        if self.agents and not record.user_agent.startswith(self.agents):
            return None
        if self._take(self.refuse, record):
            status: int | None = 500
        elif self._take(self.forbid, record):
            status = 403
        elif self._take(self.taken, record):
            status = 409
        elif self.rate and (self.verbs is None or record.verb in self.verbs):
            hit = self._random.random() < self.rate
            writes = record.verb in ("patch", "update")
            choices = [s for s in self.statuses if s != 409 or writes]
            status = self._random.choice(choices) if hit and choices else None
        else:
            status = None
        if status is not None:
            self.injected.append((record.verb, record.resource, status))
        return status

    def after(self, record: RequestRecord) -> bool:
        """Whether to answer 504 to ``record`` although it was served."""
        mine = not self.agents or record.user_agent.startswith(self.agents)
        if mine and self._take(self.lose, record):
            self.injected.append((record.verb, record.resource, 504))
            return True
        return False


_FAULT_TEXT = {
    409: (
        "Conflict",
        "Operation cannot be fulfilled: the object has been modified; please "
        "apply your changes to the latest version and try again",
    ),
    403: (
        "Forbidden",
        "pods is forbidden: exceeded quota: compute, requested: limits.cpu=1, "
        "used: limits.cpu=4, limited: limits.cpu=4",
    ),
    429: (
        "TooManyRequests",
        "the server has received too many requests and has asked us to try again later",
    ),
    500: (
        "InternalError",
        'an error on the server ("injected") has prevented the request from succeeding',
    ),
    504: (
        "Timeout",
        "Timeout: request did not complete within requested timeout - context deadline exceeded",
    ),
}


def fault_response(status: int, verb: str = "") -> aiohttp.web.StreamResponse:
    """A Kubernetes ``Status`` answer for an injected fault."""
    reason, message = _FAULT_TEXT.get(status, ("InternalError", "injected fault"))
    if status == 409 and verb == "create":  # a create conflicts only with an existing name
        reason, message = "AlreadyExists", "an object of that name already exists"
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"retryAfterSeconds": 1} if status == 429 else {},
        "code": status,
    }
    headers = {"Retry-After": "1"} if status == 429 else None
    return aiohttp.web.json_response(body, status=status, headers=headers)


@dataclasses.dataclass(frozen=True)
class _Event:
    rv: int
    resource: kmock.resource
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None  # the previous state of a MODIFIED object


# -- the emulator --------------------------------------------------------------------------


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator, fixed and extended (see the module docstring).

    Built-in resources come from ``resources.load_bundled()``; the CRDs in ``crds``
    (CustomResourceDefinition dicts, handed in by the test's fixture) are registered
    with their CRD objects; ``namespaces`` exist from the start. Create objects in
    other namespaces and they appear on the fly (``auto_namespaces``).
    All state changes happen on the server's event loop: from another thread, go
    through the HTTP API or ``KubeServer.call()``.
    """

    namespaces: tuple[str, ...] = ("default", "kube-system")
    auto_namespaces: bool = True
    #: CustomResourceDefinition bodies to serve from the start (the emulator knows no product).
    crds: tuple[Mapping[str, Any], ...] = ()
    history_limit: int = 10  # versions kept per object in ``objects[...].history``
    max_events: int = 100_000  # watch events kept for resumption from a resourceVersion
    keep_requests: bool = True  # also keep kmock's Request objects (for DSL assertions)

    request_log: list[RequestRecord] = attrs.field(factory=list, init=False)
    #: Injected errors (None: none); may be set and cleared while the server runs.
    faults: ApiFaults | None = attrs.field(default=None, init=False)
    #: Mutating admission, as a webhook would do it: each is called with the resource's
    #: plural and the body of every create (before it is stored) and may change the body
    #: (e.g. Kueue's webhook adds a scheduling gate to a pod with a queue-name label).
    mutators: list[Callable[[str, dict[str, Any]], None]] = attrs.field(factory=list, init=False)
    pod_logs: dict[tuple[str, str], str] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=0, init=False)
    _events: list[_Event] = attrs.field(factory=list, init=False)
    _events_base: int = attrs.field(default=0, init=False)
    _wakers: set[asyncio.Event] = attrs.field(factory=set, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _uids: dict[str, Key] = attrs.field(factory=dict, init=False)
    _dependents: dict[str, set[Key]] = attrs.field(factory=dict, init=False)
    _custom: set[kmock.resource] = attrs.field(factory=set, init=False)
    #: A CRD's additionalPrinterColumns (Age aside), for kubectl get's table.
    printer_columns: dict[Any, list[dict[str, Any]]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock 0.8 uses the deprecated importlib.resources.read_binary: keep test logs quiet.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.resources.load_bundled()
        for definition in self.crds:
            self.register_crd(definition)
        for namespace in self.namespaces:
            self.ensure_namespace(namespace)

    # -- public helpers (call on the server loop) -------------------------------------------

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out."""
        return self._rv

    def register_crd(self, crd: Mapping[str, Any], *, store: bool = True) -> None:
        """Serve a CRD's resource (every served version); store the CRD object too."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            resource = kmock.resource(spec["group"], version["name"], names["plural"])
            self.resources[resource] = kmock.ResourceInfo(
                kind=names.get("kind"),
                singular=names.get("singular") or names["plural"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                verbs=set(CR_VERBS),
                shortnames=set(names.get("shortNames") or []),
                categories=set(names.get("categories") or []),
                subresources={
                    s for s in (version.get("subresources") or {}) if s in ("status", "scale")
                },
            )
            self._custom.add(resource)
            self.printer_columns[resource] = [
                c for c in version.get("additionalPrinterColumns") or [] if c.get("name") != "Age"
            ]
        key: Key = (CRDS, None, crd["metadata"]["name"])
        if store and self._live(key) is None:
            self._create_object(CRDS, self.resources[CRDS], copy.deepcopy(dict(crd)), None)

    def ensure_namespace(self, name: str) -> None:
        """Create a namespace unless it exists."""
        if self._live((NAMESPACES, None, name)) is None:
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            self._create_object(NAMESPACES, self.resources[NAMESPACES], body, None)

    def create_object(
        self, resource: kmock.resource | str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create an object as a POST would (all defaulting and events); returns it."""
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        info = self._info(res)
        namespace = (body.get("metadata") or {}).get("namespace") or (
            "default" if info.namespaced else None
        )
        return self._create_object(res, info, copy.deepcopy(dict(body)), namespace)

    def get_object(
        self, resource: kmock.resource | str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The live object, or None (a deep copy: safe to change)."""
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        obj = self._live((res, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list_objects(
        self,
        resource: kmock.resource | str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[dict[str, Any]]:
        """Live objects (deep copies), as a list request would select them."""
        res = kmock.resource(resource) if isinstance(resource, str) else resource
        preds = parse_label_selector(label_selector) + parse_field_selector(field_selector)
        return copy.deepcopy(self._select(res, namespace, None, preds))

    def count_requests(
        self,
        verb: str | None = None,
        resource: str | None = None,
        subresource: str | Literal[False] | None = False,
    ) -> int:
        """How many recorded requests match a verb / resource plural / subresource."""
        return sum(
            1
            for r in list(self.request_log)
            if (verb is None or r.verb == verb)
            and (resource is None or r.resource == resource)
            and (subresource is False or r.subresource == subresource)
        )

    async def close_watches(self) -> None:
        """End every open watch stream (before stopping the server)."""
        self._closing = True
        for waker in list(self._wakers):
            waker.set()
        for _ in range(100):
            if not self._wakers:
                break
            await asyncio.sleep(0.01)

    # -- discovery -------------------------------------------------------------------------

    @override
    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        """APIResourceList; unlike kmock's, subresources carry no short names or categories
        (kubectl refuses ``get ns`` when ``namespaces/status`` claims ``ns`` too)."""
        assert request.resource is not None
        group, version = request.resource.group, request.resource.version
        resources = sorted(
            (r for r in self.resources if r.group == group and r.version == version),
            key=lambda r: str(r.plural),
        )
        if not resources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        entries: list[dict[str, Any]] = []
        for res in resources:
            info = self.resources[res]
            kind = info.kind or str(res.plural).capitalize()
            entries.append(
                {
                    "name": res.plural,
                    "singularName": info.singular or "",
                    "namespaced": bool(info.namespaced),
                    "kind": kind,
                    "verbs": sorted(info.verbs),
                    **({"shortNames": sorted(info.shortnames)} if info.shortnames else {}),
                    **({"categories": sorted(info.categories)} if info.categories else {}),
                }
            )
            for sub in sorted(info.subresources):
                verbs = (
                    ["get", "patch", "update"]
                    if sub in ("status", "scale")
                    else ["get"]
                    if sub == "log"
                    else ["create", "get"]
                )
                entries.append(
                    {
                        "name": f"{res.plural}/{sub}",
                        "singularName": "",
                        "namespaced": bool(info.namespaced),
                        "kind": kind,
                        "verbs": verbs,
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else str(version),
            "resources": entries,
        }

    # -- request entry ---------------------------------------------------------------------

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw_request.read()
        query = dict(raw_request.query)
        parsed = parse_api_path(raw_request.path)
        record = RequestRecord(
            method=raw_request.method,
            path=raw_request.path,
            query=query,
            verb=_verb(raw_request.method, parsed, query),
            resource=parsed.plural,
            namespace=parsed.namespace,
            name=parsed.name,
            subresource=parsed.subresource,
            group=parsed.group,
            user_agent=raw_request.headers.get("User-Agent", ""),
        )
        self.request_log.append(record)
        data: Any = None
        if body:
            with contextlib.suppress(ValueError):
                data = json.loads(body)
        resource = None
        if parsed.group is not None:
            resource = kmock.resource(
                group=parsed.group, version=parsed.version, plural=parsed.plural
            )
        method = kmock.method(raw_request.method)
        request = rendering.Request(
            id=len(self.request_log) - 1,
            raw_request=raw_request,
            url=raw_request.url,
            method=method,
            params=query,
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=body,
            text=body.decode("utf-8", errors="replace"),
            action=parsing.guess_k8s(parsed, method, query),
            resource=resource,
            namespace=parsed.namespace,
            name=parsed.name,
            subresource=parsed.subresource,
        )
        if self.keep_requests:
            self._requests.append(request)

        faults = self.faults
        status = faults.before(record) if faults is not None else None
        if status is not None:
            record.status = status
            return fault_response(status, record.verb)

        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            try:
                response = await self._handle(request)
            except rendering.StreamingError as e:
                raw_response = e.args[0]
                raise e.__cause__ or e from None
        except Exception as e:
            if not isinstance(e, kmock.KubernetesError) and self._errors:
                self._errors[-1].append(e)
            if raw_response is None or not raw_response.prepared:
                response = await self._render_error(e)
            else:
                await self._stream_error(e, raw_response)
                await raw_response.write_eof()
                response = raw_response
        if faults is not None and faults.after(record) and not response.prepared:
            response = fault_response(504)
        record.status = response.status
        return response

    @override
    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):
            body = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": exc.message or type(exc).__name__,
                "reason": exc.reason or type(exc).__name__,
                "details": exc.details or {},
                "code": exc.status,
            }
            return aiohttp.web.json_response(body, status=exc.status)
        text = "".join(traceback.format_exception(exc))
        print(f"KubeEmulator: internal error: {text}", file=sys.stderr)
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": repr(exc),
            "reason": "InternalError",
            "details": {"causes": [{"message": text}]},
            "code": 500,
        }
        return aiohttp.web.json_response(body, status=500)

    @override
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # Discovery and anything that is not an object request: kmock's reactions & fallbacks.
        if request.resource is None or request.resource.plural is None:
            response = await self._react(request, fallbacks=True)
            if response is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return response
        # Reactions that a test added answer first (intercepted requests change nothing).
        response = await self._react(request, fallbacks=False)
        if response is not None:
            return response
        return await self._serve(request)

    async def _react(
        self, request: rendering.Request, *, fallbacks: bool
    ) -> aiohttp.web.StreamResponse | None:
        """kmock's reaction matching (``RawHandler._handle``), minus its O(requests) cost.

        kmock decides ``request in reaction._source`` by filtering every request seen so
        far; plain filter/priority chains are checked on this request alone here.
        """
        payloads = [
            p
            for p in self._payloads
            if fallbacks or not (p.priorities and p.priorities[0] == -math.inf)
        ]
        if not payloads:
            return None
        width = max(len(p.priorities) for p in payloads)
        payloads.sort(
            key=lambda p: tuple(-x for x in p.priorities) + (0,) * (width - len(p.priorities))
        )
        for payload in payloads:
            if not payload._disabled.is_set() and _matches(payload._source, request):
                try:
                    return await payload(request)
                except rendering.ReactionMismatchError:
                    payload._disabled.set()
                except NotImplementedError:
                    pass
        return None

    # -- dispatch --------------------------------------------------------------------------

    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo:
        if resource not in self.resources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self.resources[resource]

    async def _serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        assert request.resource is not None
        resource = request.resource
        info = self._info(resource)
        method = str(request.method.value).upper()
        sub = request.subresource
        namespace = request.namespace if info.namespaced else None
        if request.namespace is not None and not info.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub is not None and (request.name is None or (sub not in info.subresources)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub not in (None, "status", "log"):
            raise ApiError(
                405, "MethodNotAllowed", f"the emulator does not serve {resource.plural}/{sub}"
            )
        params = request.params

        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self._watch(request, resource, info, namespace)
        if method == "GET" and request.name is None:
            return self._json(self._list(request, resource, info, namespace))
        if method == "GET" and sub == "log":
            obj = self._live((resource, namespace, request.name)) if request.name else None
            if obj is None:
                raise _not_found(resource, request.name)
            text = self.pod_logs.get((namespace or "", request.name or ""), "")
            return aiohttp.web.Response(text=text, content_type="text/plain")
        if method == "GET":
            obj = self._live((resource, namespace, request.name or ""))
            if obj is None:
                raise _not_found(resource, request.name)
            if sub is None and _wants_table(request):
                return self._json(
                    self._table(request, resource, info, self._list_body(resource, info, [obj]))
                )
            return self._json(obj)
        if sub == "log":
            raise ApiError(405, "MethodNotAllowed", "pods/log is read-only")
        if method == "POST" and request.name is None:
            return self._json(self._create(request, resource, info, namespace), status=201)
        if method in ("PUT", "PATCH") and request.name is not None:
            return self._json(self._update(request, resource, info, namespace, method))
        if method == "DELETE" and request.name is not None:
            return self._json(self._delete(request, resource, info, namespace))
        if method == "DELETE":
            return self._json(self._delete_collection(request, resource, info, namespace))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {request.url.path}")

    @staticmethod
    def _json(body: Any, status: int = 200) -> aiohttp.web.StreamResponse:
        return aiohttp.web.json_response(body, status=status)

    # -- storage ---------------------------------------------------------------------------

    def _live(self, key: Key) -> dict[str, Any] | None:
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else obj.raw

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _store(self, key: Key, body: dict[str, Any], old: Mapping[str, Any] | None) -> None:
        if key in self.objects:
            history = self.objects[key].history
            history.append(body)
            if len(history) > self.history_limit:
                del history[: len(history) - self.history_limit]
        else:
            self.objects[key] = body
        self._index(key, old, remove=True)
        self._index(key, body, remove=False)

    def _index(self, key: Key, body: Mapping[str, Any] | None, *, remove: bool) -> None:
        if body is None:
            return
        meta = body.get("metadata") or {}
        if meta.get("uid"):
            if remove:
                self._uids.pop(meta["uid"], None)
            else:
                self._uids[meta["uid"]] = key
        for ref in meta.get("ownerReferences") or []:
            uid = ref.get("uid")
            if not uid:
                continue
            if remove:
                self._dependents.get(uid, set()).discard(key)
            else:
                self._dependents.setdefault(uid, set()).add(key)

    def _emit(
        self,
        resource: kmock.resource,
        type_: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None = None,
    ) -> None:
        self._events.append(
            _Event(int(obj["metadata"]["resourceVersion"]), resource, type_, obj, old)
        )
        if len(self._events) > self.max_events:
            drop = len(self._events) // 2
            del self._events[:drop]
            self._events_base += drop
        for waker in self._wakers:
            waker.set()

    def _select(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str | None,
        predicates: Iterable[Predicate],
    ) -> list[dict[str, Any]]:
        predicates = list(predicates)
        found = []
        for (res, ns, n), obj in self.objects.items():
            if res != resource or obj.deleted:
                continue
            if namespace is not None and ns != namespace:
                continue
            if name is not None and n != name:
                continue
            raw = obj.raw
            if all(p(raw) for p in predicates):
                found.append(((ns or "", n), raw))
        found.sort(key=lambda item: item[0])
        return [raw for _, raw in found]

    # -- validation --------------------------------------------------------------------

    def _validate(
        self, resource: kmock.resource, info: kmock.ResourceInfo, body: Mapping[str, Any]
    ) -> None:
        meta = body.get("metadata") or {}
        kind = info.kind or str(resource.plural)
        name = str(meta.get("name") or "")
        pattern = _DNS_LABEL if resource == NAMESPACES else _DNS_SUBDOMAIN
        if resource != kmock.resource("", "v1", "events") and (
            len(name) > (63 if resource == NAMESPACES else 253) or not pattern.fullmatch(name)
        ):
            why = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
            raise _invalid(resource, kind, name, "metadata.name", f'Invalid value: "{name}": {why}')
        labels = meta.get("labels") or {}
        if not isinstance(labels, Mapping):
            raise _invalid(resource, kind, name, "metadata.labels", "must be a map")
        for key, value in labels.items():
            prefix, _, short = str(key).rpartition("/")
            if (
                (prefix and not _DNS_SUBDOMAIN.fullmatch(prefix))
                or len(short) > 63
                or not _LABEL_NAME.fullmatch(short)
            ):
                raise _invalid(
                    resource,
                    kind,
                    name,
                    "metadata.labels",
                    f'Invalid value: "{key}": name part must be valid',
                )
            if (
                not isinstance(value, str)
                or len(value) > 63
                or (value and not _LABEL_NAME.fullmatch(value))
            ):
                raise _invalid(
                    resource,
                    kind,
                    name,
                    "metadata.labels",
                    f'Invalid value: "{value}": a valid label must be 63 characters or less',
                )

    # -- create ----------------------------------------------------------------------------

    def _create(
        self,
        request: rendering.Request,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
    ) -> dict[str, Any]:
        if not isinstance(request.data, dict):
            raise _bad_request("the body of the request was in an unknown format")
        body = copy.deepcopy(request.data)
        meta = body.get("metadata")
        if meta is None:
            meta = body["metadata"] = {}
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        if info.namespaced:
            if namespace and meta.get("namespace") and meta["namespace"] != namespace:
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or meta.get("namespace") or "default"
        if "dryRun" in request.params:
            return self._create_object(resource, info, body, namespace, dry_run=True)
        return self._create_object(resource, info, body, namespace)

    def _create_object(
        self,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        body: dict[str, Any],
        namespace: str | None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        kind = info.kind or str(resource.plural)
        for mutate in self.mutators:
            mutate(str(resource.plural), body)
        if info.namespaced:
            meta["namespace"] = namespace = namespace or "default"
            if self._live((NAMESPACES, None, namespace)) is None:
                if not self.auto_namespaces:
                    raise _not_found(NAMESPACES, namespace)
                if not dry_run:
                    self.ensure_namespace(namespace)
        else:
            meta.pop("namespace", None)
            namespace = None
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise _invalid(
                    resource,
                    kind,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                )
            for _ in range(100):
                name = prefix + "".join(random.choices(_NAME_CHARS, k=5))
                if self._live((resource, namespace, name)) is None:
                    break
            meta["name"] = name
        key: Key = (resource, namespace, name)
        if self._live(key) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{_qualified(resource)} "{name}" already exists',
                {"name": name, "group": resource.group, "kind": resource.plural},
            )
        body["apiVersion"] = _api_version(resource)
        body["kind"] = kind
        for field in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "selfLink",
            "managedFields",
        ):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if "status" in info.subresources:
            body.pop("status", None)
        self._default(resource, body)
        self._validate(resource, info, body)
        if dry_run:
            meta["resourceVersion"] = str(self._rv)
            return body
        meta["resourceVersion"] = self._next_rv()
        self._store(key, body, None)
        if resource == CRDS:
            self.register_crd(body, store=False)
        self._emit(resource, "ADDED", body)
        return body

    def _default(self, resource: kmock.resource, body: dict[str, Any]) -> None:
        """The few defaults that controllers and kubelets rely on."""
        if resource == PODS:
            spec = body.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            for container in spec.get("containers") or []:
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
                image = str(container.get("image", ""))
                tagged = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
                container.setdefault("imagePullPolicy", "IfNotPresent" if tagged else "Always")
            body["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif resource == NAMESPACES:
            body["status"] = {"phase": "Active"}
        elif resource == SECRETS:
            body.setdefault("type", "Opaque")
            string_data = body.pop("stringData", None) or {}
            data = body.setdefault("data", {}) or {}
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            body["data"] = data
        elif resource == CRDS:
            names = (body.get("spec") or {}).get("names") or {}
            body["status"] = {
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                ],
                "storedVersions": [
                    v["name"]
                    for v in (body.get("spec") or {}).get("versions") or []
                    if v.get("storage")
                ],
            }

    # -- update (PUT, PATCH) ----------------------------------------------------------------

    def _update(
        self,
        request: rendering.Request,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
        method: str,
    ) -> dict[str, Any]:
        assert request.name is not None
        key: Key = (resource, namespace, request.name)
        old = self._live(key)
        if old is None:
            raise _not_found(resource, request.name)
        data = request.data
        old_rv = old["metadata"]["resourceVersion"]
        if method == "PUT":
            if not isinstance(data, dict):
                raise _bad_request("the body of the request was in an unknown format")
            new = copy.deepcopy(data)
            meta = new.get("metadata") or {}
            if meta.get("name") not in (None, request.name):
                raise _bad_request("the name of the object does not match the name on the URL")
            if meta.get("resourceVersion") not in (None, "", old_rv):
                raise _conflict(
                    resource,
                    request.name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
        else:
            raw = request._raw_request
            ctype = (raw.content_type if raw is not None else "") or ""
            if "apply-patch" in ctype:
                raise ApiError(
                    415, "UnsupportedMediaType", "the emulator does not support server-side apply"
                )
            if ctype == "application/json-patch+json" or isinstance(data, list):
                if not isinstance(data, list):
                    raise _bad_request("a JSON patch must be a list of operations")
                try:
                    new = jsonpatch.apply_patch(copy.deepcopy(old), data)
                except (  # incl. a failed "test": kopf relies on 422 for its optimistic patches
                    jsonpatch.JsonPatchException,
                    jsonpointer.JsonPointerException,
                    TypeError,
                    KeyError,
                ) as e:
                    message = f"the server rejected our request due to an error in our request: {e}"
                    raise ApiError(422, "Invalid", message) from None
            elif not isinstance(data, dict):
                raise _bad_request("the body of the request was in an unknown format")
            else:
                precondition = (data.get("metadata") or {}).get("resourceVersion")
                if precondition not in (None, old_rv):
                    raise _conflict(
                        resource,
                        request.name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    )
                if ctype == "application/strategic-merge-patch+json":
                    if resource in self._custom:
                        raise ApiError(
                            415,
                            "UnsupportedMediaType",
                            "the body of the request was in an unknown format - accepted media types include: "
                            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                        )
                    new = strategic_merge_patch(old, data)
                else:
                    new = merge_patch(old, data)
            if not isinstance(new, dict):
                raise _bad_request("the patch does not result in an object")
        new = self._settle(resource, info, old, new, request.subresource)
        if "dryRun" in request.params:
            return new
        return self._commit(key, old, new)

    def _settle(
        self,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        old: Mapping[str, Any],
        new: dict[str, Any],
        subresource: str | None,
    ) -> dict[str, Any]:
        """What an update may change: status via /status only, never the system metadata."""
        if subresource == "status":
            result = copy.deepcopy(dict(old))
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            return result
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        old_meta = old["metadata"]
        for field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if "status" in info.subresources:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{info.kind} "{old_meta["name"]}" is invalid: metadata.finalizers: '
                    f"Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {sorted(added)!r}",
                )
        if resource == SECRETS and "stringData" in new:
            data = new.setdefault("data", {}) or {}
            for k, v in (new.pop("stringData") or {}).items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            new["data"] = data
        self._validate(resource, info, new)
        skip = {"metadata", "status"} if "status" in info.subresources else {"metadata"}
        if {k: v for k, v in old.items() if k not in skip} != {
            k: v for k, v in new.items() if k not in skip
        }:
            meta["generation"] = int(old_meta.get("generation") or 0) + 1
        return new

    def _commit(self, key: Key, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Store a changed object, emit MODIFIED; finish a deletion that has no finalizers left."""
        resource = key[0]
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(key, new, orphan=False)
        if new == old:
            return old
        meta["resourceVersion"] = self._next_rv()
        self._store(key, new, old)
        self._emit(resource, "MODIFIED", new, old)
        return new

    # -- delete ----------------------------------------------------------------------------

    def _delete(
        self,
        request: rendering.Request,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
    ) -> dict[str, Any]:
        assert request.name is not None
        key: Key = (resource, namespace, request.name)
        obj = self._live(key)
        if obj is None:
            raise _not_found(resource, request.name)
        options = dict(request.data) if isinstance(request.data, dict) else {}
        for name in ("propagationPolicy", "gracePeriodSeconds", "dryRun"):
            if name in request.params:
                options.setdefault(name, request.params[name])
        pre = options.get("preconditions") or {}
        meta = obj["metadata"]
        if pre.get("uid") not in (None, meta.get("uid")):
            raise _conflict(
                resource,
                request.name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
            )
        if pre.get("resourceVersion") not in (None, meta.get("resourceVersion")):
            raise _conflict(
                resource,
                request.name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        if options.get("dryRun"):
            return obj
        orphan = (
            options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents") is True
        )
        return self._delete_object(key, obj, orphan=orphan)

    def _delete_object(self, key: Key, obj: dict[str, Any], *, orphan: bool) -> dict[str, Any]:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return obj
        if meta.get("finalizers"):
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["generation"] = int(meta.get("generation") or 0) + 1
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._store(key, new, obj)
            self._emit(key[0], "MODIFIED", new, obj)
            return new
        return self._remove(key, obj, orphan=orphan)

    def _remove(self, key: Key, obj: dict[str, Any], *, orphan: bool) -> dict[str, Any]:
        """Remove an object for good: DELETED event, then its dependents (garbage collection)."""
        resource, namespace, name = key
        final = copy.deepcopy(obj)
        final["metadata"]["resourceVersion"] = self._next_rv()
        current = self._live(key)
        self._index(key, current, remove=True)
        self.objects[key].delete()
        self._emit(resource, "DELETED", final)
        uid = final["metadata"].get("uid")
        if uid:
            self._collect(uid, orphan=orphan)
        if resource == NAMESPACES:
            for (res, ns, n), stored in list(self.objects.items()):
                if ns == name and not stored.deleted:
                    live = self._live((res, ns, n))
                    if live is not None:
                        self._delete_object((res, ns, n), live, orphan=False)
        if resource == PODS:
            self.pod_logs.pop((namespace or "", name), None)
        return final

    def _collect(self, owner_uid: str, *, orphan: bool) -> None:
        for key in sorted(
            self._dependents.pop(owner_uid, set()), key=lambda k: (str(k[0]), k[1] or "", k[2])
        ):
            obj = self._live(key)
            if obj is None:
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == owner_uid for r in refs):
                continue
            remaining = [r for r in refs if r.get("uid") != owner_uid]
            if orphan or any(r.get("uid") in self._uids for r in remaining):
                new = copy.deepcopy(obj)
                if remaining:
                    new["metadata"]["ownerReferences"] = remaining
                else:
                    new["metadata"].pop("ownerReferences", None)
                self._commit(key, obj, new)
            else:
                self._delete_object(key, obj, orphan=False)

    def _delete_collection(
        self,
        request: rendering.Request,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
    ) -> dict[str, Any]:
        predicates = self._predicates(request)
        deleted = []
        for obj in self._select(resource, namespace, None, predicates):
            meta = obj["metadata"]
            key: Key = (resource, meta.get("namespace") if info.namespaced else None, meta["name"])
            deleted.append(self._delete_object(key, obj, orphan=False))
        return self._list_body(resource, info, deleted)

    # -- list & watch ----------------------------------------------------------------------

    def _predicates(self, request: rendering.Request) -> list[Predicate]:
        params = request.params
        return parse_label_selector(params.get("labelSelector", "")) + parse_field_selector(
            params.get("fieldSelector", "")
        )

    def _list_body(
        self, resource: kmock.resource, info: kmock.ResourceInfo, items: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "apiVersion": _api_version(resource),
            "kind": f"{info.kind or resource.plural}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _list(
        self,
        request: rendering.Request,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
    ) -> dict[str, Any]:
        items = self._select(resource, namespace, None, self._predicates(request))
        params = request.params
        body = self._list_body(resource, info, items)
        start = 0
        if params.get("continue"):
            try:
                token = json.loads(base64.b64decode(params["continue"]))
                start, body["metadata"]["resourceVersion"] = int(token["start"]), token["rv"]
            except (ValueError, KeyError, TypeError):
                raise _bad_request("invalid continue token") from None
        limit = int(params.get("limit") or 0)
        if limit > 0 and start + limit < len(items):
            token = {"start": start + limit, "rv": body["metadata"]["resourceVersion"]}
            body["metadata"]["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
            body["metadata"]["remainingItemCount"] = len(items) - start - limit
            body["items"] = items[start : start + limit]
        else:
            body["items"] = items[start:]
        if _wants_table(request):
            return self._table(request, resource, info, body)
        return body

    def _table(
        self,
        request: rendering.Request,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """``kubectl get``'s server-side printing: NAME, (pods: READY STATUS RESTARTS), AGE."""
        columns = [
            {
                "name": "Name",
                "type": "string",
                "format": "name",
                "description": "Name",
                "priority": 0,
            }
        ]
        if resource == PODS:
            columns += [
                {
                    "name": "Ready",
                    "type": "string",
                    "format": "",
                    "description": "Ready",
                    "priority": 0,
                },
                {
                    "name": "Status",
                    "type": "string",
                    "format": "",
                    "description": "Status",
                    "priority": 0,
                },
                {
                    "name": "Restarts",
                    "type": "string",
                    "format": "",
                    "description": "Restarts",
                    "priority": 0,
                },
            ]
        printer = self.printer_columns.get(resource, [])
        for c in printer:
            columns.append(
                {
                    "name": c["name"],
                    "type": c.get("type", "string"),
                    "format": "",
                    "description": c["name"],
                    "priority": 0,
                }
            )
        columns.append(
            {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}
        )
        include = request.params.get("includeObject", "Metadata")
        rows = []
        for obj in body["items"]:
            cells: list[Any] = [obj["metadata"]["name"]]
            if resource == PODS:
                statuses = (obj.get("status") or {}).get("containerStatuses") or []
                ready = sum(1 for s in statuses if s.get("ready"))
                total = len((obj.get("spec") or {}).get("containers") or [])
                cells += [
                    f"{ready}/{total}",
                    _pod_phase_text(obj),
                    str(sum(s.get("restartCount", 0) for s in statuses)),
                ]
            for c in printer:
                cells.append(_json_path(obj, c.get("jsonPath", "")))
            cells.append(_age(obj["metadata"].get("creationTimestamp")))
            row: dict[str, Any] = {"cells": cells}
            if include == "Object":
                row["object"] = obj
            elif include != "None":
                row["object"] = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                }
            rows.append(row)
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {k: v for k, v in body["metadata"].items()},
            "columnDefinitions": columns,
            "rows": rows,
        }

    def _event_end(self) -> int:
        return self._events_base + len(self._events)

    async def _watch(
        self,
        request: rendering.Request,
        resource: kmock.resource,
        info: kmock.ResourceInfo,
        namespace: str | None,
    ) -> aiohttp.web.StreamResponse:
        params = request.params
        predicates = self._predicates(request)
        name = request.name
        since = params.get("resourceVersion") or ""
        send_initial = params.get("sendInitialEvents") == "true"
        bookmarks = params.get("allowWatchBookmarks") == "true"
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None

        # Decide where to start before the first await: nothing can slip in between.
        initial: list[dict[str, Any]] = []
        snapshot = str(self._rv)
        gone = False
        if since in ("", "0") or send_initial:
            initial = [
                {"type": "ADDED", "object": o}
                for o in self._select(resource, namespace, name, predicates)
            ]
            cursor = self._event_end()
        else:
            try:
                rv = int(since)
            except ValueError:
                raise _bad_request(f"invalid resourceVersion: {since!r}") from None
            rvs = [e.rv for e in self._events]
            if self._events_base and (not rvs or rv < rvs[0] - 1):
                gone = True
            cursor = self._events_base + bisect.bisect_right(rvs, rv)

        raw = request._raw_request
        assert raw is not None
        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json"}
        )
        await response.prepare(raw)
        waker = asyncio.Event()
        self._wakers.add(waker)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None

        async def send(event: Mapping[str, Any]) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        try:
            if gone:
                await send(_gone_event(since))
                return response
            for event in initial:
                await send(event)
            if send_initial and bookmarks:
                await send(self._bookmark(resource, info, snapshot, initial_end=True))
            while not self._closing:
                waker.clear()
                while cursor < self._event_end():
                    if cursor < self._events_base:
                        await send(_gone_event(str(cursor)))
                        return response
                    event = self._events[cursor - self._events_base]
                    cursor += 1
                    out = _filter_event(event, resource, namespace, name, predicates)
                    if out is not None:
                        await send(out)
                if self._closing:
                    break
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(waker.wait(), remaining)
                except TimeoutError:
                    break
        except (ConnectionResetError, ConnectionError):
            return response
        finally:
            self._wakers.discard(waker)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    def _bookmark(
        self, resource: kmock.resource, info: kmock.ResourceInfo, version: str, *, initial_end: bool
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": version}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": info.kind, "apiVersion": _api_version(resource), "metadata": meta},
        }


def _matches(view: kmock.View, request: rendering.Request) -> bool:
    """Whether a reaction's view selects the request.

    Filters and priorities are checked on this request alone; slicers and exclusions
    select a subset of their source, so kmock's history-aware check runs only when
    the request passes every filter; anything else (groups) goes to kmock directly.
    """
    node: Any = view
    plain = True
    while not isinstance(node, kmock.Root):
        if type(node) is kmock.Filter:
            if not node.criteria(request):
                return False
        elif isinstance(node, kmock.Slicer | kmock.Exclusion):
            plain = False
        elif type(node) is not kmock.Priority:
            return request in view
        node = node._source
    return plain or request in view


def _wants_table(request: rendering.Request) -> bool:
    """kubectl asks for server-side printing: ``Accept: application/json;as=Table;...``."""
    return any(k.lower() == "accept" and "as=Table" in v for k, v in request.headers.items())


def _gone_event(since: str) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {since}",
            "reason": "Expired",
            "code": 410,
        },
    }


def _filter_event(
    event: _Event,
    resource: kmock.resource,
    namespace: str | None,
    name: str | None,
    predicates: list[Predicate],
) -> dict[str, Any] | None:
    """The event as this watcher sees it: selector transitions become ADDED/DELETED."""
    if event.resource != resource:
        return None
    meta = event.obj.get("metadata") or {}
    if namespace is not None and meta.get("namespace") != namespace:
        return None
    if name is not None and meta.get("name") != name:
        return None
    now = all(p(event.obj) for p in predicates)
    if event.type != "MODIFIED" or event.old is None or not predicates:
        return {"type": event.type, "object": event.obj} if now else None
    before = all(p(event.old) for p in predicates)
    if now and before:
        return {"type": "MODIFIED", "object": event.obj}
    if now:
        return {"type": "ADDED", "object": event.obj}
    if before:
        return {"type": "DELETED", "object": event.obj}
    return None


def _json_path(obj: Mapping[str, Any], path: str) -> Any:
    """The value at a simple ``.a.b.c`` printer-column path, or None."""
    node: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    created = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    seconds = int((dt.datetime.now(dt.UTC) - created).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _pod_phase_text(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            return str(state["waiting"]["reason"])
        if "terminated" in state and state["terminated"].get("reason"):
            return str(state["terminated"]["reason"])
    return str(status.get("reason") or status.get("phase") or "Unknown")
