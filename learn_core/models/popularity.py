"""Popularity: score every item by its count in the training interactions."""

from __future__ import annotations

import numpy as np


class Popularity:
    def __init__(self, n_items: int) -> None:
        self.counts = np.zeros(n_items, dtype=np.float64)

    def fit(self, item_index_sequences: list[np.ndarray]) -> Popularity:
        for seq in item_index_sequences:
            np.add.at(self.counts, seq, 1.0)
        return self

    def scores(self, n_users: int) -> np.ndarray:
        return np.broadcast_to(self.counts.astype(np.float32), (n_users, len(self.counts)))
