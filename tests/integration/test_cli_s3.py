"""The command line against a real S3 server (plain http, as a development MinIO):
``hpo validate`` reads an ``s3://`` dataset with the study's store, and the browsing
commands take endpoint, TLS, bucket and prefix from the study file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from helpers.s3 import new_s3_store
from helpers.study import EXAMPLE_CSV, REPO
from hpo.cli import EXIT_BAD_INPUT, EXIT_OK, app
from hpo.records.ledger import write_ledger
from hpo.study.contract import SeedResult
from hpo.study.layout import StudyPaths
from hpo.study.spec import parse_study
from support.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server


def _text(result: Any) -> str:
    return " ".join(result.output.split())


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_S3_ACCESS_KEY", TEST_ACCESS_KEY)
    monkeypatch.setenv("HPO_S3_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("HPO_S3_RETRIES", "0")
    monkeypatch.delenv("HPO_S3_ENDPOINT", raising=False)
    monkeypatch.delenv("HPO_S3_TLS", raising=False)


def _example_on(server: S3Server, tmp_path: Path) -> tuple[Path, Any]:
    """The shipped cluster study, its endpoint pointed at the test server (plain http,
    ``tls: false`` as shipped), its dataset uploaded to a bucket of its own."""
    datasets = new_s3_store(server, prefix="")
    datasets.put_file("transistor.csv", EXAMPLE_CSV)
    results = new_s3_store(server, prefix="")
    raw = yaml.safe_load((REPO / "manifests" / "example-study.yaml").read_text())
    raw["spec"]["dataset"]["path"] = f"s3://{datasets.bucket}/transistor.csv"
    raw["spec"]["storage"].update(endpoint=server.endpoint, bucket=results.bucket)
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump(raw))
    return f, results


def test_validate_reads_the_s3_dataset_with_the_studys_store(
    s3_server: S3Server, tmp_path: Path, s3_env: None
) -> None:
    f, _ = _example_on(s3_server, tmp_path)
    result = CliRunner().invoke(app, ["validate", str(f)])
    assert result.exit_code == EXIT_OK, result.output
    assert "quickstart: valid; 1188 rows (12 dropped), 6 features, 3 labels" in _text(result)


def test_report_and_ls_take_endpoint_tls_bucket_from_the_study_file(
    s3_server: S3Server, tmp_path: Path, s3_env: None
) -> None:
    """No --endpoint, no --no-tls: the study file's storage says it all."""
    f, results = _example_on(s3_server, tmp_path)
    study = parse_study(yaml.safe_load(f.read_text()))
    paths = StudyPaths("quickstart", "studies/default")
    r = SeedResult(
        study="quickstart",
        trial="r0000",
        stage="random",
        parent=None,
        config={"hidden_layers": 1, "neurons": [16], "learning_rate": 0.001},
        config_key="k",
        seed=1,
        status="succeeded",
        mae=0.5,
        val_mae=0.5,
        per_label={label: {"mae": 1.0, "pct": 5.0} for label in study.spec.dataset.labels},
    )
    results.put_bytes(paths.study, yaml.safe_dump(study.as_resource()).encode())
    labels = list(study.spec.dataset.labels)
    write_ledger(results, paths.ledger, [r], labels, None, study.as_resource())
    results.put_bytes(paths.scores("r0000", 1), r.to_json().encode())

    report = CliRunner().invoke(app, ["report", str(f)])
    assert report.exit_code == EXIT_OK, report.output
    assert "1 training succeeded" in _text(report)
    listing = CliRunner().invoke(app, ["ls", str(f)])
    assert listing.exit_code == EXIT_OK, listing.output
    assert "quickstart 1 training in progress" in _text(listing)


def test_https_to_a_plain_http_endpoint_says_add_no_tls(s3_server: S3Server, s3_env: None) -> None:
    bucket = new_s3_store(s3_server, prefix="").bucket
    result = CliRunner().invoke(app, ["ls", f"s3://{bucket}", "--endpoint", s3_server.endpoint])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "--no-tls" in _text(result)
    plain = ["ls", f"s3://{bucket}", "--endpoint", s3_server.endpoint, "--no-tls"]
    assert CliRunner().invoke(app, plain).exit_code == EXIT_OK
