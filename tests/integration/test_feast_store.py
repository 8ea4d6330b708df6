"""The feature store in both profiles: online round trip, offline log, point-in-time join."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from feature_repo.online import online_id
from feature_repo.settings import FeastSettings
from feature_repo.store import FeatureStoreHandle, open_store
from tests.integration.conftest import cleanup

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CONTENT = "item_content_embedding"


def vectors(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def item_rows(
    ids: list[str], vecs: np.ndarray, version: str, at: datetime, key: str = "item_id"
) -> pd.DataFrame:
    return pd.DataFrame(
        {key: ids, "embedding": list(vecs), "model_version": version, "event_timestamp": at}
    )


def test_online_round_trip_fast_read_equals_stock_read(feast_handle: FeatureStoreHandle) -> None:
    ids = [f"item-{i}" for i in range(20)]
    vecs = vectors(20, 384, seed=1)
    assert feast_handle.write_online(CONTENT, item_rows(ids, vecs, "ceg-v1", T0)) == 20

    ask = ids[::3] + ["never-written"]
    fast = feast_handle.read_embeddings(CONTENT, ask)
    ref = feast_handle.online.read_embeddings_reference(CONTENT, ask)
    assert fast.vectors.dtype == np.float32 and fast.vectors.shape == (len(ask), 384)
    np.testing.assert_array_equal(fast.vectors[:-1], vecs[::3])  # float32 survives exactly
    np.testing.assert_array_equal(fast.vectors, ref.vectors)
    assert list(fast.found) == [True] * (len(ask) - 1) + [False]
    np.testing.assert_array_equal(fast.found, ref.found)
    assert fast.model_version == ref.model_version == ["ceg-v1"] * (len(ask) - 1) + [None]

    # A newer row replaces the old one; a reader pinned to the old version sees nothing.
    new = vectors(1, 384, seed=2)
    feast_handle.write_online(CONTENT, item_rows(ids[:1], new, "ceg-v2", T0 + timedelta(hours=1)))
    latest = feast_handle.read_embeddings(CONTENT, ids[:2])
    np.testing.assert_array_equal(latest.vectors[0], new[0])
    assert latest.model_version == ["ceg-v2", "ceg-v1"]
    pinned = feast_handle.online.read_embeddings(CONTENT, ids[:2], model_version="ceg-v1")
    assert list(pinned.found) == [False, True]


def test_user_tower_and_ranking_service(feast_handle: FeatureStoreHandle) -> None:
    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "embedding": list(vectors(2, 64, seed=3)),
            "model_version": "tower-7",
            "history_len": [12, 0],
            "event_timestamp": T0,
        }
    )
    feast_handle.write_online("user_tower_embedding", users)
    # Streaming writers may also go through the view's PushSource (online only: pushing to
    # the offline side would make Feast rewrite the parquet; the OfflineLog appends).
    from feast.data_source import PushMode

    # A push bypasses ``write_online``: it must name the version-qualified id itself.
    tower = item_rows([online_id("tower-7", "i1")], vectors(1, 64, 4), "tower-7", T0)
    tower["embedding"] = tower["embedding"].map(np.ndarray.tolist)
    tower["created"] = pd.Timestamp.now(tz="UTC")
    feast_handle.store.push("item_tower_embedding_push", tower, to=PushMode.ONLINE)
    feast_handle.write_online(CONTENT, item_rows(["i1"], vectors(1, 384, 5), "ceg-v1", T0))

    got = feast_handle.read_embeddings("user_tower_embedding", ["u2", "u1"], "tower-7")
    assert got.extra["history_len"] == [0, 12]
    assert not feast_handle.read_embeddings("user_tower_embedding", ["u1"], "other").found.any()
    np.testing.assert_array_equal(got.vectors, np.stack(users["embedding"][::-1].to_list()))

    store = feast_handle.store
    service = store.get_feature_service("ranking")
    # The tower views keep a row per model version (blue/green), the content view one per
    # item: one entity row reads the towers of "tower-7", another the content.
    rows = [
        {"user_id": online_id("tower-7", "u1"), "item_id": online_id("tower-7", "i1")},
        {"user_id": online_id("tower-7", "u1"), "item_id": "i1"},
    ]
    out = store.get_online_features(
        features=service, entity_rows=rows, full_feature_names=True
    ).to_dict()
    assert len(out["user_tower_embedding__embedding"][0]) == 64
    assert len(out["item_tower_embedding__embedding"][0]) == 64
    assert len(out["item_content_embedding__embedding"][1]) == 384
    assert out["user_tower_embedding__history_len"] == [12, 12]


def test_offline_append_read_and_idempotent_replay(feast_handle: FeatureStoreHandle) -> None:
    ids = [f"i{i:02d}" for i in range(10)]
    vecs = vectors(10, 384, seed=6)
    first = item_rows(ids, vecs, "ceg-v1", T0)
    assert feast_handle.append_offline(CONTENT, first) == 10
    # Replay after a crash, with other batch boundaries and later wall-clock `created`:
    # the overlap must read back once, with the first write's values.
    replay = item_rows(ids[5:] + ["i10"], vectors(6, 384, seed=7), "ceg-v1-replay", T0)
    replay["created"] = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=5)
    feast_handle.append_offline(CONTENT, replay)
    feast_handle.append_offline(CONTENT, first)  # the exact same batch again

    out = feast_handle.read_offline(CONTENT)
    assert list(out["item_id"]) == ids + ["i10"]
    assert list(out["model_version"]) == ["ceg-v1"] * 10 + ["ceg-v1-replay"]
    np.testing.assert_array_equal(np.stack(out["embedding"].to_list())[:10], vecs)

    window = feast_handle.read_offline(CONTENT, start=T0, end=T0 + timedelta(seconds=1))
    assert len(window) == 11
    assert feast_handle.read_offline(CONTENT, start=T0 + timedelta(seconds=1)).empty

    events = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["i01", "i02", "i01"],
            "event_type": ["rating", "click", "rating"],
            "value": [5.0, None, 3.0],
            "event_timestamp": [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)],
        }
    )
    assert feast_handle.append_offline("interaction_log", events) == 3
    feast_handle.append_offline("interaction_log", events.iloc[1:])
    log = feast_handle.read_offline("interaction_log")
    assert list(log["event_id"]) == ["e1", "e2", "e3"]
    assert log["value"].isna().tolist() == [False, True, False]


def test_offline_log_shared_by_a_writer_and_a_reader_thread(
    feast_handle: FeatureStoreHandle,
) -> None:
    """A consumer appends while a monitor reads the same handle: both must succeed.

    On PostgreSQL one connection serves the handle; without a lock the two threads
    nested their transactions and a commit failed (OutOfOrderTransactionNesting).
    """
    batches, per = 40, 25
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for b in range(batches):
                ids = [f"e{b:03d}-{i:02d}" for i in range(per)]
                df = pd.DataFrame(
                    {
                        "event_id": ids,
                        "user_id": "u1",
                        "item_id": "i1",
                        "event_type": "click",
                        "value": None,
                        "event_timestamp": T0 + timedelta(seconds=b),
                    }
                )
                feast_handle.append_offline("interaction_log", df)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while writer.is_alive() or reads == 0:
        try:
            feast_handle.read_offline("interaction_log")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            break
        reads += 1
    writer.join()
    assert errors == []
    assert len(feast_handle.read_offline("interaction_log")) == batches * per


def test_point_in_time_join_of_content_embeddings(feast_handle: FeatureStoreHandle) -> None:
    v1, v2 = vectors(2, 384, seed=8), vectors(2, 384, seed=9)
    feast_handle.append_offline(CONTENT, item_rows(["a", "b"], v1, "ceg-v1", T0))
    later = T0 + timedelta(days=1)
    feast_handle.append_offline(CONTENT, item_rows(["a"], v2[:1], "ceg-v2", later))

    entity_df = pd.DataFrame(
        {
            "item_id": ["a", "a", "b", "a", "c", "a"],
            "event_timestamp": [
                T0 + timedelta(hours=1),  # -> v1
                later + timedelta(hours=1),  # -> v2
                later,  # b only has v1
                T0 - timedelta(hours=1),  # before any value -> null
                later,  # unknown item -> null
                T0 + timedelta(hours=1),  # a duplicate request row is kept
            ],
            "label": [1, 0, 1, 0, 1, 0],
        }
    )
    out = feast_handle.historical(entity_df, [f"{CONTENT}:embedding", f"{CONTENT}:model_version"])
    assert len(out) == len(entity_df)
    assert list(out["label"]) == [1, 0, 1, 0, 1, 0]  # caller's rows, in order
    versions = [None if pd.isna(v) else v for v in out["model_version"]]
    assert versions == ["ceg-v1", "ceg-v2", "ceg-v1", None, None, "ceg-v1"]
    np.testing.assert_allclose(np.asarray(out["embedding"][0], np.float32), v1[0])
    np.testing.assert_allclose(np.asarray(out["embedding"][1], np.float32), v2[0])
    np.testing.assert_allclose(np.asarray(out["embedding"][2], np.float32), v1[1])


def test_reopen_keeps_registry_and_data(feast_settings: FeastSettings) -> None:
    h1 = open_store(feast_settings)
    try:
        h1.write_online(CONTENT, item_rows(["x"], vectors(1, 8, 10), "v", T0))
        h1.append_offline(CONTENT, item_rows(["x"], vectors(1, 8, 10), "v", T0))
        h2 = open_store(feast_settings, apply=False)
        assert sorted(v.name for v in h2.store.list_feature_views()) == [
            "item_content_embedding",
            "item_tower_embedding",
            "user_tower_embedding",
        ]
        assert h2.read_embeddings(CONTENT, ["x"]).found.tolist() == [True]
        assert len(h2.read_offline(CONTENT)) == 1
        h2.close()
    finally:
        cleanup(h1)
