"""bench.http_ranking's pure parts (percentiles, request bodies, response checks) and its client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from bench.http_harness import closed_loop
from bench.http_ranking import (
    FEATURES,
    check_feast,
    check_ours,
    feast_body,
    percentiles,
    rank_body,
)


def test_percentiles_in_ms() -> None:
    lat = [i / 1000 for i in range(1, 1001)]  # 1..1000 ms
    p = percentiles(lat)
    assert p["p50_ms"] == pytest.approx(500.5)
    assert p["p99_ms"] == pytest.approx(990.01)
    assert p["p999_ms"] == pytest.approx(999.001)
    assert p["mean_ms"] == pytest.approx(500.5)
    with pytest.raises(ValueError):
        percentiles([])


def test_bodies_ask_for_the_same_rows() -> None:
    items = [f"i{n}" for n in range(100)]
    ours = json.loads(rank_body("u1", items))
    feast = json.loads(feast_body("u1", items))
    assert ours == {"user_id": "u1", "item_ids": items}
    assert feast["entities"] == {"user_id": ["u1"] * 100, "item_id": items}
    assert feast["features"] == FEATURES and feast["full_feature_names"] is True
    assert {f.split(":")[1] for f in FEATURES} == {"embedding", "model_version"}


def test_response_checks() -> None:
    check_ours({"model_version": "v", "items": [{"status": "ok"}] * 3}, "v", 3)
    with pytest.raises(AssertionError):
        check_ours({"model_version": "v", "items": [{"status": "stale"}] * 3}, "v", 3)
    with pytest.raises(AssertionError):
        check_ours({"model_version": "w", "items": [{"status": "ok"}] * 3}, "v", 3)
    names = ["user_id", "item_id", "item_tower_embedding__embedding"]
    col = {"statuses": ["PRESENT", "PRESENT", "NOT_FOUND"]}
    payload = {"metadata": {"feature_names": names}, "results": [{}, {}, col]}
    check_feast(payload, 2)
    with pytest.raises(AssertionError, match="2 of 3"):
        check_feast(payload, 3)


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the servers under test
    seen: list[bytes] = []
    conns: set[int] = set()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Echo.seen.append(body)
        _Echo.conns.add(id(self.connection))
        status = 500 if body == b"fail" else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[int]:
    _Echo.seen, _Echo.conns = [], set()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def test_closed_loop_sends_each_body_once_over_kept_alive_connections(echo: int) -> None:
    bodies = [str(i).encode() for i in range(200)]
    lat, wall = closed_loop(echo, "/x", bodies, 4)
    assert len(lat) == 200 and wall > 0 and np.all(np.asarray(lat) > 0)
    assert sorted(_Echo.seen, key=int) == bodies
    assert len(_Echo.conns) == 4  # one connection per client thread, reused


def test_closed_loop_fails_on_an_error_status(echo: int) -> None:
    with pytest.raises(RuntimeError, match="HTTP 500"):
        closed_loop(echo, "/x", [b"1", b"fail", b"2"], 1)


def test_servers_option_names_only_known_servers() -> None:
    from bench.http_ranking import servers_of

    assert servers_of("ours") == ["ours"]
    assert servers_of("ours, feast_server") == ["ours", "feast_server"]
    with pytest.raises(SystemExit, match="--servers: unknown"):
        servers_of("ours,feast")


def test_servers_option_measures_binary_beside_json() -> None:
    from bench.http_ranking import servers_of

    assert servers_of("ours_binary") == ["ours", "ours_binary"]  # checked against JSON


def test_binary_check_compares_with_the_json_answer() -> None:
    from bench.http_ranking import check_binary
    from ranking.core import OK, RankResult
    from ranking.wire import MEDIA_TYPE, encode_rank

    rng = np.random.default_rng(0)
    emb, mid = rng.standard_normal((2, 8)).astype(np.float32), np.ones((2, 4), np.float32)
    res = RankResult("v", "u", emb[0], ["a", "b"], [OK, OK], emb, mid, np.full(2, 0.5, np.float32))
    answer = json.loads(res.to_json())
    check_binary(MEDIA_TYPE, encode_rank(res), answer)
    with pytest.raises(AssertionError, match="got 'application/json'"):
        check_binary("application/json", encode_rank(res), answer)
    answer["items"][1]["mid_emb"][0] = 2.0
    with pytest.raises(AssertionError, match="differs"):
        check_binary(MEDIA_TYPE, encode_rank(res), answer)


def test_group_cpu_counts_this_process_group() -> None:
    import os
    import time

    from bench.http_ranking import group_cpu_s

    t0 = time.process_time()
    while time.process_time() - t0 < 0.05:  # burn some CPU so that a tick registers
        pass
    assert group_cpu_s(os.getpgid(0)) >= 0.04
    assert group_cpu_s(2**22 + 12345) == 0.0  # no such group
