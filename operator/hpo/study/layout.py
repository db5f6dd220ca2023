"""Every key of a study in its store, built in one place (a folder and a bucket alike).

::

    <study>/study.yaml                                 the spec as run
    <study>/dataset.json                               the dataset's fingerprint at the start
    <study>/warmstart.json                             what a warm start took (records.warmstart)
    <study>/ledger.xlsx                                every training (records.ledger)
    <study>/best.json                                  the final group, once finished
    <study>/status.json                                the runner's live status (records.livestatus)
    <study>/plots/<name>.png                           records.report's plots
    <study>/trials/<trial>/seed-<n>/<artifact>         ARTIFACT_FILES, scores.json last
    <study>/failures/<trial>/seed-<n>/attempt-<k>.json a failed attempt (both runners)

Besides these keys, a local folder holds dot files the store never lists: the
lock of the run that owns the study (``<study>/.lock``, ``hpo.local.lock``)
and per-key locks of conditional writes (``.<file>.lock`` beside the file).

``<study>`` is the study's name, a single key segment, under an optional
prefix (``hpo/<namespace>`` in a bucket). Names and ids built into keys are
checked with ``hpo.store.keys``, so no name or id can point outside the study's
folder. Nothing else in the code spells one of these keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpo.store.keys import check_key, join_key, key_segment

STUDY_FILE = "study.yaml"
DATASET_FILE = "dataset.json"
WARM_START_FILE = "warmstart.json"
LEDGER_FILE = "ledger.xlsx"
BEST_FILE = "best.json"
#: Phase, stage, counts (running too), best and a heartbeat, rewritten while the study
#: runs by its runner (``records.livestatus``); absent for studies run before it existed.
STATUS_FILE = "status.json"
SCORES_FILE = "scores.json"
#: A training's inputs and outputs, enough to predict without the study spec
#: (``hpo.data.encoding.FeaturesFile``).
FEATURES_FILE = "features.json"
PLOTS_DIR = "plots"
TRIALS_DIR = "trials"
FAILURES_DIR = "failures"

#: Files written per training under ``<study>/trials/<trial>/seed-<n>/``; the
#: trainer uploads ``scores.json`` last, so its presence means the rest is there.
ARTIFACT_FILES = (
    "model.keras",
    "feature_scaler.json",
    "label_scaler.json",
    "seed.json",
    "config.json",
    FEATURES_FILE,
    SCORES_FILE,
)


def seed_dir(trial_dir: str, seed: int) -> str:
    """``<trial_dir>/seed-<n>``: the folder of one training's artifacts."""
    return join_key(trial_dir, f"seed-{int(seed)}")


@dataclass(frozen=True)
class StudyPaths:
    """Store keys of one study: ``name`` is one key segment, ``prefix`` a checked key or "".

    Runners and the trainer use a bare name (the store's root is the study's
    parent folder); ``StudyPaths.at`` reads a folder such as ``hpo/default/NAME``.
    """

    name: str
    prefix: str = ""

    def __post_init__(self) -> None:
        key_segment(self.name, "study name")
        if self.prefix:
            check_key(self.prefix)

    @classmethod
    def at(cls, folder: str) -> StudyPaths:
        """The study whose folder is ``folder`` (its last segment is the name)."""
        prefix, _, name = folder.strip("/").rpartition("/")
        return cls(name, prefix)

    @property
    def root(self) -> str:
        """The study's folder."""
        return join_key(self.prefix, self.name) if self.prefix else self.name

    @property
    def study(self) -> str:
        return join_key(self.root, STUDY_FILE)

    @property
    def dataset(self) -> str:
        """``<study>/dataset.json``: the dataset's fingerprint when the study started."""
        return join_key(self.root, DATASET_FILE)

    @property
    def warm_start(self) -> str:
        """``<study>/warmstart.json``: the results and configurations a warm start took."""
        return join_key(self.root, WARM_START_FILE)

    @property
    def ledger(self) -> str:
        return join_key(self.root, LEDGER_FILE)

    @property
    def best(self) -> str:
        return join_key(self.root, BEST_FILE)

    @property
    def status(self) -> str:
        """``<study>/status.json``: the live status its runner writes (``records.livestatus``)."""
        return join_key(self.root, STATUS_FILE)

    @property
    def plots(self) -> str:
        return join_key(self.root, PLOTS_DIR)

    def plot(self, file_name: str) -> str:
        return join_key(self.plots, key_segment(file_name, "plot file name"))

    @property
    def trials(self) -> str:
        return join_key(self.root, TRIALS_DIR)

    def trial(self, trial: str) -> str:
        """``<study>/trials/<trial>``: a ``TrainingRequest``'s ``output_prefix``."""
        return join_key(self.trials, key_segment(trial, "trial id"))

    def seed(self, trial: str, seed: int) -> str:
        """``<study>/trials/<trial>/seed-<n>``: one training's artifacts."""
        return seed_dir(self.trial(trial), seed)

    def artifact(self, trial: str, seed: int, file_name: str) -> str:
        return join_key(self.seed(trial, seed), key_segment(file_name, "artifact file name"))

    def scores(self, trial: str, seed: int) -> str:
        return self.artifact(trial, seed, SCORES_FILE)

    @property
    def failures(self) -> str:
        return join_key(self.root, FAILURES_DIR)

    def failure(self, trial: str, seed: int, attempt: int) -> str:
        """``<study>/failures/<trial>/seed-<n>/attempt-<k>.json``: one failed attempt."""
        trial_dir = join_key(self.failures, key_segment(trial, "trial id"))
        return join_key(seed_dir(trial_dir, seed), f"attempt-{int(attempt)}.json")


def _folder_of(key: str, *tail: str) -> str | None:
    """``key`` without its trailing ``tail`` segments, if it ends so (and has a folder)."""
    suffix = "/" + "/".join(tail)
    if key.endswith(suffix) and len(key) > len(suffix):
        return key[: -len(suffix)]
    return None


def study_of_ledger(key: str) -> str | None:
    """The study folder of a listed ``<study>/ledger.xlsx`` key, else None."""
    return _folder_of(key, LEDGER_FILE)


def study_of_best(key: str) -> str | None:
    """The study folder of a listed ``<study>/best.json`` key, else None."""
    return _folder_of(key, BEST_FILE)


def study_of_status(key: str) -> str | None:
    """The study folder of a listed ``<study>/status.json`` key, else None."""
    return _folder_of(key, STATUS_FILE)


def training_of_scores(key: str) -> tuple[str, str, int] | None:
    """(study folder, trial, seed) of a listed ``<study>/trials/<trial>/seed-<n>/scores.json``
    key, else None: a reader can tell which trainings a listing holds without a GET."""
    study = study_of_scores(key)
    if study is None:
        return None
    parts = key.split("/")
    number = parts[-2].removeprefix("seed-")
    if not number.isdigit() or str(int(number)) != number:
        return None  # seed_dir never writes "seed-01" or "seed-x"
    return study, parts[-3], int(number)


def study_of_scores(key: str) -> str | None:
    """The study folder of a listed ``<study>/trials/<trial>/seed-<n>/scores.json``, else None."""
    parts = key.split("/")
    if len(parts) < 5 or parts[-1] != SCORES_FILE or parts[-4] != TRIALS_DIR:
        return None
    if not parts[-2].startswith("seed-"):
        return None
    return "/".join(parts[:-4])
