"""The HTTP service's own JSON encoding returns exactly what the Python client returns."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ranking.core import STALE
from tests.unit.test_ranking import (
    MemoryModels,
    MemoryOnline,
    _memory_reader,
    small_model,
    unit_rows,
)


def f32_tree(x: Any) -> Any:
    """``x`` with every number as the float32 it reads back to (non-finite as JSON's null)."""
    if isinstance(x, float):
        return np.float32(x).item() if math.isfinite(x) else None
    if isinstance(x, list):
        return [f32_tree(v) for v in x]
    if isinstance(x, dict):
        return {k: f32_tree(v) for k, v in x.items()}
    return x


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
        want = reader.rank("u1", ids).ordered().to_dict()  # by score, the default
        # Exact: each number is the shortest decimal that reads back to the same float32.
        assert f32_tree(json.loads(resp.content)) == f32_tree(want)
        assert resp.json()["items"][3]["status"] == STALE
        assert resp.json()["items"][3]["embedding"] is None
        first = resp.json()["items"][0]
        got = np.asarray(first["embedding"], np.float32)
        in_request_order = reader.rank("u1", ids)
        row = in_request_order.item_ids.index(first["item_id"])
        assert np.array_equal(got, in_request_order.item_embeddings[row])
        as_asked = client.post("/rank", json={"user_id": "u1", "item_ids": ids, "sort": "request"})
        assert f32_tree(json.loads(as_asked.content)) == f32_tree(in_request_order.to_dict())


def test_to_json_is_to_dict_in_shortest_float32_digits() -> None:
    """The numpy encoding reads back to the reference dict's float32s, edge floats and
    statuses included, in the digits protobuf's JSON writes for float fields."""
    import orjson

    from ranking.core import OK, UNKNOWN, RankResult

    rng = np.random.default_rng(3)
    n = 6
    emb = rng.standard_normal((n, 64)).astype(np.float32)
    emb[0, :6] = [1e-40, -0.0, 3.4e38, 1e-7, np.inf, np.nan]  # denormal, -0, max, inf, NaN
    mid = rng.standard_normal((n, 32)).astype(np.float32)
    cvr = np.array([0.1, np.nan, 1e-30, np.nan, 1.0, 0.25], np.float32)
    status = [OK, UNKNOWN, OK, STALE, OK, OK]
    res = RankResult(
        "v1", "u\u00e9", emb[5], ["a", "b", "c", "d", "\u00e9", "f"], status, emb, mid, cvr
    )
    body = json.loads(res.to_json())
    assert f32_tree(body) == f32_tree(res.to_dict())
    assert body["items"][1]["embedding"] is None and body["items"][0]["cvr"] == 0.1
    first = np.asarray([np.nan if v is None else v for v in body["items"][0]["embedding"]])
    assert np.array_equal(first.astype(np.float32)[:4], emb[0, :4])  # -0.0 and denormal too
    assert str(first[1]) == "-0.0"
    # Shorter than the float64 digits of the same values.
    assert len(res.to_json()) < 0.7 * len(orjson.dumps(res.to_dict()))
