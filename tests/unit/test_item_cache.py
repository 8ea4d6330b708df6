"""The /rank item near-cache: what it keeps, for how long, and what it never serves."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest

from learn_core.serving import ModelCache
from ranking.core import OK, STALE, UNKNOWN
from ranking.item_cache import ItemCache
from ranking.reader import RankingReader
from ranking.settings import RankingSettings
from tests.unit.test_ranking import (
    MemoryModels,
    MemoryOnline,
    NoRetrieval,
    small_model,
    unit_rows,
)
from tests.unit.test_service_json import f32_tree

ITEMS, USERS = "item_tower_embedding", "user_tower_embedding"


class CountingOnline(MemoryOnline):
    """The in-memory store, recording which ids each read asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[tuple[str, list[str]]]] = []

    def read_vectors(self, requests, model_version):  # type: ignore[no-untyped-def]
        self.reads.append([(view, list(ids)) for view, ids in requests])
        return super().read_vectors(requests, model_version)

    def item_reads(self) -> list[str]:
        last = self.reads[-1]
        return next((ids for view, ids in last if view == ITEMS), [])


def reader_over(online: MemoryOnline, models: MemoryModels, **kw: float) -> RankingReader:
    return RankingReader(
        online,  # type: ignore[arg-type]
        ModelCache(models, check_s=0),
        RankingSettings(**kw),  # type: ignore[arg-type]
        retrieval=NoRetrieval(),  # type: ignore[arg-type]
    )


def test_cache_keeps_one_version_expires_and_evicts_the_oldest() -> None:
    cache = ItemCache(max_age_s=1.0, max_entries=3)
    vecs = unit_rows(4, 8, 0)
    cache.store("v1", ["a", "b"], vecs[:2], read_at=100.0)
    hit, entries, miss = cache.lookup("v1", ["a", "x", "b"], now=100.5)
    assert hit == [0, 2] and miss == [1]
    np.testing.assert_array_equal(np.stack([e.vector for e in entries]), vecs[:2])
    # Each vector's JSON is kept beside it, as RankResult.to_json writes the vector.
    back = np.asarray([orjson.loads(orjson.dumps(e.json())) for e in entries], np.float32)
    assert back.tobytes() == vecs[:2].tobytes()
    vecs[:] = 0  # the cache holds its own copy
    assert cache.lookup("v1", ["a"], now=100.5).entries[0].vector.any()
    # Another version sees nothing; expiry is strict at max_age_s.
    assert cache.lookup("v2", ["a", "b"], now=100.5) == ([], [], [0, 1])
    assert cache.lookup("v1", ["a"], now=101.0).miss == [0]
    assert cache.misses_at_most(["a", "b", "x"], 1, now=100.5)
    assert not cache.misses_at_most(["a", "x", "y"], 1, now=100.5)
    assert not cache.misses_at_most(["a", "b"], 1, now=101.5)
    # Re-reading "a" makes it the newest; the fourth id drops the oldest read ("b").
    cache.store("v1", ["a"], unit_rows(1, 8, 1), read_at=100.2)
    cache.store("v1", ["c", "d"], unit_rows(2, 8, 2), read_at=100.3)
    assert len(cache) == 3 and cache.lookup("v1", ["b"], now=100.4).miss == [0]
    # A store of another version replaces the whole cache.
    cache.store("v2", ["z"], unit_rows(1, 8, 3), read_at=100.4)
    assert len(cache) == 1 and cache.lookup("v1", ["a"], now=100.4).miss == [0]
    # Off: nothing is kept, everything is read.
    off = ItemCache(max_age_s=0, max_entries=10)
    off.store("v1", ["a"], unit_rows(1, 8, 0), read_at=1.0)
    assert len(off) == 0 and off.lookup("v1", ["a"], now=1.0) == ([], [], [0])
    assert off.misses_at_most(["a"], 1) and not off.misses_at_most(["a", "b"], 1)
    with pytest.raises(ValueError, match="max_entries"):
        ItemCache(1.0, 0)


def test_json_from_the_cache_is_the_reference_encoding_byte_for_byte() -> None:
    online = CountingOnline()
    reader = reader_over(online, MemoryModels(v1=small_model(0)), item_cache_s=60.0)
    online.put(USERS, ["u1"], unit_rows(1, 64, 5), "v1")
    online.put(ITEMS, ["a", "b", "c"], unit_rows(3, 64, 6), "v1")
    online.put(ITEMS, ["s"], unit_rows(1, 64, 7), "v2")
    ids = ["a", "b", "s", "c", "new"]
    first = reader.rank("u1", ids[:2])  # "a", "b" cached; "c" is read with the next
    res = reader.rank("u1", ids)
    assert first.item_json is not None and res.item_json is not None
    assert [t is not None for t in res.item_json] == [True, True, False, True, False]
    plain = dataclasses.replace(res, item_json=None)
    assert res.to_json() == plain.to_json()
    assert f32_tree(orjson.loads(res.to_json())) == f32_tree(res.to_dict())
    off = reader_over(online, MemoryModels(v1=small_model(0)), item_cache_s=0)
    assert off.rank("u1", ids).item_json is None and off.rank("u1", ids).to_json() == res.to_json()


def test_entries_read_together_expire_apart_within_the_age_limit() -> None:
    cache = ItemCache(max_age_s=1.0, max_entries=5000)
    ids = [f"i{n}" for n in range(2000)]
    cache.store("v1", ids, np.zeros((len(ids), 4), np.float32), read_at=10.0)
    assert cache.lookup("v1", ids, now=10.49).miss == []  # none before half the limit
    assert len(cache.lookup("v1", ids, now=11.0)[0]) == 0  # none past the limit
    hit = len(cache.lookup("v1", ids, now=10.75)[0])
    assert 0.3 * len(ids) < hit < 0.7 * len(ids)  # spread between the two


def test_reader_reads_only_what_the_cache_lacks_and_never_caches_a_miss() -> None:
    online = CountingOnline()
    models = MemoryModels(v1=small_model(0), v2=small_model(1))
    reader = reader_over(online, models, item_cache_s=60.0)
    online.put(USERS, ["u1"], unit_rows(1, 64, 5), "v1")
    online.put(ITEMS, ["a", "b"], unit_rows(2, 64, 6), "v1")
    online.put(ITEMS, ["s"], unit_rows(1, 64, 7), "v2")  # a row of another version

    first = reader.rank("u1", ["a", "b", "new", "s"])
    assert first.status == [OK, OK, UNKNOWN, STALE]
    assert online.item_reads() == ["a", "b", "new", "s"]
    # The item arrives: rankable at once, since only ok rows were kept.
    online.put(ITEMS, ["new"], unit_rows(1, 64, 8), "v1")
    second = reader.rank("u1", ["a", "new", "s", "b"])
    assert online.item_reads() == ["new", "s"]  # a and b came from the cache
    assert second.status == [OK, OK, STALE, OK]
    np.testing.assert_array_equal(second.item_embeddings[[0, 3]], first.item_embeddings[:2])
    np.testing.assert_array_equal(second.item_embeddings[2], 0)
    # Same scores as a reader without the cache, on the same rows.
    plain = reader_over(online, models, item_cache_s=0)
    fresh = plain.rank("u1", ["a", "new", "s", "b"])
    assert online.item_reads() == ["a", "new", "s", "b"]
    np.testing.assert_array_equal(fresh.item_embeddings, second.item_embeddings)
    np.testing.assert_allclose(fresh.cvr, second.cvr, equal_nan=True)
    # All cached: the store is asked for the user's row only.
    reader.rank("u1", ["b", "a"])
    assert online.reads[-1] == [(USERS, ["u1"])]
    # The pointer moves: v1's cached vectors are never served for v2.
    models.version = "v2"
    online.put(USERS, ["u1"], unit_rows(1, 64, 9), "v2")
    online.put(ITEMS, ["a"], unit_rows(1, 64, 10), "v2")
    res = reader.rank("u1", ["a", "b"])
    assert online.item_reads() == ["a", "b"]
    assert res.model_version == "v2" and res.status == [OK, STALE]
    np.testing.assert_allclose(res.item_embeddings[0], unit_rows(1, 64, 10)[0], atol=1e-7)


def test_reader_rereads_a_rewritten_item_after_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    import ranking.reader as reader_mod

    clock = [1000.0]
    monkeypatch.setattr(reader_mod.time, "monotonic", lambda: clock[0])
    online = CountingOnline()
    models = MemoryModels(v1=small_model(0))
    reader = reader_over(online, models, item_cache_s=1.0)
    online.put(USERS, ["u1"], unit_rows(1, 64, 5), "v1")
    online.put(ITEMS, ["a"], unit_rows(1, 64, 6), "v1")
    old = reader.rank("u1", ["a"]).item_embeddings[0].copy()
    online.put(ITEMS, ["a"], unit_rows(1, 64, 7), "v1")  # the item's text changed
    clock[0] += 0.4  # within every id's age limit (at least half of max_age)
    np.testing.assert_array_equal(reader.rank("u1", ["a"]).item_embeddings[0], old)
    clock[0] += 0.6  # past max_age: read again
    new = reader.rank("u1", ["a"]).item_embeddings[0]
    assert online.item_reads() == ["a"]
    np.testing.assert_allclose(new, unit_rows(1, 64, 7)[0], atol=1e-7)


def test_http_rank_answers_the_same_on_the_loop_and_in_the_pool() -> None:
    """Few candidates to read: answered on the event loop; many: in the thread pool."""
    from fastapi.testclient import TestClient

    from ranking.http_rank import INLINE_READS
    from ranking.service import create_app

    online = CountingOnline()
    models = MemoryModels(v1=small_model(0))
    reader = reader_over(online, models, item_cache_s=60.0)
    ids = [f"i{n}" for n in range(INLINE_READS + 8)]
    online.put(USERS, ["u1"], unit_rows(1, 64, 5), "v1")
    online.put(ITEMS, ids, unit_rows(len(ids), 64, 6), "v1")
    app = create_app(reader)
    ran_in: list[str] = []
    rank = app._rank

    def spy(body, binary):  # type: ignore[no-untyped-def]
        import threading

        ran_in.append(threading.current_thread().name)
        return rank(body, binary)

    app._rank = spy  # type: ignore[method-assign]
    client = TestClient(app)
    body = {"user_id": "u1", "item_ids": ids}
    cold = client.post("/rank", json=body)  # nothing cached: more than INLINE_READS to read
    warm = client.post("/rank", json=body)  # all cached: the user's row only
    assert cold.status_code == warm.status_code == 200
    assert cold.content == warm.content  # byte for byte: the cached JSON is the same text
    assert ran_in[0].startswith("rank") and not ran_in[1].startswith("rank")
    assert client.post("/rank", json={"user_id": "zz", "item_ids": ids}).status_code == 404
    models.version = None
    assert client.post("/rank", json=body).status_code == 503
