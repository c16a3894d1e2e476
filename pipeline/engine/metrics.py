"""Classification metrics of the paper: WAR (accuracy), UAR (mean per-class recall), confusion.

UAR averages recall over the classes that occur in the labels only: a class with no test
samples has no recall (None) and does not pull the mean down. All percentages are 0..100.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(preds, dtype=np.int64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and predictions ({p.size}) differ in length")
    for name, arr in (("label", y), ("prediction", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} id out of range 0..{num_classes - 1}: {int(arr.min())}..{int(arr.max())}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def per_class_recall(cm: np.ndarray) -> list[float | None]:
    """Recall in % per class (diagonal / row sum); None for a class with no samples."""
    cm = np.asarray(cm)
    support = cm.sum(axis=1)
    return [float(100.0 * cm[i, i] / support[i]) if support[i] else None for i in range(cm.shape[0])]


def uar_from_confusion(cm: np.ndarray) -> float:
    """Unweighted average recall (%) over the classes present in the labels."""
    recalls = [r for r in per_class_recall(cm) if r is not None]
    return float(np.mean(recalls)) if recalls else 0.0


def war_from_confusion(cm: np.ndarray) -> float:
    """Weighted average recall (%) = accuracy."""
    total = int(np.asarray(cm).sum())
    return float(100.0 * np.trace(cm) / total) if total else 0.0


def uar(labels: Sequence[int], preds: Sequence[int], num_classes: int | None = None) -> float:
    """UAR (%) of predictions against labels."""
    n = num_classes if num_classes is not None else int(max(max(labels, default=0), max(preds, default=0))) + 1
    return uar_from_confusion(confusion_matrix(labels, preds, n))


def war(labels: Sequence[int], preds: Sequence[int]) -> float:
    """WAR (%) = accuracy of predictions against labels."""
    y = np.asarray(labels).reshape(-1)
    p = np.asarray(preds).reshape(-1)
    return float(100.0 * (y == p).mean()) if y.size else 0.0


def classification_metrics(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> dict[str, Any]:
    """uar, war, per_class_recall (list, None where no samples), confusion (nested list), count."""
    cm = confusion_matrix(labels, preds, num_classes)
    return {
        "uar": uar_from_confusion(cm),
        "war": war_from_confusion(cm),
        "per_class_recall": per_class_recall(cm),
        "confusion": cm.tolist(),
        "count": int(cm.sum()),
    }
