"""The compact /rank answer: exact against the JSON one, strict on what it reads, negotiated."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ranking.core import OK, STALE, UNKNOWN, RankResult
from ranking.service import create_app
from ranking.wire import MEDIA_TYPE, WireError, decode_rank, encode_rank, wants_binary
from tests.unit.test_ranking import (
    MemoryModels,
    MemoryOnline,
    _memory_reader,
    small_model,
    unit_rows,
)

BINARY = {"accept": MEDIA_TYPE}


def _result() -> RankResult:
    rng = np.random.default_rng(5)
    n = 5
    emb = rng.standard_normal((n, 64)).astype(np.float32)
    emb[0, :4] = [1e-40, -0.0, 3.4e38, 1e-7]  # denormal, -0, near max, small
    mid = rng.standard_normal((n, 32)).astype(np.float32)
    cvr = np.array([0.5, np.nan, 1e-30, np.nan, 1.0], np.float32)
    emb[[1, 3]], mid[[1, 3]] = 0, 0
    status = [OK, UNKNOWN, OK, STALE, OK]
    return RankResult(
        "v1", "u\u00e9", emb[4], ["a", "b", "c", "d", "\u00e9"], status, emb, mid, cvr
    )


def test_round_trip_is_exact() -> None:
    res = _result()
    got = decode_rank(encode_rank(res))
    assert (got.model_version, got.user_id, got.item_ids, got.status) == (
        res.model_version,
        res.user_id,
        res.item_ids,
        res.status,
    )
    for name in ("user_embedding", "item_embeddings", "mid_emb", "cvr"):
        a, b = getattr(got, name), getattr(res, name)
        assert a.dtype == np.float32 and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), name  # bit for bit: -0.0 and NaN included


def test_the_values_are_the_json_answers_values() -> None:
    """Where JSON has a number, the compact form has its float32; where null, not ok."""
    res = _result()
    want = json.loads(res.to_json())
    got = decode_rank(encode_rank(res))
    for r, item in enumerate(want["items"]):
        if item["status"] != OK:
            assert item["embedding"] is None and got.status[r] != OK
            continue
        # The JSON's decimals read back to exactly the compact form's float32s.
        assert got.item_embeddings[r].tobytes() == f32(item["embedding"]).tobytes()
        assert got.mid_emb[r].tobytes() == f32(item["mid_emb"]).tobytes()
        assert got.cvr[r] == np.float32(item["cvr"])
    assert got.user_embedding.tobytes() == f32(want["user_embedding"]).tobytes()


def f32(values: list[float]) -> np.ndarray:
    return np.asarray(values, np.float64).astype(np.float32)


def test_arrays_start_aligned() -> None:
    data = encode_rank(_result())
    (hlen,) = struct.unpack_from("<I", data, 8)
    assert (12 + hlen) % 4 == 0


def test_malformed_answers_are_refused() -> None:
    data = encode_rank(_result())
    for bad, match in [
        (b"", "shorter"),
        (b"XXXX" + data[4:], "magic"),
        (data[:4] + struct.pack("<I", 2) + data[8:], "format version"),
        (data[:8] + struct.pack("<I", 1 << 30) + data[12:], "runs past"),
        (data[:-4], "bytes of arrays"),
        (data + b"\0\0\0\0", "bytes of arrays"),
        (data[:12] + b"[" + data[13:], "bad header"),
    ]:
        with pytest.raises(WireError, match=match):
            decode_rank(bad)
    (hlen,) = struct.unpack_from("<I", data, 8)
    head = json.loads(data[12 : 12 + hlen])

    def with_header(**change: object) -> bytes:
        raw = json.dumps({**head, **change}).encode()
        raw += b" " * (-(12 + len(raw)) % 4)
        return data[:8] + struct.pack("<I", len(raw)) + raw + data[12 + hlen :]

    assert decode_rank(with_header()).item_ids == head["item_ids"]
    for change in (
        {"dtype": "<f8"},
        {"n": 4},
        {"dim": -1},
        {"mid_dim": "x"},
        {"item_ids": "abcde"},
        {"status": [1, 2, 3, 4, 5]},
        {"model_version": None},
    ):
        with pytest.raises(WireError):
            decode_rank(with_header(**change))
    with pytest.raises(WireError, match="bad header"):
        decode_rank(data[:8] + struct.pack("<I", 4) + b"[1] " + data[12 + hlen :])


def test_encode_refuses_misshapen_arrays() -> None:
    res = _result()
    res.mid_emb = res.mid_emb[:3]
    with pytest.raises(ValueError, match="shape"):
        encode_rank(res)


@pytest.mark.parametrize(
    ("accept", "want"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        (MEDIA_TYPE, True),
        (f"{MEDIA_TYPE}, application/json;q=0.5", True),
        (f"application/json, {MEDIA_TYPE};q=0.9", False),
        (f"{MEDIA_TYPE}; q=1, */*; q=0.1", True),
        ("APPLICATION/X-LEARNREC-RANK", True),
        (f"{MEDIA_TYPE};q=0", None),
        ("text/html", None),
        (f"text/html, {MEDIA_TYPE};q=0", None),
        ("application/json;q=0, */*", None),
        ("application/*", False),
        # unparseable: ignored, so JSON (RFC 9110 lets a server disregard the header)
        ("garbage", False),
        (";;;,,,", False),
        (f"{MEDIA_TYPE};q=abc", False),
        (f"{MEDIA_TYPE};q=2", False),
        (f"{MEDIA_TYPE};q=nan", False),
        ("text/html;q=abc", False),
        ("x" * 100_000, False),
    ],
)
def test_accept_negotiation(accept: str | None, want: bool | None) -> None:
    assert wants_binary(accept) is want


@pytest.fixture
def client() -> TestClient:
    online = MemoryOnline()
    reader = _memory_reader(online, MemoryModels(v1=small_model(0)), max_candidates=10)
    online.put("user_tower_embedding", ["u1"], unit_rows(1, 64, 5), "v1")
    online.put("item_tower_embedding", ["a", "b", "c"], unit_rows(3, 64, 6), "v1")
    online.put("item_tower_embedding", ["d"], unit_rows(1, 64, 7), "v0")  # stale
    return TestClient(create_app(reader))


def test_service_answers_the_same_values_in_both_encodings(client: TestClient) -> None:
    body = {"user_id": "u1", "item_ids": ["a", "b", "c", "d", "zz"]}
    as_json = client.post("/rank", json=body)
    compact = client.post("/rank", json=body, headers=BINARY)
    assert as_json.headers["content-type"] == "application/json"
    assert compact.headers["content-type"] == MEDIA_TYPE
    assert as_json.headers["vary"] == compact.headers["vary"] == "Accept"
    assert len(compact.content) < len(as_json.content) / 1.8
    want, got = as_json.json(), decode_rank(compact.content)
    assert got.status == [it["status"] for it in want["items"]] == [OK, OK, OK, STALE, UNKNOWN]
    assert got.model_version == want["model_version"]
    assert got.item_ids == [it["item_id"] for it in want["items"]]  # both by score
    assert sorted(got.item_ids[:3]) == ["a", "b", "c"] and got.item_ids[3:] == ["d", "zz"]
    emb = f32([it["embedding"] for it in want["items"][:3]])
    mid = f32([it["mid_emb"] for it in want["items"][:3]])
    assert np.array_equal(got.item_embeddings[:3], emb)
    assert np.array_equal(got.mid_emb[:3], mid)
    assert np.array_equal(got.cvr[:3], f32([it["cvr"] for it in want["items"][:3]]))
    assert np.isnan(got.cvr[3:]).all() and not got.item_embeddings[3:].any()


def test_service_negotiation_and_errors(client: TestClient) -> None:
    body = {"user_id": "u1", "item_ids": ["a"]}
    r = client.post("/rank", json=body, headers={"accept": "text/html"})
    assert r.status_code == 406 and MEDIA_TYPE in r.json()["detail"]
    r = client.post("/rank", json=body, headers={"accept": "\x00garbage;;q=x"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    # Errors are JSON whatever the client accepts: a 4xx is read by a person.
    r = client.post("/rank", json={"user_id": "zz", "item_ids": ["a"]}, headers=BINARY)
    assert r.status_code == 404 and "unknown user" in r.json()["detail"]
    r = client.post("/rank", content=b'{"user_id": NaN}', headers=BINARY)
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == "body.user_id"
    assert client.get("/rank").status_code == 405
