"""Leave-one-out splits with a cold-start item hold-out, shared by every model.

Per user, interactions are ordered by time; the last is the test target. A random
``cold_fraction`` of items is held out of training entirely: those items are removed
from every history and training sequence and can only appear as test targets. Of the
remaining items the last is the validation target and the rest is training data.
Full ranking removes every item the user interacted with before the target, held-out
ones included: hiding an item from the model does not make it new to the user.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from learn_core.datasets import Dataset, conversion_labels


@dataclass
class Split:
    """Item indices refer to ``dataset.items`` order; ``-1`` marks a missing target."""

    item_ids: list[str]
    users: list[str]
    train: list[np.ndarray]  # per user, oldest first, no cold items, no valid/test target
    train_conv: list[np.ndarray]  # conversion label of each training interaction
    valid: np.ndarray  # [U] validation target
    test: np.ndarray  # [U] test target
    cold: np.ndarray  # [N] bool: held out of training
    n_events: np.ndarray  # [U] interactions per user before any hold-out
    # Per user, every item interacted with before the test target, cold ones included,
    # and how many of them precede the validation target. Ranking removes what the user
    # has already seen; a held-out item is hidden from the model, not from the user.
    seen: list[np.ndarray] | None = None
    seen_before_valid: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def history(self, u: int, which: str) -> np.ndarray:
        """What a model may read before the target: train (+ the validation item for test)."""
        if which == "valid" or self.valid[u] < 0:
            return self.train[u]
        return np.append(self.train[u], self.valid[u])

    def excluded(self, u: int, which: str) -> np.ndarray:
        """Items left out of the ranking of ``which``: all the user saw before that target."""
        if self.seen is None or self.seen_before_valid is None:
            return self.history(u, which)
        if which == "valid":
            return self.seen[u][: self.seen_before_valid[u]]
        return self.seen[u]

    def train_counts(self) -> np.ndarray:
        counts = np.zeros(self.n_items, dtype=np.int64)
        for seq in self.train:
            np.add.at(counts, seq, 1)
        return counts


def _draw_items(pool: np.ndarray, fraction: float, n_items: int, seed: int) -> np.ndarray:
    """Boolean mask over ``n_items``: a seeded random ``fraction`` of ``pool``."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(n_items, dtype=bool)
    mask[rng.choice(pool, size=int(round(fraction * len(pool))), replace=False)] = True
    return mask


def leave_one_out(dataset: Dataset, cold_fraction: float = 0.1, seed: int = 0) -> Split:
    item_ids = dataset.item_ids
    index = {iid: i for i, iid in enumerate(item_ids)}
    df = dataset.interactions
    items = df["item_id"].map(index).to_numpy(dtype=np.int64)
    conv = conversion_labels(df)
    users_col = df["user_id"].to_numpy()

    cold = _draw_items(np.unique(items), cold_fraction, len(item_ids), seed)

    order = np.argsort(users_col, kind="stable")  # keeps time order inside each user
    users, starts = np.unique(users_col[order], return_index=True)
    bounds = np.append(starts, len(order))
    train, train_conv, valid, test, n_events = [], [], [], [], []
    seen, seen_before_valid = [], []
    for k in range(len(users)):
        rows = order[bounds[k] : bounds[k + 1]]
        seq, lab = items[rows], conv[rows]
        n_events.append(len(seq))
        rest, rest_lab = seq[:-1], lab[:-1]
        seen.append(rest)
        keep = ~cold[rest]
        rest, rest_lab = rest[keep], rest_lab[keep]
        test.append(seq[-1] if len(rest) else -1)  # a test target needs some history
        if len(rest) >= 2:
            valid.append(rest[-1])
            seen_before_valid.append(int(np.flatnonzero(keep)[-1]))  # the valid slot
            rest, rest_lab = rest[:-1], rest_lab[:-1]
        else:
            valid.append(-1)
            seen_before_valid.append(0)
        train.append(rest)
        train_conv.append(rest_lab)
    return Split(
        item_ids=item_ids,
        users=[str(u) for u in users],
        train=train,
        train_conv=train_conv,
        valid=np.asarray(valid, dtype=np.int64),
        test=np.asarray(test, dtype=np.int64),
        cold=cold,
        n_events=np.asarray(n_events, dtype=np.int64),
        seen=seen,
        seen_before_valid=np.asarray(seen_before_valid, dtype=np.int64),
    )


def hold_out_validation_cold(split: Split, fraction: float = 0.1, seed: int = 1) -> Split:
    """A selection split whose *validation* side mirrors the test's cold-start slice.

    A further random ``fraction`` of the warm items is removed from every training
    sequence, so that those items appear only as validation targets. Cold-start
    behaviour can then be chosen on validation, never on test. The returned split
    marks them in ``cold`` (so they have no training count) and must only be used for
    validation: its test side is the original one.
    """
    held = _draw_items(np.flatnonzero(~split.cold), fraction, split.n_items, seed)
    keep = [~held[seq] for seq in split.train]
    return replace(
        split,
        train=[seq[k] for seq, k in zip(split.train, keep, strict=True)],
        train_conv=[c[k] for c, k in zip(split.train_conv, keep, strict=True)],
        cold=split.cold | held,
    )


def validation_cold_users(selection: Split, split: Split) -> np.ndarray:
    """Users whose validation target is one of ``selection``'s extra held-out items."""
    held = selection.cold & ~split.cold
    has = selection.valid >= 0
    return has & held[np.where(has, selection.valid, 0)]
