"""A whole ``HPOStudy`` resource: its spec (the sections together), metadata and kind."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from hpo.study.spec.base import API_VERSION, DNS_LABEL_RE, KIND, SpecModel
from hpo.study.spec.search_space import SearchSpace
from hpo.study.spec.sections import (
    Budget,
    Dataset,
    FailurePolicy,
    NarrowStage,
    RandomStage,
    Result,
    Storage,
    Trainer,
    Training,
    WarmStart,
)


class StudySpec(SpecModel):
    dataset: Dataset
    search_space: SearchSpace = SearchSpace()
    training: Training = Training()
    random_stage: RandomStage = RandomStage()
    #: Stored (CRD, study files, the spec saved with a study) under its first name.
    narrow_stage: NarrowStage = Field(default_factory=NarrowStage, alias="bayesianStage")
    parallelism: int = Field(default=2, ge=1, le=10_000)
    budget: Budget = Budget()
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

    @property
    def racing(self) -> bool:
        """Seed racing: a configuration has its first seed until it ranks in the final group."""
        return self.training.seed_racing and self.training.seeds_per_config > 1


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
        if not DNS_LABEL_RE.match(v):
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
