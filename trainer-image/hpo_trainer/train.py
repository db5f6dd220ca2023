"""One training per seed: fit, score on the validation and test splits, upload the artifacts.

The validation MAE (the held-out fold with cross-validation) is the selection
score; the test MAE is only reported.

``train_one`` does not raise for anything the training is to blame for: that
becomes a failed ``SeedResult`` with a one-line reason, so a worker can carry
on with the next seed and the operator can record the failure in the ledger.
Output that cannot be written (no space left, read-only, file too large: the
store's or the staging folder's) raises ``OutputUnwritable`` instead: it is no
fault of the configuration, and the runner stops rather than retrying it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpo.data.dataset import DatasetError, localise
from hpo.data.encoding import FeaturesFile
from hpo.store import OutputUnwritable, Store, StoreError
from hpo.study.contract import SeedResult, TrainingRequest
from hpo.study.layout import StudyPaths
from hpo_trainer.data import PreparedData, load_splits
from hpo_trainer.devices import gpu_problem, gpus_required, visible_devices
from hpo_trainer.metrics import score, standardised_mae
from hpo_trainer.model import (
    ConfigError,
    MlpConfig,
    configure_runtime,
    predict,
    save_model,
    train_model,
)

if TYPE_CHECKING:
    import keras

#: Errors whose message is already a complete explanation for the user.
_EXPLAINED = (DatasetError, ConfigError)
_MAX_ERROR_CHARS = 500


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, so the model has no usable score."""


def _json_default(value: Any) -> Any:
    """Let numpy scalars/arrays (as optimisers produce them) pass through JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, default=_json_default))


def error_message(exc: BaseException) -> str:
    """A one-line reason: the message alone for our own errors, else 'Type: message'."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, _EXPLAINED):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


#: The file system's refusals that are the place's fault, not the training's: no space,
#: quota, read-only, file too large, no permission. Any other error saving a model (EIO,
#: a bug) stays a failed training, or every resume would stop on the same one.
_UNWRITABLE = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}
)


def _os_error(exc: BaseException) -> OSError | None:
    """The file system's refusal behind ``exc`` (Keras and h5py wrap it), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _UNWRITABLE:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def artifacts_prefix(request: TrainingRequest, seed: int) -> str:
    """Where a seed's artifacts go: ``<study>/trials/<trial>/seed-<n>``, nowhere else.

    The request travels as a pod argument; a request whose ``output_prefix`` is not
    its own trial's folder is refused rather than written wherever it points.
    """
    paths = StudyPaths(request.study)
    own = paths.trial(request.trial)
    if request.output_prefix != own:
        raise StoreError(
            f"invalid training request: output_prefix {request.output_prefix!r} is not the "
            f"folder of trial {request.trial!r} of study {request.study!r} ({own!r})"
        )
    return paths.seed(request.trial, seed)


def _write_artifacts(
    folder: Path, request: TrainingRequest, seed: int, model: keras.Model, data: PreparedData
) -> None:
    """Every artifact but scores.json (``hpo.study.layout.ARTIFACT_FILES``), into a folder for one
    ``put_dir``."""
    save_model(model, folder / "model.keras")
    (folder / "feature_scaler.json").write_text(data.feature_scaler.to_json())
    (folder / "label_scaler.json").write_text(data.label_scaler.to_json())
    features = FeaturesFile(data.encoding, tuple(request.dataset.labels))
    (folder / "features.json").write_text(features.to_json())
    (folder / "seed.json").write_text(json.dumps({"seed": seed}))
    config = {
        "study": request.study,
        "trial": request.trial,
        "stage": request.stage,
        "parent": request.parent,
        "seed": seed,
        "config": _plain(request.config),
        "config_key": request.config_key,
        "dataset": asdict(request.dataset),
        "training": asdict(request.training),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=_json_default))


def train_one(request: TrainingRequest, seed: int, store: Store) -> SeedResult:
    """Train ``request.config`` with ``seed``, score it, upload it; raises only
    ``OutputUnwritable``.

    With ``dataset.folds`` the seed also picks the validation fold (seed mod folds):
    early stopping and ``val_mae`` both use it, the scalers fit on the other folds.

    ``scores.json`` is uploaded last, after every other artifact, so its
    presence means the training is complete. Failed trainings upload nothing.
    """
    started = time.perf_counter()
    result = SeedResult(
        study=request.study,
        trial=request.trial,
        stage=request.stage,
        parent=request.parent,
        config=dict(request.config),
        config_key=request.config_key,
        seed=int(seed),
        status="failed",
    )
    prefix = ""
    try:
        prefix = artifacts_prefix(request, seed)
        result.config = _plain(request.config)
        config = MlpConfig.parse(request.config)
        data = load_splits(localise(request.dataset, request.store), int(seed))
        result.rows_dropped = data.rows_dropped
        configure_runtime(request.training.threads)
        fs, ls = data.feature_scaler, data.label_scaler
        fitted = train_model(
            config,
            int(seed),
            (
                fs.transform(data.x_train),
                ls.transform(data.y_train),
                fs.transform(data.x_val),
                ls.transform(data.y_val),
            ),
            epochs=request.training.epochs,
            patience=request.training.patience,
        )
        model, result.epochs_run, result.fit_s = fitted.model, fitted.epochs_run, fitted.fit_s
        val_pred_std = predict(model, fs.transform(data.x_val))
        val_mae = standardised_mae(ls.transform(data.y_val), val_pred_std)
        y_pred_std = predict(model, fs.transform(data.x_test))
        mae, per_label = score(data.y_test, y_pred_std, ls, request.dataset.reference_values)
        for split, value in (("validation", val_mae), ("test", mae)):
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged: {split} MAE is {value} after {result.epochs_run} "
                    "epoch(s); try a lower learning_rate"
                )
        result.mae, result.val_mae, result.per_label = mae, val_mae, per_label
        with tempfile.TemporaryDirectory(prefix="hpo-trainer-") as tmp:
            try:
                _write_artifacts(Path(tmp), request, int(seed), model, data)
            except Exception as exc:
                refused = _os_error(exc)
                if refused is None:
                    raise
                raise OutputUnwritable.of(refused, tmp) from exc
            store.put_dir(prefix, Path(tmp))
        result.status, result.artifacts = "succeeded", prefix
        result.runtime_s = time.perf_counter() - started
        result.finished_at = time.time()
        scores = StudyPaths(request.study).scores(request.trial, seed)
        store.put_bytes(scores, result.to_json().encode())
    except OutputUnwritable:
        raise
    except Exception as exc:
        result.status, result.artifacts = "failed", None
        result.mae, result.val_mae, result.per_label = None, None, {}
        result.error = error_message(exc)
        result.runtime_s = time.perf_counter() - started
        result.finished_at = time.time()
    return result


def train_request(request: TrainingRequest, store: Store) -> list[SeedResult]:
    """Every seed of the request, in order; one failure does not stop the others.

    Names the devices TensorFlow sees (stderr: the pod's log); if the pod asked for more
    GPUs than that (``HPO_GPUS``), every seed fails with that message, untrained.
    """
    problem = None
    try:
        required = gpus_required()
        configure_runtime(request.training.threads)
        devices = visible_devices()
        print(devices.describe(), file=sys.stderr, flush=True)
        problem = gpu_problem(devices, required, os.environ.get("HPO_IMAGE_VARIANT", ""))
    except ValueError as exc:
        problem = str(exc)
    if problem is None:
        return [train_one(request, seed, store) for seed in request.seeds]
    print(problem, file=sys.stderr, flush=True)
    return [_refused(request, seed, problem) for seed in request.seeds]


def _refused(request: TrainingRequest, seed: int, error: str) -> SeedResult:
    return SeedResult(
        study=request.study,
        trial=request.trial,
        stage=request.stage,
        parent=request.parent,
        config=_plain(request.config),
        config_key=request.config_key,
        seed=int(seed),
        status="failed",
        error=error,
        finished_at=time.time(),
    )
