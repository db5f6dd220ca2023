"""What `hpo run` checks before it resumes a local study: the same data, the same
training settings, its output writable. No training runs: the study's records are
made by the real session with synthetic scores (``helpers.synthetic``), then the
real `hpo` command is run on them in a subprocess.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.study import EXAMPLE_CSV, study_dict
from helpers.synthetic import synthetic_mae
from hpo.data.checks import check_dataset
from hpo.data.dataset import DatasetError, localise
from hpo.session import StudySession
from hpo.store import LocalStore, OutputUnwritable, StoreRef
from hpo.study.spec import load_study

HPO = [sys.executable, "-m", "hpo.cli"]
NAME = "resumed"


def _write_study(folder: Path, dataset: Path, **changes: Any) -> Path:
    spec: dict[str, Any] = {
        "training": {"epochs": 3, "patience": 2, "seedsPerConfig": 1, "seedRacing": False},
        "randomStage": {"configurations": 3},
        "bayesianStage": {"enabled": False},
        "parallelism": 2,
        "result": {"size": 2},
    }
    spec.update(changes)
    raw = study_dict(**spec)
    raw["metadata"]["name"] = NAME
    raw["spec"]["dataset"]["path"] = str(dataset)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _record_whole_study(study_file: Path, out: Path) -> None:
    """Every training of the study recorded, as `hpo run` would leave it (ledger too)."""
    study = load_study(study_file)
    session = StudySession.open(study, StoreRef(kind="local", root=str(out)))
    session.start(refuse_spec_changes=True)
    while not session.engine.finished:
        for task in session.take(4):
            mae = synthetic_mae(task.trial.config, task.seed)
            session.record(
                [
                    task.succeeded(
                        study.name,
                        mae=mae,
                        val_mae=mae,
                        per_label={
                            lb: {"mae": mae, "pct": mae} for lb in study.spec.dataset.labels
                        },
                    )
                ]
            )
    session.finish()


@pytest.fixture(scope="module")
def recorded_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recorded")
    data = folder / "data.csv"
    shutil.copyfile(EXAMPLE_CSV, data)
    _record_whole_study(_write_study(folder, data), folder / "out")
    return folder


@pytest.fixture
def recorded(recorded_once: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(study file, its dataset (ours to edit), run folder) of a finished study: a copy of
    one recorded once, whose dataset moved with it (the same bytes: the same data)."""
    shutil.copytree(recorded_once / "out", tmp_path / "out")
    data = tmp_path / "data.csv"
    shutil.copyfile(recorded_once / "data.csv", data)
    return _write_study(tmp_path, data), data, tmp_path / "out"


def _hpo_run(study: Path, out: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HPO, "run", str(study), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "HPO_CACHE": str(out.parent / "cache")},
        timeout=300,
        **kw,
    )


def _state(out: Path) -> dict[str, bytes]:
    """Every file the study has (what a refused run must leave as it was)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted((out / NAME).rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_an_unchanged_study_resumes_without_training(recorded) -> None:
    study, _, out = recorded
    proc = _hpo_run(study, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 trainings (0 failed)" in proc.stdout


def test_a_dataset_edited_between_runs_is_refused(recorded) -> None:
    study, data, out = recorded
    before = _state(out)
    lines = data.read_text().splitlines()
    lines[1] = lines[2]  # one row edited; the same size and columns
    data.write_text("\n".join(lines) + "\n")
    proc = _hpo_run(study, out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the data changed since this study started" in proc.stderr
    assert str(data) in proc.stderr and "sha256" in proc.stderr
    assert "restore the file, or start a new study (another metadata.name)" in proc.stderr
    assert _state(out) == before  # study.yaml, ledger, fingerprint: nothing rewritten


def test_a_dataset_pointed_elsewhere_is_refused_and_the_same_bytes_elsewhere_are_not(
    recorded, tmp_path: Path
) -> None:
    _, data, out = recorded
    other = tmp_path / "elsewhere" / "other.csv"
    other.parent.mkdir()
    rows = data.read_text().splitlines()
    other.write_text("\n".join(rows[: len(rows) // 2]) + "\n")  # other data
    moved = _write_study(tmp_path / "elsewhere", other)
    proc = _hpo_run(moved, out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"(now {other})" in proc.stderr
    shutil.copyfile(data, other)  # the very same bytes, in another folder: the same data
    proc = _hpo_run(moved, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_changed_training_settings_are_refused_with_the_operators_wording(recorded) -> None:
    study, data, out = recorded
    before = _state(out)
    changed = _write_study(
        study.parent,
        data,
        training={"epochs": 5, "patience": 2, "seedsPerConfig": 1, "seedRacing": False},
    )
    proc = _hpo_run(changed, out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "spec.training.epochs cannot change while the study runs" in proc.stderr
    assert "3 then, 5 now" in proc.stderr
    assert _state(out) == before


def test_changes_the_operator_allows_are_accepted(recorded) -> None:
    study, data, out = recorded
    changed = _write_study(study.parent, data, parallelism=1, result={"size": 1})
    proc = _hpo_run(changed, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = yaml.safe_load((out / NAME / "study.yaml").read_text())
    assert saved["spec"]["parallelism"] == 1 and saved["spec"]["result"]["size"] == 1


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, 8 * 1024))


def test_an_unwritable_ledger_stops_the_run_with_its_path_and_it_resumes(recorded) -> None:
    # A real refusal by the kernel: RLIMIT_FSIZE makes a write past 8 KB fail with EFBIG
    # (the ledger is bigger), as ENOSPC would on a full disk, without filling one.
    study, _, out = recorded
    proc = _hpo_run(study, out, preexec_fn=_limit_file_size)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot write {out / NAME / 'ledger.xlsx'}" in proc.stderr
    assert "File too large" in proc.stderr and "Traceback" not in proc.stderr
    assert "run the same command again to resume" in proc.stderr
    again = _hpo_run(study, out)
    assert again.returncode == 0, again.stdout + again.stderr


def test_the_run_folder_holds_the_study_only(recorded) -> None:
    study, _, out = recorded
    assert _hpo_run(study, out).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == [NAME]  # no .cache, no .locks


def test_the_trainer_refuses_data_other_than_its_requests(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    shutil.copyfile(EXAMPLE_CSV, data)
    study = load_study(_write_study(tmp_path, data))
    ref = check_dataset(study).dataset  # what every training request of the study carries
    assert localise(ref, None).etag == ref.etag
    stat = data.stat()
    text = data.read_text()
    data.write_text(text.replace("\n1", "\n2", 1))  # same size
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime (cp -p)
    with pytest.raises(DatasetError, match="changed since the study started"):
        localise(ref, None)


def test_the_local_store_names_the_path_the_disk_refused(tmp_path: Path) -> None:
    # /dev/full answers every write with ENOSPC: a real full device.
    store = LocalStore(tmp_path / "store")
    store.put_bytes("s/a.txt", b"x")
    with pytest.raises(OutputUnwritable) as caught:
        store.get_file("s/a.txt", Path("/dev/full"))
    assert caught.value.errno == errno.ENOSPC and "/dev/full" in str(caught.value)
    assert "No space left on device" in str(caught.value)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["s"]  # no .locks


def test_only_the_places_refusals_stop_a_run_other_save_errors_fail_the_training() -> None:
    """A full disk stops the run (resumable); an I/O error saving one model is that
    training's failure, or every resume would stop on the same configuration."""
    import errno

    from hpo_trainer.train import _os_error

    def wrapped(code: int) -> Exception:
        try:
            try:
                raise OSError(code, os.strerror(code), "/out/model.keras")
            except OSError as inner:
                raise RuntimeError("Keras could not save") from inner
        except RuntimeError as outer:
            return outer

    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        found = _os_error(wrapped(code))
        assert found is not None and found.errno == code
    assert _os_error(wrapped(errno.EIO)) is None
    assert _os_error(ValueError("not a file system error")) is None
