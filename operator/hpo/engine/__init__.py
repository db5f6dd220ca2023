"""What to train next: scheduling, ranking and stage changes, decided from the records alone.

Pure: no kopf, no kubernetes, no TensorFlow. Runners hand the engine what
finished and take what it plans; nothing outside changes its state.
"""

from hpo.engine.core import (
    Engine,
    HistoryConflict,
    StudyProgress,
    Task,
    TrainingId,
    Trial,
    WarmStart,
    warm_trial_id,
)

__all__ = [
    "Engine",
    "HistoryConflict",
    "StudyProgress",
    "Task",
    "TrainingId",
    "Trial",
    "WarmStart",
    "warm_trial_id",
]
