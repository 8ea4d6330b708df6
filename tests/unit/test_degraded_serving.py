"""The ranking reader says ``degraded`` while a store that went back is rebuilt (issue 25).

A consumer marks the partitions it rebuilds (``feature_repo.store_status``); until it
clears them, ``/healthz`` is 503 with the reason, and ``/rank`` and ``/retrieve`` refuse
the users of those partitions (503) instead of serving their stale rows; other users are
served.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from feature_repo.store_status import Degraded, MemoryStoreStatus, partition_of
from learn_core.serving import ModelCache
from ranking.reader import RankingReader, StatusView
from ranking.service import create_app
from ranking.settings import RankingSettings
from tests.unit.test_http_input import CountingRetrieval
from tests.unit.test_ranking import MemoryModels, MemoryOnline, small_model, unit_rows

USERS = [f"u{k}" for k in range(12)]
REASON = "online store went back on learn.interactions partition {p}: it holds writes up to 5"


def _client(status: MemoryStoreStatus, check_s: float = 0.0) -> TestClient:
    online = MemoryOnline()
    online.put("user_tower_embedding", USERS, unit_rows(len(USERS), 64, 5), "v1")
    online.put("item_tower_embedding", ["a", "b"], unit_rows(2, 64, 6), "v1")
    reader = RankingReader(
        online,  # type: ignore[arg-type]
        ModelCache(MemoryModels(v1=small_model(0)), check_s=0),
        RankingSettings(status_check_s=check_s),
        retrieval=CountingRetrieval(2),  # type: ignore[arg-type]
        status=status,
    )
    return TestClient(create_app(reader))


def test_healthz_and_rank_say_degraded_until_the_rebuild_is_done() -> None:
    status = MemoryStoreStatus()
    client = _client(status)
    ok = client.get("/healthz")
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    p = partition_of("u1", 4)
    hit = [u for u in USERS if partition_of(u, 4) == p]
    miss = [u for u in USERS if partition_of(u, 4) != p]
    assert hit and miss
    status.mark([Degraded("learn.interactions", p, 4, REASON.format(p=p), 1_700_000_000.0)])

    r = client.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded" and str(p) in body["detail"]
    assert body["degraded"][0]["partition"] == p
    assert "went back" in body["degraded"][0]["reason"]
    assert body["degraded"][0]["since"].startswith("2023-11-14T22:13:20")

    for user in hit:
        r = client.post("/rank", json={"user_id": user, "item_ids": ["a", "b"]})
        assert r.status_code == 503 and r.json()["status"] == "degraded", r.text
        assert "rebuilt" in r.json()["detail"]
        r = client.get(f"/retrieve?user_id={user}&k=1")
        assert r.status_code == 503 and r.json()["status"] == "degraded"
    for user in miss:
        assert client.post("/rank", json={"user_id": user, "item_ids": ["a"]}).status_code == 200

    status.clear([f"learn.interactions/{p}"])
    assert client.get("/healthz").status_code == 200
    assert client.post("/rank", json={"user_id": hit[0], "item_ids": ["a"]}).status_code == 200


def test_status_view_rereads_after_its_ttl() -> None:
    status = MemoryStoreStatus()
    t = [0.0]
    view = StatusView(status, 0.1, clock=lambda: t[0])
    assert view.marks() == []
    d = Degraded("t", 0, 2, "went back", 0.0)
    status.mark([d])
    assert view.marks() == []  # cached
    assert view.fresh() == [d]  # /healthz reads now
    status.clear([d.scope])
    t[0] = 0.05
    assert view.marks() == [d]
    t[0] = 0.2
    assert view.marks() == []
    assert StatusView(status, 0.0, clock=lambda: 0.0).marks() == []
