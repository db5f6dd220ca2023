"""What a study found, read back: data frames, the final group, models that predict.

The same on a local folder and a bucket, importable without a cluster or
TensorFlow (only ``Predictor`` loading needs the trainer extra). The modules:

- ``errors``: ``ResultsError``, every refusal of this package;
- ``location``: a folder or ``s3://`` URL as a store and a study folder; ``find_studies``;
- ``frames``: the ledger's results as the API's data frames;
- ``study``: ``StudyResults`` and ``open_study``;
- ``features``: raw feature columns -> the model's input matrix through the training's
  ``features.json`` (categorical columns one-hot; the one feature step);
- ``keras_model``: the one seam to ``hpo_trainer`` (lazy: loads a Keras model);
- ``predictor``: ``Predictor``, one seed or an ensemble of seeds;
- ``export``: every training and configuration as csv, json or parquet;
- ``compare``: final groups of several studies side by side.

Example::

    from hpo.results import open_study
    s = open_study("runs/quickstart")
    s.status()                           # live: running, stage, state(); None if absent
    s.final_group()                      # ranked, as in best.json
    p = s.load_model(rank=1)             # every seed of the best, averaged
    p.predict(frame)                     # labels in their own units
    p.predict_rows(frame)                # the same; rows it cannot predict marked (reason)
"""

from hpo.records.livestatus import LiveStatus
from hpo.results.errors import ResultsError
from hpo.results.location import find_studies
from hpo.results.predictor import Predictor
from hpo.results.study import StudyResults, open_study

__all__ = ["LiveStatus", "Predictor", "ResultsError", "StudyResults", "find_studies", "open_study"]
