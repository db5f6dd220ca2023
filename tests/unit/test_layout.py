"""The store layout of a study (hpo.study.layout): the keys the README documents, in one place."""

from __future__ import annotations

import pytest

from hpo.store import StoreError
from hpo.study.layout import (
    ARTIFACT_FILES,
    SCORES_FILE,
    StudyPaths,
    seed_dir,
    study_of_best,
    study_of_ledger,
    study_of_scores,
    training_of_scores,
)


def test_every_key_of_a_study() -> None:
    p = StudyPaths("demo")
    assert p.root == "demo"
    assert p.study == "demo/study.yaml"
    assert p.ledger == "demo/ledger.xlsx"
    assert p.best == "demo/best.json"
    assert p.plot("convergence.png") == "demo/plots/convergence.png"
    assert p.trial("r0003") == "demo/trials/r0003"
    assert p.seed("r0003", 7) == "demo/trials/r0003/seed-7" == seed_dir(p.trial("r0003"), 7)
    assert p.scores("r0003", 7) == "demo/trials/r0003/seed-7/scores.json"
    assert p.artifact("r0003", 7, "model.keras") == "demo/trials/r0003/seed-7/model.keras"
    assert p.failures == "demo/failures"
    assert p.failure("r0003", 7, 2) == "demo/failures/r0003/seed-7/attempt-2.json"
    assert ARTIFACT_FILES[-1] == SCORES_FILE  # uploaded last: its presence means complete


def test_a_study_folder_under_a_prefix() -> None:
    p = StudyPaths.at("hpo/default/demo")
    assert (p.name, p.prefix) == ("demo", "hpo/default")
    assert p.ledger == "hpo/default/demo/ledger.xlsx"
    assert StudyPaths.at("demo") == StudyPaths("demo")


@pytest.mark.parametrize(
    "build",
    [
        lambda: StudyPaths("a/b"),
        lambda: StudyPaths("demo", "../up"),
        lambda: StudyPaths("demo").trial("../r0001"),
        lambda: StudyPaths("demo").failure("r/1", 0, 1),
        lambda: StudyPaths("demo").plot("../x.png"),
    ],
)
def test_no_name_or_id_leaves_the_study_folder(build) -> None:
    with pytest.raises(StoreError):
        build()


def test_listed_keys_are_read_back_to_their_study() -> None:
    assert study_of_ledger("hpo/default/demo/ledger.xlsx") == "hpo/default/demo"
    assert study_of_ledger("ledger.xlsx") is None
    assert study_of_best("demo/best.json") == "demo"
    assert study_of_scores("demo/trials/r0001/seed-0/scores.json") == "demo"
    assert study_of_scores("demo/trials/r0001/scores.json") is None
    assert study_of_scores("demo/failures/r0001/seed-0/scores.json") is None
    paths = StudyPaths("demo", "hpo/default")
    assert training_of_scores(paths.scores("r0001", 12)) == ("hpo/default/demo", "r0001", 12)
    for odd in ("demo/trials/r0001/seed-01/scores.json", "demo/trials/r0001/seed-x/scores.json"):
        assert training_of_scores(odd) is None  # no key seed_dir writes
