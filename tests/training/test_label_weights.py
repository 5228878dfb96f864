"""Unlabelled returns weigh what time has vouched for: F(age) from past label delays, against a hand count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.trainset import arrival_weights

CUTOFF = pd.Timestamp("2026-06-01", tz="UTC")


def test_labelled_rows_weigh_one_and_unlabelled_ones_the_share_of_labels_that_had_arrived_by_their_age():
    rows = pd.DataFrame({"requested_at": [CUTOFF - pd.Timedelta(days=d) for d in (1, 5, 10, 40, 200, 3)]})
    labelled = np.array([False, False, False, False, False, True])
    delays = np.array([2.0, 4.0, 6.0, 8.0, 30.0])  # days each past fraud label took
    weights = arrival_weights(rows, labelled, CUTOFF, delays)
    arrived = [sum(d <= age for d in delays) / len(delays) for age in (1, 5, 10, 40, 200)]
    expected = [f if f >= 0.75 else 0.0 for f in arrived] + [1.0]  # unripe unlabelled returns are left out
    assert weights == pytest.approx(expected)
    assert weights.tolist() == pytest.approx([0.0, 0.0, 0.8, 1.0, 1.0, 1.0])


def test_without_any_past_label_delay_every_row_weighs_one():
    rows = pd.DataFrame({"requested_at": [CUTOFF - pd.Timedelta(days=1)]})
    assert arrival_weights(rows, np.array([False]), CUTOFF, np.array([])).tolist() == [1.0]
