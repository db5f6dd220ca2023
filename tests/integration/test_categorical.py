"""Real (short) trainings on a dataset with a text column: it is encoded, it helps, and
``features.json`` alone (with the model and scalers) reproduces the recorded scores."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers.categorical import FEATURES, LABELS, OFFSETS, categorical_csv
from hpo.contract import DatasetRef, SeedResult, TrainingOptions, TrainingRequest
from hpo.dataset import load_usable, split_for_seed
from hpo.encoding import FeaturesFile
from hpo.layout import ARTIFACT_FILES, FEATURES_FILE
from hpo.scaling import Scaler
from hpo.store import LocalStore

CONFIG = {
    "hidden_layers": 2,
    "neurons": [32, 16],
    "activation": "relu",
    "learning_rate": 0.01,
    "batch_size": 32,
    "optimizer": "adam",
}


def _request(csv: Path, trial: str, features: list[str]) -> TrainingRequest:
    return TrainingRequest(
        study="materials",
        trial=trial,
        stage="random",
        config=CONFIG,
        config_key=trial,
        seeds=[1],
        dataset=DatasetRef(path=str(csv), features=features, labels=LABELS),
        training=TrainingOptions(epochs=30, patience=5, threads=1),
        output_prefix=f"materials/trials/{trial}",
    )


@dataclass(frozen=True)
class Trained:
    store: LocalStore
    with_text: SeedResult
    without_text: SeedResult
    ref: DatasetRef


@pytest.fixture(scope="module")
def materials(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from hpo_trainer.train import train_request

    folder = tmp_path_factory.mktemp("materials")
    csv = categorical_csv(folder)
    store = LocalStore(folder / "store")
    numeric = [f for f in FEATURES if f != "material"]
    request = _request(csv, "r0001", FEATURES)
    (with_text,) = train_request(request, store)
    (without_text,) = train_request(_request(csv, "r0002", numeric), store)
    return Trained(store, with_text, without_text, request.dataset)


def test_a_text_column_trains_and_its_encoding_is_recorded(materials: Trained) -> None:
    result = materials.with_text
    assert result.status == "succeeded", result.error
    for name in ARTIFACT_FILES:
        assert materials.store.exists(f"{result.artifacts}/{name}"), name
    recorded = FeaturesFile.from_json(
        materials.store.get_bytes(f"{result.artifacts}/{FEATURES_FILE}").decode()
    )
    assert recorded.labels == ("y",)
    assert recorded.encoding.names == FEATURES
    assert recorded.encoding.categorical == ["material"]
    assert recorded.encoding.features[1].categories == tuple(sorted(OFFSETS))
    scaler = Scaler.from_json(
        materials.store.get_bytes(f"{result.artifacts}/feature_scaler.json").decode()
    )
    assert scaler.columns == recorded.encoding.encoded_columns()


def test_the_categories_help(materials: Trained) -> None:
    """``material`` shifts the label by up to 4.5 while x1 and x2 move it by 0.8: without
    it the best a model can do is far worse."""
    assert materials.without_text.status == "succeeded", materials.without_text.error
    assert materials.with_text.val_mae < 0.5 * materials.without_text.val_mae


def test_artifacts_alone_reproduce_the_recorded_test_error(materials: Trained) -> None:
    """Raw rows in, label units out, with features.json, the scalers and the model only
    (not the study spec, not the trainer's data code)."""
    from hpo_trainer.model import configure_runtime, load_model, predict

    result, store = materials.with_text, materials.store
    recorded = FeaturesFile.from_json(store.get_bytes(f"{result.artifacts}/features.json").decode())
    fs = Scaler.from_json(store.get_bytes(f"{result.artifacts}/feature_scaler.json").decode())
    ls = Scaler.from_json(store.get_bytes(f"{result.artifacts}/label_scaler.json").decode())
    usable, _ = load_usable(materials.ref)
    _, _, test = split_for_seed(len(usable), materials.ref, 1)
    raw = usable.iloc[test][list(reversed(usable.columns))]  # another column order
    configure_runtime()
    with tempfile.TemporaryDirectory() as tmp:
        path = store.get_file(f"{result.artifacts}/model.keras", Path(tmp) / "model.keras")
        model = load_model(path)
    x = fs.transform(recorded.encoding.transform(raw))
    predicted = ls.inverse_transform(predict(model, x))
    truth = raw[list(recorded.labels)].to_numpy()
    mae = float(np.mean(np.abs(predicted - truth)))
    assert mae == pytest.approx(result.per_label["y"]["mae"], rel=1e-6)
