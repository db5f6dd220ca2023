"""Real (short) trainings on the bundled example: artifacts, reproducibility, failures."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hpo.contract import (
    ARTIFACT_FILES,
    DatasetRef,
    SeedResult,
    TrainingOptions,
    TrainingRequest,
)
from hpo.store import LocalStore
from hpo_trainer.__main__ import termination_message

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "data" / "transistor.csv"

CONFIG = {
    "hidden_layers": 2,
    "neurons": [32, 16],
    "activation": "relu",
    "learning_rate": 0.003,
    "batch_size": 32,
    "optimizer": "adam",
}


def _request(**changes: object) -> TrainingRequest:
    request = TrainingRequest(
        study="test",
        trial="r0001",
        stage="random",
        config=CONFIG,
        config_key="cfg-1",
        # Seed 1 is trained after seed 2 here, in a fresh process in the subprocess test:
        # equal MAEs show a long-lived worker and a new process agree.
        seeds=[2, 1],
        dataset=DatasetRef(
            path=str(EXAMPLE),
            features=["W_um", "L_um", "tox_nm", "Vth_V", "Vgs_V", "Vds_V"],
            labels=["Id_mA", "gm_mS", "gds_uS"],
            reference_values={"Id_mA": 1.0},
        ),
        training=TrainingOptions(epochs=5, patience=3, threads=1),
        output_prefix="test/trials/r0001",
    )
    return replace(request, **changes)


def _run_cli(request: TrainingRequest, root: Path, log: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hpo_trainer",
            "--request",
            request.to_json(),
            "--store-root",
            str(root),
            "--termination-log",
            str(log),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, dict[int, SeedResult]]:
    from hpo_trainer.train import train_request

    store = LocalStore(tmp_path_factory.mktemp("store"))
    results = train_request(_request(), store)
    return store, {r.seed: r for r in results}


def test_training_succeeds_with_scores(trained: tuple[LocalStore, dict[int, SeedResult]]) -> None:
    _, results = trained
    for result in results.values():
        assert result.status == "succeeded", result.error
        assert result.error is None
        assert 0 < result.mae < 1.0
        assert 1 <= result.epochs_run <= 5
        assert result.rows_dropped > 0
        assert 0 < result.fit_s <= result.runtime_s
        assert set(result.per_label) == {"Id_mA", "gm_mS", "gds_uS"}
        # Id_mA has a declared reference of 1.0, so its pct is 100 * MAE.
        id_scores = result.per_label["Id_mA"]
        assert id_scores["pct"] == pytest.approx(100 * id_scores["mae"])


def test_artifacts_at_documented_keys(trained: tuple[LocalStore, dict[int, SeedResult]]) -> None:
    store, results = trained
    request = _request()
    for seed, result in results.items():
        prefix = request.artifacts_prefix(seed)
        assert result.artifacts == prefix == f"test/trials/r0001/seed-{seed}"
        for name in ARTIFACT_FILES:
            assert store.exists(f"{prefix}/{name}"), name
        assert json.loads(store.get_bytes(f"{prefix}/seed.json")) == {"seed": seed}
        config = json.loads(store.get_bytes(f"{prefix}/config.json"))
        assert config["config"] == CONFIG
        assert config["config_key"] == "cfg-1"
        assert (config["trial"], config["stage"], config["parent"]) == ("r0001", "random", None)
        assert config["dataset"]["path"] == str(EXAMPLE)
        scores = SeedResult.from_json(store.get_bytes(f"{prefix}/scores.json").decode())
        assert scores == result
        scaler = json.loads(store.get_bytes(f"{prefix}/feature_scaler.json"))
        assert set(scaler) == {"mean", "scale", "columns"}
        # scores.json is written last: it is at least as new as every other file.
        newest = max(store.local_path(f"{prefix}/{n}").stat().st_mtime_ns for n in ARTIFACT_FILES)
        assert store.local_path(f"{prefix}/scores.json").stat().st_mtime_ns == newest


def test_saved_model_reproduces_recorded_mae(
    trained: tuple[LocalStore, dict[int, SeedResult]],
) -> None:
    from hpo_trainer.evaluate import load_and_score

    store, results = trained
    result = results[1]
    mae = load_and_score(store, result.artifacts, _request().dataset)
    assert mae == pytest.approx(result.mae, abs=1e-6)


def test_different_seed_gives_different_mae(
    trained: tuple[LocalStore, dict[int, SeedResult]],
) -> None:
    _, results = trained
    assert results[1].mae != results[2].mae


def test_fresh_process_is_bit_identical(
    trained: tuple[LocalStore, dict[int, SeedResult]], tmp_path: Path
) -> None:
    _, results = trained
    log = tmp_path / "termination-log"
    proc = _run_cli(_request(seeds=[1]), tmp_path / "store", log)
    assert proc.returncode == 0, proc.stderr
    lines = [SeedResult.from_json(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 1
    assert lines[0].mae == results[1].mae  # exactly, not approximately
    summary = json.loads(log.read_text())
    assert summary[0]["mae"] == results[1].mae
    assert len(log.read_bytes()) < 4096


def test_unknown_column_fails_with_message(tmp_path: Path) -> None:
    from hpo_trainer.train import train_one

    dataset = replace(_request().dataset, features=["W_um", "Vgs"])
    store = LocalStore(tmp_path)
    result = train_one(_request(dataset=dataset), 1, store)
    assert result.status == "failed"
    assert result.error == "column 'Vgs' not found; did you mean 'Vgs_V'?"
    assert result.mae is None and result.artifacts is None
    assert list(store.list("test")) == []


def test_bad_config_fails_with_message(tmp_path: Path) -> None:
    from hpo_trainer.train import train_one

    result = train_one(_request(config={**CONFIG, "activation": "relu6"}), 1, LocalStore(tmp_path))
    assert result.status == "failed"
    assert "unknown activation 'relu6'" in result.error
    assert "\n" not in result.error


def test_cli_exit_code_and_stderr_on_failure(tmp_path: Path) -> None:
    dataset = replace(_request().dataset, path=str(tmp_path / "missing.csv"))
    log = tmp_path / "termination-log"
    proc = _run_cli(_request(dataset=dataset, seeds=[1]), tmp_path / "store", log)
    assert proc.returncode == 1
    assert "dataset file not found" in proc.stderr
    (row,) = json.loads(log.read_text())
    assert row["status"] == "failed" and "dataset file not found" in row["error"]


def test_termination_message_stays_under_4kb() -> None:
    big = SeedResult(
        study="s",
        trial="r0001",
        stage="random",
        parent=None,
        config=CONFIG,
        config_key="k",
        seed=0,
        status="succeeded",
        mae=0.1,
        per_label={f"label_{i}": {"mae": 1.0, "pct": 2.0} for i in range(20)},
    )
    results = [replace(big, seed=i) for i in range(10)]
    text = termination_message(results)
    assert len(text.encode()) <= 4096
    assert [row["mae"] for row in json.loads(text)] == [0.1] * 10
