"""The retraining job's training set is point-in-time correct (both Feast profiles)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_repo.store import FeatureStoreHandle
from trainers.jobs.training_data import point_in_time_frame, training_split

pytestmark = pytest.mark.integration

T = pd.Timestamp("2024-03-01", tz="UTC")


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def content(item: str, v: np.ndarray, ts: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame(
        {"item_id": [item], "embedding": [v], "model_version": "c", "event_timestamp": [ts]}
    )


def test_features_after_the_cutoff_never_reach_training(
    feast_handle: FeatureStoreHandle,
) -> None:
    h = feast_handle
    cutoff = T + pd.Timedelta(days=10)
    old_x, new_x, late_y, z = vec(1), vec(2), vec(3), vec(4)
    # x's text changes twice: before its interactions, and after the cut-off.
    h.append_offline("item_content_embedding", content("x", old_x, T))
    h.append_offline("item_content_embedding", content("x", new_x, cutoff + pd.Timedelta(hours=1)))
    # y's content exists only after the cut-off; z's before everything.
    h.append_offline("item_content_embedding", content("y", late_y, cutoff + pd.Timedelta(hours=2)))
    h.append_offline("item_content_embedding", content("z", z, T - pd.Timedelta(days=1)))
    rows = []
    for n, (user, item, day) in enumerate(
        [
            ("u1", "x", 1),
            ("u1", "z", 2),
            ("u1", "y", 3),
            ("u2", "z", 4),
            ("u2", "x", 5),
            ("u2", "x", 11),
            ("u1", "y", 12),
        ]  # the last two lie after the cut-off
    ):
        rows.append(
            {
                "event_id": f"e{n}",
                "user_id": user,
                "item_id": item,
                "event_type": "click",
                "value": np.nan,
                "event_timestamp": T + pd.Timedelta(days=day),
            }
        )
    log_df = pd.DataFrame(rows)
    h.append_offline("interaction_log", log_df)

    data = point_in_time_frame(h, h.read_offline("interaction_log"), cutoff.to_pydatetime())
    # Interactions after the cut-off are gone; y had no content at its interaction time.
    assert sorted(data.frame["event_id"]) == ["e0", "e1", "e3", "e4"]
    assert data.dropped_no_content == 1
    # Only content as of each interaction: old x and z, never new x or y.
    assert sorted(data.token_items) == ["x", "z"]
    for item, want in (("x", old_x), ("z", z)):
        np.testing.assert_allclose(data.matrix[data.token_items.index(item)], want, atol=1e-6)
    for leaked in (new_x, late_y):
        assert np.abs(data.matrix @ leaked).max() < 0.99
    split = training_split(data)
    assert split.users == ["u1", "u2"]
    assert [len(s) for s in split.train] == [2, 2]
