"""The ``HPOStudy`` resource: spec model, defaults and validation.

A study file is a whole Kubernetes resource so the same YAML goes to
``hpo run`` and to ``kubectl apply``. Field names are camelCase as in every
Kubernetes API; errors name the field by that path
(``spec.searchSpace.neurons: min (300) must be <= max (200)``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from hpo.store.keys import StoreError, key_segment

API_GROUP = "hpo-operator.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "HPOStudy"

ACTIVATIONS = ("relu", "tanh", "elu", "selu", "gelu", "swish", "sigmoid", "leaky_relu")
OPTIMIZERS = ("adam", "adamw", "nadam", "rmsprop", "sgd", "adamax")
ESTIMATORS = ("GP", "RF", "ET")
SCHEDULES = ("constant", "cosine")
METHODS = ("localSearch", "gaussianProcess")

# Patterns are RE2-compatible (no look-around): the CRD carries the same ones, and
# both pydantic's Rust engine and the API server's Go engine evaluate them alike.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Dot-separated labels of lower-case letters, digits and '-'; 3-63 characters.
BUCKET = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
#: Dots as ``[.]``, not backslash-escaped: the pattern also sits in a CEL string literal.
IPV4 = r"^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$"
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
#: ``host[:port]``: a host name, an IPv4 address or a bracketed IPv6 address; port 1-65535.
ENDPOINT = (
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)(:" + _PORT + r")?$"
)
#: Keys of a Secret's ``data``.
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
#: A key prefix may not start with '/' nor hold a '..' segment.
BAD_PREFIX = r"^/|(^|/)\.\.(/|$)"
#: The key prefix the schema admits: one segment (not '.' or '..') of URL- and
#: NFKC-stable characters, trailing '/' allowed; what ``Storage._prefix`` admits too.
PREFIX = (
    r"^([A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.\.[A-Za-z0-9._~-]+)/*$"
)

_DNS_LABEL = re.compile(DNS_LABEL)

#: What a pattern means, for messages: pydantic would print the regular expression.
_PATTERN_HELP = {
    DNS_SUBDOMAIN: "is not a valid Kubernetes object name (lower-case letters, digits, '-' "
    "and '.', starting and ending with a letter or digit)",
    BUCKET: "is not a valid bucket name (3-63 lower-case letters, digits, '.' and '-', "
    "starting and ending with a letter or digit, no '..', '.-' or '-.')",
    ENDPOINT: "must be host[:port] without a scheme or path, port 1-65535 "
    "(set tls: false for http)",
    SECRET_KEY: "is not a valid Secret key (letters, digits, '-', '_' and '.')",
}


class SpecError(ValueError):
    """A study file is invalid; ``problems`` lists one message per wrong field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
        # No coercion ("10" -> 10, "yes" -> True, 2.0 -> 2): the CRD's schema types
        # admit none of these either, so `hpo run` and the API server agree.
        strict=True,
        allow_inf_nan=False,
    )


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """A CRD ``x-kubernetes-validations`` entry: the API server's copy of a
    cross-field rule that a JSON schema cannot state (the Python validator is the
    other copy, with the same message)."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def _set_of(item: dict[str, Any], min_items: int = 1) -> dict[str, Any]:
    """Schema extras of a list of unique scalars (``uniqueItems`` is not allowed in CRDs)."""
    return {"items": item, "minItems": min_items, "x-kubernetes-list-type": "set"}


_ORDERED = {"x-kubernetes-validations": [_cel("self.min <= self.max", "min must be <= max")]}
Name = Annotated[str, Field(min_length=1)]


PositiveInt = Annotated[int, Field(ge=1)]


class Range(_Model):
    model_config = ConfigDict(json_schema_extra=_ORDERED)

    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class LayersRange(Range):
    min: int = Field(default=1, ge=1, le=20)
    max: int = Field(default=3, ge=1, le=20)


class NeuronsRange(Range):
    """Widths ``min, min+step, ... <= max``, or the explicit ``choices`` (then min/max/step
    are not used): e.g. ``[16, 32, 64, 128]`` for powers of two."""

    min: int = Field(default=16, ge=1, le=4096)
    max: int = Field(default=128, ge=1, le=4096)
    step: int = Field(default=16, ge=1, le=4096)
    choices: list[int] | None = Field(
        default=None,
        json_schema_extra=_set_of({"type": "integer", "minimum": 1, "maximum": 4096}),
    )

    @field_validator("choices")
    @classmethod
    def _choices(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        bad = [n for n in v if n < 1 or n > 4096]
        if bad:
            raise ValueError(f"width {bad[0]} is out of range (1..4096)")
        return sorted(_unique_nonempty(v, "width"))

    @property
    def grid(self) -> list[int]:
        return (
            list(self.choices) if self.choices else list(range(self.min, self.max + 1, self.step))
        )


class LearningRateRange(_Model):
    """Sampled log-uniformly in ``[min, max]`` (3 significant digits), or one of the
    explicit ``choices`` (then min/max are not used)."""

    model_config = ConfigDict(json_schema_extra=_ORDERED)

    min: float = Field(default=1e-4, gt=0, le=1)
    max: float = Field(default=1e-2, gt=0, le=1)
    choices: list[float] | None = Field(
        default=None,
        json_schema_extra=_set_of({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must be <= max ({self.max:g})")
        return self

    @field_validator("choices")
    @classmethod
    def _choices(cls, v: list[float] | None) -> list[float] | None:
        if v is None:
            return v
        bad = [x for x in v if not 0 < x <= 1]
        if bad:
            raise ValueError(f"learning rate {bad[0]:g} is out of range (0, 1]")
        rounded = [float(f"{x:.3g}") for x in v]
        return sorted(_unique_nonempty(rounded, "learning rate (to 3 significant digits)"))


def _unique_nonempty(values: list[Any], what: str) -> list[Any]:
    if not values:
        raise ValueError(f"at least one {what} is required")
    dupes = sorted({str(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"duplicate {what}: {', '.join(dupes)}")
    return values


class SearchSpace(_Model):
    hidden_layers: LayersRange = LayersRange()
    neurons: NeuronsRange = NeuronsRange()
    activations: list[str] = Field(
        default_factory=lambda: ["relu", "tanh"],
        json_schema_extra=_set_of({"type": "string", "enum": list(ACTIVATIONS)}),
    )
    learning_rate: LearningRateRange = LearningRateRange()
    batch_sizes: list[int] = Field(
        default_factory=lambda: [32, 64],
        json_schema_extra=_set_of({"type": "integer", "minimum": 1, "maximum": 65536}),
    )
    optimizers: list[str] = Field(
        default_factory=lambda: ["adam"],
        json_schema_extra=_set_of({"type": "string", "enum": list(OPTIMIZERS)}),
    )
    #: Each hidden layer draws its own activation (else one for the whole network).
    activation_per_layer: bool = False
    #: Dropout rates after each hidden layer; 0 means no Dropout layer.
    dropout: list[float] = Field(
        default_factory=lambda: [0.0],
        json_schema_extra=_set_of({"type": "number", "minimum": 0, "maximum": 0.95}),
    )
    #: Each hidden layer draws its own dropout rate (else one for the whole network).
    dropout_per_layer: bool = False
    #: L2 weight decay factors of the Dense kernels; 0 means none.
    l2: list[float] = Field(
        default_factory=lambda: [0.0],
        json_schema_extra=_set_of({"type": "number", "minimum": 0, "maximum": 1}),
    )
    #: ``constant`` or ``cosine`` (decay to 0 over the epochs).
    learning_rate_schedules: list[str] = Field(
        default_factory=lambda: ["constant"],
        json_schema_extra=_set_of({"type": "string", "enum": list(SCHEDULES)}),
    )

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0 <= x <= 0.95]
        if bad:
            raise ValueError(f"dropout rate {bad[0]:g} is out of range (0..0.95)")
        return sorted(_unique_nonempty(v, "dropout rate"))

    @field_validator("l2")
    @classmethod
    def _l2(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0 <= x <= 1]
        if bad:
            raise ValueError(f"l2 factor {bad[0]:g} is out of range (0..1)")
        return sorted(_unique_nonempty([float(f"{x:.3g}") for x in v], "l2 factor"))

    @field_validator("learning_rate_schedules")
    @classmethod
    def _schedules(cls, v: list[str]) -> list[str]:
        unknown = [x for x in v if x not in SCHEDULES]
        if unknown:
            raise ValueError(f"unknown schedule {unknown[0]!r}; choose from {', '.join(SCHEDULES)}")
        return _unique_nonempty(v, "schedule")

    @field_validator("activations")
    @classmethod
    def _activations(cls, v: list[str]) -> list[str]:
        unknown = [a for a in v if a not in ACTIVATIONS]
        if unknown:
            raise ValueError(
                f"unknown activation {unknown[0]!r}; choose from {', '.join(ACTIVATIONS)}"
            )
        return _unique_nonempty(v, "activation")

    @field_validator("optimizers")
    @classmethod
    def _optimizers(cls, v: list[str]) -> list[str]:
        unknown = [o for o in v if o not in OPTIMIZERS]
        if unknown:
            raise ValueError(
                f"unknown optimizer {unknown[0]!r}; choose from {', '.join(OPTIMIZERS)}"
            )
        return _unique_nonempty(v, "optimizer")

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: list[int]) -> list[int]:
        bad = [b for b in v if b < 1 or b > 65536]
        if bad:
            raise ValueError(f"batch size {bad[0]} is out of range (1..65536)")
        return _unique_nonempty(v, "batch size")


class Dataset(_Model):
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
        _unique_nonempty(self.labels, "label")
        if self.features:
            _unique_nonempty(self.features, "feature")
        both = [c for c in self.labels if c in self.features]
        if both:
            raise ValueError(f"column {both[0]!r} is listed both as a label and as a feature")
        if self.categorical:
            _unique_nonempty(self.categorical, "categorical column")
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


class Training(_Model):
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


class RandomStage(_Model):
    configurations: int = Field(default=12, ge=1, le=100_000)
    #: Seed of the sampler: the same seed proposes the same configurations.
    seed: int = Field(default=0, ge=0, le=2**32 - 1)


class BayesianStage(_Model):
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
    trials_per_config: int = Field(default=10, ge=1, le=10_000)
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


class FailurePolicy(_Model):
    #: Extra attempts for a training that failed.
    retries: int = Field(default=1, ge=0, le=100)
    #: The study fails once more trainings than this have failed for good.
    max_failed_trainings: int = Field(default=10, ge=0, le=1_000_000)


class Threshold(_Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("has(self.maxMae) || has(self.maxPercent)", "set maxMae, maxPercent or both")
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


class Result(_Model):
    #: How many of the best configurations make the final group.
    size: int = Field(default=5, ge=1, le=1000)
    thresholds: dict[str, Threshold] = Field(default_factory=dict)


class SecretRef(_Model):
    """A Kubernetes Secret holding the object store's credentials (on a cluster)."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    access_key_key: str = Field(default="accessKey", max_length=253, pattern=SECRET_KEY)
    secret_key_key: str = Field(default="secretKey", max_length=253, pattern=SECRET_KEY)


class Storage(_Model):
    """Where the ledger, artifacts and plots go: a local folder or an S3 bucket (MinIO).

    Credentials are never part of the spec: a Secret reference on a cluster,
    ``HPO_S3_ACCESS_KEY`` / ``HPO_S3_SECRET_KEY`` in the environment locally.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.type != 's3' || (has(self.endpoint) && has(self.bucket))",
                    "endpoint and bucket are required when type is s3",
                ),
                # Not a ``not: {pattern}`` on the field: that would refuse a null bucket.
                _cel(
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


class Trainer(_Model):
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
    #: Seeds trained by one pod: more than 1 saves start-up for small models.
    seeds_per_pod: int = Field(default=1, ge=1, le=100)
    #: A pod still Pending (unschedulable, unpullable image) after this is a failed attempt.
    pending_timeout_seconds: int = Field(default=600, ge=10, le=86_400)
    #: Failed pods are kept this long for debugging, then deleted.
    failed_pod_ttl_seconds: int = Field(default=3600, ge=0, le=30 * 86_400)
    #: First retry waits this long, doubling for each further attempt.
    retry_backoff_seconds: float = Field(default=10, ge=0, le=3600)


class WarmStart(_Model):
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
        return _unique_nonempty(v, "study")


class StudySpec(_Model):
    dataset: Dataset
    search_space: SearchSpace = SearchSpace()
    training: Training = Training()
    random_stage: RandomStage = RandomStage()
    bayesian_stage: BayesianStage = BayesianStage()
    parallelism: int = Field(default=2, ge=1, le=10_000)
    failure_policy: FailurePolicy = FailurePolicy()
    result: Result = Result()
    storage: Storage = Storage()
    trainer: Trainer = Trainer()
    warm_start: WarmStart | None = None

    @model_validator(mode="after")
    def _cross(self) -> Self:
        stray = [k for k in self.result.thresholds if k not in self.dataset.labels]
        if stray:
            raise ValueError(
                f"result.thresholds names {stray[0]!r}, which is not one of the labels "
                f"({', '.join(self.dataset.labels)})"
            )
        return self

    @property
    def seeds(self) -> list[int]:
        base = self.training.base_seed
        return list(range(base, base + self.training.seeds_per_config))


#: What a study keeps of its ``metadata``: its identity. The rest is the API server's
#: bookkeeping (``resourceVersion``, ``managedFields``, finalizers, kubectl's whole
#: last-applied copy in an annotation), which would otherwise land in the ledger's Study
#: sheet and ``study.yaml`` as if it were part of the study.
IDENTITY = ("name", "namespace", "uid", "labels")


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    namespace: str = "default"

    @model_validator(mode="before")
    @classmethod
    def _identity(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            return {k: v for k, v in raw.items() if k in IDENTITY}
        return raw

    @field_validator("name", "namespace")
    @classmethod
    def _dns(cls, v: str) -> str:
        if len(v) > 63:
            raise ValueError(f"{v!r} is longer than 63 characters")
        if not _DNS_LABEL.match(v):
            raise ValueError(
                f"{v!r} is not a valid Kubernetes name (lower-case letters, digits and '-', "
                "starting and ending with a letter or digit)"
            )
        return v


class Study(BaseModel):
    """A whole ``HPOStudy`` resource."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    api_version: str
    kind: str
    metadata: Metadata
    spec: StudySpec

    @field_validator("api_version")
    @classmethod
    def _api(cls, v: str) -> str:
        if v != API_VERSION:
            raise ValueError(f"must be {API_VERSION!r}, got {v!r}")
        return v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v != KIND:
            raise ValueError(f"must be {KIND!r}, got {v!r}")
        return v

    @property
    def name(self) -> str:
        return self.metadata.name

    def as_resource(self) -> dict[str, Any]:
        """The study as a plain dict in Kubernetes form (camelCase), defaults filled in."""
        return self.model_dump(mode="json", by_alias=True)


#: Spec fields (camelCase paths) that may change while a study runs: budgets and policy.
#: Anything else (dataset, search space, seeds, storage) would make it another study.
MUTABLE_WHILE_RUNNING: frozenset[tuple[str, ...]] = frozenset(
    {
        ("parallelism",),
        ("failurePolicy",),
        ("randomStage", "configurations"),
        ("bayesianStage", "trialsPerConfig"),
        ("result",),
        ("trainer",),
    }
)


#: Spec fields that give one training its result: the data, its split, and how a
#: model is fitted. A study's recorded training means the same in another study iff
#: these are equal and so is the data's fingerprint (``hpo.session.changed_settings``,
#: shared by the resume check and warm start). Which seeds a configuration gets
#: (``seedsPerConfig``, ``baseSeed``, ``seedRacing``) is not among them: a result is one
#: seed's.
TRAINING_FIELDS: frozenset[tuple[str, ...]] = frozenset(
    {
        ("dataset",),
        ("training", "epochs"),
        ("training", "patience"),
        ("training", "threads"),
    }
)


def _absent(value: Any) -> bool:
    """Absent and empty are the same: a list field added later with an empty default (a
    study saved before it existed has no such key) is no change."""
    return value is None or (isinstance(value, list | dict) and not value)


def refused_changes(
    old: dict[str, Any],
    new: dict[str, Any],
    within: frozenset[tuple[str, ...]] | None = None,
) -> list[str]:
    """Paths of spec fields that changed and may not change while the study runs;
    ``within``: only fields under these paths (``TRAINING_FIELDS``) are compared."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: tuple[str, ...]) -> None:
        if any(path[: len(m)] == m for m in MUTABLE_WHILE_RUNNING):
            return
        if within is not None and not any(
            path[: len(m)] == m or m[: len(path)] == path for m in within
        ):
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), (*path, key))
        elif a != b and not (_absent(a) and _absent(b)):
            out.append("spec." + ".".join(path))

    walk(old, new, ())
    return out


def refused_message(refused: list[str]) -> str:
    """The one wording of refused spec changes (the operator's condition, ``hpo run``)."""
    return f"{', '.join(refused)} cannot change while the study runs"


def spec_value(spec: dict[str, Any], path: str) -> Any:
    """The value at a ``refused_changes`` path (``spec.training.epochs``); None if absent."""
    value: Any = spec
    for part in path.removeprefix("spec.").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    # pydantic prefixes messages from our validators; the field path says enough.
    msg = msg.removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "is required"
    elif err["type"] == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern", "")
        if pattern in _PATTERN_HELP:
            msg = f"{err['input']!r} {_PATTERN_HELP[pattern]}"
    elif err["type"] == "extra_forbidden":
        msg = "is not a known field"
    inp = err.get("input")
    if err["type"] == "extra_forbidden":
        known = _known_fields(err["loc"][:-1])
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        if close:
            msg = f"{msg}; did you mean {close[0]!r}?"
    elif (
        not isinstance(inp, dict | list)
        and err["type"] not in ("missing", "value_error", "string_pattern_mismatch")
        and "(got" not in msg
    ):
        msg = f"{msg} (got {inp!r})"
    return f"{loc}: {msg}" if loc else msg


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """The camelCase field names valid at ``loc``, for did-you-mean hints."""
    model: Any = Study
    for part in loc:
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        field = fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return []
        if not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return [f.alias or n for n, f in model.model_fields.items()]


def study_resource(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an API object that make the study (no ``status``)."""
    return {k: obj.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}


def parse_study(raw: Any) -> Study:
    """Validate a resource dict; raises ``SpecError`` naming every wrong field."""
    if not isinstance(raw, dict):
        raise SpecError(["the study file must be a YAML mapping (an HPOStudy resource)"])
    try:
        return Study.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([_format_error(e) for e in exc.errors()]) from None


class _Loader(yaml.SafeLoader):
    """YAML as the API server reads it: ``1e-4`` is a number (PyYAML's YAML 1.1
    resolver wants a dot and would hand the strict model a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?([0-9][0-9_]*)?\.?[0-9]+[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


#: Most nodes a study file may expand to once its aliases are followed. A real study
#: has a few hundred; an alias bomb ("billion laughs") has billions, which cost nothing
#: to parse (aliases are shared references) but exhaust memory wherever the study is
#: copied or dumped (saving ``study.yaml``, the ledger's ``Study`` sheet).
MAX_YAML_NODES = 100_000


def _expanded_nodes(root: yaml.Node) -> int:
    """How many nodes ``root`` stands for with every alias followed, counted without
    expanding anything (each shared node's count is computed once); a node that
    contains itself counts as too many."""
    counts: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        if id(node) in counts:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if children_done:
            open_.discard(id(node))
            total = 1 + sum(counts[id(c)] for c in children)
            counts[id(node)] = min(total, MAX_YAML_NODES + 1)
            continue
        if id(node) in open_:
            return MAX_YAML_NODES + 1  # recursive: infinitely many
        open_.add(id(node))
        stack.append((node, True))
        for c in children:
            if id(c) in open_:
                return MAX_YAML_NODES + 1
            if id(c) not in counts:
                stack.append((c, False))
    return counts[id(root)]


def load_yaml(text: str) -> Any:
    """Parse a study file's YAML (``yaml.safe_load``, plus YAML 1.2 exponent floats).

    The one loader of study files (``hpo validate``, ``hpo run``, ``hpo report``):
    a document expanding past ``MAX_YAML_NODES`` through its aliases is refused
    before anything is built from it.
    """
    loader = _Loader(text)  # a SafeLoader subclass: safe
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node) > MAX_YAML_NODES:
            raise yaml.YAMLError(
                f"the document expands to more than {MAX_YAML_NODES:,} nodes through its "
                "aliases (*name) or refers to itself; write the values out instead"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_study(path: Path | str) -> Study:
    """Read a study file; a relative local dataset path is taken from the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(["study file not found"]) from None
    except IsADirectoryError:
        raise SpecError(["is a folder, not a study file"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            [
                f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                f"{exc.start}); save the study file as UTF-8"
            ]
        ) from None
    except OSError as exc:
        raise SpecError([f"cannot read the study file: {exc.strerror or exc}"]) from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError([f"not valid YAML: {exc}"]) from None
    except RecursionError:
        raise SpecError(["not valid YAML: nested too deeply"]) from None
    study = parse_study(raw)
    ds = study.spec.dataset
    if "://" not in ds.path and not Path(ds.path).is_absolute():
        try:
            resolved = str((path.parent / ds.path).resolve())
        except (RuntimeError, OSError):  # Python 3.11: RuntimeError on a symlink loop
            raise SpecError(
                [f"spec.dataset.path: {ds.path} is a symbolic link loop; point it at the file"]
            ) from None
        new_ds = ds.model_copy(update={"path": resolved})
        new_spec = study.spec.model_copy(update={"dataset": new_ds})
        study = study.model_copy(update={"spec": new_spec})
    warm = study.spec.warm_start
    if warm is not None:
        studies = [_local_source(path.parent, s) for s in warm.studies]
        new_warm = warm.model_copy(update={"studies": studies})
        new_warm._written = tuple(warm.written)
        study = study.model_copy(
            update={"spec": study.spec.model_copy(update={"warm_start": new_warm})}
        )
    return study


def is_study_name(source: str) -> bool:
    """A ``warmStart.studies`` entry naming a study in this study's own store (no '/')."""
    return "/" not in source and bool(_DNS_LABEL.match(source))


def _local_source(folder: Path, source: str) -> str:
    """A warm-start folder relative to the study file, made absolute (like ``dataset.path``)."""
    if "://" in source or is_study_name(source) or Path(source).is_absolute():
        return source
    try:
        return str((folder / source).resolve())
    except (RuntimeError, OSError):
        raise SpecError(
            [f"spec.warmStart.studies: {source} is a symbolic link loop; point it at the folder"]
        ) from None
