"""Everything a study writes to its store: the spec as run, the ledger, the final group, plots.

The ledger has one writer (this object); writes are conditional on the ETag
of its last write, so a second writer on the same study gets a clear error
instead of silently overwriting. Results are written in batches: rewriting
the workbook per result would cost the whole book each time. A batch is also
at least ``batch_growth`` of the rows already written, so the writes of a
study of n trainings cost O(n) in all, not O(n²/batch) (every result is in
its ``scores.json`` meanwhile, and ``max_delay_s`` bounds how stale the book gets).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from hpo.store.base import PreconditionFailed, Store
from hpo.store.keys import StoreError, is_valid_key
from hpo.study.contract import SeedResult
from hpo.study.layout import BEST_FILE, StudyPaths, training_of_scores
from hpo.study.spec import Study

log = logging.getLogger("hpo.ledger")


class LedgerConflict(StoreError):
    """Someone else wrote this study's ledger."""


def stored_results(
    store: Store, paths: StudyPaths, known: Collection[tuple[str, int]] = ()
) -> list[SeedResult]:
    """Every success the trainer stored as ``scores.json``, by (trial, seed), except the
    trainings in ``known`` (``SeedResult.key``s the caller already holds, e.g. the ledger's).

    One LIST of ``trials/``, then a GET only for each listed training not in ``known``:
    the (trial, seed) comes from the key (``hpo.study.layout.training_of_scores``), so a
    reader holding the ledger does not download the files it already has.
    Only a valid file at its own key counts (not one planted deeper or elsewhere,
    not a torn or foreign one). Failures never have one.
    """
    found: dict[tuple[str, int], SeedResult] = {}
    for key in store.list(paths.trials):
        where = training_of_scores(key)
        if where is None or not is_valid_key(key):
            continue  # not a result, or a key no writer of ours makes
        _, trial, seed = where
        if (trial, seed) in known or key != paths.scores(trial, seed):
            continue
        data = store.get_bytes(key)
        try:
            r = SeedResult.from_json(data.decode())
            own = (r.trial, r.seed) == (trial, seed) and r.study == paths.name
        except (ValueError, TypeError, KeyError, StoreError):
            continue  # a torn or foreign file: the training is simply redone
        if own and r.status == "succeeded":
            found.setdefault(r.key, r)
    return [found[k] for k in sorted(found)]


def best_records(best: Any) -> list[dict[str, Any]]:
    """The final group as JSON records (``best.json``): per-layer values as lists, as in
    ``config.json`` (the ledger's cells hold them as JSON text, ``"[80, 48, 80]"``)."""
    from hpo.study.contract import PER_LAYER

    records: list[dict[str, Any]] = json.loads(best.to_json(orient="records"))
    for record in records:
        for name in PER_LAYER:
            value = record.get(name)
            if isinstance(value, str) and value.startswith("["):
                record[name] = json.loads(value)
    return records


def set_aside_unreadable_ledger(store: Store, paths: StudyPaths) -> str | None:
    """Move an unreadable ledger to ``ledger.xlsx.corrupt-<UTC time>``; its new key, or
    None when there is nothing to move (no ledger, or one that reads back).

    The next run then rebuilds the ledger from the ``scores.json`` files, as it does
    for a deleted one; the damaged file is kept for whoever wants to look at it.
    """
    from hpo.records.ledger import LedgerUnreadable, read_ledger

    try:
        read_ledger(store, paths.ledger)
        return None
    except LedgerUnreadable:
        pass
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = f"{paths.ledger}.corrupt-{stamp}"
    store.put_bytes(aside, store.get_bytes(paths.ledger), if_none_match=True)
    store.delete(paths.ledger)
    return aside


class Recorder:
    """Owns a study's ledger; keeps results that are not written yet until they are."""

    def __init__(
        self,
        store: Store,
        paths: StudyPaths,
        study: Study,
        labels: list[str],
        *,
        batch_size: int = 20,
        batch_growth: float = 0.2,
        max_delay_s: float = 30.0,
    ) -> None:
        self.store = store
        self.paths = paths
        self.study = study
        self.labels = labels
        self.batch_size = batch_size
        self.batch_growth = batch_growth
        self.max_delay_s = max_delay_s
        self._etag: str | None = None
        self._unwritten = 0
        self._written = 0  # rows in the ledger as last written
        self._last_write = time.monotonic()

    def load(self) -> list[SeedResult]:
        """What this study already recorded: the ledger plus finished trainings it missed.

        A training whose ``scores.json`` reached the store but whose row did not
        reach the ledger (a crash between the two) is recovered here; the ledger
        wins where both know a training (``hpo.records.ledger``: "what is the truth on resume").
        """
        from hpo.records.ledger import read_ledger

        self._etag = self.store.etag(self.paths.ledger)
        results = read_ledger(self.store, self.paths.ledger) if self._etag else []
        seen = {r.key for r in results}
        recovered = stored_results(self.store, self.paths, seen)
        self._unwritten = len(recovered)
        self._written = len(results)
        return results + recovered

    def save_study(self) -> None:
        text = yaml.safe_dump(self.study.as_resource(), sort_keys=False)
        self.store.put_bytes(self.paths.study, text.encode())

    def note(self, n: int = 1) -> None:
        self._unwritten += n

    @property
    def due(self) -> bool:
        if self._unwritten == 0:
            return False
        waited = time.monotonic() - self._last_write
        batch = max(self.batch_size, self.batch_growth * self._written)
        return self._unwritten >= batch or waited >= self.max_delay_s

    def write(self, results: list[SeedResult], best: Any = None) -> None:
        """Write the whole ledger now (conditionally on our last write)."""
        from hpo.records.ledger import write_ledger

        started = time.perf_counter()
        try:
            self._etag = write_ledger(
                self.store,
                self.paths.ledger,
                results,
                self.labels,
                best,
                self.study.as_resource(),
                if_match=self._etag,
                if_none_match=self._etag is None,
            )
        except PreconditionFailed as exc:
            raise LedgerConflict(
                f"the ledger {self.store.uri}/{self.paths.ledger} was written by someone else "
                f"({exc}); is the same study running twice? Not overwriting it."
            ) from exc
        self._unwritten = 0
        self._written = len(results)
        self._last_write = time.monotonic()
        # One line per write (an operator logs at INFO): its cost is visible at scale.
        log.info(
            "ledger %s: %d rows written in %.3fs",
            self.paths.ledger,
            len(results),
            time.perf_counter() - started,
        )

    def finish(self, results: list[SeedResult]) -> Any:
        """Final group, last ledger write, plots. Returns the final group (a DataFrame)."""
        from hpo.records.report import final_group, make_plots

        spec = self.study.spec
        best = final_group(
            results, self.labels, spec.result.thresholds, spec.result.size, spec.racing
        )
        self.write(results, best)
        with tempfile.TemporaryDirectory() as tmp:
            for png in make_plots(results, best, Path(tmp)):
                self.store.put_file(self.paths.plot(png.name), png)
            summary = Path(tmp) / BEST_FILE
            summary.write_text(json.dumps(best_records(best), indent=1))
            self.store.put_file(self.paths.best, summary)
        return best
