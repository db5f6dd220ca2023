"""Warm start (``spec.warmStart``): what a study takes from an earlier one, and what not.

No training runs: studies are driven by the real session with synthetic scores
(``helpers.synthetic``), which also leaves each training's ``scores.json`` and a
stand-in model file where the trainer puts them, so copies can be checked. The
engine's part (the plan, restarts) is driven directly, as in test_search.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from helpers.study import EXAMPLE_CSV, SMALL_SPACE, study_dict, study_file
from helpers.synthetic import synthetic_mae, synthetic_success
from hpo.cli import app
from hpo.engine import Engine, Task, WarmStart
from hpo.records.ledger import read_ledger
from hpo.records.warmstart import WarmStartProblem, describe
from hpo.session import StudySession
from hpo.store import LocalStore, StoreRef
from hpo.study.contract import SeedResult
from hpo.study.layout import StudyPaths
from hpo.study.matching import outside_space
from hpo.study.space import config_key, contains
from hpo.study.spec import load_study, parse_study
from hpo.study.summary import ranked, summarise

SOURCE = "first"
SPEC: dict[str, Any] = {
    "searchSpace": SMALL_SPACE,
    "training": {"epochs": 3, "patience": 2, "seedsPerConfig": 1, "seedRacing": False},
    "randomStage": {"configurations": 4, "seed": 0},
    "bayesianStage": {"enabled": False},
    "result": {"size": 2},
}


def _write(folder: Path, name: str, data: Path, **changes: Any) -> Path:
    raw = study_dict(**{**SPEC, **changes})
    raw["spec"]["dataset"]["path"] = str(data)
    return study_file(folder, name, raw)


def _model(task: Task) -> bytes:
    return f"model of {task.trial.config_key} seed {task.seed}".encode()


def _drive(study_file: Path, out: Path, stop_after: int | None = None) -> list[Task]:
    """Run the study with synthetic trainings (as the trainer would leave them); returns
    the trainings handed out. ``stop_after``: stop there, as a killed run would."""
    study = load_study(study_file)
    session = StudySession.open(study, StoreRef(kind="local", root=str(out)))
    session.start(refuse_spec_changes=True)
    paths = StudyPaths(study.name)
    trained: list[Task] = []
    while not session.engine.finished:
        if stop_after is not None and len(trained) >= stop_after:
            return trained
        for task in session.take(1):
            trained.append(task)
            result = synthetic_success(task, study.name, study.spec.dataset.labels)
            session.store.put_bytes(
                paths.artifact(task.trial.id, task.seed, "model.keras"), _model(task)
            )
            session.store.put_bytes(
                paths.scores(task.trial.id, task.seed), result.to_json().encode()
            )
            session.record([result])
            session.flush()
    session.finish()  # the final group, the ledger and the live status as `hpo run` leaves them
    return trained


def _ledger(out: Path, name: str) -> list[SeedResult]:
    return read_ledger(LocalStore(out), StudyPaths(name).ledger)


@pytest.fixture(scope="module")
def source_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished source study ``first`` (4 configurations, 1 seed) in ``out/``."""
    folder = tmp_path_factory.mktemp("source")
    shutil.copyfile(EXAMPLE_CSV, folder / "data.csv")
    _drive(_write(folder, SOURCE, folder / "data.csv"), folder / "out")
    return folder


@pytest.fixture
def source(source_once: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(the dataset, the run folder) of a copy of the source study."""
    shutil.copytree(source_once / "out", tmp_path / "out")
    shutil.copyfile(source_once / "data.csv", tmp_path / "data.csv")
    return tmp_path / "data.csv", tmp_path / "out"


def test_a_matching_source_counts_none_of_its_trainings_is_trained_again(source) -> None:
    data, out = source
    before = _ledger(out, SOURCE)
    # The same sampling seed: the source's configurations are the first of the stream,
    # so only skipping them (not luck) keeps them from being trained again.
    study = _write(
        out.parent,
        "second",
        data,
        warmStart={"studies": [SOURCE]},
        bayesianStage={"enabled": True, "topK": 1, "trialsPerConfig": 2},
    )
    trained = _drive(study, out)
    recorded = {(r.config_key, r.seed) for r in before}
    assert trained and not recorded & {(t.trial.config_key, t.seed) for t in trained}
    rows = _ledger(out, "second")
    taken = [r for r in rows if r.source is not None]
    location = f"{out}/{SOURCE}"
    assert sorted((r.source_trial, r.config_key) for r in taken) == sorted(
        (r.trial, r.config_key) for r in before
    )
    assert {r.source for r in taken} == {location}
    assert all(r.trial.startswith("w") and r.stage == "random" for r in taken)
    assert {(r.config_key, r.val_mae) for r in taken} == {(r.config_key, r.val_mae) for r in before}
    own = [r for r in rows if r.source is None]
    assert sorted(r.key for r in own) == sorted(t.id for t in trained)
    # The random stage trains its whole budget of new configurations besides them.
    assert len({r.trial for r in own if r.stage == "random"}) == 4
    # The narrow stage starts from the best of everything, the taken rows included.
    best = min((r for r in rows if r.stage == "random"), key=lambda r: r.val_mae or 0)
    assert any(r.parent == best.trial for r in own if r.stage == "bayesian")
    # The study is self-contained: the taken trainings' artifacts are copied into it.
    for r in taken:
        copied = out / "second" / "trials" / r.trial / f"seed-{r.seed}"
        src = out / SOURCE / "trials" / str(r.source_trial) / f"seed-{r.seed}"
        assert (copied / "model.keras").read_bytes() == (src / "model.keras").read_bytes()
        assert SeedResult.from_json((copied / "scores.json").read_text()).trial == r.trial
    assert (out / "second" / "warmstart.json").is_file()


def test_a_warm_started_study_resumes_with_the_same_decisions_without_its_source(
    source, tmp_path: Path
) -> None:
    data, out = source
    shutil.copytree(out, tmp_path / "again")
    again = tmp_path / "again"
    spec = {
        "warmStart": {"studies": [SOURCE]},
        "bayesianStage": {"enabled": True, "topK": 1, "trialsPerConfig": 3},
    }
    whole = [t.id for t in _drive(_write(out.parent, "second", data, **spec), out)]
    study = _write(tmp_path, "second", data, **spec)
    first = _drive(study, again, stop_after=3)
    shutil.rmtree(again / SOURCE)  # what was taken is in warmstart.json and the copies
    rest = _drive(study, again)
    assert [t.id for t in first + rest] == whole

    def rows(out: Path) -> list[tuple[Any, ...]]:
        return [(r.key, r.config_key, r.val_mae, r.source_trial) for r in _ledger(out, "second")]

    assert rows(again) == rows(out)
    assert {r.source for r in _ledger(again, "second") if r.trial[0] == "w"} == {
        f"{again}/{SOURCE}"
    }


def test_a_source_with_other_training_settings_gives_its_best_first_trained_anew(
    source,
) -> None:
    data, out = source
    before = _ledger(out, SOURCE)
    best = [s.config_key for s in ranked(summarise(before).values())][:2]
    study = _write(
        out.parent,
        "second",
        data,
        warmStart={"studies": [f"out/{SOURCE}"], "configurations": 2},  # relative to the file
        training={**SPEC["training"], "epochs": 5},
    )
    trained = _drive(study, out)
    assert [t.trial.config_key for t in trained[:2]] == best
    assert [t.trial.id for t in trained[:2]] == ["r0000", "r0001"]
    assert len(trained) == 4  # the budget: 2 tried first, 2 sampled
    rows = _ledger(out, "second")
    assert all(r.source is None for r in rows) and len(rows) == 4
    taken = yaml.safe_load((out / "second" / "warmstart.json").read_text())
    assert "other training settings (spec.training.epochs)" in taken["sources"][0]["why"]


def test_a_source_on_other_data_gives_its_best_first(source) -> None:
    data, out = source
    other = data.parent / "other.csv"
    lines = data.read_text().splitlines()
    other.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # one row fewer
    study = load_study(_write(out.parent, "second", other, warmStart={"studies": [SOURCE]}))
    session = StudySession.open(study, StoreRef(kind="local", root=str(out)))
    session.start()
    assert session.engine.warm.results == () and len(session.engine.warm.first) == 4
    assert any("other data (sha256" in n for n in session.notes), session.notes


def _nothing_written(out: Path, name: str) -> bool:
    """No file of the study, not even the run's lock, nor its folder (the README: a refused
    warm start writes nothing)."""
    return not (out / name).exists()


def test_a_source_with_other_labels_is_refused_and_nothing_is_written(source) -> None:
    data, out = source
    raw = _write(out.parent, "second", data, warmStart={"studies": [SOURCE]})
    doc = yaml.safe_load(raw.read_text())
    doc["spec"]["dataset"]["labels"] = ["Id_mA"]
    raw.write_text(yaml.safe_dump(doc))
    session = StudySession.open(load_study(raw), StoreRef(kind="local", root=str(out)))
    with pytest.raises(WarmStartProblem) as err:
        session.start()
    assert f"spec.warmStart.studies: {SOURCE}: {out}/{SOURCE} has labels" in str(err.value)
    assert "chosen for another problem" in str(err.value)
    assert _nothing_written(out, "second")


def test_a_missing_source_is_refused_by_hpo_run_with_exit_2(source) -> None:
    data, out = source
    study = _write(out.parent, "second", data, warmStart={"studies": ["./nowhere"]})
    result = CliRunner().invoke(app, ["run", str(study), "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    assert f"spec.warmStart.studies: {out.parent / 'nowhere'}: no such study folder" in (
        result.output
    )
    assert "nothing was trained or written" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert _nothing_written(out, "second")


def test_hpo_validate_says_what_a_warm_start_would_take(source) -> None:
    data, out = source
    study = _write(out.parent, "second", data, warmStart={"studies": ["out/first"]})
    result = CliRunner().invoke(app, ["validate", str(study)])
    assert result.exit_code == 0, result.output
    assert f"warm start from {out}/first ({out}/first): 4 trainings count" in result.output
    assert _nothing_written(out, "second")


def test_a_warm_start_added_to_a_started_study_is_refused(source) -> None:
    data, out = source
    _drive(_write(out.parent, "second", data), out, stop_after=2)
    later = load_study(_write(out.parent, "second", data, warmStart={"studies": [SOURCE]}))
    session = StudySession.open(later, StoreRef(kind="local", root=str(out)))
    with pytest.raises(WarmStartProblem, match=r"spec.warmStart cannot change while the study"):
        session.start()


# -- the engine's part -------------------------------------------------------------------


def _result(task: Task) -> SeedResult:
    mae = synthetic_mae(task.trial.config, task.seed)
    return task.succeeded("t", mae=mae + 0.5, val_mae=mae)


def _run(engine: Engine) -> list[SeedResult]:
    while not engine.finished:
        for task in engine.next_tasks(1):
            engine.record(_result(task))
    return engine.recorded()


def test_the_engine_plans_around_a_warm_start_and_restarts_the_same() -> None:
    spec = parse_study(
        study_dict(**{**SPEC, "bayesianStage": {"topK": 1, "trialsPerConfig": 3}})
    ).spec
    cold = _run(Engine(spec))
    taken = tuple(
        SeedResult(**{**r.__dict__, "trial": f"w{i:04d}", "source": "earlier"})
        for i, r in enumerate(cold[:2])
    )
    first = (cold[5].config,)
    warm = WarmStart(taken, first)
    full = _run(Engine(spec, warm=warm))
    keys = [r.config_key for r in full if r.source is None]
    assert not {r.config_key for r in taken} & set(keys)  # never sampled, never trained
    assert keys[0] == cold[5].config_key and full[2].trial == "r0000"  # tried first
    assert len({r.trial for r in full if r.trial.startswith("r")}) == 4  # the budget
    for cut in (0, 2, 3, 6, len(full) - 1):
        again = _run(Engine(spec, full[:cut], warm=warm))
        assert [(r.trial, r.config_key) for r in again] == [(r.trial, r.config_key) for r in full]


def test_a_taken_configuration_gets_only_the_seeds_its_source_lacks() -> None:
    training = {**SPEC["training"], "seedsPerConfig": 2}
    spec = parse_study(study_dict(**{**SPEC, "training": training})).spec
    one_seed = parse_study(study_dict(**SPEC)).spec
    taken = tuple(
        SeedResult(**{**r.__dict__, "trial": f"w{i:04d}", "source": "earlier"})
        for i, r in enumerate(_run(Engine(one_seed))[:2])
    )
    full = _run(Engine(spec, warm=WarmStart(taken)))
    trained = [r.key for r in full if r.source is None]
    assert ("w0000", 2) in trained and ("w0001", 2) in trained
    assert ("w0000", 1) not in trained and ("w0001", 1) not in trained


# -- review fixes: a moved project folder, a cluster's sources, a damaged record, overlaps ----


@pytest.mark.parametrize("older_record", [False, True])
def test_a_warm_started_study_resumes_after_its_project_folder_moved(
    source, tmp_path: Path, older_record: bool
) -> None:
    """``older_record``: a warmstart.json written before the entries as written were."""
    data, out = source
    spec = {
        "warmStart": {"studies": ["out/first"]},  # relative to the study file
        "bayesianStage": {"enabled": True, "topK": 1, "trialsPerConfig": 2},
    }
    project, reference = tmp_path / "project", tmp_path / "reference"
    for folder in (project, reference):
        shutil.copytree(out, folder / "out")
        shutil.copyfile(data, folder / "data.csv")
        _write(folder, "second", Path("data.csv"), **spec)  # the data relative, too
    whole = [t.id for t in _drive(reference / "second.yaml", reference / "out")]
    first = _drive(project / "second.yaml", project / "out", stop_after=2)
    record = project / "out" / "second" / "warmstart.json"
    if older_record:
        raw = json.loads(record.read_text())
        del raw["written"]
        record.write_text(json.dumps(raw))
    moved = tmp_path / "moved"
    shutil.move(project, moved)  # a re-cloned or renamed project folder
    shutil.rmtree(moved / "out" / "second" / "trials" / "w0000")  # a copy lost in the move
    rest = _drive(moved / "second.yaml", moved / "out")  # no "spec.warmStart cannot change"
    assert [t.id for t in first + rest] == whole
    rows = [
        (r.key, r.config_key, r.val_mae, r.source_trial) for r in _ledger(moved / "out", "second")
    ]
    assert rows == [
        (r.key, r.config_key, r.val_mae, r.source_trial)
        for r in _ledger(reference / "out", "second")
    ]
    # A copy the move lost is made again from the source where it is now.
    assert (moved / "out" / "second" / "trials" / "w0000" / "seed-1" / "model.keras").is_file()
    taken = json.loads((moved / "out" / "second" / "warmstart.json").read_text())
    assert taken.get("written") == (None if older_record else ["out/first"])


def test_another_source_for_a_started_study_is_still_refused(source) -> None:
    """Compared as written, a change of source is still one (not only an added warm start)."""
    data, out = source
    study = _write(out.parent, "second", data, warmStart={"studies": ["out/first"]})
    _drive(study, out, stop_after=1)
    later = load_study(_write(out.parent, "second", data, warmStart={"studies": ["out/other"]}))
    session = StudySession.open(later, StoreRef(kind="local", root=str(out)))
    with pytest.raises(WarmStartProblem, match=r"spec.warmStart cannot change while the study"):
        session.start(refuse_spec_changes=True)


def test_the_operator_refuses_a_folder_as_a_source(source) -> None:
    data, out = source
    study = load_study(
        _write(out.parent, "second", data, warmStart={"studies": [str(out / SOURCE)]})
    )
    assert (out / SOURCE).is_dir()  # a folder there, yet not one to read on a cluster
    session = StudySession.open(study, StoreRef(kind="local", root=str(out)), folders=False)
    with pytest.raises(WarmStartProblem) as err:
        session.start()
    assert f"spec.warmStart.studies: {out / SOURCE}: a folder cannot be a source on a cluster" in (
        str(err.value)
    )
    assert "s3://bucket/prefix/NAME" in str(err.value)
    assert _nothing_written(out, "second")
    # A bare name (this study's store) is still a source there.
    named = load_study(_write(out.parent, "second", data, warmStart={"studies": [SOURCE]}))
    session = StudySession.open(named, StoreRef(kind="local", root=str(out)), folders=False)
    session.start()
    assert len(session.engine.warm.results) == 4


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "Expecting property name"),
        ('{"studies": ["first"]}', "no 'sources'"),
        ('{"studies": "first", "sources": [], "results": [], "first": []}', "lists of text"),
        (
            '{"studies": [], "sources": [], "results": [{"trial": 1}], "first": []}',
            "'results' holds",
        ),
        ("[]", "a JSON object was expected"),
    ],
)
def test_a_damaged_warmstart_json_is_refused_by_hpo_run_with_exit_2(
    source, content: str, says: str
) -> None:
    data, out = source
    study = _write(out.parent, "second", data, warmStart={"studies": [SOURCE]})
    _drive(study, out, stop_after=1)
    record = out / "second" / "warmstart.json"
    record.write_text(content)
    result = CliRunner().invoke(app, ["run", str(study), "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = " ".join(result.output.split())
    assert f"{record} is damaged" in text and says in text, text
    assert "Restore it" in text and "start a new study" in text


def test_configurations_another_source_counts_are_not_tried_first(source) -> None:
    data, out = source
    other = data.parent / "other.csv"
    lines = data.read_text().splitlines()
    other.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # one row fewer
    # The same sampling seed: its first 4 configurations are the source's, 2 more are not.
    _drive(_write(out.parent, "wider", other, randomStage={"configurations": 6, "seed": 0}), out)
    counted = {r.config_key for r in _ledger(out, SOURCE)}
    wider = ranked(summarise(_ledger(out, "wider")).values())
    new = [s.config_key for s in wider if s.config_key not in counted]
    assert len(new) == 2 and any(s.config_key in counted for s in wider[:2])
    study = load_study(
        _write(
            out.parent,
            "second",
            data,
            warmStart={"studies": ["wider", SOURCE], "configurations": 2},
        )
    )
    session = StudySession.open(study, StoreRef(kind="local", root=str(out)))
    session.start()
    assert session.warm_start is not None
    assert session.warm_start.sources[0]["tried_first"] == new
    assert [config_key(c) for c in session.engine.warm.first] == new
    assert [t.trial.config_key for t in session.take(2)] == new  # the first trained
    assert "its 2 best configurations tried first" in describe(session.warm_start)[0]


@pytest.mark.parametrize("why", ["itself", "corrupt ledger"])
def test_a_refused_warm_start_leaves_no_folder_nor_lock(source, tmp_path: Path, why: str) -> None:
    data, out = source
    if why == "corrupt ledger":
        (out / SOURCE / "ledger.xlsx").write_bytes(b"not a workbook")
        entry, says = SOURCE, "cannot be read"
    else:
        entry, says = "second", "is this study itself"
    fresh = tmp_path / "fresh" / "runs"  # not there yet: the run would create both folders
    for place in (out, fresh):
        if place == fresh:
            shutil.copytree(out / SOURCE, fresh.parent / SOURCE)
            entry = str(fresh.parent / SOURCE) if why == "corrupt ledger" else entry
        study = _write(out.parent, "second", data, warmStart={"studies": [entry]})
        result = CliRunner().invoke(app, ["run", str(study), "--out", str(place), "--quiet"])
        assert result.exit_code == 2, result.output
        assert says in " ".join(result.output.split()), result.output
        assert "nothing was trained or written" in result.output
        assert _nothing_written(place, "second")
    assert not fresh.exists()  # nor the --out folder it would have made


def test_a_warm_start_from_a_running_study_says_so(source) -> None:
    data, out = source
    running = _write(out.parent, "running", data)
    _drive(running, out, stop_after=2)  # its runner is still "there": a recent heartbeat
    study = _write(out.parent, "second", data, warmStart={"studies": ["out/running", "out/first"]})
    result = CliRunner().invoke(app, ["validate", str(study)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "2 trainings count" in text and "it is running now (2 successful trainings" in text
    session = StudySession.open(load_study(study), StoreRef(kind="local", root=str(out)))
    session.start()
    said = [n for n in session.notes if "running: it is running now (its status: " in n]
    assert said and "takes the 2 successful trainings recorded so far" in said[0], session.notes
    record = json.loads((out / "second" / "warmstart.json").read_text())
    live, done = record["sources"]
    assert live["source_live"] is True and live["source_trainings"] == 2
    assert live["source_planned"] == 4
    assert done["source_live"] is False and "source_trainings" not in done


NARROW = {
    "enabled": True,
    "topK": 1,
    "trialsPerConfig": 3,
    "neuronsRadius": 8,
    "neuronsStep": 4,  # widths between the random stage's grid points (step 8)
}


def test_a_warm_start_from_an_identical_study_takes_its_narrow_stage_too(source) -> None:
    data, out = source
    _drive(_write(out.parent, "narrowed", data, bayesianStage=NARROW), out)
    before = _ledger(out, "narrowed")
    off_grid = [r for r in before if any(n % 8 for n in r.config["neurons"])]
    assert off_grid  # the narrow stage refined between the grid's points
    study = _write(
        out.parent, "second", data, bayesianStage=NARROW, warmStart={"studies": ["out/narrowed"]}
    )
    result = CliRunner().invoke(app, ["validate", str(study)])
    assert result.exit_code == 0, result.output
    assert f"{len(before)} trainings count, none trained again" in result.output
    assert "left out" not in result.output
    session = StudySession.open(load_study(study), StoreRef(kind="local", root=str(out)))
    session.start()
    taken = {(r.source_trial, r.seed) for r in session.engine.warm.results}
    assert taken == {(r.trial, r.seed) for r in before}  # the narrow stage's and best's too


def test_a_warm_start_names_what_it_leaves_out_and_why(source) -> None:
    data, out = source
    before = _ledger(out, SOURCE)
    wide = [r for r in before if max(r.config["neurons"]) > 16]
    assert wide and len(wide) < len(before)
    space = {**SPEC["searchSpace"], "neurons": {"min": 8, "max": 16, "step": 8}}
    study = _write(
        out.parent, "second", data, searchSpace=space, warmStart={"studies": ["out/first"]}
    )
    result = CliRunner().invoke(app, ["validate", str(study)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    n = len(wide)
    assert f"{len(before) - n} trainings count" in text
    assert f"{n} training{'s' if n > 1 else ''} left out (" in text
    assert "neurons 24 outside 8..16" in text or "neurons 32 outside 8..16" in text


def test_a_configuration_of_several_widths_is_outside_a_shared_width_space() -> None:
    """Before: a warm start took neurons [112, 128] into a ``sharedWidth`` space (the
    search's own ``contains`` said no)."""
    space = parse_study(
        study_dict(
            searchSpace={**SMALL_SPACE, "sharedWidth": True, "neurons": {"min": 16, "max": 128}}
        )
    ).spec.search_space
    config = {
        "neurons": [112, 128],
        "activation": "relu",
        "learning_rate": 0.01,
        "batch_size": 64,
        "optimizer": "adam",
    }
    assert outside_space(space, config) == (
        "neurons 112-128 differ but searchSpace.sharedWidth is on"
    )
    assert not contains(space, config)
    assert outside_space(space, {**config, "neurons": [128, 128]}) is None
