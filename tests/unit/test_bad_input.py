"""The bad-input catalogue: every wrong spec field, name, dataset or credential gets a
message naming what is wrong, from `hpo validate`/`hpo run` (exit 2) and nothing is
half-written. The operator's side (a condition on the study) is in
tests/integration/test_bad_input_operator.py.

Each table row asserts the exact field path and reason. tests/unit/test_spec.py and
tests/unit/test_dataset.py hold earlier cases; none is repeated here.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from helpers.study import LABELS, s3_storage, study_dict, study_with
from hpo.cli import EXIT_BAD_INPUT, app
from hpo.data.checks import DatasetProblem, check_dataset
from hpo.data.scaling import Scaler
from hpo.kube.pods import MAX_NAME, pod_name
from hpo.study.spec import SpecError, parse_study
from hpo_trainer.data import load_splits

NS = "default"


def _s3(**storage: Any) -> dict[str, Any]:
    return s3_storage(**{"bucket": "results", **storage})


# -- spec fields ---------------------------------------------------------------------
# (category, field path, value, expected message); ``None`` as path replaces the study.

SPEC_CASES: list[tuple[str, str, Any, str]] = [
    # types: no coercion, as the CRD's schema types admit none
    ("type", "spec.training.epochs", "10", "spec.training.epochs: Input should be a valid integer (got '10')"),
    ("type", "spec.training.epochs", True, "spec.training.epochs: Input should be a valid integer (got True)"),
    ("type", "spec.bayesianStage.enabled", "yes", "spec.bayesianStage.enabled: Input should be a valid boolean (got 'yes')"),
    ("type", "spec.searchSpace.batchSizes", ["32"], "spec.searchSpace.batchSizes.0: Input should be a valid integer (got '32')"),
    ("type", "spec.searchSpace.activations", "relu", "spec.searchSpace.activations: Input should be a valid list (got 'relu')"),
    ("type", "spec.dataset.labels", "Id_mA", "spec.dataset.labels: Input should be a valid list (got 'Id_mA')"),
    ("type", "spec.dataset", "data.csv", "spec.dataset: Input should be a valid dictionary or instance of Dataset (got 'data.csv')"),
    ("type", "spec.searchSpace.learningRate.max", float("nan"), "spec.searchSpace.learningRate.max: Input should be a finite number (got nan)"),
    ("type", "spec.dataset.referenceValues", {"Id_mA": float("inf")}, "spec.dataset.referenceValues.Id_mA: Input should be a finite number (got inf)"),
    ("type", "spec.trainer.nodeSelector", {"disk": 1}, "spec.trainer.nodeSelector.disk: Input should be a valid string (got 1)"),
    # ranges
    ("range", "spec.searchSpace.hiddenLayers.max", 50, "spec.searchSpace.hiddenLayers.max: Input should be less than or equal to 20 (got 50)"),
    ("range", "spec.searchSpace.neurons.step", 0, "spec.searchSpace.neurons.step: Input should be greater than or equal to 1 (got 0)"),
    ("range", "spec.searchSpace.learningRate.max", 2, "spec.searchSpace.learningRate.max: Input should be less than or equal to 1 (got 2)"),
    ("range", "spec.dataset.validationSize", 0, "spec.dataset.validationSize: Input should be greater than 0 (got 0)"),
    ("range", "spec.dataset.splitSeed", -1, "spec.dataset.splitSeed: Input should be greater than or equal to 0 (got -1)"),
    ("range", "spec.trainer.pendingTimeoutSeconds", 1, "spec.trainer.pendingTimeoutSeconds: Input should be greater than or equal to 10 (got 1)"),
    ("range", "spec.trainer.maxQueueSeconds", 0, "spec.trainer.maxQueueSeconds: Input should be greater than or equal to 1 (got 0)"),
    ("range", "spec.trainer.maxDisruptions", -1, "spec.trainer.maxDisruptions: Input should be greater than or equal to 0 (got -1)"),
    ("range", "spec.result.thresholds", {"Id_mA": {"maxMae": -1}}, "spec.result.thresholds.Id_mA.maxMae: Input should be greater than 0 (got -1)"),
    ("range", "spec.dataset.referenceValues", {"Id_mA": 0}, "spec.dataset: referenceValues.Id_mA must not be 0 (it divides the error)"),
    # inverted bounds against a default
    ("inverted", "spec.searchSpace.neurons", {"min": 256}, "spec.searchSpace.neurons: min (256) must be <= max (128)"),
    ("inverted", "spec.searchSpace.learningRate", {"min": 0.05}, "spec.searchSpace.learningRate: min (0.05) must be <= max (0.01)"),
    ("inverted", "spec.searchSpace.hiddenLayers", {"min": 5}, "spec.searchSpace.hiddenLayers: min (5) must be <= max (3)"),
    # empty lists and empty names
    ("empty", "spec.searchSpace.batchSizes", [], "spec.searchSpace.batchSizes: at least one batch size is required"),
    ("empty", "spec.dataset.labels", [""], "spec.dataset.labels.0: String should have at least 1 character (got '')"),
    ("empty", "spec.dataset.features", ["W_um", "W_um"], "spec.dataset: duplicate feature: W_um"),
    # unknown names
    ("unknown", "spec.searchSpace.activations", ["RELU"], "spec.searchSpace.activations: unknown activation 'RELU'; choose from relu, tanh"),
    ("unknown", "spec.bayesianStage.selection", "best", "spec.bayesianStage.selection: Input should be 'perDepth' or 'overall' (got 'best')"),
    ("unknown", "spec.trainer.imagePullPolicy", "always", "spec.trainer.imagePullPolicy: Input should be 'Always', 'IfNotPresent' or 'Never' (got 'always')"),
    ("unknown", "spec.storage.type", "S3", "spec.storage.type: Input should be 'local' or 's3' (got 'S3')"),
    ("unknown", "spec.bayesianStage.estimator", "gbrt", "spec.bayesianStage.estimator: GBRT is not usable with this scikit-learn"),
    ("unknown", "spec.training.seedsPerConfg", 2, "spec.training.seedsPerConfg: is not a known field; did you mean 'seedsPerConfig'?"),
    ("unknown", "spec.searchSpace.batchSize", [32], "spec.searchSpace.batchSize: is not a known field; did you mean 'batchSizes'?"),
    # huge budgets
    ("huge", "spec.randomStage.configurations", 10**9, "spec.randomStage.configurations: Input should be less than or equal to 100000 (got 1000000000)"),
    ("huge", "spec.parallelism", 10**6, "spec.parallelism: Input should be less than or equal to 10000 (got 1000000)"),
    ("huge", "spec.training.epochs", 10**30, "spec.training.epochs: Input should be less than or equal to 100000"),
    ("huge", "spec.bayesianStage.trialsPerConfig", 10**6, "spec.bayesianStage.trialsPerConfig: Input should be less than or equal to 10000"),
    ("huge", "spec.training.seedsPerConfig", 1000, "spec.training.seedsPerConfig: Input should be less than or equal to 100 (got 1000)"),
    ("huge", "spec.randomStage.seed", 2**40, "spec.randomStage.seed: Input should be less than or equal to 4294967295"),
    ("huge", "spec.dataset.splitSeed", 2**32, "spec.dataset.splitSeed: Input should be less than or equal to 4294967295"),
    # names: metadata.name becomes pod names, label values and object keys
    ("name", "metadata.name", "a.b", "metadata.name: 'a.b' is not a valid Kubernetes name"),
    ("name", "metadata.name", "-study", "metadata.name: '-study' is not a valid Kubernetes name"),
    ("name", "metadata.name", "study-", "metadata.name: 'study-' is not a valid Kubernetes name"),
    ("name", "metadata.name", "über", "metadata.name: 'über' is not a valid Kubernetes name"),
    ("name", "metadata.name", "", "metadata.name: '' is not a valid Kubernetes name"),
    ("name", "metadata.name", 5, "metadata.name: Input should be a valid string (got 5)"),
    ("name", "metadata.name", "s" * 64, f"metadata.name: {'s' * 64!r} is longer than 63 characters"),
    ("name", "metadata.namespace", "Prod", "metadata.namespace: 'Prod' is not a valid Kubernetes name"),
    # storage
    ("storage", "spec.storage", _s3(endpoint="minio:abc"), "spec.storage.endpoint: 'minio:abc' must be host[:port] without a scheme or path, port 1-65535"),
    ("storage", "spec.storage", _s3(endpoint="minio:99999"), "spec.storage.endpoint: 'minio:99999' must be host[:port]"),
    ("storage", "spec.storage", _s3(endpoint="minio host:9000"), "spec.storage.endpoint: 'minio host:9000' must be host[:port]"),
    ("storage", "spec.storage", _s3(endpoint="minio:9000/bucket"), "spec.storage.endpoint: 'minio:9000/bucket' must be host[:port] without a scheme or path"),
    ("storage", "spec.storage", _s3(bucket="a..b"), "spec.storage.bucket: 'a..b' is not a valid bucket name"),
    ("storage", "spec.storage", _s3(bucket="10.0.0.1"), "spec.storage.bucket: '10.0.0.1' is not a valid bucket name (it looks like an IP address)"),
    ("storage", "spec.storage", _s3(bucket="ab"), "spec.storage.bucket: String should have at least 3 characters (got 'ab')"),
    ("storage", "spec.storage", _s3(bucket="b" * 64), "spec.storage.bucket: String should have at most 63 characters"),
    ("storage", "spec.storage", _s3(bucket=None), "spec.storage: bucket is required when type is s3"),
    ("storage", "spec.storage", _s3(prefix="../other"), "spec.storage.prefix: '../other' must be a relative key prefix without '..'"),
    ("storage", "spec.storage", _s3(credentialsSecret={"name": "S3_Creds"}), "spec.storage.credentialsSecret.name: 'S3_Creds' is not a valid Kubernetes object name"),
    ("storage", "spec.storage", _s3(credentialsSecret={"name": "s3", "secretKeyKey": "secret key"}), "spec.storage.credentialsSecret.secretKeyKey: 'secret key' is not a valid Secret key"),
    ("storage", "spec.storage", _s3(credentialsSecret={"name": "s3", "token": "x"}), "spec.storage.credentialsSecret.token: is not a known field"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [c[1:] for c in SPEC_CASES],
    ids=[f"{c[0]}:{c[1].removeprefix('spec.')}={str(c[2])[:24]}" for c in SPEC_CASES],
)
def test_bad_spec_field_is_named(path: str, value: Any, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_study(study_with(path, value))
    assert any(p.startswith(message) for p in info.value.problems), info.value.problems


def test_the_longest_valid_name_still_makes_valid_pod_names() -> None:
    name = "s" * 63
    study = parse_study(study_with("metadata.name", name))
    for trial in ("r0001", "b0123"):
        pod = pod_name(study.name, trial, [1, 2, 3], attempt=12)
        assert len(pod) <= MAX_NAME and pod[0].isalnum() and pod[-1].isalnum(), pod


def test_exponent_floats_in_yaml_are_numbers_as_kubectl_reads_them(tmp_path: Path) -> None:
    """The strict model refuses strings for numbers: ``1e-4`` must not become one."""
    f = tmp_path / "study.yaml"
    text = yaml.safe_dump(study_dict()) + "\n"
    text = text.replace(
        "spec:\n", "spec:\n  searchSpace:\n    learningRate: {min: 1e-4, max: 3e-2}\n"
    )
    f.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(f)])
    assert result.exit_code == 0, result.output


# -- datasets --------------------------------------------------------------------------


def _frame(rows: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"x1": rng.uniform(0, 3, rows), "x2": rng.uniform(0, 3, rows), "y": rng.random(rows)}
    )


def _write(tmp_path: Path, df: pd.DataFrame | str) -> Path:
    path = tmp_path / "data.csv"
    if isinstance(df, str):
        path.write_bytes(df.encode("utf-8", "surrogateescape"))
    else:
        df.to_csv(path, index=False)
    return path


def _set(df: pd.DataFrame, column: str, row: int, value: Any) -> pd.DataFrame:
    df = df.astype({column: object}) if isinstance(value, str) else df.copy()
    df.loc[row, column] = value
    return df


NFC = unicodedata.normalize("NFC", "Température")
NFD = unicodedata.normalize("NFD", NFC)

# (case, file content or None for no file, dataset spec changes, expected message)
DATASET_CASES: list[tuple[str, pd.DataFrame | str | None, dict[str, Any], str]] = [
    ("missing file", None, {}, "spec.dataset.path: dataset file not found: {path}"),
    ("empty file", "", {"features": ["x1"]}, "spec.dataset: dataset file is empty: {path}"),
    ("header only", "x1,x2,y\n", {}, "spec.dataset: the dataset has no rows"),
    ("ragged csv", "x1,x2,y\n1,2,3\n4,5,6,7,8\n", {}, "spec.dataset: could not parse dataset CSV {path}: Error tokenizing data"),
    ("misspelt label", _frame(), {"labels": ["Y"]}, "spec.dataset: column 'Y' not found; did you mean 'y'?"),
    ("misspelt feature", _frame(), {"features": ["x1", "x_2"]}, "spec.dataset: column 'x_2' not found; did you mean 'x2'?"),
    ("missing column", _frame(), {"labels": ["current"]}, "spec.dataset: column 'current' not found (columns are: 'x1', 'x2', 'y')"),
    ("non-numeric label", _set(_frame(), "y", 7, "high"), {"features": ["x1", "x2"]}, "spec.dataset: column 'y' is not numeric: e.g. 'high' in data row 8 (1 non-numeric value(s))"),
    ("non-numeric inferred feature", _set(_frame(), "x2", 4, "1,5 V"), {}, "spec.dataset: column 'x2' is not numeric: e.g. '1,5 V' in data row 5 (1 non-numeric value(s)); if it holds categories, list it in spec.dataset.categorical; spec.dataset.features is not set"),
    ("text label", _frame().assign(y=["low", "high"] * 15), {"features": ["x1", "x2"]}, "spec.dataset: column 'y' is not numeric: e.g. 'low' in data row 1 (30 non-numeric value(s))"),
    ("identifier column", _frame().assign(id=[f"row-{i}" for i in range(30)]), {}, "spec.dataset: column 'id' looks like an identifier, not a category: 30 distinct values in 30 usable rows, e.g. 'row-0'; one-hot encoding would give the network one input per row, and every new row would be a category it never saw; leave the column out of the features; spec.dataset.features is not set"),
    ("categorical not a feature", _frame(), {"categorical": ["x3"]}, "spec.dataset: categorical column(s) 'x3' are not among the features"),
    ("all-missing label", _frame().assign(y=np.nan), {}, "spec.dataset: no rows left after dropping rows with missing or infinite values: all 30 rows miss at least one of the selected columns or hold inf there (counts: 'y' (30 missing))"),
    ("all-infinite label", _frame().assign(y=np.inf), {}, "spec.dataset: no rows left after dropping rows with missing or infinite values: all 30 rows miss at least one of the selected columns or hold inf there (counts: 'y' (30 infinite))"),
    ("duplicate header", "x1,x2,x1,y\n" + "1,2,3,4\n" * 12, {}, "spec.dataset: dataset {path}: column name(s) 'x1' appear more than once in the header; give every column its own name"),
    ("duplicate header, features listed", "x1,x2,x1,y\n" + "1,2,3,4\n" * 12, {"features": ["x2"]}, "spec.dataset: dataset {path}: column name(s) 'x1' appear more than once"),
    ("semicolon-separated", "x1;x2;y\n" + "1;2;3\n" * 12, {}, "spec.dataset: dataset {path} has a single column 'x1;x2;y': it looks separated by ';', not ','; save it comma-separated"),
    ("tab-separated", "x1\tx2\ty\n" + "1\t2\t3\n" * 12, {"features": ["x1"]}, "spec.dataset: dataset {path} has a single column 'x1\\tx2\\ty': it looks separated by tab"),
    ("not UTF-8", "x1,x2,y\n" + "1,2,3\n" * 11 + "1,2,\udce9\n", {}, "spec.dataset: could not parse dataset CSV {path}"),
    ("single row", _frame(1), {}, "spec.dataset: only 1 usable row(s) (0 dropped for missing values); need at least 10"),
    ("split leaves no training rows", _frame(12), {"testSize": 0.9}, "spec.dataset: cannot split 12 rows with test_size=0.9 and validation_size=0.2"),
    ("constant label", _frame().assign(y=2.5), {}, "spec.dataset: label column 'y' is constant (2.5 in every usable row): there is nothing to learn"),
    ("extreme feature", _set(_frame(), "x2", 3, 1e300), {}, "spec.dataset: column 'x2' has values too large to standardise: e.g. 1e+300 in data row 4"),
    ("extreme label", _set(_frame(), "y", 0, -1e200), {}, "spec.dataset: column 'y' has values too large to standardise: e.g. -1e+200 in data row 1"),
    ("NFD column name", _frame().rename(columns={"x1": NFD}), {"features": [NFC, "x2"]}, f"spec.dataset: column {NFC!r} not found; the file has {NFD!r}, the same text in another Unicode normalisation form"),
]  # fmt: skip


def _study_for(path: Path, labels: list[str] | None = None, **dataset: Any) -> Any:
    raw = study_dict()
    raw["spec"]["dataset"] = {"path": str(path), "labels": labels or ["y"], **dataset}
    return parse_study(raw)


@pytest.mark.parametrize(
    ("content", "dataset", "message"),
    [c[1:] for c in DATASET_CASES],
    ids=[c[0] for c in DATASET_CASES],
)
def test_bad_dataset_is_named(
    tmp_path: Path, content: pd.DataFrame | str | None, dataset: dict[str, Any], message: str
) -> None:
    path = tmp_path / "data.csv" if content is None else _write(tmp_path, content)
    dataset = dict(dataset)
    labels = dataset.pop("labels", None)
    study = _study_for(path, labels, **dataset)
    with pytest.raises(DatasetProblem) as info:
        check_dataset(study)
    assert str(info.value).startswith(message.format(path=path)), str(info.value)


def test_a_workbook_or_parquet_file_is_named_as_such(tmp_path: Path) -> None:
    """Not "could not parse dataset CSV: 'utf-8' codec can't decode byte 0x..."."""
    xlsx = tmp_path / "data.xlsx"
    _frame().to_excel(xlsx, index=False)
    with pytest.raises(DatasetProblem) as info:
        check_dataset(_study_for(xlsx))
    assert str(info.value).startswith(
        f"spec.dataset: dataset {xlsx} is an Excel workbook (or another zip file), not a CSV "
        "file: save it as CSV"
    ), str(info.value)
    parquet = tmp_path / "data.csv"
    parquet.write_bytes(b"PAR1" + bytes(range(200)))
    with pytest.raises(DatasetProblem, match="is a Parquet file, not a CSV file"):
        check_dataset(_study_for(parquet, features=["x1"]))


def test_an_unnamed_index_column_is_left_out_of_inferred_features(tmp_path: Path) -> None:
    """``DataFrame.to_csv`` without ``index=False`` writes a nameless first column of row
    numbers: never a feature (a row number would leak the split), and the user is told."""
    path = tmp_path / "data.csv"
    _frame().to_csv(path)  # with its index
    prepared = check_dataset(_study_for(path))
    assert prepared.dataset.features == ["x1", "x2"]
    assert any("without a name" in n and str(path) in n for n in prepared.notes)
    listed = check_dataset(_study_for(path, features=["x1", "x2"]))
    assert listed.notes == ()


def test_an_infinite_value_is_counted_as_such_not_as_missing(tmp_path: Path) -> None:
    df = _set(_frame(), "y", 4, np.inf)
    df = _set(df, "x1", 5, np.nan)
    prepared = check_dataset(_study_for(_write(tmp_path, df)))
    assert (prepared.rows, prepared.rows_dropped) == (28, 2)


def test_non_ascii_column_names_work(tmp_path: Path) -> None:
    df = _frame().rename(columns={"x1": "Température_°C", "x2": "Länge µm", "y": "Strom_Ω"})
    path = _write(tmp_path, df)
    prepared = check_dataset(_study_for(path, ["Strom_Ω"]))
    assert prepared.dataset.features == ["Température_°C", "Länge µm"]
    assert prepared.rows == 30
    data = load_splits(prepared.dataset)
    saved = Scaler.from_json(data.feature_scaler.to_json())
    assert saved.columns == ["Température_°C", "Länge µm"]
    assert data.label_scaler.columns == ["Strom_Ω"]


def test_large_but_finite_values_scale_to_finite_inputs(tmp_path: Path) -> None:
    """The refusal threshold is where the spread overflows, not an arbitrary size."""
    df = _frame()
    df["x2"] *= 1e150
    df["y"] *= 1e100
    path = _write(tmp_path, df)
    ref = check_dataset(_study_for(path)).dataset
    data = load_splits(ref)
    for scaler, values in ((data.feature_scaler, data.x_train), (data.label_scaler, data.y_train)):
        scaled = scaler.transform(values)
        assert np.isfinite(scaled.astype(np.float32)).all()
        assert np.abs(scaled).max() < 10


# -- the command line: exit code 2, the message, and nothing written ------------------


def _study_file(tmp_path: Path, raw: dict[str, Any]) -> Path:
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return f


CLI_CASES: list[tuple[str, Callable[[Path], dict[str, Any]], str]] = [
    ("name not DNS", lambda d: study_with("metadata.name", "My.Study"), "metadata.name: 'My.Study' is not a valid Kubernetes name"),
    ("name too long", lambda d: study_with("metadata.name", "n" * 70), "metadata.name: " + repr("n" * 70) + " is longer than 63 characters"),
    ("label also a feature", lambda d: study_with("spec.dataset.features", ["W_um", LABELS[0]]), f"spec.dataset: column {LABELS[0]!r} is listed both as a label and as a feature"),
    ("constant label", lambda d: study_with("spec.dataset", {"path": str(_write(d, _frame().assign(y=0.0))), "labels": ["y"]}), "spec.dataset: label column 'y' is constant (0 in every usable row)"),
    ("bad endpoint", lambda d: study_with("spec.storage", _s3(endpoint="https://minio")), "spec.storage.endpoint: 'https://minio' must be host[:port] without a scheme"),
]  # fmt: skip


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(
    ("make", "message"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_refuses_with_exit_2_and_writes_nothing(
    tmp_path: Path, command: str, make: Callable[[Path], dict[str, Any]], message: str
) -> None:
    f = _study_file(tmp_path, make(tmp_path))
    out = tmp_path / "runs"
    args = [command, str(f)] + (["--out", str(out)] if command == "run" else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    text = " ".join(result.output.split())  # rich may fold long lines
    assert f"error: {f}: {message}" in text, result.output
    assert not out.exists() or not any(out.iterdir()), "a refused study wrote something"
