"""Categorical features: the encoding (order, round trip, refusals) and features.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpo.data.dataset import load_usable, read_table
from hpo.data.encoding import (
    EncodingError,
    Feature,
    FeatureEncoding,
    FeaturesFile,
    UnseenCategory,
    category_of,
)
from hpo.results.features import feature_matrix
from hpo.study.contract import DatasetRef


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [1.5, 2.0, 3.0, 4.0],
            "material": ["steel", "copper", "steel", "aluminium"],
            "grade": [3, 1, 2, 3],
            "y": [1.0, 2.0, 3.0, 4.0],
        }
    )


def test_text_columns_become_one_hot_in_sorted_category_order() -> None:
    encoding = FeatureEncoding.fit(_frame(), ["x", "material"])
    assert encoding.categorical == ["material"]
    assert encoding.encoded_columns() == [
        "x",
        "material=aluminium",
        "material=copper",
        "material=steel",
    ]
    np.testing.assert_array_equal(
        encoding.transform(_frame()),
        [[1.5, 0, 0, 1], [2.0, 0, 1, 0], [3.0, 0, 0, 1], [4.0, 1, 0, 0]],
    )
    # The same categories in another row order give the same columns.
    shuffled = _frame().iloc[::-1]
    assert FeatureEncoding.fit(shuffled, ["x", "material"]) == encoding


def test_columns_in_any_order_and_extra_columns_give_the_same_matrix() -> None:
    encoding = FeatureEncoding.fit(_frame(), ["material", "x"])
    frame = _frame()
    reordered = frame[["y", "x", "material"]].assign(extra="ignored")
    np.testing.assert_array_equal(encoding.transform(reordered), encoding.transform(frame))
    assert encoding.encoded_columns()[-1] == "x"  # the study's order, not the frame's


def test_numeric_only_is_the_plain_matrix() -> None:
    frame = _frame()
    encoding = FeatureEncoding.fit(frame, ["x", "grade"])
    assert encoding.encoded_columns() == ["x", "grade"] and encoding.one_hot_columns() == []
    expected = frame[["x", "grade"]].to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(encoding.transform(frame), expected)


def test_declared_numeric_codes_match_however_the_numbers_are_typed() -> None:
    encoding = FeatureEncoding.fit(_frame(), ["grade"], categorical=["grade"])
    assert encoding.encoded_columns() == ["grade=1", "grade=2", "grade=3"]
    as_floats = pd.DataFrame({"grade": [3.0, 1.0]})
    as_text = pd.DataFrame({"grade": ["3", "1"]})
    for frame in (as_floats, as_text):
        np.testing.assert_array_equal(encoding.transform(frame), [[0, 0, 1], [1, 0, 0]])
    assert [category_of(v) for v in (3, 3.0, np.int64(3), 2.5, True, None, np.nan)] == [
        "3", "3", "3", "2.5", "True", None, None,
    ]  # fmt: skip


def test_json_round_trip_keeps_categories_and_order() -> None:
    encoding = FeatureEncoding.fit(_frame(), ["material", "x", "grade"], categorical=["grade"])
    again = FeatureEncoding.from_json(encoding.to_json())
    assert again == encoding
    assert again.encoded_columns() == encoding.encoded_columns()
    np.testing.assert_array_equal(again.transform(_frame()), encoding.transform(_frame()))


def test_an_unseen_category_is_refused_with_column_value_and_known_ones() -> None:
    encoding = FeatureEncoding.fit(_frame(), ["x", "material"])
    new = pd.DataFrame({"x": [1.0, 2.0], "material": ["steel", "brass"]})
    with pytest.raises(UnseenCategory) as info:
        encoding.transform(new)
    assert isinstance(info.value, ValueError)
    assert (info.value.column, info.value.value) == ("material", "brass")
    assert str(info.value) == (
        "column 'material': category 'brass' is not one the model was trained with "
        "(known categories: 'aluminium', 'copper', 'steel')"
    )


def test_a_missing_column_is_refused_naming_it_and_the_studys_columns() -> None:
    encoding = FeatureEncoding.fit(_frame(), ["x", "material"])
    with pytest.raises(EncodingError) as info:
        encoding.transform(pd.DataFrame({"x": [1.0]}))
    assert str(info.value) == (
        "feature column(s) 'material' missing; the study's features are: 'x', 'material'"
    )


def test_a_missing_category_or_text_in_a_numeric_column_is_refused_by_row() -> None:
    encoding = FeatureEncoding.fit(_frame(), ["x", "material"])
    with pytest.raises(EncodingError, match="column 'material' has no value in data row 2"):
        encoding.transform(pd.DataFrame({"x": [1.0, 2.0], "material": ["steel", None]}))
    with pytest.raises(EncodingError, match="column 'x' is numeric in the study, but holds 'a'"):
        encoding.transform(pd.DataFrame({"x": ["a"], "material": ["steel"]}))


def test_a_column_named_like_a_one_hot_column_is_refused() -> None:
    frame = pd.DataFrame({"m": ["a", "b"], "m=a": [1.0, 2.0]})
    with pytest.raises(EncodingError, match="'m=a' would appear twice"):
        FeatureEncoding.fit(frame, ["m", "m=a"])


def test_features_file_round_trips_and_says_the_prediction_units() -> None:
    encoding = FeatureEncoding.fit(_frame(), ["x", "material"])
    text = FeaturesFile(encoding, ("y",)).to_json()
    again = FeaturesFile.from_json(text)
    assert again.encoding == encoding and again.labels == ("y",)
    assert "label units" in text and "feature_scaler.json" in text
    with pytest.raises(EncodingError, match="disagree"):
        FeatureEncoding.from_json(text.replace('"material=copper"', '"material=tin"'))


def test_the_results_feature_step_reads_features_json_or_falls_back_to_the_scaler() -> None:
    from hpo.data.scaling import Scaler
    from hpo.results import ResultsError
    from hpo.results.features import encoding_of, feature_matrix

    encoding = FeatureEncoding.fit(_frame(), ["x", "material"])
    x = encoding.transform(_frame())
    scaler = Scaler.fit(x, encoding.encoded_columns())
    recorded = FeaturesFile(encoding, ("y",)).to_json().encode()
    assert encoding_of(recorded, scaler, "t") == encoding
    np.testing.assert_array_equal(feature_matrix(_frame(), encoding_of(recorded, scaler, "t")), x)
    # No features.json (a training recorded before it existed): the scaler's columns.
    numeric = encoding_of(
        None, Scaler.fit(_frame()[["x", "grade"]].to_numpy(), ["x", "grade"]), "t"
    )
    assert numeric.names == ["x", "grade"] and numeric.categorical == []
    other = Scaler.fit(x[:, :2], ["x", "material=aluminium"])
    with pytest.raises(ResultsError, match=r"t: features\.json's encoded columns differ"):
        encoding_of(recorded, other, "t")
    with pytest.raises(ResultsError, match=r"column 'material' not found.*study's features are"):
        feature_matrix(_frame().drop(columns="material"), encoding)


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_numeric_looking_category_is_one_however_pandas_typed_the_column(tmp_path: Path) -> None:
    """Fit and predict read CSVs as the study and ``hpo predict`` do: a column with a word
    in it is text ("1.0"), one without is numbers (1.0); both spell a category "1"."""
    rows = "".join(f"{g},{i},{i}\n" for i, g in enumerate(["1.0", "2.0", "other"] * 4))
    train = _csv(tmp_path / "train.csv", "g,x,y\n" + rows)
    ref = DatasetRef(path=str(train), features=["g", "x"], labels=["y"], categorical=["g"])
    usable, _ = load_usable(ref)
    encoding = FeatureEncoding.fit(usable, ["g", "x"], categorical=["g"])
    assert encoding.encoded_columns() == ["g=1", "g=2", "g=other", "x"]
    numbers = read_table(_csv(tmp_path / "numbers.csv", "g,x\n1.0,5\n2,6\n"))
    assert pd.api.types.is_numeric_dtype(numbers["g"])
    np.testing.assert_array_equal(feature_matrix(numbers, encoding), [[1, 0, 0, 5], [0, 1, 0, 6]])
    # The reverse: trained on numbers, rows to predict as text (a frame built by hand, a
    # file with a word in the column).
    numeric = FeatureEncoding.fit(pd.DataFrame({"g": [3.0, 1.0, 2.0]}), ["g"], categorical=["g"])
    assert numeric.encoded_columns() == ["g=1", "g=2", "g=3"]
    as_text = pd.DataFrame({"g": ["3", "3.0", "03", " 3e0", "1", "+2.0"]})
    assert numeric.transform(as_text).argmax(axis=1).tolist() == [2, 2, 2, 2, 0, 1]
    mixed = read_table(_csv(tmp_path / "mixed.csv", "g\n3.0\nfour\n"))
    with pytest.raises(UnseenCategory, match=r"category 'four'.*known categories: '1', '2', '3'"):
        numeric.transform(mixed)
    assert [category_of(v) for v in ("3", "3.0", "03", "-0", "0.10", "1e3", "z03", "3 kg")] == [
        "3", "3", "3", "0", "0.1", "1000", "z03", "3 kg",
    ]  # fmt: skip


def test_a_features_json_spelling_numbers_as_the_file_did_still_reads() -> None:
    """features.json written before numbers had one spelling: a text-typed column's
    categories as written ("1.0"); the columns keep their names (the scaler's)."""
    old = {
        "format": 1,
        "features": [{"name": "g", "kind": "categorical", "categories": ["1.0", "2.0", "other"]}],
        "encoded_columns": ["g=1.0", "g=2.0", "g=other"],
    }
    encoding = FeatureEncoding.from_dict(old)
    assert encoding.encoded_columns() == ["g=1.0", "g=2.0", "g=other"]
    assert encoding.to_dict() == old
    for frame in (pd.DataFrame({"g": [2.0, 1.0]}), pd.DataFrame({"g": ["2.0", "1"]})):
        np.testing.assert_array_equal(encoding.transform(frame), [[0, 1, 0], [1, 0, 0]])


def test_an_older_features_json_keeps_its_categories_apart() -> None:
    """Recorded before numbers had one spelling, "01" and "1" were two categories: a cell
    spelled as one of them exactly is that one (not the first under the new spelling)."""
    old = FeatureEncoding((Feature("code", ("01", "1", "A")),))
    got = old.transform(pd.DataFrame({"code": ["01", "1", "A"]}))
    assert got.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_rows_a_prediction_cannot_use_are_named_with_their_reason() -> None:
    """A missing number, an infinite one and a missing category mark their row (predict
    leaves those rows out and says why); complete rows have no reason."""
    from hpo.results.features import incomplete_rows

    encoding = FeatureEncoding((Feature("x"), Feature("m", ("a", "b")), Feature("z")))
    frame = pd.DataFrame(
        {
            "x": [1.0, np.nan, 2.0, np.inf, np.nan],
            "m": ["a", "b", None, "a", None],
            "z": [0.0, 1.0, 2.0, 3.0, -np.inf],
        },
        index=[10, 11, 12, 13, 14],
    )
    assert incomplete_rows(frame, encoding).to_dict() == {
        10: None,
        11: "no value in 'x'",
        12: "no value in 'm'",
        13: "infinite value in 'x'",
        14: "no value in 'x', 'm'; infinite value in 'z'",
    }
