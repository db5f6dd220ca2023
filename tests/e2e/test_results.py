"""Using what a study found (hpo.results, `hpo predict | export | compare`), end to end.

One small real study (2 configurations x 2 seeds, 3 epochs) is trained once per module
by the session `hpo run` drives and the real trainer; every test reads it, through the API and the commands, on its folder and
(once) on a real S3 server. Studies that need no model (compare's other studies) are
recorded by the real session with synthetic scores, which costs no training.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from helpers.s3 import new_s3_store
from helpers.study import ARTIFACTS, EXAMPLE_CSV, FEATURES, LABELS, REPO, study_dict, study_file
from helpers.synthetic import synthetic_mae
from hpo.cli import EXIT_BAD_INPUT, EXIT_OK, app
from hpo.data.dataset import load_usable, split_for_seed
from hpo.data.scaling import Scaler
from hpo.results import ResultsError, find_studies, open_study
from hpo.session import StudySession
from hpo.store import LocalStore, StoreRef
from hpo.study.contract import DatasetRef
from hpo.study.spec import load_study
from support.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, S3Server

NAME = "used"
SPEC: dict[str, Any] = {
    "searchSpace": {
        "hiddenLayers": {"min": 1, "max": 2},
        "neurons": {"min": 8, "max": 16, "step": 8},
        "batchSizes": [64],
    },
    "training": {"epochs": 3, "patience": 2, "seedsPerConfig": 2, "seedRacing": False},
    "randomStage": {"configurations": 2},
    "bayesianStage": {"enabled": False},
    "parallelism": 2,
    "result": {"size": 2},  # no thresholds: per-label errors must show all the same
}


def _study_file(folder: Path, name: str, dataset: Path = EXAMPLE_CSV, **spec: Any) -> Path:
    raw = study_dict(**{**SPEC, **spec})
    raw["spec"]["dataset"]["path"] = str(dataset)
    return study_file(folder, name, raw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of one real study: the session `hpo run` drives, with the real trainer
    in this process (TensorFlow loads once for the module, no worker processes)."""
    from hpo_trainer.train import train_request

    runs = tmp_path_factory.mktemp("results") / "runs"
    study = load_study(_study_file(runs.parent, NAME))
    session = StudySession.open(study, StoreRef(kind="local", root=str(runs)))
    session.start(refuse_spec_changes=True)
    store = LocalStore(runs)
    while not session.engine.finished:
        for task in session.take(4):
            results = train_request(session.request([task]), store)
            assert [r.status for r in results] == ["succeeded"], results
            session.record(results)
    session.finish()
    return runs / NAME


def _synthetic(
    folder: Path,
    name: str,
    dataset: Path,
    *,
    finish: bool = True,
    failing: int = -1,
    **spec: Any,
) -> Path:
    """A study recorded by the real session with synthetic scores (no model trained);
    the ``failing``-th training fails for good (no retries); ``spec``: fields to change."""
    study = load_study(_study_file(folder, name, dataset, failurePolicy={"retries": 0}, **spec))
    session = StudySession.open(study, StoreRef(kind="local", root=str(folder / "runs")))
    session.start(refuse_spec_changes=True)
    while not session.engine.finished:
        for i, task in enumerate(session.take(4)):
            mae = synthetic_mae(task.trial.config, task.seed)
            per_label = {label: {"mae": mae, "pct": mae} for label in LABELS}
            if i == failing:
                session.record([task.failed(name, "out of memory (a test's failure)")])
                continue
            session.record([task.succeeded(name, mae=mae, val_mae=mae, per_label=per_label)])
        if not finish:
            break  # a study still running: its first trainings in the ledger
    if finish:
        session.finish()
    else:
        session.flush(force=True)
    return folder / "runs" / name


def _test_split(study: Any, trial: str, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The test split's features (a frame of raw columns) and labels, as the trainer saw them."""
    recorded = json.loads(study.read_artifact(trial, seed, "config.json"))
    ref = DatasetRef(**recorded["dataset"])
    usable, _ = load_usable(ref)
    _, _, test = split_for_seed(len(usable), ref, seed)
    rows = usable.iloc[test]
    return rows[FEATURES].reset_index(drop=True), rows[LABELS].to_numpy()


def _own_output(study: Any, trial: str, seed: int, x: np.ndarray, tmp: Path) -> np.ndarray:
    """The saved model's own output, in label units: scalers and Keras applied by hand."""
    from hpo_trainer.model import load_model, predict

    path = tmp / f"{trial}-{seed}.keras"
    path.write_bytes(study.read_artifact(trial, seed, "model.keras"))
    fs = Scaler.from_json(study.read_artifact(trial, seed, "feature_scaler.json").decode())
    ls = Scaler.from_json(study.read_artifact(trial, seed, "label_scaler.json").decode())
    return ls.inverse_transform(predict(load_model(path), fs.transform(x)))


def _ledger_row(study: Any, trial: str, seed: int) -> pd.Series:
    t = study.trainings()
    return t[(t["trial"] == trial) & (t["seed"] == seed)].iloc[0]


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def _nulls_as_nan(frame: pd.DataFrame) -> pd.DataFrame:
    """None and NaN alike (csv and json have one kind of empty cell)."""
    return frame.apply(lambda c: c.where(c.notna(), np.nan) if c.dtype == object else c)


def _text(result: Any) -> str:
    return " ".join(result.output.split())


# --------------------------------------------------------------------------- the API


def test_the_api_reads_the_studys_tables(trained) -> None:
    folder = trained
    assert find_studies(folder.parent) == [str(folder)]
    s = open_study(folder)
    assert (s.name, s.finished, s.spec["metadata"]["name"]) == (NAME, True, NAME)
    assert s.dataset["fingerprint"].startswith("sha256:")
    trainings = s.trainings()
    assert len(trainings) == 4 and set(trainings["status"]) == {"succeeded"}
    for column in ["trial", "seed", "stage", "neurons", "val_mae", "test_mae", "finished"]:
        assert column in trainings.columns
    assert [f"{label}_mae" in trainings.columns for label in LABELS] == [True] * 3
    assert (trainings["started"] < trainings["finished"]).all()
    configs = s.configurations()
    assert list(configs["rank"]) == [1, 2] and list(configs["seeds"]) == [2, 2]
    means = trainings.groupby("trial")["val_mae"].mean()
    assert configs["val_mae_mean"].tolist() == pytest.approx(means[configs["trial"]].tolist())
    group = s.final_group()
    best = json.loads((folder / "best.json").read_text())
    assert group["trial"].tolist() == [r["trial"] for r in best] == configs["trial"].tolist()
    assert s.revision() == s.revision()
    assert set(s.artifacts(group["trial"][0], 1)) == set(ARTIFACTS)


def test_predictions_are_the_models_own_and_give_back_the_ledgers_test_mae(
    trained, tmp_path: Path
) -> None:
    """Per seed: the API's prediction on the test split equals the saved model's own
    output (scalers applied by hand), and recomputes the ledger's test MAE (standardised,
    and per label in label units)."""
    s = open_study(trained)
    trial = s.final_group()["trial"][0]
    for seed in (1, 2):
        frame, y_true = _test_split(s, trial, seed)
        p = s.load_model(trial=trial, seed=seed)
        assert (p.features, p.labels, p.seeds) == (FEATURES, LABELS, [seed])
        got = p.predict(frame)
        assert list(got.columns) == LABELS and got.index.equals(frame.index)
        own = _own_output(s, trial, seed, frame.to_numpy(), tmp_path)
        np.testing.assert_allclose(got.to_numpy(), own, rtol=1e-6, atol=1e-9)
        row = _ledger_row(s, trial, seed)
        ls = Scaler.from_json(s.read_artifact(trial, seed, "label_scaler.json").decode())
        standardised = np.mean(np.abs(ls.transform(y_true) - ls.transform(got.to_numpy())))
        assert standardised == pytest.approx(row["test_mae"], rel=1e-5)
        for i, label in enumerate(LABELS):
            in_units = np.mean(np.abs(y_true[:, i] - got[label].to_numpy()))
            assert in_units == pytest.approx(row[f"{label}_mae"], rel=1e-5)


def test_an_ensemble_is_the_mean_of_its_members(trained) -> None:
    s = open_study(trained)
    trial = s.final_group()["trial"][0]
    frame, _ = _test_split(s, trial, 1)
    frame.index = frame.index + 100  # the caller's index is kept
    ensemble = s.load_model()  # rank 1, every seed
    assert (ensemble.trial, ensemble.seeds) == (trial, [1, 2])
    members = [s.load_model(trial=trial, seed=seed).predict(frame) for seed in (1, 2)]
    got = ensemble.predict(frame)
    assert got.index.equals(frame.index)
    pd.testing.assert_frame_equal(got, (members[0] + members[1]) / 2, rtol=1e-12)
    assert not np.allclose(members[0].to_numpy(), members[1].to_numpy())  # two models


def test_best_json_and_the_final_table_show_per_label_errors_without_thresholds(
    trained,
) -> None:
    """No thresholds: best.json and the final table (`hpo run`'s and `hpo report`'s)
    still give every label's test MAE in its units and in percent of its mean."""
    folder = trained
    report = _cli("report", folder)
    assert report.exit_code == EXIT_OK, report.output
    stdout = report.output
    s = open_study(folder)
    trainings = s.trainings()
    for record in json.loads((folder / "best.json").read_text()):
        rows = trainings[trainings["trial"] == record["trial"]]
        for label in LABELS:
            assert record[f"{label}_mae"] == pytest.approx(rows[f"{label}_mae"].mean())
            assert record[f"{label}_pct"] == pytest.approx(rows[f"{label}_pct"].mean())
    first = json.loads((folder / "best.json").read_text())[0]
    shown = f"{first['Id_mA_mae']:#.4g} ({first['Id_mA_pct']:.1f}%)"
    assert shown in stdout and "in % of its mean" in " ".join(stdout.split())


def test_the_api_refuses_what_is_not_there(trained, tmp_path: Path) -> None:
    folder = trained
    s = open_study(folder)
    with pytest.raises(ResultsError, match="no such folder"):
        open_study(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="no study there"):
        open_study(tmp_path / "empty")
    with pytest.raises(ResultsError, match=r"no trial 'r9999' \(trials: r0000, r0001\)"):
        s.load_model(trial="r9999")
    with pytest.raises(ResultsError, match=r"no successful seed 7 \(seeds: 1, 2\)"):
        s.load_model(trial="r0000", seed=7)
    with pytest.raises(ResultsError, match="no rank 3: the final group has ranks 1 to 2"):
        s.load_model(rank=3)
    with pytest.raises(ResultsError, match=r"has no 'weights\.h5'"):
        s.read_artifact("r0000", 1, "weights.h5")
    p = s.load_model(trial="r0000", seed=1)
    with pytest.raises(ResultsError) as refused:
        p.predict(pd.DataFrame({"W_um": [1.0], "L_um": [1.0]}))
    assert "'tox_nm' not found" in str(refused.value)
    assert "the study's features are 'W_um', 'L_um', 'tox_nm'" in str(refused.value)
    torn = tmp_path / "torn" / NAME
    shutil.copytree(folder, torn)
    (torn / "ledger.xlsx").write_bytes(b"PK\x03\x04 not a workbook")
    with pytest.raises(ResultsError, match=r"cannot be read.*--rebuild-ledger"):
        open_study(torn).trainings()


def test_the_readme_example_runs_as_written(
    trained, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README, "Using what a study found": its Python block, on this study's folder."""
    section = (REPO / "README.md").read_text().split("## Using what a study found", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert '"runs/quickstart"' in code
    monkeypatch.chdir(REPO)
    exec(compile(code.replace('"runs/quickstart"', repr(str(trained))), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert f"{FEATURES} [1, 2]" in out
    assert out.splitlines()[1].split() == LABELS and len(out.splitlines()) == 7


def test_a_study_still_running_reads_as_such(tmp_path: Path) -> None:
    """No best.json yet: not finished, an empty (typed) final group, ranked configurations,
    and no model by rank (a trial must be named)."""
    running = _synthetic(tmp_path, "running", EXAMPLE_CSV, finish=False, failing=3)
    assert find_studies(tmp_path / "runs") == [str(running)]
    s = open_study(running)
    assert not s.finished
    trainings = s.trainings()
    assert trainings["status"].tolist().count("succeeded") == 3
    failed = trainings[trainings["status"] == "failed"].iloc[0]
    assert failed["error"] == "out of memory (a test's failure)" and pd.isna(failed["test_mae"])
    configs = s.configurations()
    assert configs["rank"].tolist() == [1, 2] and sorted(configs["failed"]) == [0, 1]
    group = s.final_group()
    assert group.empty and {"rank", "trial", "test_mae_mean", "Id_mA_mae"} <= set(group.columns)
    with pytest.raises(ResultsError, match="has not finished"):
        s.load_model()


# --------------------------------------------------------------------------- the commands


def test_hpo_predict_writes_the_apis_predictions(trained, tmp_path: Path) -> None:
    folder = trained
    s = open_study(folder)
    trial = s.final_group()["trial"][0]
    frame, y_true = _test_split(s, trial, 1)
    data = tmp_path / "test.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "preds.csv"
    result = _cli("predict", folder, data, "--out", out)
    assert result.exit_code == EXIT_OK, result.output
    assert f"of trial {trial} (2 seeds averaged)" in _text(result)
    pd.testing.assert_frame_equal(pd.read_csv(out), s.load_model().predict(frame), rtol=1e-12)
    # One seed: the ledger's test MAE, recomputed from the command's output.
    result = _cli("predict", folder, data, "--trial", trial, "--seed", "1", "--out", out)
    assert result.exit_code == EXIT_OK, result.output
    ls = Scaler.from_json(s.read_artifact(trial, 1, "label_scaler.json").decode())
    preds = pd.read_csv(out)[LABELS].to_numpy()
    mae = np.mean(np.abs(ls.transform(y_true) - ls.transform(preds)))
    assert mae == pytest.approx(_ledger_row(s, trial, 1)["test_mae"], rel=1e-5)


def test_hpo_predict_keeps_the_columns_it_is_asked_to(trained, tmp_path: Path) -> None:
    """``--keep`` copies input columns (an id) before the labels, row for row."""
    folder = trained
    frame = pd.read_csv(EXAMPLE_CSV).dropna().head(7).reset_index(drop=True)
    frame.insert(0, "part_id", [f"p{i}" for i in range(len(frame))])
    data = tmp_path / "ids.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "preds.csv"
    result = _cli("predict", folder, data, "--keep", "part_id", "--keep", "W_um", "--out", out)
    assert result.exit_code == EXIT_OK, result.output
    got = pd.read_csv(out)
    assert list(got.columns) == ["part_id", "W_um", *LABELS]
    assert got["part_id"].tolist() == frame["part_id"].tolist()
    expected = open_study(folder).load_model().predict(frame)
    pd.testing.assert_frame_equal(got[LABELS], expected, rtol=1e-12)
    for keep, message in [("nope", "--keep 'nope': "), (LABELS[0], "a label has this name")]:
        result = _cli("predict", folder, data, "--keep", keep)
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert message in _text(result)


def test_hpo_predict_refuses_bad_input_by_name(trained, tmp_path: Path) -> None:
    folder = trained
    data = tmp_path / "data.csv"
    pd.read_csv(EXAMPLE_CSV).dropna().head(20).drop(columns=["Vgs_V"]).to_csv(data, index=False)
    unfinished = tmp_path / "unfinished" / NAME
    shutil.copytree(folder, unfinished)
    (unfinished / "best.json").unlink()
    parquet = tmp_path / "parquet.csv"
    pd.read_csv(EXAMPLE_CSV).to_parquet(parquet)
    cases = [
        ((folder, data), "column 'Vgs_V' not found"),
        ((folder, data, "--trial", "r0042"), "no trial 'r0042' (trials: r0000, r0001)"),
        ((folder, data, "--rank", "5"), "no rank 5: the final group has ranks 1 to 2"),
        ((folder, data, "--trial", "r0000", "--seed", "9"), "no successful seed 9"),
        ((folder, data, "--rank", "1", "--trial", "r0000"), "give a rank or a trial, not both"),
        ((unfinished, data), "has not finished (no final group yet): name a trial"),
        ((folder, tmp_path / "none.csv"), "dataset file not found"),
        ((folder, parquet), "is a Parquet file, not a CSV file"),
        ((folder, data, "--out", ""), "--out: empty; give a file name"),
        ((tmp_path, data), "no study there"),
    ]
    for args, message in cases:
        result = _cli("predict", *args)
        assert result.exit_code == EXIT_BAD_INPUT, (args, result.output)
        assert message in _text(result), (args, result.output)
        assert "Traceback" not in result.output
    assert "the study's features are" in _text(_cli("predict", folder, data))
    # With a trial, an unfinished study predicts.
    full = tmp_path / "full.csv"
    pd.read_csv(EXAMPLE_CSV).dropna().head(5).to_csv(full, index=False)
    result = _cli("predict", unfinished, full, "--trial", "r0000")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout.splitlines()[0] == ",".join(LABELS)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_hpo_export_round_trips_into_pandas(trained, tmp_path: Path, fmt: str) -> None:
    folder = trained
    s = open_study(folder)
    result = _cli("export", folder, "--format", fmt, "--out", tmp_path)
    assert result.exit_code == EXIT_OK, result.output
    read = {
        "csv": pd.read_csv,
        "json": lambda p: pd.read_json(p, orient="records"),
        "parquet": pd.read_parquet,
    }[fmt]
    for name, frame in (("trainings", s.trainings()), ("configurations", s.configurations())):
        back = read(tmp_path / f"{NAME}-{name}.{fmt}")
        assert list(back.columns) == list(frame.columns)
        for when in ("started", "finished"):
            if when in frame:
                back[when] = pd.to_datetime(back[when], utc=True).astype(frame[when].dtype)
        if fmt == "parquet":  # per-layer widths as a list column of integers, not text
            widths = [list(map(int, v)) for v in back["neurons"]]
            assert all(all(isinstance(w, int) for w in v) for v in widths)
            assert widths == [json.loads(v) for v in frame["neurons"]]
            back["neurons"] = [json.dumps(v) for v in widths]  # as the frame spells them
        pd.testing.assert_frame_equal(
            _nulls_as_nan(back), _nulls_as_nan(frame), check_dtype=False, rtol=1e-9
        )


def test_hpo_export_refuses_an_unknown_format_and_an_empty_folder(trained) -> None:
    result = _cli("export", trained, "--format", "xlsx")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--format 'xlsx': choose csv, json, parquet" in _text(result)
    result = _cli("export", trained, "--out", "")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--out: empty; give a folder (--out . for the current one)" in _text(result)


def test_hpo_predict_on_the_studys_own_data_predicts_the_complete_rows(
    trained, tmp_path: Path
) -> None:
    """The example CSV has rows missing a feature's value (training left them out): they
    get empty labels and a reason, the others their predictions, and the command says
    how many; exit 0."""
    s = open_study(trained)
    raw = pd.read_csv(EXAMPLE_CSV)
    incomplete = raw[FEATURES].isna().any(axis=1).to_numpy()
    assert 0 < incomplete.sum() < 20
    out = tmp_path / "preds.csv"
    result = _cli("predict", trained, EXAMPLE_CSV, "--out", out)
    assert result.exit_code == EXIT_OK, result.output
    assert f"note: {incomplete.sum()} of {len(raw)} rows of" in _text(result)
    assert "not predicted (empty labels, column 'reason' says why)" in _text(result)
    got = pd.read_csv(out)
    assert list(got.columns) == [*LABELS, "reason"] and len(got) == len(raw)
    assert got.loc[incomplete, LABELS].isna().all().all()
    assert got.loc[~incomplete, LABELS].notna().all().all()
    assert got["reason"].notna().to_numpy().tolist() == incomplete.tolist()
    first = int(np.flatnonzero(incomplete)[0])
    empty = [c for c in FEATURES if pd.isna(raw.loc[first, c])]
    assert got.loc[first, "reason"] == f"no value in {', '.join(map(repr, empty))}"
    expected = s.load_model().predict(raw[~incomplete])
    np.testing.assert_allclose(got.loc[~incomplete, LABELS].to_numpy(), expected.to_numpy())


def test_a_value_too_large_for_the_model_is_marked_never_a_silent_nan(
    trained, tmp_path: Path
) -> None:
    """``W_um=1e300`` overflows the network's float32 once standardised: the row is
    marked with a reason naming the value (the CLI, ``predict_rows``) or refused naming
    the row (``predict``); no prediction is NaN without a reason."""
    s = open_study(trained)
    rows = pd.read_csv(EXAMPLE_CSV).dropna().head(5).reset_index(drop=True)[FEATURES]
    rows.loc[2, "W_um"] = 1e300
    data, out = tmp_path / "huge.csv", tmp_path / "preds.csv"
    rows.to_csv(data, index=False)
    result = _cli("predict", trained, data, "--out", out)
    assert result.exit_code == EXIT_OK, result.output
    got = pd.read_csv(out)
    assert got[LABELS].isna().any(axis=1).tolist() == [False, False, True, False, False]
    assert got.loc[2, "reason"].startswith("W_um=1e+300 is too large for the model")
    assert "note: 1 of 5 rows" in _text(result)
    model = s.load_model()
    fine = model.predict(rows.drop(index=2))
    np.testing.assert_allclose(got.loc[[0, 1, 3, 4], LABELS].to_numpy(), fine.to_numpy())
    with pytest.raises(ResultsError, match=r"data row 3: W_um=1e\+300 is too large"):
        model.predict(rows)


def test_hpo_compare_says_whether_the_studies_share_a_dataset(trained, tmp_path: Path) -> None:
    folder = trained
    bigger = _synthetic(tmp_path, "bigger", EXAMPLE_CSV)
    other_data = tmp_path / "other.csv"
    pd.read_csv(EXAMPLE_CSV).iloc[:-50].to_csv(other_data, index=False)
    elsewhere = _synthetic(tmp_path, "elsewhere", other_data)

    same = _cli("compare", folder, bigger)
    assert same.exit_code == EXIT_OK, same.output
    text = _text(same)
    assert "same dataset: the errors are comparable" in text
    for s in (open_study(folder), open_study(bigger)):
        for row in s.final_group().to_dict("records"):
            assert f"{row['trial']} │ {row['config_key']} │ {row['val_mae_mean']:.4f}" in text
    assert f"{NAME}: finished; 4 trainings succeeded; budget 2 random + 0 narrow-stage" in text
    assert "(at most 4 trainings), 3 epochs; dataset sha256" in text
    # Did the bigger budget help: rank 1's test MAE of each, the second against the first.
    best = [open_study(x).final_group().iloc[0] for x in (folder, bigger)]
    change = best[1]["test_mae_mean"] / best[0]["test_mae_mean"] - 1
    assert f"best: val MAE {best[0]['val_mae_mean']:.4f}, test MAE" in text
    assert f"test MAE {best[1]['test_mae_mean']:.4f} ({change:+.1%} vs {NAME})" in text

    different = _cli("compare", folder, elsewhere)
    assert different.exit_code == EXIT_OK, different.output
    assert "different datasets (or one not recorded): the errors are not comparable" in _text(
        different
    )
    assert " vs " not in _text(different)  # no relative change across datasets
    one_seed = _synthetic(
        tmp_path, "oneseed", EXAMPLE_CSV, training={**SPEC["training"], "seedsPerConfig": 1}
    )
    text = _text(_cli("compare", folder, one_seed))
    assert "narrow-stage configurations x 1 seed (at most 2 trainings)" in text, text
    result = _cli("compare", folder)
    assert result.exit_code == EXIT_BAD_INPUT and "two or more studies" in _text(result)
    result = _cli("compare", folder, tmp_path / "missing")
    assert result.exit_code == EXIT_BAD_INPUT and "no such folder" in _text(result)


# --------------------------------------------------------------------------- on S3


def test_the_api_reads_a_study_in_a_bucket(
    trained, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same study, uploaded as the operator lays it out: the same tables, the same
    model, the same predictions."""
    monkeypatch.setenv("HPO_S3_ACCESS_KEY", TEST_ACCESS_KEY)
    monkeypatch.setenv("HPO_S3_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("HPO_S3_RETRIES", "0")
    folder = trained
    bucket = new_s3_store(s3_server, prefix="")
    bucket.put_dir(f"hpo/default/{NAME}", folder)
    url = f"s3://{bucket.bucket}/hpo/default/{NAME}"
    assert find_studies(f"s3://{bucket.bucket}/hpo", endpoint=s3_server.endpoint, tls=False) == [
        url
    ]
    remote = open_study(url, endpoint=s3_server.endpoint, tls=False)
    local = open_study(folder)
    assert remote.name == NAME and remote.finished
    pd.testing.assert_frame_equal(remote.trainings(), local.trainings())
    pd.testing.assert_frame_equal(remote.final_group(), local.final_group())
    frame = pd.read_csv(EXAMPLE_CSV).dropna().head(8)
    pd.testing.assert_frame_equal(
        remote.load_model().predict(frame), local.load_model().predict(frame)
    )
    with pytest.raises(ResultsError, match="no study there"):
        open_study(f"s3://{bucket.bucket}/hpo/default/nope", endpoint=s3_server.endpoint, tls=False)
    # `hpo predict` on the bucket, with --endpoint and --no-tls as the other commands take them.
    data = tmp_path / "new.csv"
    frame.to_csv(data, index=False)
    result = _cli("predict", url, data, "--endpoint", s3_server.endpoint, "--no-tls")
    assert result.exit_code == EXIT_OK, result.output
    got = pd.read_csv(io.StringIO(result.stdout))
    np.testing.assert_allclose(got.to_numpy(), local.load_model().predict(frame).to_numpy())
