"""The ``searchSpace`` section of a study: what the random and narrow stages may propose."""

from __future__ import annotations

from typing import Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from hpo.study.spec.base import (
    ACTIVATIONS,
    OPTIMIZERS,
    ORDERED,
    SCHEDULES,
    SpecModel,
    set_of,
    unique_nonempty,
)


def _known(values: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    """``values`` if each is one of ``allowed`` (the first that is not is named), unique,
    and not empty."""
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(allowed)}")
    return unique_nonempty(values, what)


class Range(SpecModel):
    model_config = ConfigDict(json_schema_extra=ORDERED)

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
        json_schema_extra=set_of({"type": "integer", "minimum": 1, "maximum": 4096}),
    )

    @field_validator("choices")
    @classmethod
    def _choices(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        bad = [n for n in v if n < 1 or n > 4096]
        if bad:
            raise ValueError(f"width {bad[0]} is out of range (1..4096)")
        return sorted(unique_nonempty(v, "width"))

    @property
    def grid(self) -> list[int]:
        return (
            list(self.choices) if self.choices else list(range(self.min, self.max + 1, self.step))
        )


class LearningRateRange(SpecModel):
    """Sampled log-uniformly in ``[min, max]`` (3 significant digits), or one of the
    explicit ``choices`` (then min/max are not used)."""

    model_config = ConfigDict(json_schema_extra=ORDERED)

    min: float = Field(default=1e-4, gt=0, le=1)
    max: float = Field(default=1e-2, gt=0, le=1)
    choices: list[float] | None = Field(
        default=None,
        json_schema_extra=set_of({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
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
        return sorted(unique_nonempty(rounded, "learning rate (to 3 significant digits)"))


class SearchSpace(SpecModel):
    hidden_layers: LayersRange = LayersRange()
    neurons: NeuronsRange = NeuronsRange()
    #: One width for every hidden layer (else each layer draws its own): a much smaller
    #: space, the one tables such as HPOBench's MLP benchmark index.
    shared_width: bool = False
    activations: list[str] = Field(
        default_factory=lambda: ["relu", "tanh"],
        json_schema_extra=set_of({"type": "string", "enum": list(ACTIVATIONS)}),
    )
    learning_rate: LearningRateRange = LearningRateRange()
    batch_sizes: list[int] = Field(
        default_factory=lambda: [32, 64],
        json_schema_extra=set_of({"type": "integer", "minimum": 1, "maximum": 65536}),
    )
    optimizers: list[str] = Field(
        default_factory=lambda: ["adam"],
        json_schema_extra=set_of({"type": "string", "enum": list(OPTIMIZERS)}),
    )
    #: Each hidden layer draws its own activation (else one for the whole network).
    activation_per_layer: bool = False
    #: Dropout rates after each hidden layer; 0 means no Dropout layer.
    dropout: list[float] = Field(
        default_factory=lambda: [0.0],
        json_schema_extra=set_of({"type": "number", "minimum": 0, "maximum": 0.95}),
    )
    #: Each hidden layer draws its own dropout rate (else one for the whole network).
    dropout_per_layer: bool = False
    #: L2 weight decay factors of the Dense kernels; 0 means none.
    l2: list[float] = Field(
        default_factory=lambda: [0.0],
        json_schema_extra=set_of({"type": "number", "minimum": 0, "maximum": 1}),
    )
    #: ``constant`` or ``cosine`` (decay to 0 over the epochs).
    learning_rate_schedules: list[str] = Field(
        default_factory=lambda: ["constant"],
        json_schema_extra=set_of({"type": "string", "enum": list(SCHEDULES)}),
    )

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0 <= x <= 0.95]
        if bad:
            raise ValueError(f"dropout rate {bad[0]:g} is out of range (0..0.95)")
        return sorted(unique_nonempty(v, "dropout rate"))

    @field_validator("l2")
    @classmethod
    def _l2(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0 <= x <= 1]
        if bad:
            raise ValueError(f"l2 factor {bad[0]:g} is out of range (0..1)")
        return sorted(unique_nonempty([float(f"{x:.3g}") for x in v], "l2 factor"))

    @field_validator("learning_rate_schedules")
    @classmethod
    def _schedules(cls, v: list[str]) -> list[str]:
        return _known(v, SCHEDULES, "schedule")

    @field_validator("activations")
    @classmethod
    def _activations(cls, v: list[str]) -> list[str]:
        return _known(v, ACTIVATIONS, "activation")

    @field_validator("optimizers")
    @classmethod
    def _optimizers(cls, v: list[str]) -> list[str]:
        return _known(v, OPTIMIZERS, "optimizer")

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: list[int]) -> list[int]:
        bad = [b for b in v if b < 1 or b > 65536]
        if bad:
            raise ValueError(f"batch size {bad[0]} is out of range (1..65536)")
        return unique_nonempty(v, "batch size")
