"""The sections of a study's spec besides its search space: data, training, stages,
failure policy, result, storage, trainer pods and warm start."""

from __future__ import annotations

import re
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from hpo.store.keys import StoreError, key_segment
from hpo.study.spec import podmeta
from hpo.study.spec.base import (
    BAD_PREFIX,
    BUCKET,
    DNS_SUBDOMAIN,
    ENDPOINT,
    ESTIMATORS,
    IPV4,
    PREFIX,
    SECRET_KEY,
    Name,
    SpecModel,
    cel_rule,
    unique_nonempty,
)


class Dataset(SpecModel):
    #: A local CSV path (relative to the study file) or, on a cluster, an object-store URL.
    path: str = Field(min_length=1)
    #: Input columns; empty means every column that is not a label.
    features: list[Name] = Field(
        default_factory=list, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    labels: list[Name] = Field(min_length=1, json_schema_extra={"x-kubernetes-list-type": "set"})
    #: Feature columns to one-hot encode although they hold numbers (codes of a
    #: category); text columns are encoded without being listed.
    categorical: list[Name] = Field(
        default_factory=list, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    test_size: float = Field(default=0.2, gt=0, lt=1)
    validation_size: float = Field(default=0.2, gt=0, lt=1)
    #: Cross-validation over the non-test rows: seed s validates on fold s mod k, so
    #: a configuration's seeds together see every row once. 0: one validation split.
    cross_validation_folds: int = Field(
        default=0, ge=0, le=20, json_schema_extra={"not": {"enum": [1]}}
    )
    #: A numpy seed: below 2**32.
    split_seed: int = Field(default=0, ge=0, le=2**32 - 1)
    #: Per-label reference value for percent errors; default: mean |label| on the test split.
    reference_values: dict[str, float] = Field(
        default_factory=dict,
        json_schema_extra={"additionalProperties": {"type": "number", "not": {"enum": [0]}}},
    )

    @model_validator(mode="after")
    def _columns(self) -> Self:
        if self.cross_validation_folds == 1:
            raise ValueError("crossValidationFolds must be 0 (one validation split) or at least 2")
        unique_nonempty(self.labels, "label")
        if self.features:
            unique_nonempty(self.features, "feature")
        both = [c for c in self.labels if c in self.features]
        if both:
            raise ValueError(f"column {both[0]!r} is listed both as a label and as a feature")
        if self.categorical:
            unique_nonempty(self.categorical, "categorical column")
        label = [c for c in self.categorical if c in self.labels]
        if label:
            raise ValueError(
                f"categorical names {label[0]!r}, a label: labels are numbers to predict"
            )
        stray = [c for c in self.categorical if self.features and c not in self.features]
        if stray:
            raise ValueError(f"categorical names {stray[0]!r}, which is not one of the features")
        stray = [k for k in self.reference_values if k not in self.labels]
        if stray:
            raise ValueError(f"referenceValues names {stray[0]!r}, which is not a label")
        zero = [k for k, v in self.reference_values.items() if v == 0]
        if zero:
            raise ValueError(f"referenceValues.{zero[0]} must not be 0 (it divides the error)")
        return self


class Training(SpecModel):
    epochs: int = Field(default=100, ge=1, le=100_000)
    patience: int = Field(default=10, ge=1, le=100_000)
    seeds_per_config: int = Field(default=3, ge=1, le=100)
    #: Seeds are ``baseSeed, baseSeed+1, ...``: every configuration sees the same seeds.
    base_seed: int = Field(default=1, ge=0, le=2**31 - 200)
    #: TensorFlow threads per training; parallel processes use cores better than threads.
    threads: int = Field(default=1, ge=1, le=64)
    #: Train a configuration's first seed only, and its other seeds only while it can
    #: still make the final group (which always has every seed). False: every seed for all.
    seed_racing: bool = True


class RandomStage(SpecModel):
    #: Configurations sampled. Unset: sized from ``budget.trainings`` if that is set, else 12
    #: (``hpo.engine.budget.stage_sizes`` says how).
    configurations: int | None = Field(default=None, ge=1, le=100_000)
    #: Seed of the sampler: the same seed proposes the same configurations.
    seed: int = Field(default=0, ge=0, le=2**32 - 1)


class NarrowStage(SpecModel):
    """The narrow stage: a search around the random stage's best configurations.

    ``localSearch`` (the default, chosen on the exact FCNet benchmark) walks one-step
    neighbours of the best configuration so far; ``gaussianProcess`` runs one
    scikit-optimize optimiser on a narrow grid around each handed-over configuration.
    """

    enabled: bool = True
    method: Literal["localSearch", "gaussianProcess"] = "localSearch"
    #: localSearch: order a configuration's untried neighbours by a ridge model fitted
    #: on every result (else at random).
    surrogate: bool = True
    #: How many random-stage configurations are handed over.
    top_k: int = Field(default=3, ge=1, le=100)
    #: ``perDepth``: the best of each depth first, then the next best overall.
    selection: Literal["perDepth", "overall"] = "perDepth"
    #: New configurations (each trained once per seed) searched around each handed-over one.
    #: Unset: sized from ``budget.trainings`` if that is set, else 10.
    trials_per_config: int | None = Field(default=None, ge=1, le=10_000)
    neurons_radius: int = Field(default=32, ge=0, le=4096)
    neurons_step: int = Field(default=8, ge=1, le=4096)
    #: Radius and grid step of the learning rate, in decades (log10 units).
    learning_rate_radius: float = Field(default=0.5, ge=0, le=5)
    learning_rate_step: float = Field(default=0.1, gt=0, le=5)
    estimator: str = Field(default="GP", json_schema_extra={"enum": list(ESTIMATORS)})
    initial_points: int = Field(default=2, ge=1, le=1000)

    @field_validator("estimator")
    @classmethod
    def _estimator(cls, v: str) -> str:
        if v.upper() == "GBRT":
            raise ValueError(
                "GBRT is not usable with this scikit-learn (scikit-optimize 0.10 breaks "
                "with it); choose GP, RF or ET"
            )
        if v not in ESTIMATORS:
            raise ValueError(f"unknown estimator {v!r}; choose from {', '.join(ESTIMATORS)}")
        return v


class Budget(SpecModel):
    """What the study may cost, in trainings: a cap the engine keeps at every moment.

    Every attempt that ends with a result is charged, a success or a failure (so
    retries of failures count); a training interrupted by the infrastructure (a
    preempted pod, Ctrl-C) is not charged. Unset: the stages' planned total, every
    seed of every configuration. When set and the stage sizes are not, the stages
    are sized from it (``hpo.engine.budget.stage_sizes``); sizes set explicitly stay,
    and the budget still caps them.
    """

    trainings: int | None = Field(default=None, ge=1, le=10_000_000)


class FailurePolicy(SpecModel):
    #: Extra attempts for a training that failed.
    retries: int = Field(default=1, ge=0, le=100)
    #: The study fails once more trainings than this have failed for good.
    max_failed_trainings: int = Field(default=10, ge=0, le=1_000_000)


class Threshold(SpecModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.maxMae) || has(self.maxPercent)", "set maxMae, maxPercent or both"
                )
            ]
        }
    )

    max_mae: float | None = Field(default=None, gt=0)
    max_percent: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> Self:
        if self.max_mae is None and self.max_percent is None:
            raise ValueError("set maxMae, maxPercent or both")
        return self


class Result(SpecModel):
    #: How many of the best configurations make the final group.
    size: int = Field(default=5, ge=1, le=1000)
    thresholds: dict[str, Threshold] = Field(default_factory=dict)


class SecretRef(SpecModel):
    """A Kubernetes Secret holding the object store's credentials (on a cluster)."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    access_key_key: str = Field(default="accessKey", max_length=253, pattern=SECRET_KEY)
    secret_key_key: str = Field(default="secretKey", max_length=253, pattern=SECRET_KEY)


class Storage(SpecModel):
    """Where the ledger, artifacts and plots go: a local folder or an S3 bucket (MinIO).

    Credentials are never part of the spec: a Secret reference on a cluster,
    ``HPO_S3_ACCESS_KEY`` / ``HPO_S3_SECRET_KEY`` in the environment locally.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "self.type != 's3' || (has(self.endpoint) && has(self.bucket))",
                    "endpoint and bucket are required when type is s3",
                ),
                # Not a ``not: {pattern}`` on the field: that would refuse a null bucket.
                cel_rule(
                    f"!has(self.bucket) || !self.bucket.matches('{IPV4}')",
                    "bucket must not look like an IP address",
                ),
            ]
        }
    )

    type: Literal["local", "s3"] = "local"
    #: Root folder of local runs (relative to the working directory); ``hpo run --out`` wins.
    path: str = "runs"
    #: ``host:port`` of the S3 endpoint (no scheme: ``tls`` says which).
    endpoint: str | None = Field(default=None, pattern=ENDPOINT)
    bucket: str | None = Field(
        default=None,
        min_length=3,
        max_length=63,
        pattern=BUCKET,
    )
    prefix: str = Field(default="hpo", json_schema_extra={"pattern": PREFIX, "maxLength": 255})
    tls: bool = True
    #: Path of a PEM bundle to verify the endpoint's certificate with.
    ca_bundle: str | None = None
    region: str | None = None
    create_bucket: bool = False
    credentials_secret: SecretRef | None = None
    #: Keep the ledger, artifacts and plots when the HPOStudy is deleted (cluster).
    keep_on_delete: bool = True

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str | None) -> str | None:
        if v is not None and re.match(IPV4, v):
            raise ValueError(f"{v!r} is not a valid bucket name (it looks like an IP address)")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if re.search(BAD_PREFIX, v):
            raise ValueError(f"{v!r} must be a relative key prefix without '..'")
        # One segment: keys are <prefix>/<namespace>/<study>/..., and a deeper (or empty)
        # prefix could reach into another namespace's folder ("hpo/other-ns").
        try:
            key_segment(v.strip("/"), "prefix")
        except StoreError as exc:
            raise ValueError(
                f"{v!r} must be one path segment (no '/', '..', control characters or "
                f"backslashes): studies are kept under <prefix>/<namespace>/<study> ({exc})"
            ) from None
        if len(v) > 255 or not re.match(PREFIX, v):  # the CRD's pattern: keep them equal
            raise ValueError(
                f"{v!r} must be one path segment of at most 255 ASCII letters, digits, "
                "'.', '_', '~' and '-'"
            )
        return v.strip("/")

    @model_validator(mode="after")
    def _s3_complete(self) -> Self:
        if self.type == "s3":
            missing = [f for f in ("endpoint", "bucket") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"{missing[0]} is required when type is s3")
        return self


#: ``trainer.maxDisruptions`` where neither the study nor the cluster sets it.
DEFAULT_MAX_DISRUPTIONS = 5


class Trainer(SpecModel):
    """How trainer pods are run (cluster only; ``hpo run`` ignores it)."""

    image: str = Field(default="ghcr.io/hpo-operator/trainer:0.1.0", min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    #: A Kubernetes ResourceRequirements object.
    resources: dict[str, Any] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"cpu": "1", "memory": "2Gi"},
        }
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)
    service_account_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)
    #: Extra environment variables (Kubernetes EnvVar objects).
    env: list[dict[str, Any]] = Field(default_factory=list)
    #: Kueue's LocalQueue: the ``kueue.x-k8s.io/queue-name`` label of every trainer pod.
    queue_name: str | None = Field(default=None, max_length=63, pattern=DNS_SUBDOMAIN)
    priority_class_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)
    #: Another scheduler (e.g. ``volcano``); unset: the cluster's default scheduler.
    scheduler_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)
    #: Added to every trainer pod (keys the operator or Kueue set are refused).
    pod_labels: dict[str, podmeta.LabelValue] = Field(default_factory=dict, max_length=64)
    #: Added to every trainer pod, e.g. Volcano's ``scheduling.volcano.sh/queue-name``.
    pod_annotations: dict[str, str] = Field(default_factory=dict, max_length=64)
    #: Seeds trained by one pod: more than 1 saves start-up for small models.
    seeds_per_pod: int = Field(default=1, ge=1, le=100)
    #: A pod bound to a node whose container has not started after this (a volume that
    #: never mounts, a node that never starts it) is a failed attempt. Waiting for capacity
    #: (unschedulable, gated by a queue) and a pod that cannot start until fixed (image
    #: pull, missing Secret) never are (README, "Queued, stuck, disrupted").
    pending_timeout_seconds: int = Field(default=600, ge=10, le=86_400)
    #: Trainings waiting for capacity longer than this set the ``QueuedTooLong`` condition
    #: (none: no limit). They keep waiting; none is failed for it.
    max_queue_seconds: int | None = Field(default=None, ge=1, le=30 * 86_400)
    #: How often one training may be disrupted (preempted, evicted, its node lost, its pod
    #: deleted) and started again without an attempt; the next disruption is a failed attempt.
    #: Unset: the cluster's default (the chart's ``trainerDefaults``), else
    #: ``DEFAULT_MAX_DISRUPTIONS``; the CRD has no default, so unset stays unset.
    max_disruptions: int | None = Field(default=None, ge=0, le=1000)
    #: Failed pods are kept this long for debugging, then deleted.
    failed_pod_ttl_seconds: int = Field(default=3600, ge=0, le=30 * 86_400)
    #: First retry waits this long, doubling for each further attempt.
    retry_backoff_seconds: float = Field(default=10, ge=0, le=3600)

    @field_validator("pod_labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        podmeta.check_keys(list(v), "label")
        return v

    @field_validator("pod_annotations")
    @classmethod
    def _annotations(cls, v: dict[str, str]) -> dict[str, str]:
        podmeta.check_keys(list(v), "annotation")
        podmeta.check_annotations_size(v)
        return v

    @field_validator("resources")
    @classmethod
    def _gpus(cls, v: dict[str, Any]) -> dict[str, Any]:
        podmeta.check_gpus(v)
        return v


class WarmStart(SpecModel):
    """Earlier studies this one starts from (README, "Warm start").

    Each entry is a study folder (relative to the study file, like
    ``dataset.path``), ``s3://bucket/prefix/NAME`` on this study's endpoint, or the
    bare name of another study in this study's own store (its run folder, or its
    bucket and namespace on a cluster). Where a source was trained on the same data
    (the same bytes, split and columns) with the same epochs, patience and threads,
    its successful trainings count as this study's, none trained again; else its
    ``configurations`` best are the first configurations of this study's random
    stage, trained anew. Sources with other labels are refused.
    """

    studies: list[Name] = Field(
        min_length=1, max_length=20, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    #: From a source whose data or training settings differ: how many of its best
    #: configurations (by mean validation MAE) are tried first.
    configurations: int = Field(default=5, ge=1, le=1000)
    #: ``studies`` as the study file spells them (``load_study`` makes folders absolute):
    #: what the resume check compares, so a moved project folder is no change.
    _written: tuple[str, ...] | None = PrivateAttr(default=None)

    @property
    def written(self) -> list[str]:
        """The entries as the user wrote them (relative folders relative)."""
        return list(self._written if self._written is not None else self.studies)

    @field_validator("studies")
    @classmethod
    def _studies(cls, v: list[str]) -> list[str]:
        return unique_nonempty(v, "study")
