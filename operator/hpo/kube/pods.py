"""Trainer pods as plain manifests, and what a finished pod says about its trainings.

Pure functions over dicts: no kubernetes client here, so building and
reading pods is testable without an API server. Names are deterministic, so
creating a pod again after an operator restart is idempotent (409, adopted).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from hpo.engine import Task, Trial
from hpo.study.contract import GPUS_ENV, SeedResult, TrainingRequest
from hpo.study.spec import API_VERSION, DEFAULT_MAX_DISRUPTIONS, KIND, StudySpec, Trainer
from hpo.study.spec.podmeta import KUEUE_QUEUE_LABEL, gpus_asked

LABEL_STUDY = "hpo-operator.dev/study"
LABEL_STAGE = "hpo-operator.dev/stage"
LABEL_TRIAL = "hpo-operator.dev/trial"
LABEL_SEED = "hpo-operator.dev/seed"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
ANN_REQUEST = "hpo-operator.dev/request"
ANN_ATTEMPT = "hpo-operator.dev/attempt"
ANN_RECORDED = "hpo-operator.dev/recorded"
TERMINATION_LOG = "/dev/termination-log"
MAX_NAME = 63


#: The operator's environment (the chart's ``trainerDefaults``) -> the trainer field it
#: fills in for a study that does not set it.
DEFAULT_ENV = {
    "HPO_TRAINER_QUEUE_NAME": "queueName",
    "HPO_TRAINER_PRIORITY_CLASS_NAME": "priorityClassName",
    "HPO_TRAINER_SCHEDULER_NAME": "schedulerName",
    "HPO_TRAINER_POD_LABELS": "podLabels",
    "HPO_TRAINER_POD_ANNOTATIONS": "podAnnotations",
    "HPO_TRAINER_MAX_QUEUE_SECONDS": "maxQueueSeconds",
    "HPO_TRAINER_MAX_DISRUPTIONS": "maxDisruptions",
}
#: The fields of ``DEFAULT_ENV`` given as JSON objects, and as whole numbers.
_JSON_FIELDS = frozenset({"podLabels", "podAnnotations"})
_INT_FIELDS = frozenset({"maxQueueSeconds", "maxDisruptions"})
#: The trainer image a study gets when it sets none (``trainer.image``'s default) ...
DEFAULT_IMAGE: str = Trainer.model_fields["image"].default
#: ... and its GPU build (``make images``), used instead when the pod asks for GPUs.
DEFAULT_GPU_IMAGE = f"{DEFAULT_IMAGE}-gpu"


@dataclass(frozen=True)
class PodDefaults:
    """Cluster-wide trainer settings (the chart's ``trainerDefaults``): what a study's
    pods (and its queue limit and disruption cap) get where its own ``trainer`` section
    is silent."""

    queue_name: str | None = None
    priority_class_name: str | None = None
    scheduler_name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    max_queue_seconds: int | None = None
    max_disruptions: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PodDefaults:
        """The defaults in the operator's environment, checked by the study's own rules;
        ``ValueError`` names the variable of a wrong one."""
        env = os.environ if environ is None else environ
        return _defaults(tuple((var, env.get(var, "")) for var in DEFAULT_ENV))

    def queue_limit(self, trainer: Trainer) -> int | None:
        """``trainer.maxQueueSeconds``: the study's, else the cluster's (None: no limit)."""
        own = trainer.max_queue_seconds
        return own if own is not None else self.max_queue_seconds

    def disruption_cap(self, trainer: Trainer) -> int:
        """``trainer.maxDisruptions``: the study's, else the cluster's, else the default."""
        for cap in (trainer.max_disruptions, self.max_disruptions):
            if cap is not None:
                return cap
        return DEFAULT_MAX_DISRUPTIONS

    def setting(self, trainer: Trainer, name: str) -> str:
        """Where a limit's value comes from, for messages (``name``: ``maxQueueSeconds`` or
        ``maxDisruptions``): the study's ``trainer.<name>``, else the chart's
        ``trainerDefaults.<name>``, else the default; a user looks in that place."""
        attr = {"maxQueueSeconds": "max_queue_seconds", "maxDisruptions": "max_disruptions"}
        if getattr(trainer, attr[name]) is not None:
            return f"trainer.{name}"
        if getattr(self, attr[name]) is not None:
            return f"the operator's trainerDefaults.{name}"
        return f"trainer.{name} (unset: its default)"


def _parse_default(var: str, text: str) -> Any:
    """One ``HPO_TRAINER_*`` value as its field takes it (checked by ``Trainer`` next)."""
    key = DEFAULT_ENV[var]
    if key in _INT_FIELDS:
        if not re.fullmatch(r"\s*[-+]?[0-9]+\s*", text):
            raise ValueError(f"{var}: not a whole number: {text[:100]!r}")
        return int(text)
    if key in _JSON_FIELDS:
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"{var}: not a JSON object: {text[:100]!r}") from None
    return text


@functools.lru_cache(maxsize=8)
def _defaults(values: tuple[tuple[str, str], ...]) -> PodDefaults:
    raw = {DEFAULT_ENV[var]: _parse_default(var, text) for var, text in values if text}
    try:
        trainer = Trainer.model_validate(raw)
    except ValidationError as exc:
        by_field = {v: k for k, v in DEFAULT_ENV.items()}
        err = exc.errors()[0]
        var = by_field.get(str(err["loc"][0]), "HPO_TRAINER_*") if err["loc"] else "?"
        got = f" (got {dict(values)[var][:100]!r})" if var in DEFAULT_ENV else ""
        raise ValueError(f"{var}: {err['msg'].removeprefix('Value error, ')}{got}") from None
    return PodDefaults(
        queue_name=trainer.queue_name,
        priority_class_name=trainer.priority_class_name,
        scheduler_name=trainer.scheduler_name,
        labels=trainer.pod_labels,
        annotations=trainer.pod_annotations,
        max_queue_seconds=trainer.max_queue_seconds,
        max_disruptions=trainer.max_disruptions,
    )


def pod_name(study: str, trial: str, seeds: list[int], attempt: int) -> str:
    """``<study>-<trial>-s<seeds>-a<attempt>``; hashed to stay a DNS label of <= 63 chars."""
    seeds_part = "-".join(str(s) for s in seeds)
    name = f"{study}-{trial}-s{seeds_part}-a{attempt}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    tail = f"-{trial}-{digest}"
    return f"{study[: MAX_NAME - len(tail)].rstrip('-')}{tail}"


def _label_value(value: str) -> str:
    """Label values: <= 63 chars of [A-Za-z0-9-_.], alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63]
    return value.strip("-_.") or "x"


def group_tasks(tasks: list[Task], seeds_per_pod: int) -> list[list[Task]]:
    """Tasks of the same trial and attempt share a pod, up to ``seeds_per_pod`` seeds."""
    groups: list[list[Task]] = []
    for task in tasks:
        last = groups[-1] if groups else None
        if (
            last
            and len(last) < seeds_per_pod
            and last[0].trial.id == task.trial.id
            and last[0].attempt == task.attempt
        ):
            last.append(task)
        else:
            groups.append([task])
    return groups


def build_pod(
    *,
    study: str,
    namespace: str,
    owner_uid: str,
    spec: StudySpec,
    request: TrainingRequest,
    attempt: int,
    defaults: PodDefaults | None = None,
) -> dict[str, Any]:
    """The trainer pod for one request (one trial, one or more seeds); ``defaults``:
    the cluster-wide settings (None: ``PodDefaults.from_env()``)."""
    name = pod_name(study, request.trial, request.seeds, attempt)
    defaults = PodDefaults.from_env() if defaults is None else defaults
    metadata = _metadata(study, namespace, owner_uid, name, request, attempt)
    _scheduling_metadata(metadata, spec.trainer, defaults)
    pod_spec = _pod_spec(spec.trainer, _container(spec, request))
    for key, value in (
        ("priorityClassName", spec.trainer.priority_class_name or defaults.priority_class_name),
        ("schedulerName", spec.trainer.scheduler_name or defaults.scheduler_name),
    ):
        if value:
            pod_spec[key] = value
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def _scheduling_metadata(metadata: dict[str, Any], trainer: Trainer, defaults: PodDefaults) -> None:
    """The study's (else the cluster's) labels and annotations under the operator's own,
    which they cannot override, and Kueue's queue label."""
    metadata["labels"] = {**defaults.labels, **trainer.pod_labels, **metadata["labels"]}
    metadata["annotations"] = {
        **defaults.annotations,
        **trainer.pod_annotations,
        **metadata["annotations"],
    }
    queue = trainer.queue_name or defaults.queue_name
    if queue:
        metadata["labels"][KUEUE_QUEUE_LABEL] = queue


def _env(spec: StudySpec) -> list[dict[str, Any]]:
    """The trainer's environment: writable caches under /tmp, the store's keys from the
    Secret (never in the manifest), then the spec's own variables."""
    env: list[dict[str, Any]] = [
        {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "3"},
        {"name": "HPO_CACHE", "value": "/tmp/hpo-cache"},
        {"name": "KERAS_HOME", "value": "/tmp/keras"},
        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
    ]
    secret = spec.storage.credentials_secret
    if secret is not None:
        for var, key in (
            ("HPO_S3_ACCESS_KEY", secret.access_key_key),
            ("HPO_S3_SECRET_KEY", secret.secret_key_key),
        ):
            env.append(
                {"name": var, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}}
            )
    gpus = gpus_asked(spec.trainer.resources)
    if gpus:
        env.append({"name": GPUS_ENV, "value": str(gpus)})
    return env + [dict(e) for e in spec.trainer.env]


def _image(trainer: Trainer) -> str:
    """The study's image; the default one's GPU build when the pod asks for GPUs."""
    if trainer.image == DEFAULT_IMAGE and gpus_asked(trainer.resources):
        return DEFAULT_GPU_IMAGE
    return trainer.image


def _container(spec: StudySpec, request: TrainingRequest) -> dict[str, Any]:
    """The one trainer container: the request as data, the restricted security context."""
    trainer = spec.trainer
    return {
        "name": "trainer",
        "image": _image(trainer),
        "imagePullPolicy": trainer.image_pull_policy,
        "command": ["python", "-m", "hpo_trainer"],
        # Arguments are data: the request is one JSON argument, never a shell string.
        "args": ["--request", request.to_json(), "--termination-log", TERMINATION_LOG],
        "env": _env(spec),
        "resources": dict(trainer.resources),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            # Writable: only /tmp (the emptyDir below), where KERAS_HOME, MPLCONFIGDIR
            # and the dataset cache point (the image test runs the trainer this way).
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _pod_spec(trainer: Trainer, container: dict[str, Any]) -> dict[str, Any]:
    """Never restarted (a retry is a new pod, counted), no API token, and where the spec's
    trainer settings say it may run."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
    }
    if trainer.service_account_name:
        pod_spec["serviceAccountName"] = trainer.service_account_name
    if trainer.node_selector:
        pod_spec["nodeSelector"] = dict(trainer.node_selector)
    if trainer.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in trainer.tolerations]
    if trainer.affinity:
        pod_spec["affinity"] = dict(trainer.affinity)
    return pod_spec


def _metadata(
    study: str,
    namespace: str,
    owner_uid: str,
    name: str,
    request: TrainingRequest,
    attempt: int,
) -> dict[str, Any]:
    """Labels to list a study's pods by, the request and attempt to rebuild its tasks from
    (``tasks_of``), and the study as owner (deleting it deletes its pods)."""
    return {
        "name": name,
        "namespace": namespace,
        "labels": {
            LABEL_STUDY: _label_value(study),
            LABEL_STAGE: request.stage,
            LABEL_TRIAL: _label_value(request.trial),
            LABEL_SEED: _label_value("-".join(str(s) for s in request.seeds)),
            LABEL_MANAGED: "hpo-operator",
        },
        "annotations": {
            ANN_REQUEST: request.to_json(),
            ANN_ATTEMPT: str(attempt),
            "sidecar.istio.io/inject": "false",
        },
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": study,
                "uid": owner_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def tasks_of(pod: dict[str, Any]) -> list[Task]:
    """The trainings a pod runs, rebuilt from its annotations (after an operator restart)."""
    ann = pod["metadata"].get("annotations") or {}
    request = TrainingRequest.from_json(ann[ANN_REQUEST])
    attempt = int(ann.get(ANN_ATTEMPT, "1"))
    trial = Trial(request.trial, request.stage, request.config, request.config_key, request.parent)
    return [Task(trial, seed, attempt) for seed in request.seeds]


@dataclass(frozen=True)
class PodState:
    """What a pod's status says, reduced to what the operator acts on."""

    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    waiting_reason: str = ""


def pod_state(pod: dict[str, Any]) -> PodState:
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("terminated"):
            t = state["terminated"]
            return PodState(
                phase=phase,
                reason=t.get("reason") or "",
                message=t.get("message") or "",
                exit_code=t.get("exitCode"),
            )
        if state.get("waiting"):
            w = state["waiting"]
            return PodState(
                phase=phase,
                waiting_reason=w.get("reason") or "",
                message=w.get("message") or "",
            )
    return PodState(
        phase=phase, reason=status.get("reason") or "", message=status.get("message") or ""
    )


def results_of(
    pod: dict[str, Any], study: str, scores: dict[int, SeedResult | None]
) -> list[SeedResult]:
    """One result per seed of a finished pod.

    ``scores`` are the seeds' ``scores.json`` read from the store (None where
    missing): the store is the authority for a success (a complete record);
    the termination message explains a failure.
    """
    state = pod_state(pod)
    tasks = tasks_of(pod)
    reported: dict[int, dict[str, Any]] = {}
    if state.message.lstrip().startswith("["):
        try:
            for row in json.loads(state.message):
                reported[int(row["seed"])] = row
        except (ValueError, KeyError, TypeError):
            reported = {}
    out = []
    for task in tasks:
        stored = scores.get(task.seed)
        if stored is not None and stored.status == "succeeded":
            out.append(stored)
            continue
        row = reported.get(task.seed)
        if row and row.get("status") == "failed" and row.get("error"):
            error = str(row["error"])
        elif state.reason == "OOMKilled":
            error = "OOMKilled: the trainer ran out of memory; raise spec.trainer.resources.limits"
        elif state.phase == "Succeeded":
            error = "the pod succeeded but its scores are not in the store"
        else:
            detail = state.message.strip().splitlines()[-1] if state.message.strip() else ""
            code = f"exit code {state.exit_code}" if state.exit_code is not None else state.phase
            error = f"trainer failed ({state.reason or 'Error'}, {code})" + (
                f": {detail[:300]}" if detail else ""
            )
        out.append(task.failed(study, error))
    return out
