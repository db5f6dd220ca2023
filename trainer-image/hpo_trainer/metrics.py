"""Scores of a trained model on the test split (numpy only).

Kept apart from training so that re-scoring a reloaded model (the tests do)
uses exactly the same arithmetic that produced the recorded objective.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hpo.data.scaling import Scaler


def standardised_mae(y_true_std: np.ndarray, y_pred_std: np.ndarray) -> float:
    """Mean absolute error over all labels in standardised units: the study objective.

    Standardising first makes labels with different units weigh equally.
    """
    return float(np.mean(np.abs(np.asarray(y_true_std) - np.asarray(y_pred_std))))


def per_label_scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: Sequence[str],
    reference_values: Mapping[str, float],
) -> dict[str, dict[str, float]]:
    """Per label: MAE in original units and as a percentage of a reference value.

    The reference is the dataset's declared value for that label if any, else
    the mean absolute true value on the test split. ``pct`` is omitted when the
    reference is zero (a percentage of nothing means nothing).
    """
    scores: dict[str, dict[str, float]] = {}
    for i, label in enumerate(labels):
        mae = float(np.mean(np.abs(y_true[:, i] - y_pred[:, i])))
        ref = reference_values.get(label)
        ref = float(np.mean(np.abs(y_true[:, i]))) if ref is None else float(ref)
        entry = {"mae": mae}
        if np.isfinite(ref) and ref != 0.0:
            entry["pct"] = 100.0 * mae / abs(ref)
        scores[label] = entry
    return scores


def score(
    y_true: np.ndarray,
    y_pred_std: np.ndarray,
    label_scaler: Scaler,
    reference_values: Mapping[str, float],
) -> tuple[float, dict[str, dict[str, float]]]:
    """Objective and per-label scores from original-unit truth and standardised predictions."""
    mae = standardised_mae(label_scaler.transform(y_true), y_pred_std)
    per_label = per_label_scores(
        y_true, label_scaler.inverse_transform(y_pred_std), label_scaler.columns, reference_values
    )
    return mae, per_label
