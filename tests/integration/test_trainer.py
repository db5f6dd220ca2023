"""Real (short) trainings on the bundled example: artifacts, reproducibility, failures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.study import EXAMPLE_CSV
from hpo.store import LocalStore
from hpo.study.contract import (
    GPUS_ENV,
    DatasetRef,
    SeedResult,
    TrainingOptions,
    TrainingRequest,
)
from hpo.study.layout import ARTIFACT_FILES
from hpo_trainer.__main__ import termination_message
from hpo_trainer.data import PreparedData

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
            path=str(EXAMPLE_CSV),
            features=["W_um", "L_um", "tox_nm", "Vth_V", "Vgs_V", "Vds_V"],
            labels=["Id_mA", "gm_mS", "gds_uS"],
            reference_values={"Id_mA": 1.0},
        ),
        training=TrainingOptions(epochs=5, patience=3, threads=1),
        output_prefix="test/trials/r0001",
    )
    return replace(request, **changes)


def _run_cli(
    request: TrainingRequest, root: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
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
        env=None if env is None else {**os.environ, **env},
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
        assert config["dataset"]["path"] == str(EXAMPLE_CSV)
        scores = SeedResult.from_json(store.get_bytes(f"{prefix}/scores.json").decode())
        assert scores == result
        scaler = json.loads(store.get_bytes(f"{prefix}/feature_scaler.json"))
        assert set(scaler) == {"mean", "scale", "columns"}
        # scores.json is written last: it is at least as new as every other file.
        newest = max((store.root / prefix / n).stat().st_mtime_ns for n in ARTIFACT_FILES)
        assert (store.root / prefix / "scores.json").stat().st_mtime_ns == newest


def test_saved_model_reproduces_recorded_mae(
    trained: tuple[LocalStore, dict[int, SeedResult]],
) -> None:
    from helpers.rescoring import load_and_score

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


def test_the_trainer_names_the_devices_it_sees(tmp_path: Path) -> None:
    """This machine has no GPU: the pod's log says so, and a CPU training goes ahead."""
    log = tmp_path / "termination-log"
    proc = _run_cli(_request(seeds=[1]), tmp_path / "store", log, env={GPUS_ENV: ""})
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^TensorFlow sees \d+ CPU\(s\) and no GPU$", proc.stderr, re.M)


@pytest.mark.parametrize(("variant", "hint"), [("cpu", "use the -gpu image"), ("gpu", "driver")])
def test_a_training_asked_for_a_gpu_fails_when_it_sees_none(
    tmp_path: Path, variant: str, hint: str
) -> None:
    """HPO_GPUS (set by the pod builder from nvidia.com/gpu): no silent CPU training."""
    log = tmp_path / "termination-log"
    env = {GPUS_ENV: "1", "HPO_IMAGE_VARIANT": variant}
    proc = _run_cli(_request(), tmp_path / "store", log, env=env)
    assert proc.returncode == 1
    rows = json.loads(log.read_text())
    assert [r["seed"] for r in rows] == [2, 1]
    for row in rows:
        assert row["status"] == "failed" and row["epochs_run"] == 0
        assert row["error"].startswith(
            "the pod asks for 1 GPU(s) (nvidia.com/gpu) but TensorFlow sees "
        )
        assert "no GPU; not training on the CPU instead" in row["error"] and hint in row["error"]
    assert "not training on the CPU instead" in proc.stderr
    assert not list((tmp_path / "store").rglob("scores.json"))  # nothing was trained


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


# --- The MLP's knobs: dropout, L2, per-layer activations, learning-rate schedule -----------

#: Tiny synthetic data for the knob and cross-validation tests: a few seconds each.
SMALL_FEATURES = ["a", "b", "c"]
SMALL_LABELS = ["y1", "y2"]


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pandas as pd

    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (60, 3))
    frame = pd.DataFrame(x, columns=SMALL_FEATURES)
    frame["y1"] = x[:, 0] * 2 + np.sin(3 * x[:, 1]) + 0.05 * rng.standard_normal(60)
    frame["y2"] = x[:, 2] ** 2 - x[:, 0] + 0.05 * rng.standard_normal(60)
    path = tmp_path_factory.mktemp("small") / "small.csv"
    frame.to_csv(path, index=False)
    return path


def _small_request(path: Path, config: dict[str, object], **dataset: object) -> TrainingRequest:
    ref = DatasetRef(path=str(path), features=SMALL_FEATURES, labels=SMALL_LABELS, **dataset)
    return _request(
        config=config, dataset=ref, seeds=[0], training=TrainingOptions(epochs=3, patience=100)
    )


def _small_data(
    path: Path, seed: int = 0, **dataset: object
) -> tuple[PreparedData, tuple[np.ndarray, ...]]:
    from hpo_trainer.data import load_splits

    ref = DatasetRef(path=str(path), features=SMALL_FEATURES, labels=SMALL_LABELS, **dataset)
    data = load_splits(ref, seed)
    fs, ls = data.feature_scaler, data.label_scaler
    arrays = (
        fs.transform(data.x_train),
        ls.transform(data.y_train),
        fs.transform(data.x_val),
        ls.transform(data.y_val),
    )
    return data, arrays


def _built(config: dict[str, object], decay_steps: int | None = None) -> Any:
    import keras

    from hpo_trainer.model import MlpConfig, build_model, configure_runtime

    configure_runtime()
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    return build_model(MlpConfig.parse(config), 6, 3, decay_steps=decay_steps)


def test_defaults_build_exactly_the_old_model() -> None:
    """No Dropout layer, no regulariser, a plain float learning rate; explicit defaults
    (and a per-layer list of the same activation) give the very same weights."""
    from hpo_trainer.model import MlpConfig

    parsed = MlpConfig.parse(CONFIG)
    assert (parsed.dropout, parsed.l2, parsed.lr_schedule) == (0.0, 0.0, "constant")
    model = _built(CONFIG)
    assert [(type(layer).__name__, layer.name) for layer in model.layers] == [
        ("InputLayer", "features"),
        ("Dense", "hidden_0"),
        ("Dense", "hidden_1"),
        ("Dense", "labels"),
    ]
    assert all(layer.kernel_regularizer is None for layer in model.layers[1:])
    assert model.losses == []
    assert isinstance(model.optimizer._learning_rate, type(model.optimizer.iterations))
    explicit = {
        **CONFIG,
        "activation": ["relu", "relu"],
        "dropout": [0.0, 0.0],
        "l2": 0.0,
        "lr_schedule": "constant",
    }
    again = _built(explicit)
    assert len(again.layers) == len(model.layers)
    for old, new in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_dropout_layers_follow_the_hidden_layers() -> None:
    every = _built({**CONFIG, "dropout": 0.25})
    assert [(type(layer).__name__, getattr(layer, "rate", None)) for layer in every.layers] == [
        ("InputLayer", None),
        ("Dense", None),
        ("Dropout", 0.25),
        ("Dense", None),
        ("Dropout", 0.25),
        ("Dense", None),
    ]
    per_layer = _built({**CONFIG, "dropout": [0.0, 0.4]})
    names = [layer.name for layer in per_layer.layers]
    assert names == ["features", "hidden_0", "hidden_1", "dropout_1", "labels"]
    assert per_layer.get_layer("dropout_1").rate == pytest.approx(0.4)


def test_l2_regularises_hidden_and_output_kernels() -> None:
    model = _built({**CONFIG, "l2": 1e-3})
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert [layer.name for layer in dense] == ["hidden_0", "hidden_1", "labels"]
    for layer in dense:
        assert layer.kernel_regularizer.get_config()["l2"] == pytest.approx(1e-3)
        assert layer.bias_regularizer is None
    assert len(model.losses) == 3 and all(float(loss) > 0 for loss in model.losses)


def test_per_layer_activations() -> None:
    import keras

    model = _built({**CONFIG, "activation": ["TANH", "elu"]})
    activations = [keras.activations.serialize(layer.activation) for layer in model.layers[1:]]
    assert activations == ["tanh", "elu", "linear"]


def test_cosine_schedule_decays_to_zero_over_all_epochs(small_csv: Path) -> None:
    """Without early stopping the last step reaches the end of the decay: rate 0."""
    import math

    from hpo_trainer.model import MlpConfig, train_model

    data, arrays = _small_data(small_csv)
    steps = 3 * math.ceil(len(data.x_train) / 8)
    config = {**CONFIG, "batch_size": 8}
    cosine = train_model(MlpConfig.parse({**config, "lr_schedule": "cosine"}), 0, arrays, 3, 100)
    assert int(cosine.model.optimizer.iterations) == steps
    assert float(cosine.model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)
    schedule = cosine.model.optimizer._learning_rate
    assert schedule.decay_steps == steps
    assert schedule.initial_learning_rate == pytest.approx(0.003)
    constant = train_model(MlpConfig.parse(config), 0, arrays, 3, 100)
    assert float(constant.model.optimizer.learning_rate) == pytest.approx(0.003)


def test_cosine_without_steps_is_refused() -> None:
    from hpo_trainer.model import ConfigError

    with pytest.raises(ConfigError, match="lr_schedule 'cosine' needs the number of training"):
        _built({**CONFIG, "lr_schedule": "cosine"})


@pytest.mark.parametrize(
    "change",
    [
        {"dropout": 0.3},
        {"l2": 0.05},
        {"lr_schedule": "cosine"},
        {"activation": ["tanh", "relu"]},
    ],
    ids=["dropout", "l2", "cosine", "activations"],
)
def test_each_knob_changes_the_trained_model(small_csv: Path, change: dict[str, object]) -> None:
    from hpo_trainer.model import MlpConfig, predict, train_model

    _, arrays = _small_data(small_csv)
    x_val = arrays[2]
    config = {**CONFIG, "batch_size": 8}
    base = predict(train_model(MlpConfig.parse(config), 3, arrays, 3, 100).model, x_val)
    knob = predict(
        train_model(MlpConfig.parse({**config, **change}), 3, arrays, 3, 100).model, x_val
    )
    assert not (base == knob).all()


def test_dropout_training_is_reproducible(small_csv: Path) -> None:
    """Dropout masks come from keras.utils.set_random_seed: same seed, same bits."""
    from hpo_trainer.model import MlpConfig, predict, train_model

    _, arrays = _small_data(small_csv)
    config = MlpConfig.parse({**CONFIG, "batch_size": 8, "dropout": [0.3, 0.2]})
    first, second, other = (
        predict(train_model(config, seed, arrays, 3, 100).model, arrays[2]) for seed in (5, 5, 6)
    )
    assert (first == second).all()
    assert not (first == other).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"activation": ["relu"]},
            r"activation must be one value or a list of one value per "
            r"hidden layer \(2\), got 1",
        ),
        ({"activation": ["relu", "relu6"]}, "unknown activation 'relu6'"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ({"dropout": [0.1, 0.2, 0.3]}, r"dropout must be one value or a list .* got 3"),
        ({"dropout": [0.1, 1.5]}, r"dropout\[1\] must be in \[0, 1\), got 1.5"),
        ({"dropout": "0.1"}, r"dropout must be a number in \[0, 1\), got '0.1'"),
        ({"l2": -1e-4}, "l2 must be a finite number >= 0, got -0.0001"),
        ({"l2": "big"}, "l2 must be a number >= 0, got 'big'"),
        ({"l2": float("inf")}, "l2 must be a finite number >= 0"),
        ({"lr_schedule": "linear"}, r"unknown lr_schedule 'linear'; expected one of \('constant'"),
    ],
)
def test_bad_knobs_are_refused_by_name(change: dict[str, object], message: str) -> None:
    from hpo_trainer.model import ConfigError, MlpConfig

    with pytest.raises(ConfigError, match=message):
        MlpConfig.parse({**CONFIG, **change})


def test_bad_knob_fails_the_training_with_its_message(tmp_path: Path) -> None:
    from hpo_trainer.train import train_one

    result = train_one(_request(config={**CONFIG, "dropout": 1.0}), 1, LocalStore(tmp_path))
    assert result.status == "failed"
    assert result.error == "dropout must be in [0, 1), got 1.0"


# --- The validation MAE: the selection score ---------------------------------------------


def _rescore(store: LocalStore, prefix: str, x: np.ndarray, y: np.ndarray) -> float:
    """MAE of the saved model with its saved scalers on the given rows."""
    from hpo.data.scaling import Scaler
    from hpo_trainer.metrics import standardised_mae
    from hpo_trainer.model import load_model, predict

    fs = Scaler.from_json(store.get_bytes(f"{prefix}/feature_scaler.json").decode())
    ls = Scaler.from_json(store.get_bytes(f"{prefix}/label_scaler.json").decode())
    model = load_model(store.root / f"{prefix}/model.keras")
    return standardised_mae(ls.transform(y), predict(model, fs.transform(x)))


def test_val_mae_is_recorded_and_reproduced_on_the_validation_rows(
    trained: tuple[LocalStore, dict[int, SeedResult]],
) -> None:
    from hpo_trainer.data import load_splits

    store, results = trained
    data = load_splits(_request().dataset)
    for result in results.values():
        assert result.val_mae is not None and 0 < result.val_mae < 1.0
        assert result.val_mae != result.mae
        scores = json.loads(store.get_bytes(f"{result.artifacts}/scores.json"))
        assert scores["val_mae"] == result.val_mae
        val = _rescore(store, result.artifacts, data.x_val, data.y_val)
        assert val == pytest.approx(result.val_mae, abs=1e-6)
        test = _rescore(store, result.artifacts, data.x_test, data.y_test)
        assert test == pytest.approx(result.mae, abs=1e-6)


def test_non_finite_validation_mae_is_a_divergence(
    small_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hpo_trainer.train as train

    real, calls = train.predict, []

    def nan_on_validation(model: Any, x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        out = real(model, x)
        return np.full_like(out, np.nan) if len(calls) == 1 else out

    monkeypatch.setattr(train, "predict", nan_on_validation)
    result = train.train_one(_small_request(small_csv, CONFIG), 0, LocalStore(tmp_path))
    assert result.status == "failed"
    assert "training diverged: validation MAE is nan after 3 epoch(s)" in result.error
    assert result.val_mae is None and result.mae is None and result.artifacts is None


# --- k-fold cross-validation -----------------------------------------------------------------


def test_folds_validate_each_seed_on_its_own_fold(small_csv: Path, tmp_path: Path) -> None:
    """Seed s validates on fold s mod 3: the recorded val_mae is the saved model's MAE on
    that fold's rows (not another fold's), the scalers fit on the other folds."""
    from hpo.data.scaling import Scaler
    from hpo_trainer.data import load_splits
    from hpo_trainer.train import train_request

    store = LocalStore(tmp_path)
    request = replace(_small_request(small_csv, CONFIG, folds=3), seeds=[0, 4])
    results = {r.seed: r for r in train_request(request, store)}
    assert all(r.status == "succeeded" for r in results.values()), results
    folds = {seed: load_splits(request.dataset, seed) for seed in (0, 4)}
    assert not np.array_equal(folds[0].x_val, folds[4].x_val)
    for seed, result in results.items():
        data, other = folds[seed], folds[4 - seed]
        prefix = result.artifacts
        own = _rescore(store, prefix, data.x_val, data.y_val)
        assert own == pytest.approx(result.val_mae, abs=1e-6)
        assert _rescore(store, prefix, other.x_val, other.y_val) != pytest.approx(own, abs=1e-6)
        assert _rescore(store, prefix, data.x_test, data.y_test) == pytest.approx(
            result.mae, abs=1e-6
        )
        saved = Scaler.from_json(store.get_bytes(f"{prefix}/feature_scaler.json").decode())
        np.testing.assert_allclose(saved.mean, data.x_train.mean(axis=0))


def test_one_fold_fails_the_training_naming_folds(small_csv: Path, tmp_path: Path) -> None:
    from hpo_trainer.train import train_one

    result = train_one(_small_request(small_csv, CONFIG, folds=1), 0, LocalStore(tmp_path))
    assert result.status == "failed"
    assert result.error.startswith("folds must be 0 (one validation split) or at least 2")


def test_every_knob_together_trains_saves_and_reloads(small_csv: Path, tmp_path: Path) -> None:
    """Dropout, L2 and the cosine schedule survive model.keras: the reloaded model
    reproduces both recorded scores (dropout is off at inference)."""
    from hpo_trainer.data import load_splits
    from hpo_trainer.train import train_one

    config = {
        **CONFIG,
        "activation": ["tanh", "gelu"],
        "dropout": [0.2, 0.1],
        "l2": 1e-3,
        "lr_schedule": "cosine",
    }
    store = LocalStore(tmp_path)
    request = _small_request(small_csv, config, folds=2)
    result = train_one(request, 1, store)
    assert result.status == "succeeded", result.error
    data = load_splits(request.dataset, 1)
    val = _rescore(store, result.artifacts, data.x_val, data.y_val)
    assert val == pytest.approx(result.val_mae, abs=1e-6)
    test = _rescore(store, result.artifacts, data.x_test, data.y_test)
    assert test == pytest.approx(result.mae, abs=1e-6)
    saved = json.loads(store.get_bytes(f"{result.artifacts}/config.json"))
    assert saved["config"] == config and saved["dataset"]["folds"] == 2
