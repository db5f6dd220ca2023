"""Kubernetes' rules for the names and metadata a study hands to its trainer pods.

``trainer.queueName``, ``priorityClassName`` and ``schedulerName`` are object names;
``trainer.podLabels`` and ``podAnnotations`` are merged into every trainer pod. They are
checked here the way the API server checks a pod (apimachinery's ``IsQualifiedName``,
``IsValidLabelValue``, the 256 KiB annotation limit), so a wrong value is refused with
its field named when the study is applied, not as a pod the API server rejects later.
Keys the operator or Kueue set themselves are refused: a study cannot unset them.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from hpo.study.spec.base import LABEL_VALUE

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
#: A label or annotation key: ``[prefix/]name``, prefix a DNS subdomain (<= 253), name
#: <= 63 characters.
QUALIFIED_NAME = re.compile(rf"^({_DNS_SUBDOMAIN}/)?{_NAME}$")
#: Kubernetes refuses a pod whose annotations (keys and values) exceed 256 KiB.
ANNOTATIONS_LIMIT = 256 * 1024
#: Kueue's label of the LocalQueue a pod waits in (``trainer.queueName`` sets it).
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

#: Prefix of the operator's own labels and annotations (study, trial, seed, request...).
OWN_PREFIX = "hpo-operator.dev/"
#: Labels the operator or Kueue set: the reason a study may not set them.
RESERVED_LABELS = {
    "app.kubernetes.io/managed-by": "the operator sets it to list its pods",
    KUEUE_QUEUE_LABEL: "set trainer.queueName instead",
    "kueue.x-k8s.io/managed": "Kueue sets it on the pods it manages",
    "kueue.x-k8s.io/pod-group-name": "every trainer pod is a Kueue workload of its own",
}
RESERVED_ANNOTATIONS = {
    "sidecar.istio.io/inject": "the operator turns the sidecar off (it would keep a "
    "finished trainer pod running)",
    "kueue.x-k8s.io/pod-group-total-count": "every trainer pod is a Kueue workload of its own",
    "kueue.x-k8s.io/retriable-in-group": "every trainer pod is a Kueue workload of its own",
}

LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]


def _reserved(key: str, reserved: dict[str, str]) -> str:
    if key.startswith(OWN_PREFIX):
        return f"the operator's own ({OWN_PREFIX}*)"
    return reserved.get(key, "")


def check_keys(keys: list[str], what: str) -> None:
    """Raise ``ValueError`` naming the first key that is not a qualified name or is
    reserved; ``what``: ``label`` or ``annotation``."""
    reserved = RESERVED_LABELS if what == "label" else RESERVED_ANNOTATIONS
    for key in keys:
        prefix = key.rpartition("/")[0]
        if not QUALIFIED_NAME.match(key) or len(prefix) > 253:
            raise ValueError(
                f"{key!r} is not a valid {what} key: [prefix/]name, the name at most 63 "
                "letters, digits, '-', '_' and '.' starting and ending with a letter or "
                "digit, the prefix a DNS subdomain of at most 253 characters"
            )
        why = _reserved(key, reserved)
        if why:
            raise ValueError(f"{what} {key!r} cannot be set here: {why}")


def check_annotations_size(annotations: dict[str, str]) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > ANNOTATIONS_LIMIT:
        raise ValueError(
            f"annotations take {size} bytes; Kubernetes allows {ANNOTATIONS_LIMIT} in all"
        )


#: The extended resource of NVIDIA's device plugin: what a GPU training asks for.
GPU_RESOURCE = "nvidia.com/gpu"


def _count(value: object) -> int | None:
    """A whole count as Kubernetes writes an extended resource (2 or "2"), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def gpus_asked(resources: dict[str, object]) -> int:
    """How many GPUs ``trainer.resources`` asks for (its limits, else its requests)."""
    for part in ("limits", "requests"):
        section = resources.get(part)
        if isinstance(section, dict) and GPU_RESOURCE in section:
            return _count(section[GPU_RESOURCE]) or 0
    return 0


def check_gpus(resources: dict[str, object]) -> None:
    """Kubernetes' rules for an extended resource: a whole number, no overcommit (a
    request equals the limit, and a request needs a limit)."""
    found: dict[str, int] = {}
    for part in ("limits", "requests"):
        section = resources.get(part)
        if isinstance(section, dict) and GPU_RESOURCE in section:
            count = _count(section[GPU_RESOURCE])
            if count is None or count < 0:
                raise ValueError(
                    f"{part}.{GPU_RESOURCE} must be a whole number of GPUs "
                    f"(got {section[GPU_RESOURCE]!r})"
                )
            found[part] = count
    if "requests" in found and found["requests"] != found.get("limits"):
        raise ValueError(
            f"requests.{GPU_RESOURCE} must equal limits.{GPU_RESOURCE} (GPUs cannot be "
            f"overcommitted); set limits.{GPU_RESOURCE} alone"
        )
