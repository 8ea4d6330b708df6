"""The HTTP service's own JSON encoding returns exactly what the Python client returns."""

from __future__ import annotations

import json

import numpy as np

from ranking.core import STALE
from tests.unit.test_ranking import (
    MemoryModels,
    MemoryOnline,
    _memory_reader,
    small_model,
    unit_rows,
)


def test_rank_body_equals_to_dict() -> None:
    from fastapi.testclient import TestClient

    from ranking.service import create_app

    online = MemoryOnline()
    reader = _memory_reader(online, MemoryModels(v1=small_model(0)), max_candidates=10)
    online.put("user_tower_embedding", ["u1"], unit_rows(1, 64, 5), "v1")
    online.put("item_tower_embedding", ["a", "b", "c"], unit_rows(3, 64, 6), "v1")
    online.put("item_tower_embedding", ["d"], unit_rows(1, 64, 7), "v0")  # stale: nulls
    ids = ["a", "b", "c", "d", "zz"]
    with TestClient(create_app(reader)) as client:
        resp = client.post("/rank", json={"user_id": "u1", "item_ids": ids})
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/json"
        want = reader.rank("u1", ids).to_dict()
        # Exact: orjson writes the shortest repr that reads back to the same double.
        assert json.loads(resp.content) == json.loads(json.dumps(want))
        assert resp.json()["items"][3]["status"] == STALE
        assert resp.json()["items"][3]["embedding"] is None
        got = np.asarray(resp.json()["items"][0]["embedding"], np.float32)
        assert np.array_equal(got, reader.rank("u1", ids).item_embeddings[0])


def test_to_json_is_orjson_of_to_dict_byte_for_byte() -> None:
    """The numpy encoding equals the reference dict's, edge floats and statuses included."""
    import orjson

    from ranking.core import OK, UNKNOWN, RankResult

    rng = np.random.default_rng(3)
    n = 6
    emb = rng.standard_normal((n, 64)).astype(np.float32)
    emb[0, :6] = [1e-40, -0.0, 3.4e38, 1e-7, np.inf, np.nan]  # denormal, -0, max, inf, NaN
    mid = rng.standard_normal((n, 32)).astype(np.float32)
    cvr = np.array([0.5, np.nan, 1e-30, np.nan, 1.0, 0.25], np.float32)
    status = [OK, UNKNOWN, OK, STALE, OK, OK]
    res = RankResult(
        "v1", "u\u00e9", emb[5], ["a", "b", "c", "d", "\u00e9", "f"], status, emb, mid, cvr
    )
    assert res.to_json() == orjson.dumps(res.to_dict())
    assert json.loads(res.to_json())["items"][1]["embedding"] is None
