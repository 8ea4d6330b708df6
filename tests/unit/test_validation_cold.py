"""The validation-side cold hold-out used to choose cold-start settings without the test."""

from __future__ import annotations

import numpy as np

from trainers.splits import Split, hold_out_validation_cold, validation_cold_users


def _split() -> Split:
    rng = np.random.default_rng(0)
    n_items, n_users = 40, 30
    train = [rng.choice(n_items, size=12, replace=False) for _ in range(n_users)]
    cold = np.zeros(n_items, dtype=bool)
    cold[:4] = True
    train = [s[~cold[s]] for s in train]
    valid = np.array([s[-1] for s in train])
    train = [s[:-1] for s in train]
    return Split(
        item_ids=[str(i) for i in range(n_items)],
        users=[str(u) for u in range(n_users)],
        train=train,
        train_conv=[np.zeros(len(s), dtype=bool) for s in train],
        valid=valid,
        test=np.full(n_users, 5),
        cold=cold,
        n_events=np.full(n_users, 12),
    )


def test_held_items_leave_training_but_stay_validation_targets() -> None:
    split = _split()
    sel = hold_out_validation_cold(split, fraction=0.25, seed=3)
    held = sel.cold & ~split.cold
    assert held.sum() == 9  # a quarter of the 36 warm items
    assert not (held & split.cold).any() and sel.cold[split.cold].all()
    for before, after, conv in zip(split.train, sel.train, sel.train_conv, strict=True):
        assert not held[after].any()
        assert len(conv) == len(after)
        np.testing.assert_array_equal(after, before[~held[before]])  # order kept
    np.testing.assert_array_equal(sel.valid, split.valid)
    np.testing.assert_array_equal(sel.test, split.test)
    assert sel.train_counts()[held].sum() == 0


def test_validation_cold_users_are_those_with_a_held_target() -> None:
    split = _split()
    sel = hold_out_validation_cold(split, fraction=0.25, seed=3)
    mask = validation_cold_users(sel, split)
    held = sel.cold & ~split.cold
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(mask, held[split.valid])
    assert not validation_cold_users(split, split).any()
