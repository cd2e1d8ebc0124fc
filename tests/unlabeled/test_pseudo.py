"""Self-training's confidence threshold, chosen on labelled validation text, and the pseudo-labels it keeps."""

from __future__ import annotations

import numpy as np
import pytest

from fanbu.unlabeled.pseudo import choose_threshold, pseudo_label


def test_the_threshold_drops_the_unsure_wrong_predictions():
    confidence = np.array([0.95, 0.9, 0.85, 0.6, 0.55, 0.5])
    correct = np.array([True, True, True, False, False, True])
    assert choose_threshold(confidence, correct) == pytest.approx(0.85)


def test_ties_go_to_the_lower_threshold_and_all_right_keeps_everything():
    assert choose_threshold(np.array([0.9, 0.6]), np.array([True, True])) == 0.0


def test_no_threshold_when_every_choice_keeps_more_wrong_than_right():
    assert choose_threshold(np.array([0.9, 0.8]), np.array([False, False])) is None


def test_pseudo_labels_keep_the_confident_argmax_only():
    probs = np.array([[0.9, 0.1], [0.45, 0.55], [0.2, 0.8]])
    kept = pseudo_label(probs, 0.7)
    assert kept.labels.tolist() == [0, -1, 1] and kept.kept == 2
    assert pseudo_label(probs, None).kept == 0
