"""Every wrong field gets a message that names it and says what is wrong."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.study import REPO, study_dict, study_with
from hpo.engine import stage_sizes
from hpo.study.spec import SpecError, load_study, parse_study
from hpo.study.spec.podmeta import gpus_asked

BAD = [
    (
        "spec.searchSpace.neurons",
        {"min": 300, "max": 200},
        "spec.searchSpace.neurons: min (300) must be <= max (200)",
    ),
    (
        "spec.searchSpace.hiddenLayers",
        {"min": 4, "max": 2},
        "spec.searchSpace.hiddenLayers: min (4) must be <= max (2)",
    ),
    (
        "spec.searchSpace.learningRate",
        {"min": 0.1, "max": 0.001},
        "spec.searchSpace.learningRate: min (0.1) must be <= max (0.001)",
    ),
    (
        "spec.searchSpace.learningRate",
        {"min": 0, "max": 0.01},
        "spec.searchSpace.learningRate.min: Input should be greater than 0 (got 0)",
    ),
    (
        "spec.searchSpace.activations",
        [],
        "spec.searchSpace.activations: at least one activation is required",
    ),
    (
        "spec.searchSpace.activations",
        ["relu", "softmaxx"],
        "spec.searchSpace.activations: unknown activation 'softmaxx'",
    ),
    (
        "spec.searchSpace.optimizers",
        ["adam", "lbfgs"],
        "spec.searchSpace.optimizers: unknown optimizer 'lbfgs'",
    ),
    (
        "spec.searchSpace.optimizers",
        [],
        "spec.searchSpace.optimizers: at least one optimizer is required",
    ),
    (
        "spec.searchSpace.batchSizes",
        [32, 32],
        "spec.searchSpace.batchSizes: duplicate batch size: 32",
    ),
    (
        "spec.searchSpace.batchSizes",
        [0],
        "spec.searchSpace.batchSizes: batch size 0 is out of range",
    ),
    (
        "spec.training.seedsPerConfig",
        0,
        "spec.training.seedsPerConfig: Input should be greater than or equal to 1 (got 0)",
    ),
    ("spec.training.epochs", "ten", "spec.training.epochs: Input should be a valid integer"),
    ("spec.training.epochs", 2.5, "spec.training.epochs: Input should be a valid integer"),
    (
        "spec.parallelism",
        -1,
        "spec.parallelism: Input should be greater than or equal to 1 (got -1)",
    ),
    ("spec.dataset.testSize", 1.5, "spec.dataset.testSize: Input should be less than 1 (got 1.5)"),
    ("spec.dataset.labels", [], "spec.dataset.labels: List should have at least 1 item"),
    (
        "spec.dataset.features",
        ["W_um", "Id_mA"],
        "spec.dataset: column 'Id_mA' is listed both as a label and as a feature",
    ),
    (
        "spec.dataset.referenceValues",
        {"nope": 1.0},
        "referenceValues names 'nope', which is not a label",
    ),
    ("spec.bayesianStage.estimator", "GBRT", "spec.bayesianStage.estimator: GBRT is not usable"),
    (
        "spec.bayesianStage.estimator",
        "XGB",
        "spec.bayesianStage.estimator: unknown estimator 'XGB'; choose from GP, RF, ET",
    ),
    (
        "spec.bayesianStage.topK",
        0,
        "spec.bayesianStage.topK: Input should be greater than or equal to 1 (got 0)",
    ),
    (
        "spec.failurePolicy.retries",
        -2,
        "spec.failurePolicy.retries: Input should be greater than or equal to 0 (got -2)",
    ),
    (
        "spec.result.thresholds",
        {"Id_mA": {}},
        "spec.result.thresholds.Id_mA: set maxMae, maxPercent or both",
    ),
    (
        "spec.result.thresholds",
        {"Vout": {"maxMae": 1}},
        "result.thresholds names 'Vout', which is not one of the labels",
    ),
    ("spec.paralelism", 2, "spec.paralelism: is not a known field; did you mean 'parallelism'?"),
    ("spec.dataset.path", None, "spec.dataset.path: Input should be a valid string"),
    ("metadata.name", "My_Study", "metadata.name: 'My_Study' is not a valid Kubernetes name"),
    ("metadata.name", "a" * 64, "is longer than 63 characters"),
    ("kind", "Study", "kind: must be 'HPOStudy', got 'Study'"),
    (
        "spec.storage",
        {"type": "s3", "bucket": "bucket-1"},
        "spec.storage: endpoint is required when type is s3",
    ),
    (
        "spec.storage",
        {"type": "s3", "endpoint": "http://minio:9000", "bucket": "bucket-1"},
        "spec.storage.endpoint: 'http://minio:9000' must be host[:port] without a scheme",
    ),
    (
        "spec.storage",
        {"type": "s3", "endpoint": "minio:9000", "bucket": "My_Bucket"},
        "spec.storage.bucket: 'My_Bucket' is not a valid bucket name",
    ),
    ("spec.storage", {"type": "gcs"}, "spec.storage.type: Input should be 'local' or 's3'"),
    ("apiVersion", "v1", "apiVersion: must be 'hpo-operator.dev/v1alpha1'"),
    (
        "spec.trainer.queueName",
        "Team_A",
        "spec.trainer.queueName: 'Team_A' is not a valid Kubernetes object name",
    ),
    ("spec.trainer.queueName", "q" * 64, "spec.trainer.queueName: String should have at most 63"),
    (
        "spec.trainer.priorityClassName",
        "high priority",
        "spec.trainer.priorityClassName: 'high priority' is not a valid Kubernetes object name",
    ),
    (
        "spec.trainer.schedulerName",
        "Volcano",
        "spec.trainer.schedulerName: 'Volcano' is not a valid Kubernetes object name",
    ),
    (
        "spec.trainer.podLabels",
        {"team": "a/b"},
        "spec.trainer.podLabels.team: 'a/b' is not a valid label value",
    ),
    (
        "spec.trainer.podLabels",
        {"-team": "a"},
        "spec.trainer.podLabels: '-team' is not a valid label key",
    ),
    (
        "spec.trainer.podLabels",
        {"hpo-operator.dev/trial": "x"},
        "spec.trainer.podLabels: label 'hpo-operator.dev/trial' cannot be set here",
    ),
    (
        "spec.trainer.podLabels",
        {"kueue.x-k8s.io/queue-name": "q"},
        "label 'kueue.x-k8s.io/queue-name' cannot be set here: set trainer.queueName instead",
    ),
    (
        "spec.trainer.podAnnotations",
        {"sidecar.istio.io/inject": "true"},
        "spec.trainer.podAnnotations: annotation 'sidecar.istio.io/inject' cannot be set here",
    ),
    (
        "spec.trainer.podAnnotations",
        {"x" * 70: "1"},
        "spec.trainer.podAnnotations: '" + "x" * 70 + "' is not a valid annotation key",
    ),
    (
        "spec.trainer.podAnnotations",
        {"big": "x" * (256 * 1024)},
        "spec.trainer.podAnnotations: annotations take 262147 bytes; Kubernetes allows 262144",
    ),
    (
        "spec.trainer.resources",
        {"limits": {"nvidia.com/gpu": 0.5}},
        "spec.trainer.resources: limits.nvidia.com/gpu must be a whole number of GPUs (got 0.5)",
    ),
    (
        "spec.trainer.resources",
        {"limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": 2}},
        "spec.trainer.resources: requests.nvidia.com/gpu must equal limits.nvidia.com/gpu",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "message"), BAD, ids=[b[0] + "=" + str(b[1])[:20] for b in BAD]
)
def test_bad_field_is_named(path: str, value: Any, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_study(study_with(path, value))
    assert message in str(info.value), str(info.value)


def test_missing_required_fields_are_named() -> None:
    raw = study_dict()
    del raw["spec"]["dataset"]["labels"]
    del raw["metadata"]["name"]
    with pytest.raises(SpecError) as info:
        parse_study(raw)
    assert "spec.dataset.labels: is required" in info.value.problems
    assert "metadata.name: is required" in info.value.problems


def test_every_problem_is_reported_at_once() -> None:
    raw = study_dict(training={"seedsPerConfig": 0, "epochs": 0}, parallelism=0)
    with pytest.raises(SpecError) as info:
        parse_study(raw)
    assert len(info.value.problems) == 3


def test_minimal_spec_gets_sensible_defaults() -> None:
    study = parse_study(study_dict())
    spec = study.spec
    assert spec.training.seeds_per_config >= 2
    # Stage sizes unset: sized from budget.trainings when that is set, else the defaults.
    assert spec.random_stage.configurations is None and spec.budget.trainings is None
    assert stage_sizes(spec).random > spec.narrow_stage.top_k
    assert spec.narrow_stage.enabled
    assert spec.seeds == [1, 2, 3]
    resource = study.as_resource()
    assert resource["spec"]["searchSpace"]["neurons"] == {
        "min": 16,
        "max": 128,
        "step": 16,
        "choices": None,
    }
    # The resource form round-trips: what `hpo run` records is a valid study again.
    assert parse_study(copy.deepcopy(resource)) == study


def test_dataset_path_is_relative_to_the_study_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    raw = study_dict()
    raw["spec"]["dataset"]["path"] = "data.csv"
    f = tmp_path / "sub" / "study.yaml"
    f.write_text(yaml.safe_dump(raw))
    assert load_study(f).spec.dataset.path == str(tmp_path / "sub" / "data.csv")


def test_unreadable_study_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="study file not found"):
        load_study(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_study(bad)
    bad.write_text("- just a list")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_study(bad)


def test_the_example_is_valid() -> None:
    study = load_study(REPO / "examples" / "quickstart.yaml")
    assert study.name == "quickstart"
    assert Path(study.spec.dataset.path).exists()


def test_the_gpu_example_is_valid_and_asks_for_a_gpu() -> None:
    """examples/gpu.yaml, as `hpo validate` reads it: one GPU per pod, on GPU nodes."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpo.cli",
            "validate",
            "--spec-only",
            str(REPO / "examples/gpu.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    trainer = load_study(REPO / "examples" / "gpu.yaml").spec.trainer
    assert gpus_asked(trainer.resources) == 1
    assert trainer.tolerations and trainer.node_selector and trainer.queue_name


def test_kueue_and_scheduler_settings_are_optional_and_kept() -> None:
    assert parse_study(study_dict()).spec.trainer.queue_name is None
    trainer = parse_study(
        study_with(
            "spec.trainer",
            {
                "queueName": "team-a",
                "priorityClassName": "research-high",
                "schedulerName": "volcano",
                "podLabels": {"example.com/team": "a", "kueue.x-k8s.io/priority-class": "high"},
                "podAnnotations": {"scheduling.volcano.sh/queue-name": "research"},
            },
        )
    ).spec.trainer
    assert (trainer.queue_name, trainer.priority_class_name, trainer.scheduler_name) == (
        "team-a",
        "research-high",
        "volcano",
    )
    assert trainer.pod_labels["kueue.x-k8s.io/priority-class"] == "high"


def test_categorical_columns_must_be_features_not_labels() -> None:
    with pytest.raises(SpecError) as info:
        parse_study(study_with("spec.dataset.categorical", ["Id_mA"]))
    assert "categorical names 'Id_mA', a label: labels are numbers to predict" in str(info.value)
    raw = study_with("spec.dataset.categorical", ["grade"])
    raw["spec"]["dataset"]["features"] = ["W_um"]
    with pytest.raises(SpecError, match="categorical names 'grade', which is not one of the"):
        parse_study(raw)
    raw["spec"]["dataset"]["features"] = ["W_um", "grade"]
    assert parse_study(raw).spec.dataset.categorical == ["grade"]


def test_a_study_saved_before_dataset_categorical_existed_resumes_unchanged() -> None:
    """A saved spec without the key (an older version) and today's empty default are the
    same study; any real change of the list is refused."""
    from hpo.study.spec import refused_changes

    new = parse_study(study_dict()).as_resource()["spec"]
    old = copy.deepcopy(new)
    del old["dataset"]["categorical"]
    assert refused_changes(old, new) == []
    changed = copy.deepcopy(new)
    changed["dataset"]["categorical"] = ["W_um"]
    assert refused_changes(old, changed) == ["spec.dataset.categorical"]
