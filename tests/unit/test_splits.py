"""Leave-one-out with a cold hold-out: what each side trains on and what ranking removes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from learn_core.datasets.base import Dataset
from learn_core.events import ItemCreated
from trainers.evaluation import eval_loop
from trainers.splits import leave_one_out


def _dataset(seqs: dict[str, list[int]], n_items: int) -> Dataset:
    rows = [
        (
            f"{u}-{k}",
            u,
            str(i),
            "rating",
            5.0,
            pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(k, "h"),
        )
        for u, seq in seqs.items()
        for k, i in enumerate(seq)
    ]
    df = pd.DataFrame(
        rows, columns=["event_id", "user_id", "item_id", "event_type", "value", "occurred_at"]
    )
    items = [ItemCreated(item_id=str(i), title=f"item {i}") for i in range(n_items)]
    return Dataset(
        "tiny", items, df.sort_values("occurred_at", kind="stable").reset_index(drop=True)
    )


def test_cold_items_leave_training_but_are_still_excluded_as_seen() -> None:
    ds = _dataset({"a": list(range(12)), "b": list(range(12, 24))}, 24)
    split = leave_one_out(ds, cold_fraction=0.25, seed=0)
    cold = split.cold
    for u, seq in enumerate([np.arange(12), np.arange(12, 24)]):
        rest = seq[:-1]
        warm_rest = rest[~cold[rest]]
        assert split.test[u] == seq[-1]
        assert split.valid[u] == warm_rest[-1]
        np.testing.assert_array_equal(split.train[u], warm_rest[:-1])
        # the test ranking removes everything seen before the test target, cold included
        np.testing.assert_array_equal(np.sort(split.excluded(u, "test")), np.sort(rest))
        # the validation ranking removes only what came before the validation target
        before_valid = rest[: int(np.flatnonzero(rest == split.valid[u])[0])]
        np.testing.assert_array_equal(split.excluded(u, "valid"), before_valid)
    assert cold[np.concatenate(split.train)].sum() == 0


def test_eval_loop_never_ranks_a_seen_cold_item_above_the_target() -> None:
    ds = _dataset({"a": list(range(12))}, 30)
    split = leave_one_out(ds, cold_fraction=0.3, seed=1)
    seen_cold = [i for i in range(11) if split.cold[i]]
    assert seen_cold, "the seed must hide at least one of the user's earlier items"

    def favour_seen_cold(users: np.ndarray, hists: list[np.ndarray]) -> np.ndarray:
        scores = np.zeros((len(users), split.n_items))
        scores[:, seen_cold] = 10.0  # a model that has never seen them may rank them top
        scores[:, split.test[0]] = 1.0
        return scores

    assert eval_loop(favour_seen_cold, split, "test")[0] == 0.0
