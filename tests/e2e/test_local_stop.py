"""`hpo run` stopped from outside: SIGTERM, SIGKILL, a second run on the same study, a
full disk; then the study resumes. Real trainings in real worker processes.

One study goes through all of it once per module (``stopped``), in this order:
run A is stopped by SIGTERM; run B is taken down by SIGKILL, after a second run
(X) tried the study while B held it; run D cannot write its output (a file-size
limit: the kernel's EFBIG, a sibling of ENOSPC, without filling a disk); run C
finishes the study. Each test checks one side of it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.study import study_dict
from hpo.records.ledger import read_ledger
from hpo.store import LocalStore

HPO = [sys.executable, "-m", "hpo.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
NAME = "stopped"
#: Enough for A, B and D each to stop mid-study and C to have trainings left to run.
CONFIGS = 4
#: Below a saved model (~24 KB), above everything else a run writes before one.
FILE_LIMIT = 16 * 1024


@dataclass
class Run:
    code: int | None = None
    out: str = ""
    err: str = ""
    seconds: float = 0.0
    pid: int = 0
    #: pids of its workers and multiprocessing helpers, seen while it ran.
    helpers: list[int] = field(default_factory=list)


@dataclass
class Stopped:
    out: Path
    a: Run
    b: Run
    x: Run
    d: Run
    c: Run
    left_after_sigterm: list[int]
    left_after_sigkill: list[int]
    scores_at_kill: dict[Path, int]
    scores_after_kill: dict[Path, int]
    models_before_c: dict[Path, int]
    b_ran_on: bool
    #: status.json after each stop (A: SIGTERM, B: SIGKILL, D: output refused) and at
    #: the end (C).
    statuses: dict[str, dict[str, Any]]


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(c) for c in found.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has stopped running


def _scores(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.glob(f"{NAME}/trials/*/seed-*/scores.json")}


def _start(study: Path, out: Path, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*HPO, "run", str(study), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        **kw,  # type: ignore[call-overload]
    )


def _until_trained(proc: subprocess.Popen[str]) -> list[str]:
    """Read the run's lines until its first training's result (workers are up)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if ": val MAE " in line:
            break
    assert proc.poll() is None, "the run ended before it could be stopped: " + "".join(lines)
    return lines


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _finish(proc: subprocess.Popen[str], run: Run, before: list[str], started: float) -> Run:
    rest, err = proc.communicate(timeout=600)
    run.code, run.out, run.err = proc.returncode, "".join(before) + rest, err
    run.seconds = time.monotonic() - started
    return run


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Stopped:
    folder = tmp_path_factory.mktemp("stopped")
    raw = study_dict(
        searchSpace={
            "hiddenLayers": {"min": 1, "max": 2},
            "neurons": {"min": 8, "max": 32, "step": 8},
            "batchSizes": [32],
        },
        training={"epochs": 3, "patience": 3, "seedsPerConfig": 1, "seedRacing": False},
        randomStage={"configurations": CONFIGS},
        bayesianStage={"enabled": False},
        parallelism=1,  # one TensorFlow worker per run is enough to be orphaned
        result={"size": 2},
    )
    raw["metadata"]["name"] = NAME
    study = folder / "study.yaml"
    study.write_text(yaml.safe_dump(raw))
    out = folder / "out"

    # A: SIGTERM mid-study.
    started, proc = time.monotonic(), _start(study, out)
    lines = _until_trained(proc)
    a = Run(helpers=_children(proc.pid))
    proc.send_signal(signal.SIGTERM)
    a = _finish(proc, a, lines, started)
    left_after_sigterm = _gone_within(a.helpers, 5)
    statuses = {"a": json.loads((out / NAME / "status.json").read_text())}

    # B holds the study; X tries it meanwhile; then B is SIGKILLed mid-training.
    started, proc = time.monotonic(), _start(study, out)
    lock = out / NAME / ".lock"
    while f"pid {proc.pid} " not in (lock.read_text() if lock.exists() else ""):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    second = subprocess.run(
        [*HPO, "run", str(study), "--out", str(out)], capture_output=True, text=True, env=ENV
    )
    x = Run(second.returncode, second.stdout, second.stderr)
    b_ran_on = proc.poll() is None
    lines = _until_trained(proc)
    b = Run(pid=proc.pid, helpers=_children(proc.pid))
    proc.kill()
    proc.wait()  # dead, not just signalled: a worker may still write before this
    scores_at_kill = _scores(out)
    b = _finish(proc, b, lines, started)
    left_after_sigkill = _gone_within(b.helpers, 5)
    statuses["b"] = json.loads((out / NAME / "status.json").read_text())
    time.sleep(2)  # a surviving worker would have finished a training by now
    scores_after_kill = _scores(out)

    # D: no file over 16 KB may be written (a model is bigger): the run's output is refused.
    started, proc = time.monotonic(), _start(study, out, preexec_fn=_limit_file_size)
    d = _finish(proc, Run(), [], started)
    statuses["d"] = json.loads((out / NAME / "status.json").read_text())

    # C: the study finishes.
    models_before_c = {p: p.stat().st_mtime_ns for p in out.glob(f"{NAME}/trials/*/*/model.keras")}
    started, proc = time.monotonic(), _start(study, out)
    c = _finish(proc, Run(), [], started)
    statuses["c"] = json.loads((out / NAME / "status.json").read_text())
    return Stopped(
        out,
        a,
        b,
        x,
        d,
        c,
        left_after_sigterm,
        left_after_sigkill,
        scores_at_kill,
        scores_after_kill,
        models_before_c,
        b_ran_on,
        statuses,
    )


def test_sigterm_stops_like_ctrl_c_with_143(stopped: Stopped) -> None:
    a = stopped.a
    assert a.code == 128 + signal.SIGTERM, a.err
    assert "stopped by SIGTERM; run the same command again to resume" in a.err
    assert "Traceback" not in a.err
    assert a.helpers and stopped.left_after_sigterm == []  # no worker left running
    # the live status says so: stopped, nothing running (SIGKILL leaves "running": it
    # goes stale); the finished run's last word
    assert {k: (s["phase"], s["running"]) for k, s in stopped.statuses.items()} == {
        "a": ("interrupted", 0),
        "b": ("running", stopped.statuses["b"]["running"]),
        "d": ("interrupted", stopped.statuses["d"]["running"]),  # stopped: not stale
        "c": ("succeeded", 0),
    }
    rows = read_ledger(LocalStore(stopped.out), f"{NAME}/ledger.xlsx")
    assert stopped.statuses["c"]["done"] == sum(r.status == "succeeded" for r in rows)


def test_second_run_on_a_held_study_fails_at_once_and_trains_nothing(stopped: Stopped) -> None:
    x = stopped.x
    assert x.code == 2, x.out + x.err
    assert str(stopped.out / NAME) in x.err and "another `hpo run`" in x.err
    assert f"pid {stopped.b.pid} on " in x.err  # who holds it
    assert ": val MAE " not in x.out
    assert stopped.b_ran_on  # X ended while B went on: B was not disturbed


def test_sigkill_leaves_no_worker_and_no_late_result(stopped: Stopped) -> None:
    assert stopped.b.code == -signal.SIGKILL
    assert stopped.b.helpers, "no worker processes were seen"
    assert stopped.left_after_sigkill == []  # workers and resource tracker died with the run
    assert stopped.scores_after_kill == stopped.scores_at_kill  # nothing written after the kill


def test_unwritable_output_stops_the_run_and_is_not_a_failed_training(stopped: Stopped) -> None:
    d = stopped.d
    assert d.code == 2, d.out + d.err
    assert "cannot write" in d.err and "File too large" in d.err
    assert "run the same command again to resume" in d.err
    assert "Traceback" not in d.err and "(will retry)" not in d.out and "FAILED" not in d.out


def test_the_study_resumes_after_each_stop_and_retrains_nothing(stopped: Stopped) -> None:
    c = stopped.c
    assert c.code == 0, c.out + c.err
    rows = read_ledger(LocalStore(stopped.out), f"{NAME}/ledger.xlsx")
    assert len(rows) == CONFIGS and len({r.key for r in rows}) == CONFIGS
    assert all(r.status == "succeeded" for r in rows)  # no stop was charged as a failure
    assert sorted(p.name for p in stopped.out.iterdir()) == [NAME]  # no .cache, no .locks
    recorded = [p.parent / "model.keras" for p in stopped.scores_after_kill]
    assert recorded
    for model in recorded:  # recorded before C (by A and B): not trained again
        assert model.stat().st_mtime_ns == stopped.models_before_c[model], model
