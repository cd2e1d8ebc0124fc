"""Classification metrics against hand-computed values, and their error messages."""

from __future__ import annotations

import numpy as np
import pytest

from fanbu.errors import FanbuError
from fanbu.evaluate import EvaluationError, accuracy, classification_metrics, macro_f1

# 3 classes. Per class: 0 -> P 1, R 2/3, F1 0.8; 1 -> P 1/2, R 1/2, F1 0.5; 2 -> P 1/2, R 1, F1 2/3.
LABELS = [0, 0, 0, 1, 1, 2]
PREDS = [0, 0, 1, 1, 2, 2]


def test_accuracy_hand_computed() -> None:
    assert accuracy(PREDS, LABELS) == pytest.approx(4 / 6)
    assert accuracy(np.array([1, 1]), np.array([1, 1])) == 1.0


def test_macro_f1_differs_from_accuracy() -> None:
    expected = (0.8 + 0.5 + 2 / 3) / 3
    assert macro_f1(PREDS, LABELS) == pytest.approx(expected)
    assert macro_f1(PREDS, LABELS) != pytest.approx(accuracy(PREDS, LABELS))


def test_macro_f1_num_labels_counts_absent_classes_as_zero() -> None:
    assert macro_f1(PREDS, LABELS, num_labels=4) == pytest.approx((0.8 + 0.5 + 2 / 3) / 4)
    assert macro_f1(PREDS, LABELS, num_labels=3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_classification_metrics_dict() -> None:
    out = classification_metrics(np.array(PREDS), np.array(LABELS), num_labels=3)
    assert out == {
        "accuracy": pytest.approx(4 / 6),
        "macro_f1": pytest.approx((0.8 + 0.5 + 2 / 3) / 3),
        "n": 6,
    }


def test_length_mismatch_message() -> None:
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(EvaluationError, match="3 predictions but 2 labels"):
        classification_metrics([0, 1, 2], [0, 1])


def test_empty_message() -> None:
    with pytest.raises(ValueError, match="no predictions to score"):
        macro_f1([], [])
    with pytest.raises(FanbuError, match="evaluation split is empty"):
        classification_metrics([], [])


def test_not_one_dimensional_message() -> None:
    with pytest.raises(ValueError, match=r"1-D sequences of class ids.*argmax"):
        accuracy(np.zeros((2, 3)), [0, 1])


def test_num_labels_out_of_range_messages() -> None:
    with pytest.raises(ValueError, match=r"label 2 is outside range\(num_labels=2\)"):
        macro_f1([0, 1, 1], [0, 1, 2], num_labels=2)
    with pytest.raises(ValueError, match=r"prediction -1 is outside range\(num_labels=3\)"):
        macro_f1([0, -1, 1], [0, 1, 2], num_labels=3)
    with pytest.raises(ValueError, match="num_labels must be >= 1, got 0"):
        macro_f1([0], [0], num_labels=0)
