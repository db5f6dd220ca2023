"""Re-score saved artifacts: proof that a stored model reproduces its recorded MAE.

Uses the saved scalers (not refitted ones) and the same split and metric code
as training, so any difference from ``scores.json`` means the artifacts, not
the arithmetic, changed. Only tests need this, so it lives here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hpo.data.scaling import Scaler
from hpo.store import Store
from hpo.store.keys import join_key
from hpo.study.contract import DatasetRef
from hpo_trainer.data import load_splits
from hpo_trainer.metrics import standardised_mae
from hpo_trainer.model import configure_runtime, load_model, predict


def load_and_score(store: Store, artifacts_prefix: str, dataset: DatasetRef) -> float:
    """Download model and scalers from ``artifacts_prefix``; return the test-split MAE."""
    feature_scaler = Scaler.from_json(
        store.get_bytes(join_key(artifacts_prefix, "feature_scaler.json")).decode()
    )
    label_scaler = Scaler.from_json(
        store.get_bytes(join_key(artifacts_prefix, "label_scaler.json")).decode()
    )
    data = load_splits(dataset)
    configure_runtime()
    with tempfile.TemporaryDirectory(prefix="hpo-evaluate-") as tmp:
        path = store.get_file(join_key(artifacts_prefix, "model.keras"), Path(tmp) / "model.keras")
        model = load_model(path)
    y_pred_std = predict(model, feature_scaler.transform(data.x_test))
    return standardised_mae(label_scaler.transform(data.y_test), y_pred_std)
