"""Dataset validation, splitting, scalers and the bundled example (no TensorFlow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpo.data.dataset import (
    DatasetError,
    cv_split_indices,
    split_indices,
    validate_dataset,
    validate_frame,
)
from hpo.data.scaling import Scaler
from hpo.study.contract import DatasetRef
from hpo_trainer.data import load_splits

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "data" / "transistor.csv"
FEATURES = ["W_um", "L_um", "tox_nm", "Vth_V", "Vgs_V", "Vds_V"]
LABELS = ["Id_mA", "gm_mS", "gds_uS"]


def _frame(rows: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"Vgs": rng.uniform(0, 3, rows), "Vds": rng.uniform(0, 3, rows), "Id": rng.random(rows)}
    )


def _ref(path: Path, features: list[str], labels: list[str]) -> DatasetRef:
    return DatasetRef(path=str(path), features=features, labels=labels)


def _csv(tmp_path: Path, df: pd.DataFrame) -> Path:
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    return path


def test_example_dataset_is_valid() -> None:
    summary = validate_dataset(_ref(EXAMPLE, FEATURES, LABELS))
    assert summary.rows_dropped > 0, "the example should exercise the missing-value path"
    assert summary.rows + summary.rows_dropped == len(pd.read_csv(EXAMPLE))
    assert EXAMPLE.stat().st_size < 150_000


def test_make_dataset_regenerates_shipped_csv_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "transistor.csv"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_dataset.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == EXAMPLE.read_bytes()


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(DatasetError, match=f"dataset file not found: {path}"):
        validate_dataset(_ref(path, ["a"], ["b"]))


def test_misspelt_column_suggests_the_close_match(tmp_path: Path) -> None:
    path = _csv(tmp_path, _frame())
    with pytest.raises(DatasetError) as err:
        validate_dataset(_ref(path, ["Vgs ", "Vds"], ["Id"]))
    assert str(err.value) == "column 'Vgs ' not found; did you mean 'Vgs'?"
    with pytest.raises(DatasetError, match="column 'Idd' not found; did you mean 'Id'"):
        validate_frame(_frame(), ["Vgs"], ["Idd"])
    with pytest.raises(DatasetError, match=r"column 'zzz' not found \(columns are: 'Vgs'"):
        validate_frame(_frame(), ["zzz"], ["Id"])


def test_non_numeric_column_shows_a_bad_value(tmp_path: Path) -> None:
    df = _frame().astype({"Vds": object})
    df.loc[4, "Vds"] = "1,5 V"
    path = _csv(tmp_path, df)
    with pytest.raises(
        DatasetError, match=r"column 'Vds' is not numeric: e.g. '1,5 V' in data row 5"
    ):
        validate_dataset(_ref(path, ["Vgs", "Vds"], ["Id"]))


def test_all_rows_missing(tmp_path: Path) -> None:
    df = _frame()
    df.loc[::2, "Vgs"] = np.nan
    df.loc[1::2, "Id"] = np.nan
    path = _csv(tmp_path, df)
    with pytest.raises(
        DatasetError, match="no rows left after dropping rows with missing or infinite values"
    ):
        validate_dataset(_ref(path, ["Vgs", "Vds"], ["Id"]))


def test_label_also_a_feature() -> None:
    with pytest.raises(DatasetError, match="'Id' listed both as feature and label"):
        validate_frame(_frame(), ["Vgs", "Id"], ["Id"])


def test_too_few_rows(tmp_path: Path) -> None:
    path = _csv(tmp_path, _frame(rows=6))
    with pytest.raises(DatasetError, match=r"only 6 usable row.*need at least 10"):
        validate_dataset(_ref(path, ["Vgs", "Vds"], ["Id"]))


def test_missing_values_are_dropped_and_counted(tmp_path: Path) -> None:
    df = _frame(rows=40)
    df.loc[[3, 7], "Vds"] = np.nan
    df.loc[9, "Id"] = np.inf
    path = _csv(tmp_path, df)
    ref = _ref(path, ["Vgs", "Vds"], ["Id"])
    assert validate_dataset(ref).rows == 37
    data = load_splits(ref)
    assert data.rows_dropped == 3
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 37
    assert len(data.x_test) == 8  # ceil(0.2 * 37)


def test_split_is_deterministic_and_scalers_fit_on_train_only() -> None:
    ref = _ref(EXAMPLE, FEATURES, LABELS)
    a, b = load_splits(ref), load_splits(ref)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_allclose(a.feature_scaler.mean, a.x_train.mean(axis=0))
    np.testing.assert_allclose(a.label_scaler.scale, a.y_train.std(axis=0))
    other = load_splits(DatasetRef(**{**ref.__dict__, "split_seed": 1}))
    assert not np.array_equal(a.x_test, other.x_test)


def test_scaler_json_round_trip_and_constant_column() -> None:
    values = np.array([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    scaler = Scaler.fit(values, ["a", "const"])
    assert scaler.scale[1] == 1.0
    again = Scaler.from_json(scaler.to_json())
    assert again.columns == ["a", "const"]
    np.testing.assert_array_equal(again.transform(values), scaler.transform(values))
    np.testing.assert_allclose(again.inverse_transform(again.transform(values)), values)
    assert "pickle" not in scaler.to_json()


def test_validation_does_not_import_tensorflow() -> None:
    code = (
        "import sys; from hpo.study.contract import DatasetRef; import hpo.data.dataset as d; "
        f"d.validate_dataset(DatasetRef(path={str(EXAMPLE)!r}, features={FEATURES!r}, "
        f"labels={LABELS!r})); import hpo_trainer.train, hpo_trainer.__main__; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- k-fold cross-validation -----------------------------------------------------------------


def _folds(ref: DatasetRef, k: int) -> DatasetRef:
    return DatasetRef(**{**ref.__dict__, "folds": k})


def test_folds_partition_the_non_test_rows_and_never_touch_the_test_rows() -> None:
    rows, ref = 100, _folds(_ref(EXAMPLE, FEATURES, LABELS), 3)
    _, _, plain_test = split_indices(rows, _folds(ref, 0))
    splits = [cv_split_indices(rows, ref, fold) for fold in range(3)]
    vals = [set(val.tolist()) for _, val, _ in splits]
    for train, val, test in splits:
        np.testing.assert_array_equal(test, plain_test)  # the same test rows as without folds
        assert not set(val) & set(test) and not set(train) & set(test)
        assert not set(train) & set(val)
        assert set(train) | set(val) | set(test) == set(range(rows))
    assert all(not a & b for i, a in enumerate(vals) for b in vals[i + 1 :])
    assert sorted(len(v) for v in vals) == [26, 27, 27]  # 80 non-test rows in 3 folds
    # Deterministic in split_seed, and fold is taken modulo folds (a seed can be passed).
    np.testing.assert_array_equal(cv_split_indices(rows, ref, 4)[1], splits[1][1])
    other = _folds(DatasetRef(**{**ref.__dict__, "split_seed": 1}), 3)
    assert not np.array_equal(cv_split_indices(rows, other, 0)[1], splits[0][1])


def test_two_seeds_with_folds_validate_on_different_rows() -> None:
    """load_splits(ref, seed) validates on fold seed mod folds, scalers fit on the rest."""
    ref = _folds(_ref(EXAMPLE, FEATURES, LABELS), 3)
    a, b, again = load_splits(ref, 0), load_splits(ref, 1), load_splits(ref, 3)
    rows = {tuple(r) for r in a.x_val}
    assert not rows & {tuple(r) for r in b.x_val}
    assert not rows & {tuple(r) for r in a.x_test}
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.x_val, again.x_val)
    np.testing.assert_allclose(b.feature_scaler.mean, b.x_train.mean(axis=0))
    np.testing.assert_allclose(b.label_scaler.scale, b.y_train.std(axis=0))
    assert not np.allclose(a.feature_scaler.mean, b.feature_scaler.mean)
    total = len(a.x_train) + len(a.x_val) + len(a.x_test)
    assert total == validate_dataset(ref).rows


def test_no_folds_is_todays_split_for_every_seed() -> None:
    ref = _ref(EXAMPLE, FEATURES, LABELS)
    assert ref.folds == 0
    today, seeded = load_splits(ref), load_splits(ref, 7)
    for name in ("x_train", "x_val", "x_test", "y_val"):
        np.testing.assert_array_equal(getattr(today, name), getattr(seeded, name))
    train, val, test = split_indices(100, ref)
    assert (len(train), len(val), len(test)) == (64, 16, 20)


@pytest.mark.parametrize(
    ("folds", "message"),
    [
        (1, r"folds must be 0 \(one validation split\) or at least 2 .*got 1"),
        (-2, "folds must be 0 .*got -2"),
        (25, "folds=25 is more than the 24 rows left after the test split of 30 rows"),
    ],
)
def test_bad_folds_are_refused_by_name(tmp_path: Path, folds: int, message: str) -> None:
    ref = _folds(_ref(_csv(tmp_path, _frame()), ["Vgs", "Vds"], ["Id"]), folds)
    with pytest.raises(DatasetError, match=message):
        validate_dataset(ref)
    with pytest.raises(DatasetError, match=message):
        load_splits(ref, 3)


def test_as_many_folds_as_rows_is_leave_one_out(tmp_path: Path) -> None:
    ref = _folds(_ref(_csv(tmp_path, _frame()), ["Vgs", "Vds"], ["Id"]), 24)
    assert validate_dataset(ref).rows == 30
    data = load_splits(ref, 5)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (23, 1, 6)


# -- categorical features ----------------------------------------------------------------


def test_a_text_feature_is_categorical_and_one_hot_before_scaling(tmp_path: Path) -> None:
    from helpers.categorical import FEATURES as CAT_FEATURES
    from helpers.categorical import categorical_csv

    ref = _ref(categorical_csv(tmp_path), CAT_FEATURES, ["y"])
    summary = validate_dataset(ref)
    assert summary.categorical == ("material",)
    assert summary.notes[0] == (
        "categorical feature column(s), one network input per category: 'material' (4)"
    )
    data = load_splits(ref)
    columns = ["x1", *(f"material={m}" for m in ("aluminium", "copper", "steel", "titanium")), "x2"]
    assert data.encoding.encoded_columns() == data.feature_scaler.columns == columns
    one_hot = data.x_train[:, 1:5]
    assert set(np.unique(one_hot)) <= {0.0, 1.0} and (one_hot.sum(axis=1) == 1).all()
    # One-hot columns are left 0/1; numeric ones are standardised on the training split.
    np.testing.assert_array_equal(data.feature_scaler.mean[1:5], 0.0)
    np.testing.assert_array_equal(data.feature_scaler.scale[1:5], 1.0)
    np.testing.assert_allclose(data.feature_scaler.mean[[0, 5]], data.x_train[:, [0, 5]].mean(0))


def test_categories_come_from_every_usable_row_so_every_fold_shares_them(tmp_path: Path) -> None:
    """The rare category is in one row only: every fold and split knows it, so a
    validation or test row never holds a category the encoding lacks."""
    from helpers.categorical import FEATURES as CAT_FEATURES
    from helpers.categorical import categorical_csv

    ref = DatasetRef(
        path=str(categorical_csv(tmp_path)), features=CAT_FEATURES, labels=["y"], folds=3
    )
    encodings = {load_splits(ref, seed).encoding for seed in range(3)}
    assert len(encodings) == 1
    assert "material=titanium" in encodings.pop().encoded_columns()


def test_numeric_codes_are_categorical_when_declared(tmp_path: Path) -> None:
    df = _frame(40).assign(grade=[1, 2, 3, 4] * 10)
    path = _csv(tmp_path, df)
    plain = validate_dataset(_ref(path, ["Vgs", "grade"], ["Id"]))
    assert plain.categorical == ()
    declared = DatasetRef(
        path=str(path), features=["Vgs", "grade"], labels=["Id"], categorical=["grade"]
    )
    assert validate_dataset(declared).categorical == ("grade",)
    assert load_splits(declared).encoding.encoded_columns()[1:] == [
        "grade=1", "grade=2", "grade=3", "grade=4",
    ]  # fmt: skip


def test_missing_single_and_many_categories_are_noted(tmp_path: Path) -> None:
    rows = 200
    df = _frame(rows).assign(
        site=["north", "south"] * (rows // 2),
        batch=[f"b{i % 60}" for i in range(rows)],
        plant="only",
    )
    df.loc[[3, 8], "site"] = np.nan
    path = _csv(tmp_path, df)
    summary = validate_dataset(_ref(path, ["Vgs", "site", "batch", "plant"], ["Id"]))
    assert summary.rows == rows - 2 and summary.rows_dropped == 2
    notes = "\n".join(summary.notes)
    assert (
        "categorical column 'site': 2 row(s) have no value and are left out, as rows with "
        "missing numbers are; give them a category of their own (e.g. 'unknown')" in notes
    )
    assert (
        "categorical column 'plant' has one category only ('only' in every usable row): it "
        "tells the model nothing" in notes
    )
    assert "categorical column 'batch' has 60 categories: as many network inputs" in notes


def test_a_numeric_column_with_a_few_text_cells_is_still_refused_as_not_numeric(
    tmp_path: Path,
) -> None:
    df = _frame().astype({"Vds": object})
    df.loc[[4, 9], "Vds"] = "n/a V"
    with pytest.raises(DatasetError) as info:
        validate_dataset(_ref(_csv(tmp_path, df), ["Vgs", "Vds"], ["Id"]))
    assert str(info.value) == (
        "column 'Vds' is not numeric: e.g. 'n/a V' in data row 5 (2 non-numeric value(s)); "
        "if it holds categories, list it in spec.dataset.categorical"
    )


def test_a_declared_categorical_column_must_be_a_feature() -> None:
    with pytest.raises(
        DatasetError, match=r"categorical column\(s\) 'Id' are not among the features"
    ):
        validate_frame(_frame(), ["Vgs"], ["Id"], categorical=["Id"])


def test_measurements_declared_categorical_are_refused_saying_where_they_are_declared(
    tmp_path: Path,
) -> None:
    declared = DatasetRef(
        path=str(_csv(tmp_path, _frame())), features=["Vgs"], labels=["Id"], categorical=["Vgs"]
    )
    with pytest.raises(DatasetError) as info:
        validate_dataset(declared)
    message = str(info.value)
    assert message.startswith("column 'Vgs' looks like an identifier, not a category: 30 ")
    assert message.endswith(
        "take it out of spec.dataset.categorical if its values are measurements"
    )


# -- numbers with thousands separators -------------------------------------------------


def test_numbers_with_thousands_separators_are_read_as_numbers_and_said_so(
    tmp_path: Path,
) -> None:
    """``"1,000"``, ``"2,000"``, ``"4,974.5"``: every filled cell a number, so the column
    is numeric (never one-hot, never "an identifier"); the note names it; the trainer
    reads the same numbers."""
    df = _frame(40).astype({"Vds": object})
    area = [f"{1000 + 500 * i:,}" for i in range(39)] + ["4,974.5"]
    df["area"] = area
    df.loc[3, "area"] = "750"  # a number without a group is a number too
    path = _csv(tmp_path, df)
    assert '"1,000"' in path.read_text()  # quoted in the CSV, as spreadsheets write it
    ref = _ref(path, ["Vgs", "area"], ["Id"])
    summary = validate_dataset(ref)
    assert summary.categorical == ()
    assert summary.notes == (
        "column(s) 'area' hold numbers written with thousands separators (e.g. '1,000'): "
        "read as numbers (1000)",
    )
    data = load_splits(ref)
    assert data.encoding.encoded_columns() == ["Vgs", "area"]
    seen = np.concatenate([data.x_train[:, 1], data.x_val[:, 1], data.x_test[:, 1]])
    expected = [1000.0 + 500 * i for i in range(39)] + [4974.5]
    expected[3] = 750.0
    assert sorted(seen) == sorted(expected)


def test_thousands_separators_among_other_text_are_refused_naming_cells(
    tmp_path: Path,
) -> None:
    """``"1,000"`` beside ``"1,5"`` (a decimal comma?) is not for sure numbers: refused
    naming the column and a cell of each kind, not one-hot encoded."""
    df = _frame(40)
    df["area"] = [f"{1000 + 500 * i:,}" for i in range(40)]
    df.loc[6, "area"] = "1,5"
    with pytest.raises(DatasetError) as info:
        validate_dataset(_ref(_csv(tmp_path, df), ["Vgs", "area"], ["Id"]))
    assert str(info.value).startswith(
        "column 'area' holds numbers with thousands separators ('1,000' in data row 1) and "
        "other text ('1,5' in data row 7)"
    )


def test_decimal_commas_are_not_read_as_thousands_separators(tmp_path: Path) -> None:
    """Before: ``"0,125"``, ``"1,250"``, ``"2,375"`` (decimal commas) became 125, 1250 and
    2375 with only a note. ``0,125`` is no grouped number, so the column is refused."""
    df = _frame(40)
    df["area"] = ["0,125", "1,250", "2,375", "3,500"] * 10
    with pytest.raises(DatasetError) as info:
        validate_dataset(_ref(_csv(tmp_path, df), ["Vgs", "area"], ["Id"]))
    assert str(info.value).startswith(
        "column 'area' holds numbers with thousands separators ('1,250' in data row 2) and "
        "other text ('0,125' in data row 1)"
    )


def test_commas_that_may_be_decimal_commas_are_refused_not_guessed(tmp_path: Path) -> None:
    """``"1,250"`` and ``"2,375"`` alone: 1250 or 1.25? No cell settles it, so refused
    naming the column and a cell; one with two groups settles it (read as numbers)."""
    df = _frame(40)
    df["area"] = [f"{i + 1},{(125 * i) % 1000:03d}" for i in range(40)]
    with pytest.raises(DatasetError) as info:
        validate_dataset(_ref(_csv(tmp_path, df), ["Vgs", "area"], ["Id"]))
    assert str(info.value).startswith(
        "column 'area' holds numbers whose comma may group thousands or be a decimal comma "
        "('1,000' in data row 1), and no cell settles which"
    )
    df.loc[5, "area"] = "1,234,567"
    ref = _ref(_csv(tmp_path, df), ["Vgs", "area"], ["Id"])
    assert validate_dataset(ref).notes[0].startswith("column(s) 'area' hold numbers written")
    data = load_splits(ref)
    seen = np.concatenate([data.x_train[:, 1], data.x_val[:, 1], data.x_test[:, 1]])
    assert 1234567.0 in seen and 2125.0 in seen


def test_number_like_codes_that_merge_are_named_in_a_note(tmp_path: Path) -> None:
    """``01`` and ``1`` (and ``02``/``2``) are one category each: the note says which raw
    spellings became which category, so the user sees it happen."""
    df = _frame(40)
    df["code"] = ["01", "1", "02", "2", "x9", "y8", "z7", "w6"] * 5
    ref = _ref(_csv(tmp_path, df), ["Vgs", "code"], ["Id"])
    summary = validate_dataset(ref)
    assert summary.categorical == ("code",)
    assert (
        "categorical column 'code': number-like spellings read as one category each: "
        "'01', '1' -> '1'; '02', '2' -> '2' (a code whose leading zeros matter needs a "
        "letter, e.g. 'z01')"
    ) in summary.notes
    assert load_splits(ref).encoding.encoded_columns()[1:] == [
        "code=1", "code=2", "code=w6", "code=x9", "code=y8", "code=z7",
    ]  # fmt: skip
