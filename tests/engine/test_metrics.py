"""UAR / WAR / confusion matrix against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.engine import metrics


def test_confusion_matrix_rows_are_true_classes():
    labels = [0, 0, 1, 2, 2, 2]
    preds = [0, 1, 1, 2, 0, 2]
    cm = metrics.confusion_matrix(labels, preds, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_uar_war_hand_computed():
    # class 0: 1/2, class 1: 1/1, class 2: 2/3  -> UAR = (50 + 100 + 66.67) / 3, WAR = 4/6
    labels = [0, 0, 1, 2, 2, 2]
    preds = [0, 1, 1, 2, 0, 2]
    assert metrics.uar(labels, preds, 3) == pytest.approx((50 + 100 + 200 / 3) / 3)
    assert metrics.war(labels, preds) == pytest.approx(400 / 6)


def test_class_without_test_samples_is_excluded_from_uar():
    # 4 classes, class 3 never occurs in the labels (but is predicted once)
    labels = [0, 0, 1, 1, 2, 2, 2, 2]
    preds = [0, 0, 1, 3, 2, 2, 0, 1]
    out = metrics.classification_metrics(labels, preds, 4)
    assert out["per_class_recall"] == [100.0, 50.0, 50.0, None]
    assert out["uar"] == pytest.approx((100 + 50 + 50) / 3)
    assert out["war"] == pytest.approx(100 * 5 / 8)
    assert out["confusion"][1] == [0, 1, 0, 1]
    assert out["confusion"][3] == [0, 0, 0, 0]
    assert out["count"] == 8


def test_perfect_and_imbalanced():
    labels = [0] * 9 + [1]
    preds = [0] * 10  # majority-class predictor: high WAR, UAR = 50
    assert metrics.war(labels, preds) == pytest.approx(90.0)
    assert metrics.uar(labels, preds, 2) == pytest.approx(50.0)
    cm = np.diag([3, 4, 5])
    assert metrics.uar_from_confusion(cm) == 100.0
    assert metrics.war_from_confusion(cm) == 100.0


def test_out_of_range_ids_raise():
    with pytest.raises(ValueError, match="out of range"):
        metrics.confusion_matrix([0, 5], [0, 1], 3)
    with pytest.raises(ValueError, match="differ in length"):
        metrics.confusion_matrix([0, 1], [0], 3)
