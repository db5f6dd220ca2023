"""The command line as people meet it: messages and exit codes, a damaged ledger, the
browsing commands (report, ls, get), the help and the start-up cost.

Studies here are made of recorded results (a ledger, ``scores.json`` files) written
with the product's own writers: no training runs.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from helpers.study import LABELS, REPO, study_dict
from hpo.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_STUDY_FAILED, app
from hpo.records.ledger import read_ledger, write_ledger
from hpo.store import LocalStore
from hpo.study.contract import SeedResult
from hpo.study.layout import StudyPaths
from hpo.study.spec import parse_study

HPO = [sys.executable, "-c", "from hpo.cli import main; main()"]


def _text(result: Any) -> str:
    """The output on one line: rich folds long lines."""
    return " ".join(result.output.split())


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


# -- a finished study, from recorded results -------------------------------------------


def _study_raw(**storage: Any) -> dict[str, Any]:
    """Two random configurations of two seeds each, no narrow stage."""
    raw = study_dict(
        randomStage={"configurations": 2},
        bayesianStage={"enabled": False},
        training={"epochs": 2, "seedsPerConfig": 2, "seedRacing": False},
    )
    if storage:
        raw["spec"]["storage"] = storage
    return raw


def _result(trial: str, seed: int, config: dict[str, Any], mae: float) -> SeedResult:
    from hpo.study.space import config_key

    stage = "bayesian" if trial.startswith("b") else "random"
    return SeedResult(
        study="t",
        trial=trial,
        stage=stage,  # type: ignore[arg-type]
        parent=None if stage == "random" else "r0001",
        config=config,
        config_key=config_key(config),
        seed=seed,
        status="succeeded",
        mae=mae,
        val_mae=mae + 0.01,
        per_label={label: {"mae": mae, "pct": 10 * mae} for label in LABELS},
        runtime_s=1.5,
        epochs_run=2,
        finished_at=1_767_225_600.0 + 60 * seed + (100 if stage == "bayesian" else 0),
    )


def _planned() -> list[dict[str, Any]]:
    """The study's own random configurations (a resumed study checks them)."""
    from hpo.study.space import sample_unique

    spec = parse_study(_study_raw()).spec
    return sample_unique(spec.search_space, 2, spec.random_stage.seed).configs


RESULTS = [
    _result(trial, seed, config, mae + 0.02 * (seed - 1))
    for (trial, config, mae) in zip(("r0000", "r0001"), _planned(), (0.5, 0.4), strict=True)
    for seed in (1, 2)
]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """``runs/t``: study.yaml, ledger.xlsx and each success's scores.json."""
    study = parse_study(_study_raw())
    folder = tmp_path / "runs"
    store = LocalStore(folder)
    paths = StudyPaths("t")
    store.put_bytes(paths.study, yaml.safe_dump(study.as_resource()).encode())
    write_ledger(store, paths.ledger, RESULTS, list(LABELS), None, study.as_resource())
    for r in RESULTS:
        store.put_bytes(paths.scores(r.trial, r.seed), r.to_json().encode())
    return folder


def _study_file(tmp_path: Path, raw: dict[str, Any], name: str = "study.yaml") -> Path:
    f = tmp_path / name
    f.write_text(yaml.safe_dump(raw))
    return f


# -- item 1: a damaged ledger -------------------------------------------------------------


def _truncate(ledger: Path) -> bytes:
    data = ledger.read_bytes()[:2000]
    ledger.write_bytes(data)
    return data


def test_run_names_an_unreadable_ledger_and_offers_to_rebuild_it(
    runs: Path, tmp_path: Path
) -> None:
    ledger = runs / "t" / "ledger.xlsx"
    damaged = _truncate(ledger)
    result = _invoke("run", str(_study_file(tmp_path, _study_raw())), "--out", str(runs), "-q")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    text = _text(result)
    assert f"the ledger {ledger} cannot be read (BadZipFile" in text
    assert "--rebuild-ledger" in text and "scores.json" in text
    assert ledger.read_bytes() == damaged, "the damaged ledger was touched"


def test_rebuild_ledger_keeps_the_damaged_file_and_rebuilds_from_scores(
    runs: Path, tmp_path: Path
) -> None:
    ledger = runs / "t" / "ledger.xlsx"
    damaged = _truncate(ledger)
    f = _study_file(tmp_path, _study_raw())
    result = _invoke("run", str(f), "--out", str(runs), "-q", "--rebuild-ledger")
    assert result.exit_code == EXIT_OK, result.output
    kept = list((runs / "t").glob("ledger.xlsx.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    assert kept[0].name in _text(result)
    rebuilt = read_ledger(LocalStore(runs), "t/ledger.xlsx")
    assert sorted(r.key for r in rebuilt) == sorted(r.key for r in RESULTS)


def test_rebuild_ledger_leaves_a_study_another_run_holds_alone(runs: Path, tmp_path: Path) -> None:
    """The damaged ledger is set aside only once the study is this run's: under another
    run's feet it would pull the ledger from that run."""
    from hpo.local.lock import study_lock

    ledger = runs / "t" / "ledger.xlsx"
    damaged = _truncate(ledger)
    f = _study_file(tmp_path, _study_raw())
    with study_lock(runs / "t"):
        result = _invoke("run", str(f), "--out", str(runs), "-q", "--rebuild-ledger")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "is being run by another `hpo run`" in _text(result), _text(result)
    assert ledger.read_bytes() == damaged
    assert not list((runs / "t").glob("ledger.xlsx.corrupt-*"))


def test_report_reads_the_results_when_the_ledger_is_unreadable_or_gone(runs: Path) -> None:
    ledger = runs / "t" / "ledger.xlsx"
    _truncate(ledger)
    result = _invoke("report", str(runs / "t"))
    assert result.exit_code == EXIT_OK, result.output
    text = _text(result)
    assert "cannot be read" in text and "4 scores.json files" in text
    assert "4 trainings succeeded" in text
    ledger.unlink()
    result = _invoke("report", str(runs / "t"))
    assert result.exit_code == EXIT_OK, result.output
    assert "no ledger.xlsx yet" in _text(result) and "hpo run" in _text(result)


# -- item 2: tracebacks where a message belongs -------------------------------------------


def test_run_out_that_is_a_file_or_under_one(runs: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    f = _study_file(tmp_path, _study_raw())
    for out, says in ((a_file, "is a file, not a folder"), (a_file / "sub", "cannot be used")):
        result = _invoke("run", str(f), "--out", str(out))
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert f"error: --out: {out}: {says}" in _text(result)
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_get_to_a_file(runs: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    result = _invoke("get", str(runs / "t"), "--to", str(a_file))
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert f"--to {a_file}: is a file" in _text(result)
    assert a_file.read_text() == "x"


def test_ls_and_report_on_a_file_or_a_missing_path(runs: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for command in ("ls", "report"):
        result = _invoke(command, str(a_file))
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert f"{a_file}: is a file" in _text(result)
        missing = tmp_path / "nowhere" / "t"
        result = _invoke(command, str(missing))
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert f"error: {missing}: no such" in _text(result)  # the path, not its parent


def test_get_an_unknown_trial_or_seed_says_so(runs: Path, tmp_path: Path) -> None:
    base = ["get", str(runs / "t"), "--to", str(tmp_path / "down"), "--what", "model"]
    result = _invoke(*base, "--trial", "b0099", "--seed", "1")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "trial 'b0099' does not exist (trials: r0000, r0001)" in _text(result)
    result = _invoke(*base, "--trial", "r0000", "--seed", "7")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "trial r0000 has no seed 7 stored (seeds: 1, 2)" in _text(result)


def test_dataset_that_is_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.csv").symlink_to(tmp_path / "b.csv")
    (tmp_path / "b.csv").symlink_to(tmp_path / "a.csv")
    for path in ("a.csv", str(tmp_path / "a.csv")):  # relative to the file, and absolute
        raw = _study_raw()
        raw["spec"]["dataset"]["path"] = path
        f = _study_file(tmp_path, raw)
        result = _invoke("validate", str(f))
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert "symbolic link" in _text(result) and "a.csv" in _text(result)


def test_study_file_that_is_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "study.yaml"
    f.write_bytes(yaml.safe_dump(_study_raw()).replace("name: t", "name: t\xe9").encode("latin-1"))
    for command in ("validate", "run"):
        result = _invoke(command, str(f))
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert f"error: {f}: not UTF-8 text (byte 0xe9" in _text(result)


def test_report_on_a_study_whose_study_yaml_is_not_yaml(runs: Path) -> None:
    (runs / "t" / "study.yaml").write_text("spec: [unclosed\n")
    result = _invoke("report", str(runs / "t"))
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert f"{runs / 't'}/study.yaml: cannot be read" in _text(result)


def test_study_file_that_is_a_folder(tmp_path: Path) -> None:
    result = _invoke("validate", str(tmp_path))
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert f"error: {tmp_path}: is a folder, not a study file" in _text(result)


# -- item 3: YAML aliases --------------------------------------------------------------------

BOMB = """\
apiVersion: hpo-operator.dev/v1alpha1
kind: HPOStudy
metadata: {name: bomb}
spec:
  dataset: {path: DATASET, labels: [Id_mA]}
  trainer:
    affinity:
      a: &a [x, x, x, x, x, x, x, x, x, x]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
      h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
      i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def _bomb(tmp_path: Path) -> Path:
    f = tmp_path / "bomb.yaml"
    f.write_text(BOMB.replace("DATASET", str(REPO / "examples" / "data" / "transistor.csv")))
    return f


def test_validate_refuses_an_alias_bomb(tmp_path: Path) -> None:
    """The shared references cost nothing to parse, so this is safe before the fix too."""
    result = _invoke("validate", str(_bomb(tmp_path)))
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "expands to more than 100,000 nodes through its aliases" in _text(result)


def _limited() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def test_run_refuses_an_alias_bomb_with_bounded_memory(tmp_path: Path) -> None:
    """``hpo run`` in a child with 3 GB of address space and a timeout: before the fix
    it expanded the bomb (10^9 nodes) and died of it."""
    f = _bomb(tmp_path)
    proc = subprocess.run(
        [*HPO, "run", str(f), "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limited,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr[-2000:]
    assert "expands to more than 100,000 nodes" in " ".join(proc.stderr.split())
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_benign_anchors_still_load(tmp_path: Path) -> None:
    raw = yaml.safe_dump(_study_raw())
    text = raw.replace("spec:\n", "x-common: &labels [Id_mA]\nspec:\n", 1)
    f = tmp_path / "anchors.yaml"
    f.write_text(text)
    from hpo.study.spec import load_study

    assert load_study(f).name == "t"


# -- item 5: validate an s3:// dataset with the study's store --------------------------------

EXAMPLE = REPO / "manifests" / "example-study.yaml"


def test_validate_the_shipped_cluster_study_spec_only() -> None:
    """No network: the spec part of the shipped example (an s3:// dataset, storage s3)."""
    result = _invoke("validate", str(EXAMPLE), "--spec-only")
    assert result.exit_code == EXIT_OK, result.output
    assert "quickstart: spec valid (dataset not checked)" in _text(result)


def test_validate_the_shipped_cluster_study_uses_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dataset is read from the study's own endpoint: one that does not answer is
    named, with the way to check the spec alone (and not "needs storage.type s3")."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["spec"]["storage"]["endpoint"] = "127.0.0.1:9"  # discard port: nothing listens
    f = _study_file(tmp_path, raw)
    monkeypatch.setenv("HPO_S3_ACCESS_KEY", "a")
    monkeypatch.setenv("HPO_S3_SECRET_KEY", "b")
    monkeypatch.setenv("HPO_S3_RETRIES", "0")
    monkeypatch.setenv("HPO_S3_TIMEOUT", "2")
    result = _invoke("validate", str(f))
    text = _text(result)
    assert result.exit_code == EXIT_STUDY_FAILED, result.output
    assert "needs storage.type s3" not in text
    assert "spec.dataset.path: dataset s3://datasets/transistor.csv" in text
    assert "127.0.0.1:9" in text and "--spec-only" in text


# -- item 6: the browsing commands take the store from a study file --------------------------


def test_report_ls_get_take_the_store_from_the_study_file(runs: Path, tmp_path: Path) -> None:
    f = _study_file(tmp_path, _study_raw(type="local", path=str(runs)))
    result = _invoke("report", str(f))
    assert result.exit_code == EXIT_OK, result.output
    assert "4 trainings succeeded" in _text(result)
    result = _invoke("ls", str(f))
    assert result.exit_code == EXIT_OK, result.output
    assert "t 4 trainings in progress" in _text(result)
    result = _invoke("get", str(f), "--to", str(tmp_path / "down"), "--what", "ledger")
    assert result.exit_code == EXIT_OK, result.output
    assert (tmp_path / "down" / "t" / "ledger.xlsx").is_file()


# -- item 7: small things in what the commands print -----------------------------------------


def test_version() -> None:
    from importlib.metadata import version

    result = _invoke("--version")
    assert result.exit_code == EXIT_OK, result.output
    assert result.output.strip() == f"hpo {version('hpo-operator')}"


@pytest.mark.parametrize(
    "command",
    [
        "run",
        "validate",
        "report",
        "ls",
        "get",
        "predict",
        "export",
        "compare",
        "dashboard",
        "operator",
        "status",
    ],
)
def test_help_shows_no_python_types_for_options(command: str) -> None:
    """Flags show no ``<bool>``; options show what to give (``--out DIR|s3://...``)."""
    result = _invoke(command, "--help")
    assert result.exit_code == EXIT_OK, result.output
    options = result.output[result.output.index("Options:") :]
    for odd in ("<bool>", "<str>", "<int>", "<float>", "<path>", "list[str]", "{"):
        assert odd not in options, f"{command} --help shows {odd!r}"
    for name in ("{run_dir}", "{study_file}", "[where]", "{study}", "{name}"):  # Python names
        assert name not in result.output, f"{command} --help shows {name!r}"


def test_ls_counts_in_the_singular_and_plural(tmp_path: Path) -> None:
    study = parse_study(_study_raw())
    store = LocalStore(tmp_path / "runs")
    one = RESULTS[1]
    write_ledger(store, "t/ledger.xlsx", [one], list(LABELS), None, study.as_resource())
    store.put_bytes(StudyPaths("t").scores(one.trial, one.seed), one.to_json().encode())
    result = _invoke("ls", str(tmp_path / "runs"))
    assert result.exit_code == EXIT_OK, result.output
    assert "1 training " in result.output and "1 trainings" not in result.output


def test_one_seed_shows_no_spread() -> None:
    from rich.console import Console

    from hpo.cli.run import _best
    from hpo.engine import StudyProgress
    from hpo.records.report import final_group, render_table

    one = StudyProgress("random", 1, 0, 0, 0, 3, "r0001", 0.41, 0.0, best_seeds=1)
    two = StudyProgress("random", 2, 0, 0, 0, 3, "r0000", 0.51, 0.014, best_seeds=2)
    assert "±" not in _best(one) and "0.4100 (1 seed)" in _best(one)
    assert "0.5100 ± 0.0140" in _best(two)
    one_seed = _result("b0000", 1, {**RESULTS[0].config, "batch_size": 64}, 0.3)
    best = final_group([*RESULTS, one_seed], list(LABELS), {}, 3)
    console = Console(width=250, record=True)
    console.print(render_table(best, list(LABELS)))
    lines = {line.split("│")[2].strip(): line for line in console.export_text().splitlines()
             if line.count("│") > 3 and line.split("│")[2].strip()[:1] in "rb"}  # fmt: skip
    assert "±" not in lines["b0000 (b)"]
    assert "±" in lines["r0000 (r)"] and "±" in lines["r0001 (r)"]


def test_each_training_line_names_its_own_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """A random training that ends after the narrow stage began is still 'random'."""
    import io

    from rich.console import Console

    from hpo.cli import run
    from hpo.engine import StudyProgress

    out = io.StringIO()
    monkeypatch.setattr(run, "console", Console(file=out, width=200))  # a log, not a terminal
    progress = StudyProgress("bayesian", 3, 0, 1, 0, 9, "r0001", 0.41, 0.0, best_seeds=1)
    with run._Display(quiet=False) as display:
        display("result", progress, RESULTS[1])
    printed = out.getvalue()
    # The training's selection score (val MAE 0.53), as the best beside it; not its
    # test MAE (0.52), which no decision reads.
    assert "] random r0000 seed 2: val MAE 0.5300" in printed, printed
    assert "0.5200" not in printed
    assert "best val MAE 0.4100 (1 seed)" in printed


def test_notes_print_when_they_arrive_and_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A note comes as an event at the start of a run (before any training line of a
    non-TTY log); the closing lines repeat none of those."""
    import io

    from rich.console import Console

    from hpo.cli import run
    from hpo.engine import StudyProgress

    out = io.StringIO()
    monkeypatch.setattr(run, "console", Console(file=out, width=200))
    progress = StudyProgress("random", 0, 0, 1, 0, 9, None, None, None)
    with run._Display(quiet=False) as display:
        display("start", progress, None)
        display("note: 12 of 1200 dataset rows have missing values", progress, None)
        display("result", progress, RESULTS[1])
    printed = out.getvalue()
    assert printed.index("note: 12 of 1200") < printed.index("r0000 seed 2")
    assert display.noted == {"12 of 1200 dataset rows have missing values"}


# -- item 8: the commands load only what they use ---------------------------------------------

HEAVY = ("pandas", "matplotlib", "tensorflow", "kopf", "pydantic", "sklearn", "skopt")


def _loaded_after(args: list[str], heavy: tuple[str, ...]) -> list[str]:
    code = (
        "import sys, hpo.cli\n"
        f"sys.argv = ['hpo', *{args!r}]\n"
        "try:\n    hpo.cli.main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1].replace("'", '"'))


@pytest.mark.parametrize("args", [[], ["--help"], ["--version"]])
def test_help_loads_no_heavy_library(args: list[str]) -> None:
    assert _loaded_after(args, (*HEAVY, "hpo.study.spec")) == []


@pytest.mark.parametrize(
    "command",
    ["run", "validate", "report", "ls", "get", "predict", "export", "compare", "dashboard"],
)
def test_command_help_loads_no_heavy_library(command: str) -> None:
    """(typer itself loads pydantic to coerce some parameter types: not ours to avoid.)"""
    heavy = tuple(m for m in HEAVY if m != "pydantic")
    assert _loaded_after([command, "--help"], (*heavy, "hpo.study.spec")) == []


def test_validate_loads_no_plotting_training_or_operator_library(tmp_path: Path) -> None:
    f = _study_file(tmp_path, _study_raw())
    assert _loaded_after(["validate", str(f)], ("matplotlib", "tensorflow", "kopf")) == []


def test_report_without_plots_loads_no_plotting_library(runs: Path) -> None:
    assert _loaded_after(["report", str(runs / "t")], ("matplotlib", "tensorflow", "kopf")) == []


def test_ls_shows_a_running_studys_live_status(tmp_path: Path) -> None:
    from hpo.engine import StudyProgress
    from hpo.records.livestatus import StatusWriter

    study = parse_study(_study_raw())
    store = LocalStore(tmp_path / "runs")
    write_ledger(store, "t/ledger.xlsx", [RESULTS[1]], list(LABELS), None, study.as_resource())
    progress = StudyProgress(
        phase="random", done=3, failed=0, running=2, queued=0, total=8,
        best_trial=None, best_mae=None, best_std=None,
    )  # fmt: skip
    writer = StatusWriter(store, StudyPaths("t").status, "t", "local", every_s=0.0)
    writer.update(progress)
    result = _invoke("ls", str(tmp_path / "runs"))
    assert result.exit_code == EXIT_OK, result.output
    # a local runner has no queue: 0 queued (a cluster's: tests/integration/test_cluster_waiting)
    assert "in progress, 2 running, 0 queued (random; local runner live)" in _text(result)
    writer.update(progress, phase="interrupted")
    assert "in progress (interrupted)" in _text(_invoke("ls", str(tmp_path / "runs")))
    # A study before its first ledger write (only status.json so far) is listed too.
    fresh = StatusWriter(store, StudyPaths("new").status, "new", "local", every_s=0.0)
    fresh.update(progress)
    line = next(x for x in _text(_invoke("ls", str(tmp_path / "runs"))).splitlines() if "new" in x)
    assert "0 trainings" in line and "in progress (no ledger), 2 running" in line
