"""A study on a dataset with a text column, end to end: `hpo run` encodes it, it helps,
`features.json` records it, and the results API and `hpo predict` reproduce the model's
own output from raw rows, refusing a category the model never saw."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.categorical import FEATURES, OFFSETS, categorical_csv, categorical_frame
from helpers.study import run_hpo, study_dict, study_file
from hpo.data.dataset import load_usable, split_for_seed
from hpo.data.encoding import FeaturesFile, UnseenCategory
from hpo.data.scaling import Scaler
from hpo.results import ResultsError, open_study
from hpo.store import LocalStore
from hpo.study.contract import DatasetRef, SeedResult, TrainingOptions, TrainingRequest

TRIAL, SEED = "r0000", 1

#: One configuration, one seed: the search is not what is tested here.
SPEC = {
    "searchSpace": {
        "hiddenLayers": {"min": 2, "max": 2},
        "neurons": {"choices": [32]},
        "activations": ["relu"],
        "learningRate": {"choices": [0.01]},
        "batchSizes": [32],
    },
    "training": {"epochs": 10, "patience": 3, "seedsPerConfig": 1},
    "randomStage": {"configurations": 1},
    "bayesianStage": {"enabled": False},
    "parallelism": 1,
    "result": {"size": 1},
}


@dataclass(frozen=True)
class Run:
    folder: Path  # the study's folder
    proc: subprocess.CompletedProcess[str]
    csv: Path
    without_text: SeedResult  # the same configuration and seed, x1 and x2 only


@pytest.fixture(scope="module")
def materials(tmp_path_factory: pytest.TempPathFactory) -> Run:
    from hpo_trainer.train import train_request

    folder = tmp_path_factory.mktemp("materials")
    csv = categorical_csv(folder)
    raw = study_dict(**SPEC)
    raw["spec"]["dataset"] = {"path": str(csv), "labels": ["y"]}  # features: every other
    study = study_file(folder, "materials", raw)
    proc = run_hpo("run", str(study), "--out", str(folder / "out"), timeout=900)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    recorded = json.loads(
        (folder / "out/materials/trials" / TRIAL / f"seed-{SEED}/config.json").read_text()
    )
    dataset = DatasetRef(**recorded["dataset"])
    request = TrainingRequest(
        study="nomaterial",
        trial=TRIAL,
        stage="random",
        config=recorded["config"],
        config_key="numeric-only",
        seeds=[SEED],
        dataset=replace(dataset, features=[f for f in FEATURES if f != "material"]),
        training=TrainingOptions(**recorded["training"]),
        output_prefix=f"nomaterial/trials/{TRIAL}",
    )
    (without_text,) = train_request(request, LocalStore(folder / "nomaterial"))
    return Run(folder / "out" / "materials", proc, csv, without_text)


def _test_rows(run: Run) -> pd.DataFrame:
    """The study's test rows as raw columns (text and all), in another column order."""
    ref = DatasetRef(path=str(run.csv), features=FEATURES, labels=["y"])
    usable, _ = load_usable(ref)
    _, _, test = split_for_seed(len(usable), ref, SEED)
    return usable.iloc[test][["y", "x2", "material", "x1"]]


def _scores(run: Run) -> SeedResult:
    return SeedResult.from_json(
        (run.folder / "trials" / TRIAL / f"seed-{SEED}/scores.json").read_text()
    )


def test_the_study_trains_on_the_text_column_and_says_so(materials: Run) -> None:
    assert "categorical feature column(s), one network input per category: 'material' (4)" in (
        materials.proc.stdout + materials.proc.stderr
    )
    assert _scores(materials).status == "succeeded"


def test_features_json_records_the_encoding_labels_and_units(materials: Run) -> None:
    seed_dir = materials.folder / "trials" / TRIAL / f"seed-{SEED}"
    recorded = FeaturesFile.from_json((seed_dir / "features.json").read_text())
    assert recorded.encoding.names == FEATURES and recorded.labels == ("y",)
    assert recorded.encoding.categorical == ["material"]
    assert recorded.encoding.features[1].categories == tuple(sorted(OFFSETS))
    scaler = Scaler.from_json((seed_dir / "feature_scaler.json").read_text())
    assert scaler.columns == recorded.encoding.encoded_columns()
    assert "label units" in (seed_dir / "features.json").read_text()


def test_the_categories_help(materials: Run) -> None:
    """``material`` shifts the label by up to 4.5 while x1 and x2 move it by 0.8: without
    it the same configuration and seed do far worse."""
    assert materials.without_text.status == "succeeded", materials.without_text.error
    assert _scores(materials).val_mae < 0.5 * materials.without_text.val_mae


def test_api_predictions_equal_the_models_own_output_and_the_recorded_mae(
    materials: Run,
) -> None:
    from hpo_trainer.data import load_splits
    from hpo_trainer.model import configure_runtime, load_model, predict

    rows = _test_rows(materials)
    predicted = open_study(materials.folder).load_model().predict(rows)
    assert list(predicted.columns) == ["y"] and predicted.index.equals(rows.index)
    # The model's own output on the trainer's encoded test split.
    seed_dir = materials.folder / "trials" / TRIAL / f"seed-{SEED}"
    config = json.loads((seed_dir / "config.json").read_text())
    data = load_splits(DatasetRef(**config["dataset"]), SEED)
    configure_runtime()
    model = load_model(seed_dir / "model.keras")
    own = data.label_scaler.inverse_transform(
        predict(model, data.feature_scaler.transform(data.x_test))
    )
    np.testing.assert_allclose(predicted.to_numpy(), own, rtol=1e-12, atol=1e-12)
    mae = float(np.mean(np.abs(predicted["y"] - rows["y"])))
    assert mae == pytest.approx(_scores(materials).per_label["y"]["mae"], rel=1e-9)


def test_an_unseen_category_is_refused_by_the_api(materials: Run) -> None:
    rows = _test_rows(materials).head(3).copy()
    rows.iloc[1, rows.columns.get_loc("material")] = "brass"
    with pytest.raises(ResultsError) as info:
        open_study(materials.folder).load_model().predict(rows)
    assert isinstance(info.value, UnseenCategory)
    assert (info.value.column, info.value.value) == ("material", "brass")


def test_hpo_predict_writes_the_apis_predictions(materials: Run, tmp_path: Path) -> None:
    rows = _test_rows(materials)
    data, out = tmp_path / "rows.csv", tmp_path / "preds.csv"
    rows.drop(columns="y").to_csv(data, index=False)
    proc = run_hpo("predict", str(materials.folder), str(data), "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    expected = open_study(materials.folder).load_model().predict(rows)
    np.testing.assert_allclose(
        pd.read_csv(out)["y"].to_numpy(), expected["y"].to_numpy(), rtol=1e-12
    )


def test_hpo_predict_refuses_an_unseen_category_naming_column_and_value(
    materials: Run, tmp_path: Path
) -> None:
    rows = _test_rows(materials).drop(columns="y").head(4).copy()
    rows.iloc[2, rows.columns.get_loc("material")] = "brass"
    data = tmp_path / "rows.csv"
    rows.to_csv(data, index=False)
    proc = run_hpo("predict", str(materials.folder), str(data), timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())
    assert (
        "column 'material': category 'brass' is not one the model was trained with (known "
        "categories: 'aluminium', 'copper', 'steel', 'titanium')" in message
    ), proc.stderr


def test_a_training_without_features_json_reads_its_scalers_columns(
    materials: Run, tmp_path: Path
) -> None:
    """Studies trained before features.json existed: the feature scaler's columns are
    the features, all numeric (here: the one-hot columns, given by hand)."""
    old = tmp_path / "materials"
    shutil.copytree(materials.folder, old)
    (old / "trials" / TRIAL / f"seed-{SEED}" / "features.json").unlink()
    rows = _test_rows(materials)
    predictor = open_study(old).load_model()
    encoded_names = [f"material={m}" for m in sorted(OFFSETS)]
    assert predictor.features == ["x1", *encoded_names, "x2"]
    one_hot = pd.get_dummies(rows["material"], prefix="material", prefix_sep="=", dtype=float)
    by_hand = pd.concat([rows, one_hot.reindex(columns=encoded_names, fill_value=0.0)], axis=1)
    expected = open_study(materials.folder).load_model().predict(rows)
    np.testing.assert_allclose(
        predictor.predict(by_hand).to_numpy(), expected.to_numpy(), rtol=1e-12
    )


def test_a_runs_notes_come_first_and_its_lines_show_the_val_mae(tmp_path: Path) -> None:
    """In a log (not a terminal): the note naming merged spellings ('01', '1') and the one
    on rows left out print before the first training's line, which shows the val MAE."""
    frame = categorical_frame(60)
    frame["code"] = ["01", "1", "a", "b"] * 15
    frame.loc[[5, 17], "x1"] = np.nan
    csv = tmp_path / "codes.csv"
    frame.to_csv(csv, index=False)
    raw = study_dict(**{**SPEC, "training": {"epochs": 1, "patience": 1, "seedsPerConfig": 1}})
    raw["spec"]["dataset"] = {"path": str(csv), "labels": ["y"]}
    proc = run_hpo("run", str(study_file(tmp_path, "codes", raw)), "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = proc.stdout
    merged = out.index("categorical column 'code': number-like spellings read as one category")
    assert "one category each: '01', '1' -> '1' (a code" in " ".join(out.split())
    dropped = out.index("2 of 60 dataset rows have missing")
    first = out.index("[1/1] random r0000 seed")
    assert merged < first and dropped < first
    assert out.count("2 of 60 dataset rows have missing") == 1  # not repeated at the end
    assert "val MAE" in out[first:].splitlines()[0]
