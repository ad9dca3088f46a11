"""GLUE metrics on the 0-100 scale, from scikit-learn and scipy (no hand-written statistics)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def glue_metrics(task_metric: str, predictions, labels) -> dict[str, float]:
    """All the metrics GLUE reports for a task, keyed by name; ``task_metric`` picks the family."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task_metric in ("pearson", "spearman"):
        return {
            "pearson": 100.0 * float(pearsonr(predictions, labels)[0]),
            "spearman": 100.0 * float(spearmanr(predictions, labels)[0]),
        }
    out = {"accuracy": 100.0 * float(accuracy_score(labels, predictions))}
    if task_metric == "mcc":
        out["mcc"] = 100.0 * float(matthews_corrcoef(labels, predictions))
    if task_metric == "f1":
        out["f1"] = 100.0 * float(f1_score(labels, predictions))
    return out
