"""`hpo dashboard` in a real headless browser (Debian's chromium + chromium-driver, Selenium).

One dashboard server and one browser for the module, one small real `hpo run`
(8 trainings, 3 epochs) watched while it runs. Numbers on the pages are checked
against the ledger (``hpo.records.ledger.read_ledger``) and best.json, not against the API.
Set ``HPO_DASHBOARD_SCREENSHOT=docs/dashboard.png`` to keep a screenshot of the study page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from helpers.study import HPO, HPO_ENV, SMALL_SPACE, study_dict, study_file
from hpo.records.ledger import read_ledger
from hpo.store import LocalStore
from hpo.study.contract import SeedResult
from support import browser
from support.s3server import free_port

pytestmark = pytest.mark.skipif(browser.available() is not None, reason=str(browser.available()))

SMALL = {
    "searchSpace": SMALL_SPACE,
    "training": {"epochs": 3, "patience": 2, "seedsPerConfig": 2, "seedRacing": False},
    "randomStage": {"configurations": 3},
    "bayesianStage": {"topK": 1, "trialsPerConfig": 1},
    "parallelism": 2,
    "result": {"size": 2, "thresholds": {"Id_mA": {"maxPercent": 80}}},
}
CSS = By.CSS_SELECTOR


def start_dashboard(*args: str, **env: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [*HPO, "dashboard", *args, "--port", str(port), "--refresh", "0.5"],
        env={**HPO_ENV, **env},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        with urllib.request.urlopen(f"{url}/", timeout=5) as r:
            return r.status == 200

    browser.wait_for(up, 300, "the dashboard to answer")
    return proc, url


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An empty run folder with a dashboard on it and a browser; the study starts later."""
    folder = tmp_path_factory.mktemp("dash")
    runs = folder / "runs"
    runs.mkdir()
    study = study_file(folder, "small", study_dict(**SMALL))
    proc, url = start_dashboard(str(runs))
    driver = browser.chromium()
    try:
        yield {"runs": runs, "study": study, "url": url, "driver": driver}
    finally:
        driver.quit()
        stop(proc)


def texts(driver: Any, selector: str) -> list[str]:
    """The texts of what ``selector`` matches, read in one go (the page redraws live)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText ?? e.textContent);",
        selector,
    )


def cell_values(driver: Any, table: str, key: str) -> list[str]:
    """The exact values (``data-value``) of one column of a table, read in one go."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.dataset.value);",
        f"#{table} tbody td[data-key='{key}']",
    )


def ledger(runs: Path, name: str = "small") -> list[SeedResult]:
    return read_ledger(LocalStore(runs), f"{name}/ledger.xlsx")


@pytest.fixture(scope="module")
def watched(dashboard: dict[str, Any]) -> dict[str, Any]:
    """The studies page and the study's page (a second tab; the study does not exist yet)
    open on the empty folder while `hpo run` trains the study: what each showed on the
    way, and whether either reloaded."""
    d, url = dashboard["driver"], dashboard["url"]
    d.get(url + "/")
    empty = browser.wait_for(
        lambda: d.find_element(CSS, "#empty").text, 120, "the no-studies message"
    )
    assert not d.find_element(CSS, "#error").is_displayed()  # an empty folder is no error
    d.execute_script("window.notReloaded = true;")
    listing = d.current_window_handle
    d.switch_to.new_window("tab")
    d.get(url + "/study?id=small")
    missing = browser.wait_for(lambda: d.find_element(CSS, "#error").text, 120, "no such study")
    d.execute_script("window.notReloaded = true;")
    page = d.current_window_handle
    run = subprocess.Popen(
        [*HPO, "run", str(dashboard["study"]), "--out", str(dashboard["runs"])],
        env=HPO_ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    seen: list[tuple[str, str]] = []
    rows_seen: list[int] = []
    live_seen: list[tuple[str, str]] = []  # (running, runner state) on the studies page
    try:
        while not (seen and seen[-1][1] == "Finished" and rows_seen and rows_seen[-1] == 8):
            d.switch_to.window(listing)
            cells = texts(d, "#studies tbody td[data-key='done']")
            phases = texts(d, "#studies tbody td[data-key='phase']")
            if cells and phases and (not seen or seen[-1] != (cells[0], phases[0])):
                seen.append((cells[0], phases[0]))
            live = d.execute_script(
                "const r = document.querySelector('#studies tbody [data-running]');"
                "const l = document.querySelector('#studies tbody [data-live]');"
                "return r && l ? [r.dataset.running, l.dataset.live] : null;"
            )
            if live and (not live_seen or live_seen[-1] != tuple(live)):
                live_seen.append(tuple(live))
            d.switch_to.window(page)
            rows = len(cell_values(d, "trainings", "trial"))
            if not rows_seen or rows_seen[-1] != rows:
                rows_seen.append(rows)
            assert run.poll() in (None, 0), run.stdout.read() if run.stdout else ""
            time.sleep(0.2)
        reloaded = not d.execute_script("return window.notReloaded === true;")
        d.close()
        d.switch_to.window(listing)
        reloaded = reloaded or not d.execute_script("return window.notReloaded === true;")
    finally:
        out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out
    return {
        "empty": empty,
        "missing": missing,
        "seen": seen,
        "rows": rows_seen,
        "reloaded": reloaded,
        "live": live_seen,
    }


def test_the_pages_show_the_run_advancing_without_a_reload(watched, dashboard) -> None:
    assert "no studies under" in watched["empty"]
    assert "no study 'small'" in watched["missing"]
    assert not watched["reloaded"]
    done = [int(text.split("/")[0]) for text, _ in watched["seen"]]
    rows = ledger(dashboard["runs"])
    assert done == sorted(done) and len(set(done)) >= 2, watched["seen"]
    assert done[-1] == len(rows) == 8
    assert watched["seen"][-1] == ("8 / 8", "Finished")
    assert done[0] < 8
    # the study's own page: its table of trainings grew while it was open
    assert watched["rows"] == sorted(watched["rows"]) and len(watched["rows"]) >= 2
    assert watched["rows"][0] < 8 and watched["rows"][-1] == 8
    # running trainings, from the runner's status.json, then finished
    assert any(r.isdigit() and int(r) > 0 and s == "live" for r, s in watched["live"]), watched
    assert watched["live"][-1] == ("0", "finished"), watched["live"]


def test_the_studies_row_matches_the_ledger(watched, dashboard) -> None:
    d = dashboard["driver"]
    rows = ledger(dashboard["runs"])
    by_trial: dict[str, list[float]] = {}
    for r in rows:
        by_trial.setdefault(r.trial, []).append(r.val_mae)
    best = min(sum(v) / len(v) for v in by_trial.values())
    assert float(cell_values(d, "studies", "best_val")[0]) == pytest.approx(best, rel=1e-12)
    assert cell_values(d, "studies", "failed") == ["0"]
    assert cell_values(d, "studies", "stage") == ["done"]


@pytest.fixture(scope="module")
def study_page(watched, dashboard) -> Any:
    d = dashboard["driver"]
    d.get(f"{dashboard['url']}/study?id=small")
    browser.wait_for(lambda: len(d.find_elements(CSS, "#trainings tbody tr")) == 8, 120, "rows")
    browser.wait_for(lambda: d.find_elements(CSS, "#final-table tbody tr"), 120, "final group")
    if os.environ.get("HPO_DASHBOARD_SCREENSHOT"):
        d.set_window_size(1400, 1500)
        browser.wait_for(
            lambda: d.execute_script("return window.hpoTimings.all_drawn_at_ms;"), 60, "charts"
        )
        time.sleep(1)
        d.save_screenshot(os.environ["HPO_DASHBOARD_SCREENSHOT"])
        d.set_window_size(1400, 1000)
    return d


def test_every_training_is_in_the_table_with_the_ledgers_scores(study_page, dashboard) -> None:
    d = study_page
    rows = {(r.trial, r.seed): r for r in ledger(dashboard["runs"])}
    shown = zip(
        cell_values(d, "trainings", "trial"),
        cell_values(d, "trainings", "seed"),
        cell_values(d, "trainings", "val_mae"),
        cell_values(d, "trainings", "test_mae"),
        cell_values(d, "trainings", "Id_mA_mae"),
        strict=True,
    )
    seen = set()
    for trial, seed, val, test, id_mae in shown:
        r = rows[(trial, int(seed))]
        # 15 significant digits (pandas' JSON) of the ledger's doubles
        assert float(val) == pytest.approx(r.val_mae, rel=1e-14)
        assert float(test) == pytest.approx(r.mae, rel=1e-14)
        assert float(id_mae) == pytest.approx(r.per_label["Id_mA"]["mae"], rel=1e-14)
        seen.add((trial, int(seed)))
    assert seen == set(rows)
    assert "8 of 8 trainings" in d.find_element(CSS, "#shown").text


def test_summary_progress_final_group_and_spec_match_the_study(study_page, dashboard) -> None:
    d = study_page
    rows = ledger(dashboard["runs"])
    card = {e.get_attribute("data-key"): e.text for e in d.find_elements(CSS, "#summary .card")}
    assert "8 / 8" in card["done"] and "Finished" in card["phase"]
    counts = {
        e.get_attribute("data-stage"): e.find_element(CSS, ".stage-count").get_attribute(
            "data-done"
        )
        for e in d.find_elements(CSS, "#progress .stage")
    }
    assert counts == {
        "random": str(sum(r.stage == "random" for r in rows)),
        "bayesian": str(sum(r.stage == "bayesian" for r in rows)),
    }
    best = json.loads((dashboard["runs"] / "small" / "best.json").read_text())
    assert cell_values(d, "final-table", "trial") == [b["trial"] for b in best]
    assert [float(v) for v in cell_values(d, "final-table", "val_mae_mean")] == [
        pytest.approx(b["val_mae_mean"], rel=1e-9) for b in best
    ]
    assert [float(v) for v in cell_values(d, "final-table", "Id_mA_pct")] == [
        pytest.approx(b["Id_mA_pct"], rel=1e-9) for b in best
    ]
    marks = [e.text for e in d.find_elements(CSS, "#final-table td[data-key='Id_mA_pct']")]
    assert [m.endswith("✓") for m in marks] == [b["Id_mA_pct"] <= 80 for b in best]
    assert "Id_mA % (≤ 80%)" in d.find_element(CSS, "#final-table thead").text
    assert "no failed trainings" in d.find_element(CSS, "#failures").text
    assert "name: small" in d.find_element(CSS, "#spec").text
    # The charts plot the ledger's numbers: best so far, in the order the trainings finished.
    ys = d.execute_script(
        "const g = document.getElementById('chart-best');"
        "return g.data.find(t => t.name === 'best so far').y;"
    )
    assert ys[-1] == pytest.approx(min(r.val_mae for r in rows), rel=1e-14)
    assert len(ys) == len(rows)
    hand = d.execute_script("return document.getElementById('chart-best').layout.shapes.length;")
    assert hand == 1  # the hand-over line
    seeds = d.execute_script(
        "return document.getElementById('chart-seeds').data.map(t => t.y.length);"
    )
    assert seeds == [b["seeds"] for b in best]


def test_hovering_a_point_shows_its_configuration(study_page, dashboard) -> None:
    d = study_page
    chart = d.find_element(CSS, "#chart-best")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart)
    # Where Plotly drew the worst random point, in pixels from the chart's top-left corner.
    x, y, trial = d.execute_script(
        "const g = arguments[0], t = g.data[0], L = g._fullLayout;"
        "const i = t.y.indexOf(Math.max(...t.y));"
        "const px = L.xaxis.l2p(L.xaxis.d2l(t.x[i])) + L._size.l;"
        "const py = L.yaxis.l2p(L.yaxis.d2l(t.y[i])) + L._size.t;"
        "return [px, py, t.text[i].split(' ')[0]];",
        chart,
    )
    rect = chart.rect
    ActionChains(d).move_to_element_with_offset(
        chart, int(x - rect["width"] / 2), int(y - rect["height"] / 2)
    ).perform()
    hover = browser.wait_for(
        lambda: " ".join(texts(d, "#chart-best .hoverlayer .hovertext")), 10, "a hover label"
    )
    assert trial in hover and "neurons=" in hover and "learning_rate=" in hover


def test_sorting_and_filtering_the_trainings(study_page, dashboard) -> None:
    d = study_page
    header = d.find_element(CSS, "#trainings thead th[data-key='val_mae']")
    header.click()
    values = [float(v) for v in cell_values(d, "trainings", "val_mae")]
    assert values == sorted(values)
    d.find_element(CSS, "#trainings thead th[data-key='val_mae']").click()
    values = [float(v) for v in cell_values(d, "trainings", "val_mae")]
    assert values == sorted(values, reverse=True)
    box = d.find_element(CSS, "#filter")
    box.send_keys("bayesian")
    stages = cell_values(d, "trainings", "stage")
    rows = ledger(dashboard["runs"])
    assert stages == ["bayesian"] * sum(r.stage == "bayesian" for r in rows)
    box.clear()
    box.send_keys("x")  # `clear` sends no input event; one key and a backspace do
    box.send_keys("\b")
    assert len(cell_values(d, "trainings", "stage")) == len(rows)


def test_the_configuration_page(study_page, dashboard) -> None:
    d = study_page
    best = json.loads((dashboard["runs"] / "small" / "best.json").read_text())[0]
    d.find_element(
        CSS, f"#final-table td[data-key='trial'] a[href*='trial={best['trial']}']"
    ).click()
    browser.wait_for(lambda: d.find_elements(CSS, "#seeds tbody tr"), 120, "the seeds")
    rows = [r for r in ledger(dashboard["runs"]) if r.trial == best["trial"]]
    seeds = [int(s) for s in cell_values(d, "seeds", "seed")]
    assert sorted(seeds) == sorted(r.seed for r in rows)
    by_seed = {r.seed: r for r in rows}
    for seed, val, pct in zip(
        seeds,
        cell_values(d, "seeds", "val_mae"),
        cell_values(d, "seeds", "gm_mS_pct"),
        strict=True,
    ):
        assert float(val) == pytest.approx(by_seed[seed].val_mae, rel=1e-14)
        assert float(pct) == pytest.approx(by_seed[seed].per_label["gm_mS"]["pct"], rel=1e-14)
    card = {e.get_attribute("data-key"): e.text for e in d.find_elements(CSS, "#summary .card")}
    assert card["rank"].endswith("1")
    assert f"--trial {best['trial']}" in d.find_element(CSS, "#load-cli").text
    assert f'trial="{best["trial"]}"' in d.find_element(CSS, "#load-api").text
    # the artifacts wrap in their column: the table stays within the page
    width = d.execute_script("return document.documentElement.clientWidth;")
    cells = d.find_elements(CSS, "#seeds td[data-key='artifacts']")
    assert cells and all(c.rect["x"] + c.rect["width"] <= width for c in cells), width
    link = d.find_element(CSS, "a.artifact[href*='name=model.keras']")
    with urllib.request.urlopen(link.get_attribute("href"), timeout=30) as r:
        data = r.read()
    seed = int(link.get_attribute("href").split("seed=")[1].split("&")[0])
    path = dashboard["runs"] / "small" / "trials" / best["trial"] / f"seed-{seed}" / "model.keras"
    assert data == path.read_bytes()


def test_a_corrupt_ledger_and_a_ledger_being_rewritten_show_messages(watched, dashboard) -> None:
    d, runs, url = dashboard["driver"], dashboard["runs"], dashboard["url"]
    shutil.copytree(runs / "small", runs / "copy")
    (runs / "broken").mkdir()
    shutil.copy(runs / "small" / "study.yaml", runs / "broken" / "study.yaml")
    (runs / "broken" / "ledger.xlsx").write_bytes(b"PK\x03\x04 not a workbook")
    d.get(f"{url}/study?id=copy")
    browser.wait_for(lambda: len(d.find_elements(CSS, "#trainings tbody tr")) == 8, 120, "rows")
    d.execute_script("window.notReloaded = true;")
    ledger_file = runs / "copy" / "ledger.xlsx"
    whole = ledger_file.read_bytes()
    ledger_file.write_bytes(whole[: len(whole) // 2])  # as a writer caught half-way
    warning = browser.wait_for(lambda: d.find_element(CSS, "#warning").text, 120, "a warning")
    assert "showing the study as read at" in warning and "ledger" in warning
    assert len(d.find_elements(CSS, "#trainings tbody tr")) == 8  # the last good read stays
    ledger_file.write_bytes(whole)
    browser.wait_for(lambda: not d.find_element(CSS, "#warning").is_displayed(), 120, "recovery")
    assert d.execute_script("return window.notReloaded === true;")
    # The corrupt study: a message on its page and in its row; the others keep working.
    d.get(f"{url}/study?id=broken")
    error = browser.wait_for(lambda: d.find_element(CSS, "#error").text, 120, "an error")
    assert "ledger" in error and "cannot be read" in error and "Traceback" not in error
    d.get(f"{url}/")
    browser.wait_for(lambda: len(d.find_elements(CSS, "#studies tbody tr")) == 3, 120, "3 rows")
    phases = dict(
        zip(
            texts(d, "#studies tbody td[data-key='name']"),
            texts(d, "#studies tbody td[data-key='phase']"),
            strict=True,
        )
    )
    assert "cannot be read" in phases["broken"]
    assert phases["small"] == phases["copy"] == "Finished"
    d.get(f"{url}/study?id=nosuch")
    error = browser.wait_for(lambda: d.find_element(CSS, "#error").text, 120, "an error")
    assert "no study 'nosuch'" in error


def test_an_unreachable_bucket_shows_a_message(dashboard) -> None:
    d = dashboard["driver"]
    proc, url = start_dashboard(
        "s3://results/hpo",
        "--endpoint",
        "127.0.0.1:9",  # nothing listens there
        "--no-tls",
        HPO_S3_ACCESS_KEY="k",
        HPO_S3_SECRET_KEY="s",
        HPO_S3_RETRIES="1",
        HPO_S3_TIMEOUT="2",
    )
    try:
        d.get(url + "/")
        error = browser.wait_for(lambda: d.find_element(CSS, "#error").text, 60, "an error")
        assert "s3://results/hpo" in error and "cannot reach" in error
        assert "Traceback" not in error
        assert proc.poll() is None  # still serving
    finally:
        stop(proc)


def test_failed_trainings_show_their_errors_and_reasons(dashboard) -> None:
    """A synthetic finished study with failures (benchmarks/dashboard.py's): each failed
    training's error in its row, the failures grouped by reason."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from dashboard import write_study  # benchmarks/ is no package

    d, runs, url = dashboard["driver"], dashboard["runs"], dashboard["url"]
    write_study(runs, "synthetic", 100)
    failed = [r for r in ledger(runs, "synthetic") if r.status != "succeeded"]
    assert len(failed) == 2
    d.get(f"{url}/study?id=synthetic")
    browser.wait_for(lambda: d.find_elements(CSS, "#failures-table tbody tr"), 120, "failures")
    d.find_element(CSS, "#filter").send_keys("failed")
    shown = browser.wait_for(
        lambda: (
            len(cell_values(d, "trainings", "status")) == 2
            and dict(
                zip(
                    cell_values(d, "trainings", "trial"),
                    texts(d, "#trainings tbody td[data-key='error']"),
                    strict=True,
                )
            )
        ),
        10,
        "the failed rows",
    )
    assert shown == {r.trial: r.error for r in failed}
    assert cell_values(d, "failures-table", "count") == ["2"]
    reason = texts(d, "#failures-table tbody td[data-key='reason']")[0]
    assert reason == "ResourceExhaustedError: OOM in trial N"  # the trial id blanked
    card = {e.get_attribute("data-key"): e.text for e in d.find_elements(CSS, "#summary .card")}
    assert card["failed"].endswith("2") and "98 / 100" in card["done"]


def test_axis_ticks_read_as_numbers(study_page, dashboard) -> None:
    """The log axis labels every tick with its number (not plotly's "5 4 3 2"); the axis of
    trainings, a count, has whole ticks only."""
    d = study_page
    d.get(f"{dashboard['url']}/study?id=small")  # the fixture's page, whichever test ran last

    def ticks(axis: str) -> list[str]:
        return [t.text for t in d.find_elements(CSS, f"#chart-best .{axis}tick text")]

    ys = browser.wait_for(lambda: ticks("y"), 120, "the log axis' ticks")
    assert all(re.fullmatch(r"[0-9.]+(e-?[0-9]+)?", t) for t in ys), ys
    lo, hi = d.execute_script(
        "const y = document.getElementById('chart-best').data[0].y.concat("
        "document.getElementById('chart-best').data[1].y);"
        "return [Math.min(...y), Math.max(...y)];"
    )
    # each label is the value at its tick (plotly's own read "5 4 3 2" on an axis of 0.05)
    assert len(ys) >= 2 and all(lo <= float(t) <= hi for t in ys), (ys, lo, hi)
    xs = ticks("x")
    assert xs and all(t.replace(",", "").isdigit() for t in xs), xs
    # the parallel coordinates: whole ticks on counts, numbers on the log learning rate
    dims = browser.wait_for(
        lambda: d.execute_script(
            "const g = document.getElementById('chart-parcoords');"
            "return g.data && g.data.length ? g.data[0].dimensions : null;"
        ),
        120,
        "the parallel coordinates",
    )
    by = {dim["label"]: dim for dim in dims}
    assert all(float(v).is_integer() for v in by["hidden_layers"]["tickvals"]), by
    lr = by["learning_rate (log)"]
    assert lr["ticktext"] and all(re.fullmatch(r"[0-9.]+(e-?[0-9]+)?", t) for t in lr["ticktext"])
