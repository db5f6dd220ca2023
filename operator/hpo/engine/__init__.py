"""What to train next: scheduling, ranking and stage changes, decided from the records alone.

Pure: no kopf, no kubernetes, no TensorFlow. Runners hand the engine what
finished and take what it plans; nothing outside changes its state. What the
narrow stage tries is a strategy's behind one seam (``hpo.engine.search``).
"""

from hpo.engine.budget import (
    budget_of,
    cost_line,
    planned_configurations,
    planned_trainings,
    stage_sizes,
)
from hpo.engine.core import Engine
from hpo.engine.search import NarrowSearch, Proposal, Records
from hpo.engine.trials import (
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
    "NarrowSearch",
    "Proposal",
    "Records",
    "StudyProgress",
    "Task",
    "TrainingId",
    "Trial",
    "WarmStart",
    "budget_of",
    "cost_line",
    "planned_configurations",
    "planned_trainings",
    "stage_sizes",
    "warm_trial_id",
]
