"""The ``HPOStudy`` resource: spec model, defaults and validation.

A study file is a whole Kubernetes resource so the same YAML goes to
``hpo run`` and to ``kubectl apply``. Field names are camelCase as in every
Kubernetes API; errors name the field by that path
(``spec.searchSpace.neurons: min (300) must be <= max (200)``).

The one name to import the study's model from; it lives in modules by job:
``base`` (vocabulary, patterns, ``SpecError``, the strict base model),
``search_space`` (the ``searchSpace`` section), ``sections`` (the other sections),
``resource`` (``StudySpec``, ``Study``), ``changes`` (which edits a running
study refuses) and ``load`` (reading study files). The CRD is generated from
``StudySpec`` (``hpo.kube.crd``).
"""

from __future__ import annotations

from hpo.study.spec.base import (
    ACTIVATIONS,
    API_GROUP,
    API_VERSION,
    BAD_PREFIX,
    BUCKET,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENDPOINT,
    ESTIMATORS,
    IPV4,
    KIND,
    METHODS,
    OPTIMIZERS,
    PREFIX,
    SCHEDULES,
    SECRET_KEY,
    Name,
    SpecError,
)
from hpo.study.spec.changes import (
    MUTABLE_WHILE_RUNNING,
    TRAINING_FIELDS,
    refused_changes,
    refused_message,
    spec_value,
)
from hpo.study.spec.load import (
    MAX_YAML_NODES,
    is_study_name,
    load_study,
    load_yaml,
    parse_study,
    study_resource,
)
from hpo.study.spec.resource import IDENTITY, Metadata, Study, StudySpec
from hpo.study.spec.search_space import (
    LayersRange,
    LearningRateRange,
    NeuronsRange,
    Range,
    SearchSpace,
)
from hpo.study.spec.sections import (
    DEFAULT_MAX_DISRUPTIONS,
    Budget,
    Dataset,
    FailurePolicy,
    NarrowStage,
    RandomStage,
    Result,
    SecretRef,
    Storage,
    Threshold,
    Trainer,
    Training,
    WarmStart,
)

__all__ = [
    "ACTIVATIONS",
    "API_GROUP",
    "API_VERSION",
    "BAD_PREFIX",
    "BUCKET",
    "DEFAULT_MAX_DISRUPTIONS",
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "ENDPOINT",
    "ESTIMATORS",
    "IDENTITY",
    "IPV4",
    "KIND",
    "MAX_YAML_NODES",
    "METHODS",
    "MUTABLE_WHILE_RUNNING",
    "OPTIMIZERS",
    "PREFIX",
    "SCHEDULES",
    "SECRET_KEY",
    "TRAINING_FIELDS",
    "Budget",
    "Dataset",
    "FailurePolicy",
    "LayersRange",
    "LearningRateRange",
    "Metadata",
    "Name",
    "NarrowStage",
    "NeuronsRange",
    "RandomStage",
    "Range",
    "Result",
    "SearchSpace",
    "SecretRef",
    "SpecError",
    "Storage",
    "Study",
    "StudySpec",
    "Threshold",
    "Trainer",
    "Training",
    "WarmStart",
    "is_study_name",
    "load_study",
    "load_yaml",
    "parse_study",
    "refused_changes",
    "refused_message",
    "spec_value",
    "study_resource",
]
