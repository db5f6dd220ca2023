"""The contract between whoever schedules a training and the trainer that runs it.

The operator (or the local runner) and the trainer meet only here: a
``TrainingRequest`` goes in, one ``SeedResult`` per seed comes out. Both are
plain JSON so they can travel as a pod argument, a file, or a termination
message. Nothing in this module imports TensorFlow, kopf or kubernetes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hpo.store.ref import StoreRef
from hpo.study.layout import seed_dir

Stage = Literal["random", "bayesian"]
#: The narrow stage (the search around the random stage's best) as it is stored: in the
#: ledger, ``scores.json``, the results API and the CRD's ``status.stage`` it keeps the
#: name it had when the stage was always Gaussian-process Bayesian optimisation. The code
#: says "narrow" everywhere else and spells the stored value only through these two names.
RANDOM_STAGE: Stage = "random"
NARROW_STAGE: Stage = "bayesian"


def stage_label(stage: str) -> str:
    """A stage (or the engine's phase) as people read it: the narrow stage says "narrow"."""
    return "narrow" if stage == NARROW_STAGE else stage


Status = Literal["succeeded", "failed"]


#: The knobs of a configuration (``TrainingRequest.config``): every module that reads or
#: builds one, and the trainer, spells a knob through these names; the ledger's columns
#: follow ``KNOBS``' order. Values: ints, floats and strings, or a list of one per hidden
#: layer for ``NEURONS`` (always), ``ACTIVATION`` and ``DROPOUT`` (when they differ by layer).
HIDDEN_LAYERS = "hidden_layers"
NEURONS = "neurons"
ACTIVATION = "activation"
LEARNING_RATE = "learning_rate"
BATCH_SIZE = "batch_size"
OPTIMIZER = "optimizer"
DROPOUT = "dropout"
L2 = "l2"
LR_SCHEDULE = "lr_schedule"
KNOBS = (
    HIDDEN_LAYERS,
    NEURONS,
    ACTIVATION,
    LEARNING_RATE,
    BATCH_SIZE,
    OPTIMIZER,
    DROPOUT,
    L2,
    LR_SCHEDULE,
)
#: Knobs that may hold one value per hidden layer.
PER_LAYER = (NEURONS, ACTIVATION, DROPOUT)


@dataclass(frozen=True)
class DatasetRef:
    """Where the data is and how it is split; identical for every training of a study."""

    path: str
    features: list[str]
    labels: list[str]
    test_size: float = 0.2
    validation_size: float = 0.2
    split_seed: int = 0
    reference_values: dict[str, float] = field(default_factory=dict)
    #: Cross-validation folds over the non-test rows; seed s validates on fold s mod folds.
    #: 0: one fixed validation split (``validation_size``).
    folds: int = 0
    #: Feature columns declared categorical (``spec.dataset.categorical``: numeric codes);
    #: text feature columns are categorical without being listed.
    categorical: list[str] = field(default_factory=list)
    #: ETag and size of the dataset object when the study started; a trainer that
    #: finds another version refuses it rather than silently mixing data.
    etag: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class TrainingOptions:
    epochs: int = 100
    patience: int = 10
    threads: int = 1


@dataclass(frozen=True)
class TrainingRequest:
    """One configuration, trained once per seed."""

    study: str
    trial: str
    stage: Stage
    config: dict[str, Any]
    config_key: str
    seeds: list[int]
    dataset: DatasetRef
    training: TrainingOptions
    #: Store key prefix of the trial (``layout.StudyPaths.trial``): ``quickstart/trials/r0003``.
    output_prefix: str
    parent: str | None = None
    #: The store to write to (and to fetch an ``s3://`` dataset from); None: the caller's.
    store: StoreRef | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainingRequest:
        raw = json.loads(text)
        raw["dataset"] = DatasetRef(**raw["dataset"])
        raw["training"] = TrainingOptions(**raw["training"])
        if raw.get("store") is not None:
            raw["store"] = StoreRef(**raw["store"])
        return cls(**raw)

    def artifacts_prefix(self, seed: int) -> str:
        """Where ``seed``'s artifacts go: ``<output_prefix>/seed-<n>`` (see ``layout``)."""
        return seed_dir(self.output_prefix, seed)


@dataclass
class SeedResult:
    """What one training (one configuration, one seed) produced."""

    study: str
    trial: str
    stage: Stage
    parent: str | None
    config: dict[str, Any]
    config_key: str
    seed: int
    status: Status
    #: MAE on standardised labels over the test split: reported, never used to decide.
    mae: float | None = None
    #: MAE on standardised labels over the validation split (the held-out fold with
    #: cross-validation): the selection score every ranking and search decision reads.
    val_mae: float | None = None
    #: label -> {"mae": in original units, "pct": in percent of the reference value}
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)
    runtime_s: float = 0.0
    fit_s: float = 0.0
    epochs_run: int = 0
    rows_dropped: int = 0
    error: str | None = None
    artifacts: str | None = None
    #: Unix time the training ended: completion order survives the ledger round trip.
    finished_at: float = 0.0
    #: Where a warm start took this result from (the source study's location) and its
    #: trial id there; None: trained by this study.
    source: str | None = None
    source_trial: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SeedResult:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> SeedResult:
        return cls.from_dict(json.loads(text))

    @property
    def key(self) -> tuple[str, int]:
        return (self.trial, self.seed)


#: The trainer pod's environment variable holding how many GPUs its limits ask for
#: (``nvidia.com/gpu``): the trainer then refuses to train on the CPU, where it would
#: be silently slow, when TensorFlow sees fewer GPUs than that.
GPUS_ENV = "HPO_GPUS"
