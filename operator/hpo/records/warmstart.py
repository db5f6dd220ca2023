"""Warm start: what earlier studies (``spec.warmStart.studies``) give a new one.

A source counts when it was trained on the same data (its ``dataset.json``
fingerprint) with the same training settings (``hpo.study.spec.TRAINING_FIELDS``,
compared by ``hpo.study.matching``, as the resume check does): its successful
trainings become this study's rows ``w0000``... (stage ``random``, ``source``
and ``source_trial`` saying where they came from), their artifacts copied into
this study, so the study stays self-contained. Any other source gives its best
configurations (mean validation MAE), trained anew as the first of the random
stage. A source with other labels, or that is missing or unreadable, is refused
(``WarmStartProblem``) before anything is written.

What was taken is written once, to ``<study>/warmstart.json``, before the
artifacts are copied; a restart reads it back instead of the sources, so the
study makes the same decisions even if a source changed or went away since.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpo.data.checks import Prepared
from hpo.data.dataset import short_fingerprint
from hpo.engine import WarmStart, warm_trial_id
from hpo.records.livestatus import LiveStatus
from hpo.store import LocalStore, Store, StoreRef, open_store
from hpo.store.keys import StoreError
from hpo.study.contract import RANDOM_STAGE, SeedResult
from hpo.study.layout import SCORES_FILE, StudyPaths
from hpo.study.matching import changed_settings, outside_space, same_data
from hpo.study.spec import TRAINING_FIELDS, SpecError, Study, is_study_name, refused_message
from hpo.study.summary import ranked, selection_score, summarise

FIELD = "spec.warmStart.studies"


class WarmStartProblem(ValueError):
    """A warm-start source cannot be used (missing, unreadable, another problem's data)."""


@dataclass(frozen=True)
class Source:
    """One source study: its spec entry, its store and its folder there."""

    entry: str
    store: Store
    paths: StudyPaths

    @property
    def location(self) -> str:
        return f"{self.store.uri}/{self.paths.root}"


@dataclass
class Taken:
    """What a warm start took, as written to ``warmstart.json``."""

    studies: list[str]
    sources: list[dict[str, Any]]
    warm: WarmStart
    notes: list[str]
    #: ``studies`` as the study file spelled them (``WarmStart.written``); None in a
    #: ``warmstart.json`` written before it was recorded.
    written: list[str] | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "studies": self.studies,
                "sources": self.sources,
                "results": [dataclasses.asdict(r) for r in self.warm.results],
                "first": list(self.warm.first),
                "notes": self.notes,
                "written": self.written,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Taken:
        """Raises ``ValueError`` (``json.JSONDecodeError`` among them), ``KeyError`` or
        ``TypeError`` on a file that is not one ``to_json`` wrote."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise TypeError(f"a JSON object was expected, not {type(raw).__name__}")
        studies, sources, first = raw["studies"], raw["sources"], raw["first"]
        written = raw.get("written")
        if not _strings(studies) or (written is not None and not _strings(written)):
            raise TypeError("'studies' and 'written' must be lists of text")
        if not isinstance(sources, list) or not all(
            isinstance(s, dict) and isinstance(s.get("study"), str) for s in sources
        ):
            raise TypeError("'sources' must be a list of objects with a 'study'")
        if not isinstance(first, list) or not all(isinstance(c, dict) for c in first):
            raise TypeError("'first' must be a list of configurations")
        if not isinstance(raw["results"], list):
            raise TypeError("'results' must be a list")
        try:
            results = tuple(SeedResult.from_dict(r) for r in raw["results"])
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise TypeError(
                f"'results' holds one that is not a training's result ({exc})"
            ) from None
        return cls(
            studies=list(studies),
            sources=list(sources),
            warm=WarmStart(results, tuple(first)),
            notes=[str(n) for n in raw.get("notes") or []],
            written=None if written is None else list(written),
        )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def locate(
    entry: str,
    study: Study,
    store: Store | None,
    credentials: tuple[str, str] | None = None,
    *,
    folders: bool = True,
) -> Source:
    """The store and folder a ``warmStart.studies`` entry names (see ``hpo.study.spec.WarmStart``);
    ``store`` is this study's (None: it has none yet, so no study is there). ``folders``
    False (the operator): a folder is refused, it would be one of the operator pod's."""
    where = f"{FIELD}: {entry}"
    if is_study_name(entry):
        if entry == study.name:
            raise WarmStartProblem(f"{where}: is this study itself; name an earlier study")
        if store is None:
            raise WarmStartProblem(f"{where}: no study there (this study's store does not exist)")
        return Source(entry, store, StudyPaths(entry))
    if entry.startswith("s3://"):
        bucket, _, key = entry.removeprefix("s3://").partition("/")
        storage = study.spec.storage
        if storage.endpoint is None:
            raise WarmStartProblem(f"{where}: spec.storage.endpoint is needed to read a bucket")
        ref = StoreRef(
            kind="s3",
            endpoint=storage.endpoint,
            bucket=bucket,
            tls=storage.tls,
            region=storage.region,
            ca_bundle=storage.ca_bundle,
        )
        try:
            paths = StudyPaths.at(key)
            return Source(entry, open_store(ref, prefix="", credentials=credentials), paths)
        except (StoreError, SpecError) as exc:
            raise WarmStartProblem(f"{where}: cannot be read ({exc})") from None
    if not folders:
        raise WarmStartProblem(
            f"{where}: a folder cannot be a source on a cluster (it would be read from the "
            "operator's own filesystem); name a study in this study's bucket, or give "
            "s3://bucket/prefix/NAME"
        )
    folder = Path(entry)
    if not folder.is_dir():
        raise WarmStartProblem(
            f"{where}: no such study folder (on a cluster, name a study in this study's "
            "bucket, or give s3://bucket/prefix/NAME)"
        )
    try:
        return Source(entry, LocalStore(folder.parent), StudyPaths(folder.name))
    except StoreError as exc:
        raise WarmStartProblem(f"{where}: {exc}") from None


@dataclass(frozen=True)
class _Read:
    """What a source holds now: its spec as run, its dataset record, its successful
    trainings, and its live status when its runner is running it now."""

    spec: dict[str, Any]
    dataset: dict[str, Any] | None
    good: list[SeedResult]
    live: LiveStatus | None


def _live(source: Source) -> LiveStatus | None:
    """The source's ``status.json`` when it says a runner is running it now (its heartbeat
    is recent); None when finished, stopped, stale or unreadable."""
    try:
        status = LiveStatus.model_validate_json(source.store.get_bytes(source.paths.status))
    except (StoreError, ValueError):  # none (a study run before it existed), or torn
        return None
    return status if status.state() == "live" else None


def _read(source: Source) -> _Read:
    """The source as it is now (see ``_Read``)."""
    from hpo.records.ledger import read_ledger
    from hpo.records.recorder import stored_results

    where = f"{FIELD}: {source.entry}"
    paths = source.paths
    try:
        if not source.store.exists(paths.study):
            raise WarmStartProblem(
                f"{where}: no study there ({source.location}/study.yaml does not exist)"
            )
        saved = yaml.safe_load(source.store.get_bytes(paths.study))
        spec = saved.get("spec") if isinstance(saved, dict) else None
        if not isinstance(spec, dict):
            raise WarmStartProblem(f"{where}: {source.location}/study.yaml holds no spec")
        try:
            dataset = json.loads(source.store.get_bytes(paths.dataset).decode())
        except (StoreError, ValueError):
            dataset = None
        results = read_ledger(source.store, paths.ledger)
        seen = {r.key for r in results}
        results += stored_results(source.store, paths, seen)
    except WarmStartProblem:
        raise
    except (StoreError, yaml.YAMLError) as exc:
        raise WarmStartProblem(f"{where}: cannot be read ({exc})") from None
    good = [r for r in results if r.status == "succeeded" and selection_score(r) is not None]
    if not good:
        raise WarmStartProblem(f"{where}: {source.location} has no successful training")
    return _Read(spec, dataset if isinstance(dataset, dict) else None, good, _live(source))


def _why_not_counted(
    spec: dict[str, Any], dataset: dict[str, Any] | None, study: Study, prepared: Prepared
) -> str | None:
    """Why the source's trainings do not count here (None: they do). Other labels are
    another problem altogether: refused."""
    new = study.as_resource()["spec"]
    labels = (spec.get("dataset") or {}).get("labels")
    if sorted(labels or []) != sorted(study.spec.dataset.labels):
        raise WarmStartProblem(
            f"labels {labels} (this study: {study.spec.dataset.labels}): its "
            "configurations were chosen for another problem"
        )
    if not same_data(dataset, prepared.dataset):
        then = short_fingerprint((dataset or {}).get("fingerprint"))
        return f"other data ({then}; this study's {short_fingerprint(prepared.dataset.etag)})"
    changed = changed_settings(spec, new, TRAINING_FIELDS)
    if changed:
        return f"other training settings ({', '.join(changed)})"
    return None


@dataclass
class _Gathered:
    """What ``take`` has decided so far, source by source."""

    results: list[SeedResult] = dataclasses.field(default_factory=list)
    #: Config key -> its ``w`` trial id.
    ids: dict[str, str] = dataclasses.field(default_factory=dict)
    taken_keys: set[tuple[str, int]] = dataclasses.field(default_factory=set)
    sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    #: Sources whose best are tried first: (their record, their ranked summaries, the
    #: index of their note), chosen once every source is read.
    uncounted: list[tuple[dict[str, Any], list[Any], int]] = dataclasses.field(default_factory=list)


def take(
    study: Study,
    prepared: Prepared,
    store: Store | None,
    credentials: tuple[str, str] | None = None,
    *,
    folders: bool = True,
) -> Taken:
    """Read every source and decide what this study takes from it (nothing is written).

    The configurations tried first are chosen once every source is read: one that a
    later source counts is not among them (it is not trained again), and the next best
    takes its place, so each such source gives ``configurations`` new ones if it has them.
    """
    warm = study.spec.warm_start
    assert warm is not None
    got = _Gathered()
    for entry in warm.studies:
        source = locate(entry, study, store, credentials, folders=folders)
        _take_from(source, study, prepared, got)
    first = _tried_first(got, warm.configurations)
    return Taken(
        list(warm.studies),
        got.sources,
        WarmStart(tuple(got.results), tuple(first)),
        got.notes,
        written=warm.written,
    )


def _take_from(source: Source, study: Study, prepared: Prepared, got: _Gathered) -> None:
    """Read one source: count its trainings here, or keep its best to be tried first."""
    entry = source.entry
    now = _read(source)
    good = now.good
    try:
        why = _why_not_counted(now.spec, now.dataset, study, prepared)
    except WarmStartProblem as exc:
        raise WarmStartProblem(f"{FIELD}: {entry}: {source.location} has {exc}") from None
    record: dict[str, Any] = {"study": entry, "location": source.location}
    record.update(_live_record(entry, now, got))
    inside = _inside(entry, good, study, record, got)
    seeds = set(study.spec.seeds)
    usable = [r for r in inside if r.seed in seeds]
    if why is None and inside and not usable:
        why = "other seeds (training.baseSeed)"
    elif why is None and len(usable) < len(inside):
        got.notes.append(
            f"warm start from {entry}: {len(inside) - len(usable)} of its trainings are of "
            "seeds this study does not train; left out"
        )
    if why is None:
        record.update(counted=_count(source, usable, study.name, got), tried_first=[])
    else:
        record.update(counted=0, why=why)
        got.uncounted.append((record, ranked(summarise(inside).values()), len(got.notes)))
        got.notes.append("")
    got.sources.append(record)


def _live_record(entry: str, now: _Read, got: _Gathered) -> dict[str, Any]:
    """``source_live`` and what a running source had when it was read (with a note): what
    it finishes later is not taken."""
    if now.live is None:
        return {"source_live": False}
    st = now.live
    got.notes.append(
        f"warm start from {entry}: it is running now (its status: {st.done} of "
        f"{st.planned} trainings done, {st.running} running); this study takes the "
        f"{len(now.good)} successful trainings recorded so far, not those it finishes later"
    )
    return {
        "source_live": True,
        "source_trainings": len(now.good),
        "source_planned": st.planned,
        "source_heartbeat": st.heartbeat.isoformat(),
    }


def _inside(
    entry: str, good: list[SeedResult], study: Study, record: dict[str, Any], got: _Gathered
) -> list[SeedResult]:
    """The trainings inside this study's space (``hpo.study.matching.outside_space``); the
    others are left out, counted by reason in ``record["left_out"]`` and a note."""
    inside: list[SeedResult] = []
    left_out: dict[str, int] = {}
    for r in good:
        why = outside_space(study.spec.search_space, r.config)
        if why is None:
            inside.append(r)
        else:
            left_out[why] = left_out.get(why, 0) + 1
    if left_out:
        record["left_out"] = left_out
        got.notes.append(
            f"warm start from {entry}: {_left_out(left_out)} (outside this study's search space)"
        )
    return inside


def _left_out(left_out: dict[str, int]) -> str:
    """``2 trainings left out: neurons 520 outside 16..512; 1: ...``."""
    parts = [f"{n}: {why}" for why, n in left_out.items()]
    n = sum(left_out.values())
    return f"{n} training{'' if n == 1 else 's'} left out ({'; '.join(parts)})"


def _count(source: Source, usable: list[SeedResult], name: str, got: _Gathered) -> int:
    """Make a counted source's trainings this study's ``w`` rows; returns how many (one an
    earlier source already gave is not counted twice)."""
    from hpo.records.ledger.frames import trial_order

    paths = StudyPaths(name)
    counted = 0
    for r in sorted(usable, key=trial_order):
        wid = got.ids.setdefault(r.config_key, warm_trial_id(len(got.ids)))
        if (wid, r.seed) in got.taken_keys:
            continue  # an earlier source has it (one study warm-started from another)
        got.taken_keys.add((wid, r.seed))
        counted += 1
        got.results.append(
            dataclasses.replace(
                r,
                study=name,
                trial=wid,
                stage=RANDOM_STAGE,
                parent=None,
                artifacts=paths.seed(wid, r.seed),
                source=source.location,
                source_trial=r.trial,
            )
        )
    return counted


def _tried_first(got: _Gathered, configurations: int) -> list[dict[str, Any]]:
    """The uncounted sources' best configurations not counted from another source, up to
    ``configurations`` each; fills in their records and notes."""
    from hpo.study.space import config_key

    first: list[dict[str, Any]] = []
    first_keys: set[str] = set()
    for record, candidates, note in got.uncounted:
        best = [
            s for s in candidates if s.config_key not in got.ids and s.config_key not in first_keys
        ]
        best = best[:configurations]
        first += [s.config for s in best]
        first_keys |= {s.config_key for s in best}
        record["tried_first"] = [config_key(s.config) for s in best]
        got.notes[note] = (
            f"warm start from {record['study']}: {record['why']}; its {len(best)} best "
            "configurations are tried first, trained anew"
        )
    return first


def describe(taken: Taken) -> list[str]:
    """One line per source: what this study takes from it (``hpo validate``)."""
    out = []
    for rec in taken.sources:
        if rec.get("why"):
            what = f"{rec['why']}: its {len(rec['tried_first'])} best configurations tried first"
        else:
            what = f"{rec['counted']} trainings count, none trained again"
        if rec.get("left_out"):
            what += f"; {_left_out(rec['left_out'])}, outside this study's search space"
        if rec.get("source_live"):
            what += (
                f"; it is running now ({rec['source_trainings']} successful trainings so far "
                f"of {rec['source_planned']} planned): those it finishes later are not taken"
            )
        out.append(f"warm start from {rec['study']} ({rec['location']}): {what}")
    return out


def load_taken(store: Store, paths: StudyPaths) -> Taken | None:
    """``warmstart.json`` of a study that took one already (None: it has none)."""
    try:
        raw = store.get_bytes(paths.warm_start)
    except StoreError:
        if store.exists(paths.warm_start):
            raise
        return None
    try:
        return Taken.from_json(raw.decode())
    except (ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise WarmStartProblem(
            f"{store.uri}/{paths.warm_start} is damaged ({what}): it records what the warm "
            "start took when the study started. Restore it (a backup, another copy of the "
            "study), or start a new study (another metadata.name)"
        ) from None


def check_unchanged(study: Study, taken: Taken | None, has_records: bool) -> None:
    """A warm start is decided when a study starts: added, removed or changed later, it
    would change decisions already made (the resume check's wording)."""
    warm = study.spec.warm_start
    studies = warm.written if warm else []
    if taken is None and (not studies or not has_records):
        return
    if taken is None:
        then = []
    elif taken.written is not None:  # as written: a moved project folder is no change
        then = taken.written
    else:  # recorded before the written form was: folders by their study's name
        then = [_legacy(s) for s in taken.studies]
        studies = [_legacy(s) for s in warm.studies] if warm else []
    if then != studies:
        raise WarmStartProblem(
            f"{refused_message(['spec.warmStart'])} ({then!r} then, {studies!r} now): "
            "what a warm start takes is decided when the study starts; restore it, or "
            "start a new study (another metadata.name)"
        )


def _legacy(entry: str) -> str:
    """An entry of a ``warmstart.json`` that did not record the written form, compared with
    the study's: a folder (made absolute then) by its last part, the study's name."""
    if is_study_name(entry) or "://" in entry:
        return entry
    return f".../{Path(entry).name}"


def copy_artifacts(
    taken: Taken,
    study: Study,
    store: Store,
    credentials: tuple[str, str] | None = None,
    *,
    folders: bool = True,
) -> list[str]:
    """Copy the counted trainings' artifacts into this study (``trials/w.../seed-<n>/``,
    ``scores.json`` last and rewritten as this study's); what is there is kept. Returns
    notes for sources that could not be read (their rows count all the same)."""
    paths = StudyPaths(study.name)
    notes: list[str] = []
    missing = [r for r in taken.warm.results if not store.exists(paths.scores(r.trial, r.seed))]
    by_location: dict[str, Source | None] = {}
    # The entries as resolved now (the same as written, ``check_unchanged``): a source
    # in a moved project folder is found where it is now.
    now = study.spec.warm_start.studies if study.spec.warm_start else []
    entries = now if len(now) == len(taken.sources) else [s["study"] for s in taken.sources]
    for rec, entry in zip(taken.sources, entries, strict=True):
        if any(r.source == rec["location"] for r in missing):
            try:
                by_location[rec["location"]] = locate(
                    entry, study, store, credentials, folders=folders
                )
            except WarmStartProblem as exc:
                by_location[rec["location"]] = None
                notes.append(f"artifacts not copied, the rows count all the same: {exc}")
    for r in missing:
        scores = paths.scores(r.trial, r.seed)
        src = by_location.get(r.source or "")
        if src is None or r.source_trial is None:
            continue
        try:
            for key in _source_files(src, r):
                name = key.rsplit("/", 1)[-1]
                if name != SCORES_FILE:
                    store.put_bytes(paths.artifact(r.trial, r.seed, name), src.store.get_bytes(key))
        except StoreError as exc:
            notes.append(f"artifacts of {r.trial} seed {r.seed} not copied ({exc})")
            continue
        store.put_bytes(scores, r.to_json().encode())
    return notes


def _source_files(src: Source, r: SeedResult) -> list[str]:
    """The artifact keys of ``r`` in its source (the trial it had there)."""
    assert r.source_trial is not None
    folder = src.paths.seed(r.source_trial, r.seed)
    return [k for k in src.store.list(folder) if k.rsplit("/", 1)[0] == folder]
