"""The ranking reader's fast read equals Feast's own reads, on SQLite and on Redis.

``read_vectors`` reads Feast's rows itself (its own SQLite query, a Redis script or
pipeline of ``HMGET``) and decodes the protobuf bytes with numpy. Here it is compared,
on the same store, with ``online_read`` (``read_embeddings``) and with stock
``get_online_features`` (asked for the version-qualified ids): present ids, missing ids,
rows of another model version kept beside, ids that exist only in another view, and
non-ASCII ids. ``RankingReader.rank`` is then
compared with a response built from ``get_online_features`` and per-pair scoring.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import torch

from feature_repo.online import RedisRawSource, SqliteRawSource, online_id, online_ids
from feature_repo.store import FeatureStoreHandle
from learn_core.models import LearnConfig, LearnModel
from learn_core.serving import ModelCache
from ranking.core import OK, STALE, UNKNOWN, UnknownUserError, score_pairs_reference
from ranking.reader import RankingReader
from ranking.settings import RankingSettings

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 1, tzinfo=UTC)
ITEMS, USERS, CONTENT = "item_tower_embedding", "user_tower_embedding", "item_content_embedding"


def unit(n: int, d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rows(key: str, ids: list[str], vecs: np.ndarray, version: str, **extra: object) -> pd.DataFrame:
    return pd.DataFrame(
        {
            key: ids,
            "embedding": list(vecs),
            "model_version": version,
            "event_timestamp": T0,
            **extra,
        }
    )


def fill(handle: FeatureStoreHandle) -> tuple[list[str], list[str]]:
    """60 items of v1, 10 of them also embedded by v2 (later); 3 users (one of v2 only)."""
    items = [f"i{n:03d}" for n in range(58)] + ["é-ü/7", "アイテム"]
    handle.write_online(ITEMS, rows("item_id", items, unit(60, 64, 1), "v1"))
    later = rows("item_id", items[5:15], unit(10, 64, 2), "v2")
    later["event_timestamp"] = T0 + timedelta(hours=1)
    handle.write_online(ITEMS, later)
    # Ids that exist only in another view (same Redis hash, other fields).
    handle.write_online(CONTENT, rows("item_id", ["only-content"], unit(1, 384, 3), "ceg-v1"))
    users = ["u1", "u2", "u3"]
    handle.write_online(USERS, rows("user_id", users[:2], unit(2, 64, 4), "v1", history_len=3))
    handle.write_online(USERS, rows("user_id", users[2:], unit(1, 64, 5), "v2", history_len=1))
    return items, users


def assert_same(handle: FeatureStoreHandle, view: str, ids: list[str], version: str) -> None:
    """``read_vectors`` == ``read_embeddings(model_version=...)`` == stock, row for row."""
    (fast,) = handle.online.read_vectors([(view, ids)], version)
    ref = handle.online.read_embeddings(view, ids, model_version=version)
    stock = handle.online.read_embeddings_reference(view, ids, model_version=version)
    np.testing.assert_array_equal(fast.ok, ref.found)
    np.testing.assert_array_equal(fast.vectors, ref.vectors)
    assert [fast.version(r) for r in range(len(ids))] == ref.model_version
    assert ref.model_version == stock.model_version
    want = np.asarray([v == version for v in stock.model_version]) & stock.found
    np.testing.assert_array_equal(fast.ok, want)
    if want.any():  # with no row of ``version`` the fast read has zero width
        np.testing.assert_array_equal(fast.vectors[want], stock.vectors[want])


def test_read_vectors_equals_online_read_and_stock(feast_handle: FeatureStoreHandle) -> None:
    items, users = fill(feast_handle)
    backend = type(feast_handle.online.raw_source())
    assert backend is (
        SqliteRawSource if feast_handle.settings.profile == "embedded" else RedisRawSource
    )
    ask = items[::-1] + ["missing-1", "only-content", "missing-2"]
    for version in ("v1", "v2", "v-none"):
        assert_same(feast_handle, ITEMS, ask, version)
        assert_same(feast_handle, USERS, [*users, "nobody"], version)
    (v1,) = feast_handle.online.read_vectors([(ITEMS, ask)], "v1")
    assert int(v1.ok.sum()) == 60  # v2's rows are beside v1's, not over them
    assert v1.version(ask.index("i007")) == "v1" and v1.version(ask.index("missing-1")) is None
    (v2,) = feast_handle.online.read_vectors([(ITEMS, ask)], "v2")
    assert int(v2.ok.sum()) == 10 and v2.version(ask.index("i001")) is None
    # Several views in one call give what one call per view gives.
    both = feast_handle.online.read_vectors([(USERS, ["u1"]), (ITEMS, ask)], "v1")
    np.testing.assert_array_equal(both[1].vectors, v1.vectors)
    assert both[0].ok.tolist() == [True]


def test_redis_pipeline_fallback_equals_script(feast_handle: FeatureStoreHandle) -> None:
    if feast_handle.settings.profile != "production":
        pytest.skip("Redis only")
    items, _ = fill(feast_handle)
    src = feast_handle.online.raw_source()
    assert isinstance(src, RedisRawSource) and src._script is not None
    req = [  # the raw source reads the ids it is given: here, v1's qualified ids
        (USERS, online_ids(USERS, "v1", ["u1", "nobody"])),
        (ITEMS, online_ids(ITEMS, "v1", [*items, "missing"])),
    ]
    by_script = src.fetch(req)
    piped = RedisRawSource(src.client, src.project.decode(), src.fields, src.keys, use_script=False)
    assert piped.fetch(req) == by_script
    assert by_script[1][-1] == (None, None) and by_script[1][0][0] is not None


class OneVersion:
    def __init__(self, version: str, model: LearnModel) -> None:
        self.version, self.model = version, model

    def current_version(self) -> str:
        return self.version

    def load(self, version: str) -> LearnModel:
        return self.model


def test_rank_equals_stock_reads_and_per_pair_scoring(feast_handle: FeatureStoreHandle) -> None:
    items, _ = fill(feast_handle)
    torch.manual_seed(0)
    model = LearnModel(LearnConfig()).eval()
    reader = RankingReader(
        feast_handle,
        ModelCache(OneVersion("v1", model), check_s=0),
        RankingSettings(),
        retrieval=object(),  # type: ignore[arg-type]  # rank() never retrieves
    )
    cands = [*items[:20], "missing", "only-content"]
    res = reader.rank("u1", cands)

    out = feast_handle.store.get_online_features(
        features=[f"{v}:{f}" for v in (USERS, ITEMS) for f in ("embedding", "model_version")],
        entity_rows=[
            {"user_id": online_id("v1", "u1"), "item_id": online_id("v1", i)} for i in cands
        ],
        full_feature_names=True,
    ).to_dict()
    assert out["user_tower_embedding__model_version"][0] == res.model_version == "v1"
    np.testing.assert_array_equal(res.user_embedding, out["user_tower_embedding__embedding"][0])
    versions = out["item_tower_embedding__model_version"]
    want_status = [OK if v == "v1" else (UNKNOWN if v is None else STALE) for v in versions]
    assert res.status == want_status
    assert want_status.count(OK) == 20 and STALE not in want_status
    ok = [r for r, s in enumerate(want_status) if s == OK]
    stock_vecs = np.asarray([out["item_tower_embedding__embedding"][r] for r in ok], np.float32)
    np.testing.assert_array_equal(res.item_embeddings[ok], stock_vecs)
    assert not res.item_embeddings[[r for r in range(len(cands)) if r not in ok]].any()
    mid, cvr = score_pairs_reference(model.cvr_head, res.user_embedding, stock_vecs)
    np.testing.assert_allclose(res.mid_emb[ok], mid, atol=1e-5)
    np.testing.assert_allclose(res.cvr[ok], cvr, atol=1e-6)
    assert np.isnan(np.delete(res.cvr, ok)).all()

    with pytest.raises(UnknownUserError, match="no user embedding of the serving model v1"):
        reader.rank("u3", cands)
    with pytest.raises(UnknownUserError, match="unknown user 'nobody'"):
        reader.rank("nobody", cands)
