"""The HTTP service on hostile input: NaN, huge bodies, unknown fields; honest /healthz."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from fastapi.testclient import TestClient

from feature_repo.settings import FeastSettings
from feature_repo.store import check_services
from learn_core.serving import ModelCache
from ranking.reader import RankingReader
from ranking.service import create_app
from ranking.settings import RankingSettings
from tests.unit.test_ranking import MemoryModels, MemoryOnline, small_model, unit_rows


class CountingRetrieval:
    """Builds its 'index' on the first search, like the real backends."""

    backend = "counting"

    def __init__(self, n: int) -> None:
        self.n, self.built = n, False

    def search(self, version, dim, query, k, exclude):  # noqa: ANN001, ANN201
        self.built = True
        return [], np.zeros(0, np.float32)

    def size(self) -> int:
        return self.n if self.built else 0

    def start(self) -> None: ...

    def close(self) -> None: ...


def _client(max_body_bytes: int = 4096, online: MemoryOnline | None = None) -> TestClient:
    online = online or MemoryOnline()
    online.put("user_tower_embedding", ["u1"], unit_rows(1, 64, 5), "v1")
    online.put("item_tower_embedding", ["a", "b"], unit_rows(2, 64, 6), "v1")
    reader = RankingReader(
        online,  # type: ignore[arg-type]
        ModelCache(MemoryModels(v1=small_model(0)), check_s=0),
        RankingSettings(max_body_bytes=max_body_bytes),
        retrieval=CountingRetrieval(2),  # type: ignore[arg-type]
    )
    return TestClient(create_app(reader))


def _post(client: TestClient, raw: str | bytes):  # noqa: ANN202
    return client.post("/rank", content=raw, headers={"content-type": "application/json"})


def test_nan_in_body_is_a_400_not_a_500() -> None:
    client = _client()
    for raw in ('{"user_id": NaN, "item_ids": ["a"]}', '{"user_id": "u1", "item_ids": [NaN]}'):
        r = _post(client, raw)
        assert r.status_code == 400, r.text
        assert "nan" in json.dumps(r.json()).lower()


def test_malformed_json_and_unknown_fields_are_400() -> None:
    client = _client()
    assert _post(client, '{"user_id": "u1", "item_ids": [').status_code == 400
    r = client.post("/rank", json={"user_id": "u1", "item_ids": ["a"], "itemids": ["b"]})
    assert r.status_code == 400 and "itemids" in r.text


def test_a_400_quotes_the_input_short() -> None:
    client = _client(max_body_bytes=1 << 20)
    big = "x" * 500_000
    r = client.post("/rank", json={"user_id": "u1", "item_ids": "x" + big})
    assert r.status_code == 400
    assert len(r.content) < 2000 and big not in r.text


def test_bodies_over_the_limit_get_413() -> None:
    client = _client(max_body_bytes=4096)
    body = json.dumps({"user_id": "u1", "item_ids": ["a"] * 5000})
    assert _post(client, body).status_code == 413  # Content-Length up front

    def chunks():  # noqa: ANN202 - no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/rank", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert "LEARNREC_RANKING_MAX_BODY_BYTES" in r.text
    ok = client.post("/rank", json={"user_id": "u1", "item_ids": ["a", "b"]})
    assert ok.status_code == 200


def test_healthz_reports_the_index_built_at_start_up() -> None:
    with _client() as client:  # runs the lifespan: the index is built before any /retrieve
        body = client.get("/healthz").json()
    assert body["indexed_items"] == 2 and body["model_version"] == "v1"


def test_healthz_is_503_while_the_store_is_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = FeastSettings(profile="production", redis_url=f"redis://127.0.0.1:{port}/0")

    class DownOnline(MemoryOnline):
        def check(self) -> None:
            check_services(down, timeout_s=1.0)

    r = _client(online=DownOnline()).get("/healthz")
    assert r.status_code == 503
    assert "LEARNREC_FEAST_REDIS_URL" in r.json()["detail"] and r.json()["store"] == "unreachable"


@pytest.mark.parametrize("port", [0, 65536, 99999])
def test_port_setting_range(port: int) -> None:
    with pytest.raises(ValueError, match="port"):
        RankingSettings(port=port)


def test_a_store_outage_during_a_request_is_503() -> None:
    import redis

    class FlakyOnline(MemoryOnline):
        down = False

        def read_vectors(self, requests, model_version):  # noqa: ANN001, ANN201
            if self.down:
                raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390")
            return super().read_vectors(requests, model_version)

    online = FlakyOnline()
    client = _client(online=online)
    assert client.post("/rank", json={"user_id": "u1", "item_ids": ["a"]}).status_code == 200
    online.down = True
    r = client.post("/rank", json={"user_id": "u1", "item_ids": ["a"]})
    assert r.status_code == 503 and r.json()["store"] == "unreachable"
    assert "127.0.0.1:6390" in r.json()["detail"]


def test_the_service_sizes_the_thread_pools_at_start_up_not_the_reader() -> None:
    """BLAS and torch pools are process-wide: a reader built in a host process leaves them
    alone; the service sets them (LEARNREC_RANKING_*_THREADS) when it builds its app."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    def pools() -> tuple[set[int], int]:
        blas = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
        return blas, torch.get_num_threads()

    before_blas, before_torch = pools()
    try:
        threadpool_limits(limits=2, user_api="blas")
        torch.set_num_threads(2)
        reader = RankingReader(
            MemoryOnline(),  # type: ignore[arg-type]
            ModelCache(MemoryModels(v1=small_model(0)), check_s=0),
            RankingSettings(blas_threads=1, torch_threads=1),
            retrieval=CountingRetrieval(0),  # type: ignore[arg-type]
        )
        assert pools() == ({2}, 2)
        create_app(reader)
        assert pools() == ({1}, 1)
    finally:
        threadpool_limits(limits=max(before_blas, default=1), user_api="blas")
        torch.set_num_threads(before_torch)
