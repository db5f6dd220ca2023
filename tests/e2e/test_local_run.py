"""`hpo run` end to end: real trainings in worker processes, a real run folder.

One small study is run once per module and inspected from several sides; a
second one is interrupted with Ctrl-C and resumed.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers.study import (
    ARTIFACTS,
    GP_NARROW,
    HPO_ENV,
    REPO,
    SMALL_SPACE,
    run_hpo,
    start_hpo,
    study_dict,
    study_file,
)
from hpo.records.ledger import read_ledger
from hpo.store import LocalStore
from hpo.study.contract import DatasetRef
from hpo.study.space import narrow
from hpo.study.spec import load_study, parse_study

SMALL = {
    "searchSpace": SMALL_SPACE,
    # Every seed for every configuration and the Gaussian-process stage: the counts
    # below are exact (the default search has a test of its own).
    "training": {"epochs": 4, "patience": 2, "seedsPerConfig": 2, "seedRacing": False},
    "randomStage": {"configurations": 4},
    "bayesianStage": {**GP_NARROW, "topK": 2},
    "parallelism": 2,
    "result": {"size": 3, "thresholds": {"Id_mA": {"maxPercent": 80}}},
}


def write_study(folder: Path, name: str, **spec: object) -> Path:
    return study_file(folder, name, study_dict(**{**SMALL, **spec}))


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    folder = tmp_path_factory.mktemp("run")
    study = write_study(folder, "small")
    proc = run_hpo("run", str(study), "--out", str(folder / "out"), timeout=600)
    return folder, proc


def test_run_succeeds_and_prints_the_final_group(finished) -> None:
    _, proc = finished
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Final group" in proc.stdout
    assert "stage: narrow" in proc.stdout
    assert "12 trainings (0 failed): 4 random and 2 narrow-stage configurations" in proc.stdout


def test_run_folder_layout(finished) -> None:
    folder, _ = finished
    study_dir = folder / "out" / "small"
    assert (study_dir / "ledger.xlsx").is_file()
    assert (study_dir / "study.yaml").is_file()
    for png in ("mae_vs_hidden_layers.png", "best_seeds_boxplot.png", "convergence.png"):
        data = (study_dir / "plots" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # The study as run is a valid study again, defaults filled in.
    recorded = parse_study(yaml.safe_load((study_dir / "study.yaml").read_text()))
    assert recorded.spec.training.epochs == 4


def test_ledger_rows_are_unique_complete_and_inside_bounds(finished) -> None:
    folder, _ = finished
    store = LocalStore(folder / "out")
    rows = read_ledger(store, "small/ledger.xlsx")
    assert len(rows) == (4 + 2) * 2
    assert all(r.status == "succeeded" for r in rows)
    by_key: dict[str, set[int]] = {}
    for r in rows:
        by_key.setdefault(r.config_key, set()).add(r.seed)
    assert len(by_key) == 6 and all(s == {1, 2} for s in by_key.values())
    trials = {r.trial: r for r in rows}
    spec = parse_study(study_dict(**SMALL)).spec
    for r in rows:
        if r.stage == "bayesian":
            parent = trials[r.parent]
            assert parent.stage == "random"
            assert narrow(parent.config, spec.search_space, spec.narrow_stage).contains(r.config)
        for name in ARTIFACTS:
            assert store.exists(f"{r.artifacts}/{name}"), f"{r.artifacts}/{name}"
        assert json.loads(store.get_bytes(f"{r.artifacts}/seed.json"))["seed"] == r.seed


def test_saved_model_reproduces_its_recorded_mae(finished) -> None:
    from helpers.rescoring import load_and_score

    folder, _ = finished
    store = LocalStore(folder / "out")
    row = next(r for r in read_ledger(store, "small/ledger.xlsx") if r.stage == "bayesian")
    spec = parse_study(study_dict(**SMALL)).spec
    ds = spec.dataset
    ref = DatasetRef(
        path=ds.path, features=[c for c in _columns() if c not in ds.labels], labels=list(ds.labels)
    )
    assert load_and_score(store, row.artifacts, ref) == pytest.approx(row.mae, abs=1e-6)


def _columns() -> list[str]:
    return (REPO / "examples" / "data" / "transistor.csv").read_text().splitlines()[0].split(",")


def test_running_again_retrains_nothing(finished) -> None:
    folder, _ = finished
    study_dir = folder / "out" / "small"
    stamps = {p: p.stat().st_mtime_ns for p in study_dir.glob("trials/*/seed-*/model.keras")}
    proc = run_hpo("run", str(folder / "small.yaml"), "--out", str(folder / "out"), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "12 trainings (0 failed)" in proc.stdout
    assert "seed 1: mae" not in proc.stdout  # no training ran
    assert {
        p: p.stat().st_mtime_ns for p in study_dir.glob("trials/*/seed-*/model.keras")
    } == stamps


def test_report_command_prints_the_final_group(finished) -> None:
    folder, _ = finished
    proc = run_hpo("report", str(folder / "out" / "small"))
    assert proc.returncode == 0, proc.stderr
    assert "Final group" in proc.stdout and "12 trainings succeeded, 0 failed" in proc.stdout


def _as_at_a_terminal() -> None:
    """Ctrl-C reaches a run started at a terminal: SIGINT neither ignored nor blocked,
    whatever the test process inherited (a run once ignored it here, only in the full
    suite)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def _signal_state(pid: int) -> str:
    """The kernel's view of a process's signals (blocked, ignored, caught), for a failure."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as exc:
        return str(exc)
    return " ".join(line for line in status if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(tmp_path: Path) -> None:
    # Two random configurations (four trainings: Ctrl-C comes after three) and one narrow-stage
    # parent, so that the rerun finishes the random stage and runs the narrow one; one
    # worker (TensorFlow imported once per run) is enough to be interrupted.
    study = write_study(
        tmp_path,
        "interrupted",
        randomStage={"configurations": 2},
        bayesianStage={**SMALL["bayesianStage"], "topK": 1},
        parallelism=1,
    )
    out = tmp_path / "out"
    proc = start_hpo("run", str(study), "--out", str(out), preexec_fn=_as_at_a_terminal)
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:  # ends by itself if the run exits early
        if ": val MAE " in line:
            seen += 1
        if seen >= 3:
            break
    assert proc.poll() is None, "the run ended before it could be interrupted"
    state = _signal_state(proc.pid)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, f"{err}\nthe run's signal state at Ctrl-C: {state}"
    assert "run the same command again to resume" in err
    store = LocalStore(out)
    before = read_ledger(store, "interrupted/ledger.xlsx")
    assert len(before) >= 3
    assert all(r.status == "succeeded" for r in before)  # Ctrl-C is not a failure
    stamps = {r.key: (out / r.artifacts / "model.keras").stat().st_mtime_ns for r in before}
    again = run_hpo("run", str(study), "--out", str(out), timeout=600)
    assert again.returncode == 0, again.stderr
    after = read_ledger(store, "interrupted/ledger.xlsx")
    assert len(after) == (2 + 1) * 2
    assert {r.stage for r in after} == {"random", "bayesian"}
    assert len({(r.trial, r.seed) for r in after}) == len(after)
    for key, stamp in stamps.items():  # nothing recorded before Ctrl-C was trained again
        r = next(x for x in after if x.key == key)
        assert (out / r.artifacts / "model.keras").stat().st_mtime_ns == stamp


def test_bad_dataset_column_exits_2_with_the_column_named(tmp_path: Path) -> None:
    raw = study_dict(**SMALL)
    raw["spec"]["dataset"]["labels"] = ["Id_mA", "gm_ms"]
    raw["spec"]["result"]["thresholds"] = {}
    study = tmp_path / "bad.yaml"
    study.write_text(yaml.safe_dump(raw))
    proc = run_hpo("run", str(study), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "gm_ms" in proc.stderr and "did you mean 'gm_mS'" in proc.stderr
    assert not (tmp_path / "out" / "t").exists()  # nothing half-written


def test_bad_spec_exits_2_with_the_field_named(tmp_path: Path) -> None:
    raw = study_dict(searchSpace={"neurons": {"min": 300, "max": 200}})
    study = tmp_path / "bad.yaml"
    study.write_text(yaml.safe_dump(raw))
    proc = run_hpo("run", str(study), cwd=tmp_path)
    assert proc.returncode == 2
    assert "spec.searchSpace.neurons: min (300) must be <= max (200)" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_every_command_has_help() -> None:
    for cmd in ([], ["run"], ["report"], ["validate"]):
        proc = run_hpo(*cmd, "--help")
        assert proc.returncode == 0 and "Usage" in proc.stdout, cmd


def test_changed_search_space_under_the_same_name_is_refused(finished, tmp_path: Path) -> None:
    folder, _ = finished
    changed = write_study(tmp_path, "small", randomStage={"configurations": 4, "seed": 99})
    before = (folder / "out" / "small" / "study.yaml").read_text()
    proc = run_hpo("run", str(changed), "--out", str(folder / "out"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the search space or the sampling seed changed" in proc.stderr
    assert (folder / "out" / "small" / "study.yaml").read_text() == before  # nothing overwritten


def test_a_failing_training_is_retried_then_recorded_with_its_error(tmp_path: Path) -> None:
    # SGD at learning rate 1 with selu diverges on this data: a real failure, not a fake one.
    diverging = {
        "searchSpace": {
            "hiddenLayers": {"min": 2, "max": 2},
            "neurons": {"min": 128, "max": 128, "step": 8},
            "activations": ["selu"],
            "learningRate": {"min": 1.0, "max": 1.0},
            "batchSizes": [16],
            "optimizers": ["sgd"],
        },
        "training": {"epochs": 3, "patience": 2, "seedsPerConfig": 1},
        "randomStage": {"configurations": 2},
        "failurePolicy": {"retries": 1, "maxFailedTrainings": 5},
        "result": {"size": 3},
    }
    study = write_study(tmp_path, "diverges", **diverging)
    proc = run_hpo("run", str(study), "--out", str(tmp_path / "out"), timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the search space holds only 1 unique configurations" in proc.stdout
    assert "(will retry)" in proc.stdout  # the first attempt failed and was retried
    assert "study failed: no configuration of the random stage trained successfully" in proc.stderr
    (row,) = read_ledger(LocalStore(tmp_path / "out"), "diverges/ledger.xlsx")
    assert row.status == "failed" and row.mae is None and row.artifacts is None
    assert "training diverged" in (row.error or "")


def test_a_worker_killed_mid_training_loses_nothing(tmp_path: Path) -> None:
    """The worker dies (``os._exit(137)``, as after SIGKILL) holding a training the run counts
    as running: a crash point, not a kill after reading the output, which under load came
    after that training had ended (nothing was lost then, and the test failed)."""
    study = write_study(
        tmp_path, "killed", randomStage={"configurations": 2}, bayesianStage={"enabled": False}
    )
    seed = load_study(study).spec.seeds[1]
    out = tmp_path / "out"
    env = {**HPO_ENV, "HPO_CRASH_AT": f"local-train:r0001:{seed}:1:1"}  # 1st attempt, once
    proc = run_hpo("run", str(study), "--out", str(out), timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "crash point local-train:r0001" in proc.stderr
    assert "worker process died" in proc.stdout and "(will retry)" in proc.stdout
    rows = read_ledger(LocalStore(out), "killed/ledger.xlsx")
    assert len(rows) == 2 * 2 and all(r.status == "succeeded" for r in rows)
    assert len({r.key for r in rows}) == 4


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_retries_charged_before_a_restart_stay_charged(tmp_path: Path, stop: int) -> None:
    """Under ``budget.trainings`` a retried failure is charged. The run is stopped once a
    retry was charged, then run again: the retry stays charged (one training fewer than
    the budget is trained) and its training goes on with attempt 2. A local run kept no
    failure records, so a restart forgot the retry and overran the budget by one."""
    budget = 4
    study = write_study(
        tmp_path,
        "retried",
        training={"epochs": 2, "patience": 2, "seedsPerConfig": 1, "seedRacing": False},
        randomStage={"configurations": 6},  # more than the budget: the budget ends the study
        bayesianStage={"enabled": False},
        budget={"trainings": budget},
        failurePolicy={"retries": 1, "maxFailedTrainings": 5},
        parallelism=1,
    )
    seed = load_study(study).spec.seeds[0]
    out = tmp_path / "out"
    # The worker that takes the first attempt of the first training dies (as after SIGKILL):
    # a failed attempt, retried. Armed in both runs: were attempt 1 handed out again after
    # the restart, it would fail again.
    env = {**HPO_ENV, "HPO_CRASH_AT": f"local-train:r0000:{seed}:1:1"}
    proc = start_hpo("run", str(study), "--out", str(out), env=env, preexec_fn=_as_at_a_terminal)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # ends by itself if the run exits early
        lines.append(line)
        if "(will retry)" in line:  # the retry is charged
            break
    assert proc.poll() is None, "the run ended before it could be stopped: " + "".join(lines)
    proc.send_signal(stop)
    rest, err = proc.communicate(timeout=600)
    first = "".join(lines) + rest
    assert proc.returncode == (130 if stop == signal.SIGINT else -stop), first + err
    assert "crash point local-train:r0000" in err and first.count("(will retry)") == 1

    again = run_hpo("run", str(study), "--out", str(out), timeout=900, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = read_ledger(LocalStore(out), "retried/ledger.xlsx")
    failed = (first + again.stdout).count(": FAILED (")  # every failed attempt, both runs
    assert len(rows) + failed <= budget, f"{len(rows)} results + {failed} failed attempts"
    assert "crash point" not in again.stderr, "attempt 1 was handed out again"
    assert failed == 1 and len(rows) == budget - 1
    assert all(r.status == "succeeded" for r in rows)
    assert ("r0000", seed) in {r.key for r in rows}  # its attempt 2
    status = json.loads((out / "retried" / "status.json").read_text())
    assert (status["charged"], status["budget"]) == (budget, budget)


def test_a_warm_start_from_the_finished_study_trains_only_its_new_configuration(
    finished, tmp_path: Path
) -> None:
    folder, _ = finished
    source = folder / "out" / "small"
    study = write_study(
        tmp_path,
        "warm",
        randomStage={"configurations": 1},
        bayesianStage={"enabled": False},
        parallelism=1,  # one worker to start: two trainings to run
        warmStart={"studies": [str(source)]},
    )
    out = tmp_path / "out"
    proc = run_hpo("run", str(study), "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert (
        "14 trainings (0 failed, 12 taken from earlier studies): 1 random and 0 narrow-stage "
        "configurations, 6 from earlier studies"
    ) in proc.stdout
    assert proc.stdout.count(": val MAE ") == 2  # the one new configuration's two seeds
    before = read_ledger(LocalStore(folder / "out"), "small/ledger.xlsx")
    rows = read_ledger(LocalStore(out), "warm/ledger.xlsx")
    taken = [r for r in rows if r.source == str(source)]
    assert len(taken) == 12 and all(r.trial.startswith("w") for r in taken)
    assert {(r.config_key, r.seed, r.val_mae) for r in taken} == {
        (r.config_key, r.seed, r.val_mae) for r in before
    }
    assert [r.trial for r in rows if r.source is None] == ["r0000", "r0000"]
    for r in taken:  # the study is self-contained: every taken model is in its folder
        mine = out / "warm" / "trials" / r.trial / f"seed-{r.seed}"
        theirs = source / "trials" / str(r.source_trial) / f"seed-{r.seed}"
        for name in ("model.keras", "feature_scaler.json", "label_scaler.json"):
            assert (mine / name).read_bytes() == (theirs / name).read_bytes()
    report = run_hpo("report", str(out / "warm"))
    assert report.returncode == 0 and "14 trainings succeeded, 0 failed" in report.stdout
