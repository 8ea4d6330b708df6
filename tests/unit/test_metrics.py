"""Ranking metrics against hand-ranked examples."""

from __future__ import annotations

import math

import numpy as np

from trainers.metrics import ranking_metrics, target_ranks


def test_ranks_exclude_seen_but_never_the_target() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.1, 0.5]])
    # target item 2 (0.7): items 0 and 1 are higher; item 0 is seen -> rank 1
    exclude = np.array([[True, False, True, False, False]])
    assert target_ranks(scores, np.array([2]), exclude)[0] == 1.0
    assert target_ranks(scores, np.array([2]))[0] == 2.0


def test_ties_count_half() -> None:
    assert target_ranks(np.zeros((1, 5)), np.array([0]))[0] == 2.0


def test_metrics_by_hand() -> None:
    ranks = np.array([0.0, 4.0, 12.0, 60.0])  # 0-based
    m = ranking_metrics(ranks, ks=(10, 50))
    assert m["n"] == 4
    assert m["hr@10"] == 0.5
    assert m["hr@50"] == 0.75
    assert math.isclose(m["ndcg@10"], (1.0 + 1.0 / math.log2(6)) / 4)
    assert math.isclose(m["ndcg@50"], (1.0 + 1.0 / math.log2(6) + 1.0 / math.log2(14)) / 4)
    assert math.isclose(m["mrr"], (1 + 1 / 5 + 1 / 13 + 1 / 61) / 4)


def test_empty_slice_gives_nan_not_zero() -> None:
    m = ranking_metrics(np.array([]), ks=(10,))
    assert m["n"] == 0 and math.isnan(m["hr@10"])
