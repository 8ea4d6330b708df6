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


def unit64(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(64).astype(np.float32)
    return v / np.linalg.norm(v)


def vectors(key: str, rows: list[tuple[str, np.ndarray, pd.Timestamp]]) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            key: [r[0] for r in rows],
            "embedding": [r[1] for r in rows],
            "model_version": "v1",
            "event_timestamp": [r[2] for r in rows],
        }
    )
    return df.assign(history_len=np.int64(3)) if key == "user_id" else df


def test_ranker_rows_see_only_earlier_values_and_match_the_reader(
    feast_handle: FeatureStoreHandle,
) -> None:
    """bench.ranker's training rows: statistics and LEARN vectors as of each event, never a
    value stamped after it (nor its own label); then the ranking reader, reading the same
    rows online, gives the vectors and mid-emb the training frame has at a later time."""
    import torch

    from bench.ranker_data import AFTER, stats_rows
    from bench.ranker_join import pandas_join, same_frames
    from feature_repo.definitions import ranker_definitions
    from feature_repo.schema import ITEM_STATS, ITEM_TOWER, RANKER_VIEWS, USER_STATS, USER_TOWER
    from learn_core.models import LearnConfig, LearnModel
    from learn_core.serving import ModelCache
    from ranking.reader import RankingReader
    from ranking.settings import RankingSettings

    h = feast_handle
    extra = ranker_definitions(
        h.settings.profile, h.settings.project, h.settings.resolved_data_dir(), h.definitions
    )
    h.store.apply(extra.objects())
    for name in RANKER_VIEWS:
        h.offline.ensure(name)
    day = pd.Timedelta(days=1)
    events = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u1"],
            "item_id": ["x", "y", "x", "x"],
            "event_timestamp": [T + day, T + 3 * day, T + 3 * day, T + 5 * day],
            "label": [1, 0, 1, 0],
        }
    )
    u_old, u_new, u_late, x_vec, y_vec = (unit64(s) for s in range(5))
    views = {
        USER_STATS.name: (stats_rows(events, "user_id"), "user_id"),
        ITEM_STATS.name: (stats_rows(events, "item_id", {"x": "a", "y": "b"}), "item_id"),
        # u1's vector changes at day 3 exactly (reaches the day-3 row) and 1 us after day 4.
        USER_TOWER.name: (
            vectors(
                "user_id",
                [("u1", u_old, T), ("u1", u_new, T + 3 * day), ("u1", u_late, T + 4 * day + AFTER)],
            ),
            "user_id",
        ),
        # y's vector exists only after its exposure.
        ITEM_TOWER.name: (
            vectors("item_id", [("x", x_vec, T), ("y", y_vec, T + 3 * day + AFTER)]),
            "item_id",
        ),
    }
    for view, (df, _) in views.items():
        h.append_offline(view, df)
    refs = [
        f"{v}:{f}"
        for v, (df, key) in views.items()
        for f in df.columns
        if f not in (key, "event_timestamp", "created")
    ]
    got = h.historical(events, refs, full_feature_names=True)
    assert list(got["event_timestamp"]) == list(events["event_timestamp"])
    # Statistics: only earlier events, so never the row's own label.
    assert got[f"{USER_STATS.name}__events"].fillna(0).tolist() == [0, 1, 0, 2]
    assert got[f"{USER_STATS.name}__conversions"].fillna(0).tolist() == [0, 1, 0, 1]
    assert got[f"{ITEM_STATS.name}__events"].fillna(0).tolist() == [0, 0, 1, 2]
    assert got[f"{ITEM_STATS.name}__conversions"].fillna(0).tolist() == [0, 0, 1, 2]
    # Vectors: the newest at or before the row's time; u_late and y's vector never early.
    want_u = [u_old, u_new, None, u_late]
    for r, want in enumerate(want_u):
        cell = got[f"{USER_TOWER.name}__embedding"].iloc[r]
        if want is None:
            assert cell is None or (np.isscalar(cell) and pd.isna(cell))
        else:
            np.testing.assert_allclose(np.asarray(cell, np.float32), want, atol=1e-6)
    y_row = got[f"{ITEM_TOWER.name}__embedding"].iloc[1]
    assert y_row is None or (np.isscalar(y_row) and pd.isna(y_row))
    # The same rows by the plain pandas join.
    cols = [c for c in got.columns if c not in events.columns]
    assert same_frames(got, pandas_join(events, views), cols) == []
    # One entity row per query (LEARNREC_FEAST_HISTORICAL_CHUNK_ROWS bounds the memory of
    # each): the same frame.
    from feature_repo.store import point_in_time

    assert same_frames(point_in_time(h.store, events, refs, True, chunk_rows=1), got, cols) == []

    # Serving: the reader reads the newest rows online; the training frame at a later
    # time has the same vectors, and the same mid-emb through the model's CVR head.
    for view, (df, key) in (
        (USER_TOWER.name, views[USER_TOWER.name]),
        (ITEM_TOWER.name, views[ITEM_TOWER.name]),
    ):
        h.write_online(view, df.sort_values("event_timestamp").drop_duplicates(key, keep="last"))
    torch.manual_seed(0)
    model = LearnModel(LearnConfig()).eval()

    class OneVersion:
        def current_version(self) -> str:
            return "v1"

        def load(self, version: str) -> LearnModel:
            return model

    reader = RankingReader(
        h,
        ModelCache(OneVersion(), check_s=0),
        RankingSettings(),
        retrieval=object(),  # type: ignore[arg-type]
    )
    res = reader.rank("u1", ["x", "y"])
    later = pd.DataFrame({"user_id": "u1", "item_id": ["x", "y"], "event_timestamp": T + 10 * day})
    train = h.historical(
        later,
        [f"{USER_TOWER.name}:embedding", f"{ITEM_TOWER.name}:embedding"],
        full_feature_names=True,
    )
    u = np.stack(train[f"{USER_TOWER.name}__embedding"].map(np.asarray)).astype(np.float32)
    it = np.stack(train[f"{ITEM_TOWER.name}__embedding"].map(np.asarray)).astype(np.float32)
    np.testing.assert_array_equal(res.user_embedding, u[0])
    np.testing.assert_array_equal(res.item_embeddings, it)
    with torch.no_grad():
        mid, _ = model.cvr_head(torch.from_numpy(u), torch.from_numpy(it))
    np.testing.assert_allclose(res.mid_emb, mid.numpy(), atol=1e-5)
