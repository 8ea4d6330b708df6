"""Online writes that skip Feast's DataFrame conversion store what Feast's own path stores.

``OnlineEmbeddings.write_online`` builds the proto rows itself (``feature_repo.online.
write.proto_rows``) and hands them to the store's ``online_write_batch``. Here the same
frames go once through that path and once through ``write_to_online_store`` (under other
ids), on SQLite and on Redis, and every view's rows must read back equal: the values
Feast's ``online_read`` returns, the event times, and the raw bytes the ranking reader's
fast path decodes. Frames it does not handle (a NaN) take Feast's path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import feature_repo.online.embeddings as embeddings_mod
from feature_repo.online import online_ids
from feature_repo.online.write import proto_rows
from feature_repo.schema import VIEWS
from feature_repo.store import FeatureStoreHandle

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)


def frame(view: str, ids: list[str], seed: int) -> pd.DataFrame:
    spec = VIEWS[view]
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            str(spec.join_key): ids,
            "embedding": list(rng.standard_normal((len(ids), 16)).astype(np.float32)),
            "model_version": "v1",
            "event_timestamp": [T0 + timedelta(seconds=i) for i in range(len(ids))],
        }
    )
    if "history_len" in spec.column_names:
        df["history_len"] = np.arange(len(ids), dtype=np.int64) + 3
    return df


def read_back(handle: FeatureStoreHandle, view: str, ids: list[str]) -> list:
    """(event time, {feature: Value}) per id, through Feast's own ``online_read``."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    online = handle.online
    fv = online._view(view)
    key = str(VIEWS[view].join_key)
    stored = online_ids(view, "v1", ids)
    keys = [EntityKey(join_keys=[key], entity_values=[Value(string_val=i)]) for i in stored]
    provider = handle.store._get_provider()
    got = provider.online_read(handle.store.config, fv, keys, VIEWS[view].feature_names)
    return [(ts, {k: v.SerializeToString() for k, v in (vals or {}).items()}) for ts, vals in got]


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_fast_write_stores_what_feasts_conversion_stores(
    feast_handle: FeatureStoreHandle, view: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    online = feast_handle.online
    fast_ids = [f"a{i}" for i in range(5)] + ["ünï/côdé"]
    feast_ids = [f"b{i}" for i in range(5)] + ["ünï/côdé-b"]
    assert proto_rows(online._view(view), frame(view, fast_ids, 1)) is not None
    online.write_online(view, frame(view, fast_ids, 1))
    with monkeypatch.context() as m:
        m.setattr(embeddings_mod, "proto_rows", lambda fv, df: None)  # Feast's own path
        online.write_online(view, frame(view, feast_ids, 1))
    fast, slow = read_back(feast_handle, view, fast_ids), read_back(feast_handle, view, feast_ids)
    assert all(ts is not None for ts, _ in fast)
    assert fast == slow
    # (SQLite reads the time back to the second; both paths alike, checked above.)
    assert abs(fast[1][0].replace(tzinfo=UTC) - (T0 + timedelta(seconds=1))) < timedelta(seconds=1)
    raw = online.raw_source()
    by_fast = raw.fetch([(view, online_ids(view, "v1", fast_ids))])[0]
    by_slow = raw.fetch([(view, online_ids(view, "v1", feast_ids))])[0]
    assert by_fast == by_slow and all(emb is not None for emb, _ in by_fast)


def test_frames_the_fast_path_does_not_handle_go_through_feast(
    feast_handle: FeatureStoreHandle,
) -> None:
    view = "user_tower_embedding"
    fv = feast_handle.online._view(view)
    df = frame(view, ["u1", "u2"], 2)
    df.at[1, "embedding"] = np.array([np.nan] * 16, np.float32)
    assert proto_rows(fv, df) is None
    naive = frame(view, ["u1"], 2)
    naive["event_timestamp"] = naive["event_timestamp"].dt.tz_localize(None)
    assert proto_rows(fv, naive) is None
    # Written all the same (by Feast's conversion, whatever it makes of a NaN).
    assert feast_handle.online.write_online(view, df) == 2
