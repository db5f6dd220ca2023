"""The study's Excel ledger (``<study>/ledger.xlsx``): every training, for people and for resume.

- ``frames``: the tables as DataFrames (``Trials``: one row per training,
  ``Configurations``: one row per configuration, ranked, ``Study``: the spec
  as run; ``Best`` is the final group from ``hpo.records.report``);
- ``xlsx``: the workbook format (OOXML), written for Excel, read back exactly;
- ``io``: ``write_ledger`` (one conditional ``put_bytes``, so concurrent
  writers cannot silently overwrite each other) and ``read_ledger`` (rebuilds
  exactly the ``SeedResult`` objects that were written).

What is the truth on resume
---------------------------
Three records can hold a training's outcome: the ledger, the training's own
``<study>/trials/<trial>/seed-<n>/scores.json`` and the
failure records ``<study>/failures/<trial>/seed-<n>/attempt-<k>.json``. A
study resumes from their union, read in this order, the first to know a
training winning (``hpo.records.recorder.Recorder.load``, then
``hpo.session.StudySession.start``, for both runners):

1. **The ledger.** Every row it holds is final: a training in it is never
   trained again, whatever the other records say. It is written in batches,
   so it may lag behind the other two, never the reverse.
2. **scores.json** of trainings the ledger lacks. The trainer uploads it
   last, after every other artifact, and only for a success, so a valid one
   at its own key is a complete success that a crash kept out of the ledger;
   it is recovered (and written at the next ledger write). Torn, foreign or
   misplaced files are ignored: the training is simply done again. While a
   pod runs, its ``scores.json`` (not its termination message) is likewise
   what makes a success count.
3. **Failure records** of trainings neither of the above has, and whose pod
   (or a later attempt's) is gone: the operator and ``hpo run`` store one
   per failed attempt *before* the engine lets go of it (the pod, the retry
   charged), because failures never reach a ``scores.json``. The last
   attempt of a training that used all its retries is a final, failed result
   (appended to the ledger); an earlier one only counts as an attempt used,
   so the retry goes on with the right attempt number instead of starting
   over (and, under ``budget.trainings``, still charged).
"""

from hpo.records.ledger.frames import (
    configurations_columns,
    configurations_frame,
    study_frame,
    trials_columns,
    trials_frame,
)
from hpo.records.ledger.io import LedgerUnreadable, read_ledger, write_ledger
from hpo.records.ledger.xlsx import NO_BEST_NOTE, SHEETS, number_format

__all__ = [
    "NO_BEST_NOTE",
    "SHEETS",
    "LedgerUnreadable",
    "configurations_columns",
    "configurations_frame",
    "number_format",
    "read_ledger",
    "study_frame",
    "trials_columns",
    "trials_frame",
    "write_ledger",
]
