"""The narrow searches and seed racing, driven with a synthetic objective: local search
(the default) and the Gaussian-process strategy."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from helpers.engine import drive_engine, objective
from helpers.study import REPO, study_dict
from hpo.engine import Engine, Task
from hpo.engine.search.gaussian import GaussianSearch
from hpo.engine.search.local import neighbours
from hpo.study.contract import SeedResult
from hpo.study.space import config_key, normalise, sample_unique, space_size
from hpo.study.spec import StudySpec, parse_study


def _spec(**kw: object) -> StudySpec:
    base: dict[str, object] = {
        "randomStage": {"configurations": 8, "seed": 3},
        "training": {"seedsPerConfig": 3},
        "bayesianStage": {"topK": 2, "trialsPerConfig": 6},
        "result": {"size": 3},
        "parallelism": 2,
    }
    base.update(kw)
    return parse_study(study_dict(**base)).spec


def result(task: Task) -> SeedResult:
    score = objective(task.trial.config) + ((task.seed * 7919 + len(task.trial.id)) % 13) * 1e-3
    # The test MAE is a different number, never read by decisions.
    return task.succeeded("t", mae=score + 0.5, val_mae=score)


def drive(engine: Engine, slots: int = 2, limit: int = 10_000) -> None:
    drive_engine(engine, result, slots, limit)


def test_racing_gives_every_seed_to_the_final_group_only() -> None:
    spec = _spec()
    engine = Engine(spec)
    drive(engine)
    assert engine.phase == "done"
    rs = engine.recorded()
    assert len({r.key for r in rs}) == len(rs), "a training recorded twice"
    trials_of = {}
    for r in rs:
        assert trials_of.setdefault(r.config_key, r.trial) == r.trial, "configuration twice"
    seeds = Counter(r.trial for r in rs)
    group = [s.trial for s in engine.top(spec.result.size)]
    assert all(seeds[t] == 3 for t in group), "a final group member lacks a seed"
    assert sum(1 for n in seeds.values() if n == 1) >= 8, "racing saved no training"
    assert set(seeds.values()) <= {1, 3}
    assert len(rs) < len(seeds) * 3
    # The final group is ranked on the selection score (val_mae), not the test MAE.
    by_trial = {s.trial: s for s in engine.top(len(seeds))}
    scores = [by_trial[t].score for t in group]
    assert scores == sorted(scores)


def test_the_final_group_is_the_raced_contenders_compared_on_equal_seeds() -> None:
    """Every first seed scores 0 (ties, as on a small validation set), the other seeds do
    not: the raced contenders' means rise above the unraced ties' one lucky score. The
    final group is the raced ones (more seeds first), in the engine, ``best.json`` and the
    progress alike; racing's own order still puts a one-seed tie first."""
    from hpo.records.report import final_group
    from hpo.study.summary import final_ranked, ranked

    spec = _spec(budget={"trainings": 40})

    def lucky(task: Task) -> SeedResult:
        score = 0.0 if task.seed == spec.seeds[0] else 0.01 + objective(task.trial.config)
        return task.succeeded("t", mae=score + 0.5, val_mae=score)

    engine = Engine(spec)
    drive_engine(engine, lucky, 2)
    assert engine.phase == "done"
    group = engine.final_group(spec.result.size)
    assert [s.n for s in group] == [3] * spec.result.size, "an unraced tie in the final group"
    assert engine.top(1)[0].n == 1, "racing reads the means: a one-seed tie ranks first"
    best = final_group(engine.recorded(), spec.dataset.labels, {}, spec.result.size, True)
    assert list(best["trial"]) == [s.trial for s in group]
    assert engine.progress().best_trial == group[0].trial
    everyone = list(engine.summaries().values())
    for n in (1, spec.result.size, len(everyone)):  # without ranking them all, the same
        assert engine.final_group(n) == final_ranked(everyone, racing=True)[:n]
    assert not [n for n in engine.notes if "fewer than" in n], "the group has every seed"
    # Without racing the order is the means' alone.
    summaries = list(engine.summaries().values())
    assert final_ranked(summaries, racing=False) == ranked(summaries)


def test_a_one_seed_configuration_better_on_the_first_seed_keeps_its_place() -> None:
    """Compared on the seed they share: an unraced configuration whose first score beats a
    contender's (it finished after racing chose, as with many slots) is ranked by mean; one
    no better than every contender's first score comes after the contenders."""
    from hpo.study.summary import ConfigSummary, final_ranked

    def summary(trial: str, scores: list[float]) -> ConfigSummary:
        s = ConfigSummary(trial, "bayesian", None, trial, {})
        s.scores, s.maes, s.seeds = list(scores), list(scores), list(range(1, len(scores) + 1))
        return s

    raced = summary("b1", [0.10, 0.30, 0.32])  # first 0.10, mean 0.24
    late = summary("b2", [0.05])  # beats the contender's first seed: by mean, first
    lost = summary("b3", [0.12])  # lost on the first seed: after the contender
    tie = summary("b4", [0.10])  # no better on the first seed: after the contender
    order = [s.trial for s in final_ranked([raced, late, lost, tie], racing=True)]
    assert order == ["b2", "b1", "b4", "b3"]
    assert [s.trial for s in final_ranked([raced, late, lost, tie], racing=False)] == [
        "b2", "b4", "b3", "b1",
    ]  # fmt: skip


def test_every_narrow_configuration_is_a_one_step_neighbour_of_its_parent() -> None:
    spec = _spec()
    engine = Engine(spec)
    drive(engine)
    bayes = [t for t in engine.trials.values() if t.stage == "bayesian"]
    assert len(bayes) == spec.narrow_stage.top_k * spec.narrow_stage.trials_per_config
    for t in bayes:
        parent = engine.trials[t.parent]
        keys = {
            config_key(c) for c in neighbours(parent.config, spec.search_space, spec.narrow_stage)
        }
        assert t.config_key in keys, f"{t.config_key} is not a neighbour of {parent.config_key}"


def test_the_search_beats_its_own_random_stage_on_the_bowl() -> None:
    spec = _spec()
    engine = Engine(spec)
    drive(engine)
    random_best = min(objective(t.config) for t in engine.trials.values() if t.stage == "random")
    assert objective(engine.top(1)[0].config) < random_best


@pytest.mark.parametrize("cut", [0, 3, 8, 9, 14, 20, 25])
def test_a_restart_at_any_point_makes_the_same_decisions(cut: int) -> None:
    spec = _spec()
    full = Engine(spec)
    drive(full, slots=1)
    history = full.recorded()[:cut]
    again = Engine(spec, history)
    drive(again, slots=1)
    assert [(r.trial, r.config_key, r.seed) for r in again.recorded()] == [
        (r.trial, r.config_key, r.seed) for r in full.recorded()
    ]


def test_without_racing_every_configuration_gets_every_seed() -> None:
    spec = _spec(training={"seedsPerConfig": 3, "seedRacing": False})
    engine = Engine(spec)
    drive(engine)
    seeds = Counter(r.trial for r in engine.recorded())
    assert set(seeds.values()) == {3}


def test_a_tiny_space_ends_without_duplicates() -> None:
    spec = _spec(
        searchSpace={
            "hiddenLayers": {"min": 1, "max": 1},
            "neurons": {"choices": [16, 32]},
            "learningRate": {"choices": [0.001, 0.01]},
            "activations": ["relu"],
            "batchSizes": [32],
        },
        randomStage={"configurations": 2, "seed": 1},
    )
    assert space_size(spec.search_space) == 4
    engine = Engine(spec)
    drive(engine)
    assert engine.phase == "done"
    keys = {t.config_key for t in engine.trials.values()}
    assert len(keys) == len(engine.trials) <= 4


sys.path.insert(0, str(Path(REPO) / "benchmarks"))
from fcnet.ours import SEARCH_SPACE as FCNET_SPACE  # noqa: E402  (the exact benchmark's space)


def test_the_new_knobs_sample_within_the_space_with_canonical_keys() -> None:
    spec = _spec(searchSpace=FCNET_SPACE)
    space = spec.search_space
    assert space_size(space) == 62_208  # FCNet's table: every network once
    plan = sample_unique(space, 300, seed=5)
    keys = [config_key(c) for c in plan.configs]
    assert len(set(keys)) == 300
    for c in plan.configs:
        acts = c["activation"] if isinstance(c["activation"], list) else [c["activation"]] * 2
        drops = c["dropout"] if isinstance(c["dropout"], list) else [c["dropout"]] * 2
        assert set(acts) <= {"relu", "tanh"} and set(drops) <= {0.0, 0.3, 0.6}
        assert c["learning_rate"] in space.learning_rate.choices
        assert c["lr_schedule"] in ("cosine", "constant")
        assert all(n in (16, 32, 64, 128, 256, 512) for n in c["neurons"])
    assert any(isinstance(c["activation"], list) for c in plan.configs)
    assert any(isinstance(c["dropout"], list) for c in plan.configs)
    # Equal values per layer are the same network as one value.
    same = normalise({**plan.configs[0], "activation": ["tanh", "tanh"], "dropout": [0.3, 0.3]})
    assert same["activation"] == "tanh" and same["dropout"] == 0.3


def test_a_v01_configuration_keeps_its_key() -> None:
    """Studies recorded before the new knobs resume: their keys did not change."""
    old = {
        "hidden_layers": 2,
        "neurons": [64, 32],
        "activation": "relu",
        "learning_rate": 0.001,
        "batch_size": 32,
        "optimizer": "adam",
    }
    assert config_key(old) == "L2|64-32|relu|lr=0.001|bs=32|adam"
    assert config_key({**old, "dropout": 0.3, "l2": 1e-4, "lr_schedule": "cosine"}) == (
        "L2|64-32|relu|lr=0.001|bs=32|adam|do=0.3|l2=0.0001|cosine"
    )


def test_neighbours_change_one_knob_by_one_step() -> None:
    spec = _spec(searchSpace=FCNET_SPACE)
    c = normalise(
        {
            "hidden_layers": 2,
            "neurons": [64, 512],
            "activation": ["relu", "tanh"],
            "learning_rate": 0.001,
            "batch_size": 8,
            "optimizer": "adam",
            "dropout": [0.0, 0.3],
            "lr_schedule": "cosine",
        }
    )
    found = neighbours(c, spec.search_space, spec.narrow_stage)
    # widths: 64 -> 32/128, 512 -> 256; lr 2; batch 1; schedule 1; activations 2; dropout 1+2
    assert len(found) == 3 + 2 + 1 + 1 + 2 + 3
    for n in found:
        changed = [k for k in c if n[k] != c[k]]
        assert len(changed) == 1, (changed, n)


def test_exact_benchmark_ours_beats_random_search() -> None:
    """A small version of benchmarks/exact_search.py: on one FCNet table, at 80 trainings,
    over fixed seeds, the median true rank of ours' pick is at most half random search's."""
    from fcnet import ours, peers
    from fcnet.table import load

    table = load("protein_structure")
    mine, theirs = [], []
    for k in range(20):
        outcome = ours.run(table, 80, k)
        mine.append(table.rank_pct(outcome.pick))
        rows = peers.random_search(table, outcome.trainings, k)
        theirs.append(table.rank_pct(peers.pick(table, rows, outcome.trainings)))
    assert np.median(mine) <= 0.5 * np.median(theirs), (np.median(mine), np.median(theirs))


def test_a_restarted_gp_study_hands_over_the_same_parents_despite_raced_seeds() -> None:
    """The hand-over ranks on first seeds: seeds raced later (here scoring worse) must not
    change the parents of a study rebuilt from its records, nor its number of trainings."""

    def worse_later(task: Task) -> SeedResult:
        r = result(task)
        if task.seed != 1:
            r.val_mae = (r.val_mae or 0) + 0.3
        return r

    def run(engine: Engine) -> None:
        running: list[Task] = []
        while not engine.finished:
            running += engine.next_tasks(1 - len(running))
            if not running:
                assert engine.finished
                break
            engine.record(worse_later(running.pop(0)))

    spec = _spec(
        bayesianStage={
            "topK": 2,
            # Two per parent: the second suggestion is made with a Bayesian result told;
            # each rebuilt study below pays every suggestion again.
            "trialsPerConfig": 2,
            "estimator": "ET",
            "method": "gaussianProcess",
        },
        result={"size": 2},
    )
    full = Engine(spec)
    run(full)
    recorded = full.recorded()
    for cut in range(0, len(recorded), 5):
        again = Engine(spec, recorded[:cut])
        run(again)
        assert again.describe()["handed_over"] == full.describe()["handed_over"], cut
        assert len(again.recorded()) == len(recorded), cut


@pytest.mark.parametrize("seed", range(8))
def test_retries_in_hand_do_not_end_the_local_search_early(seed: int) -> None:
    """A retry handed out in the same call that plans is still to come: the narrow stage
    must not be declared exhausted then (a rebuilt study would plan more)."""
    import random

    spec = _spec(
        searchSpace={
            "hiddenLayers": {"min": 1, "max": 1},
            "neurons": {"min": 32, "max": 64, "step": 16},
            "learningRate": {"choices": [0.001, 0.003]},
            "batchSizes": [32],
            "activations": ["relu"],
        },
        randomStage={"configurations": 2, "seed": 3},
        bayesianStage={"topK": 2, "trialsPerConfig": 3},
        result={"size": 1},
        failurePolicy={"retries": 1, "maxFailedTrainings": 1000},
        training={"seedsPerConfig": 2},
    )
    rnd = random.Random(seed)
    engine = Engine(spec, retry_backoff_s=1.0)
    running: dict[tuple[str, int], Task] = {}
    now = 0.0
    for _ in range(500):
        if engine.finished:
            break
        for t in engine.next_tasks(3 - len(running), now=now):
            running[t.id] = t
        if not running:
            now += 0.5
            continue
        task = running.pop(rnd.choice(list(running)))
        r = result(task)
        if task.attempt == 1 and rnd.random() < 0.5:
            r = task.failed("t", "boom")
        engine.record(r, now=now)
        now += 0.3
    assert engine.finished
    again = Engine(spec, engine.recorded())
    before = len(again.recorded())
    drive(again)
    assert len(again.recorded()) == before, "a rebuilt study planned what the live one gave up"


def test_the_exact_benchmark_decides_as_the_session_hpo_run_drives(tmp_path: Path) -> None:
    """The benchmark drives the engine alone (fast); ``hpo run`` drives it through a
    StudySession (store, ledger, spec saved). Both must make the same trainings in the same
    order and hand back the same configuration, or the benchmark measures something else."""
    from fcnet import ours
    from fcnet.table import load

    table = load("naval_propulsion")
    for k in (0, 1):
        direct: list[tuple[str, str, int]] = []
        alone = ours.run(table, 40, k, order=direct)
        through, order = ours.run_session(table, 40, k, tmp_path / str(k))
        assert order == direct
        assert through == alone
        assert (tmp_path / str(k) / "runs" / "fcnet" / "ledger.xlsx").exists()


def _gp_spec() -> StudySpec:
    return _spec(
        bayesianStage={"topK": 2, "trialsPerConfig": 4, "method": "gaussianProcess"},
        training={"seedsPerConfig": 2, "seedRacing": False},
    )


@pytest.fixture(scope="module")
def gp_study() -> list[SeedResult]:
    full = Engine(_gp_spec())
    drive(full, slots=1)
    return full.recorded()


@pytest.mark.parametrize("cut", [17, 21, 26])
def test_a_restarted_gp_study_makes_the_same_decisions(
    cut: int, gp_study: list[SeedResult]
) -> None:
    """The Gaussian-process stage too: a study rebuilt from its records in the middle of
    that stage proposes exactly what the live study proposed (a sequential study)."""
    assert gp_study[cut - 1].stage == "bayesian" and len(gp_study) > cut + 2
    again = Engine(_gp_spec(), gp_study[:cut])
    drive(again, slots=1)
    assert [(r.trial, r.config_key, r.seed) for r in again.recorded()] == [
        (r.trial, r.config_key, r.seed) for r in gp_study
    ]


def test_a_parallel_gp_stage_plans_its_whole_budget() -> None:
    """With many trainings at once, the optimiser does not know the configurations still
    training and proposes them again; those repeats must not count as barren asks that
    end a parent's search early (16 slots: 37 of 40 planned before the fix, when a small
    grid was still asked like a large one; the free-point fill now covers this grid too)."""
    spec = _spec(bayesianStage={"topK": 2, "trialsPerConfig": 10, "method": "gaussianProcess"})
    engine = Engine(spec)
    drive(engine, slots=8)
    assert engine.phase == "done"
    assert sum(1 for t in engine.trials.values() if t.stage == "bayesian") == 20


def _gp_parents(engine: Engine) -> GaussianSearch:
    assert isinstance(engine.search, GaussianSearch)
    return engine.search


def check_gp_study(engine: Engine, spec: StudySpec) -> None:
    """Every narrow configuration lies in its parent's narrowed grid, within its budget."""
    search = _gp_parents(engine)
    parents = {p.trial: p for p in search.parents}
    narrow = [r for r in engine.recorded() if r.stage == "bayesian"]
    for r in narrow:
        assert r.parent in parents
        assert parents[r.parent].space.contains(r.config), f"{r.config_key} outside bounds"
    by_parent = Counter(r.parent for r in narrow)
    n_seeds = spec.training.seeds_per_config
    assert all(n <= spec.narrow_stage.trials_per_config * n_seeds for n in by_parent.values())


def test_the_gp_estimator_works() -> None:
    spec = _spec(
        bayesianStage={
            "method": "gaussianProcess",
            "topK": 1,
            "trialsPerConfig": 3,
            "estimator": "GP",
        },
        training={"seedsPerConfig": 2, "seedRacing": False},
    )
    engine = Engine(spec)
    drive(engine)
    assert engine.phase == "done"
    check_gp_study(engine, spec)
    assert sum(1 for t in engine.trials.values() if t.stage == "bayesian") == 3


def test_a_tiny_gp_narrow_space_ends_without_duplicates() -> None:
    spec = _spec(
        # One hidden layer: each parent's narrow grid holds 3 x 3 configurations, so the
        # stage runs into the grid's end after a few (costly) Gaussian-process suggestions.
        searchSpace={"hiddenLayers": {"min": 1, "max": 1}},
        bayesianStage={
            "method": "gaussianProcess",
            "topK": 2,
            "trialsPerConfig": 50,
            "neuronsRadius": 8,
            "neuronsStep": 8,
            "learningRateRadius": 0.1,
            "learningRateStep": 0.1,
            "estimator": "ET",
        },
        training={"seedsPerConfig": 2, "seedRacing": False},
    )
    engine = Engine(spec)
    drive(engine)
    assert engine.phase == "done"
    check_gp_study(engine, spec)
    keys = [t.config_key for t in engine.trials.values()]
    assert len(set(keys)) == len(keys)
    search = _gp_parents(engine)
    planned = Counter(t.parent for t in engine.trials.values() if t.stage == "bayesian")
    for p in search.parents:
        # Never more new configurations than the narrow grid holds besides the parent.
        assert planned[p.trial] <= p.space.size - 1
    # The budget (50 per parent) is beyond the grid: the stage ended at the grid's end.
    assert any(planned[p.trial] == p.space.size - 1 for p in search.parents)


def test_gp_proposals_count_configurations_still_training() -> None:
    """A configuration still training is told to the optimiser (a constant liar at the mean
    of the recorded objectives), so what it proposes beside it differs from what it would
    propose with that configuration merely forbidden (it was not before: the same two)."""
    import copy
    import dataclasses

    from hpo.engine.trials import Trial

    engine = Engine(_gp_spec())
    while sum(1 for r in engine.recorded() if r.stage == "bayesian") < 10:
        (task,) = engine.next_tasks(1)
        engine.record(result(task))
    assert engine.search is not None and not engine.running
    records = engine._records()
    first = copy.deepcopy(engine.search).propose(1, records)[0]
    key = config_key(first.config)
    pending = Trial("b9999", "bayesian", first.config, key, "elsewhere")
    known = {*(t.config_key for t in records.trials.values()), key}
    without = dataclasses.replace(records, known=known)
    with_pending = dataclasses.replace(
        records, trials={**records.trials, "b9999": pending}, known=known
    )
    a = [config_key(p.config) for p in copy.deepcopy(engine.search).propose(2, without)]
    b = [config_key(p.config) for p in copy.deepcopy(engine.search).propose(2, with_pending)]
    assert key not in a and key not in b
    assert a != b
