"""``/rank`` and ``learnrec rank`` answer by score unless asked for the request's order."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ranking.core import OK, SORTS, STALE, UNKNOWN, RankResult, RequestError
from ranking.service import create_app
from ranking.wire import MEDIA_TYPE, decode_rank
from tests.unit.test_ranking import (
    MemoryModels,
    MemoryOnline,
    _memory_reader,
    small_model,
    unit_rows,
)

IDS = ["a", "b", "c", "d", "e", "f", "zz"]


class _Json:
    def __init__(self, r: int) -> None:
        self.r = r

    def json(self) -> bytes:
        return b"[%d]" % self.r


def _result() -> RankResult:
    n = 6
    cvr = np.array([0.2, np.nan, 0.9, 0.2, np.nan, 0.5], np.float32)
    rows = np.arange(n, dtype=np.float32)[:, None]
    return RankResult(
        "v1",
        "u1",
        np.ones(4, np.float32),
        list("abcdef"),
        [OK, UNKNOWN, OK, OK, STALE, OK],
        np.repeat(rows, 4, axis=1),  # row r holds r: the rows must move with their ids
        np.repeat(rows, 3, axis=1),
        cvr,
        [_Json(r) for r in range(n)],
    )


def test_by_score_best_first_ties_in_request_order_unscored_last() -> None:
    res = _result()
    out = res.ordered("score")
    assert out.item_ids == ["c", "f", "a", "d", "b", "e"]
    assert out.status == [OK, OK, OK, OK, UNKNOWN, STALE]
    rows = [res.item_ids.index(i) for i in out.item_ids]
    assert out.item_embeddings[:, 0].tolist() == rows and out.mid_emb[:, 0].tolist() == rows
    assert [j.r for j in out.item_json or []] == rows
    np.testing.assert_array_equal(out.cvr, res.cvr[rows])
    assert res.item_ids == list("abcdef")  # the reader's own answer is left as it was
    assert res.ordered().item_ids == out.item_ids  # score is the default


def test_request_order_and_a_sorted_answer_are_returned_as_they_are() -> None:
    res = _result()
    assert res.ordered("request") is res
    once = res.ordered("score")
    assert once.ordered("score") is once
    with pytest.raises(RequestError, match="sort must be one of score, request"):
        res.ordered("cvr")
    assert SORTS == ("score", "request")


@pytest.fixture
def reader():  # type: ignore[no-untyped-def]
    online = MemoryOnline()
    reader = _memory_reader(online, MemoryModels(v1=small_model(0)), max_candidates=10)
    online.put("user_tower_embedding", ["u1"], unit_rows(1, 64, 5), "v1")
    online.put("item_tower_embedding", list("abcdf"), unit_rows(5, 64, 6), "v1")
    online.put("item_tower_embedding", ["e"], unit_rows(1, 64, 7), "v0")  # stale
    return reader


def _scored_first(items: list[dict]) -> None:
    cvr = [it["cvr"] for it in items if it["status"] == OK]
    assert len(cvr) == 5 and cvr == sorted(cvr, reverse=True)
    assert [it["item_id"] for it in items[5:]] == ["e", "zz"]


def test_http_rank_sorts_by_score_unless_asked(reader) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(reader)) as client:
        body = {"user_id": "u1", "item_ids": IDS}
        by_score = client.post("/rank", json=body).json()["items"]
        _scored_first(by_score)
        assert [it["item_id"] for it in by_score] != IDS  # the data are not in score order
        compact = decode_rank(
            client.post("/rank", json=body, headers={"accept": MEDIA_TYPE}).content
        )
        assert compact.item_ids == [it["item_id"] for it in by_score]

        explicit = client.post("/rank?sort=score", json=body).json()["items"]
        assert explicit == by_score
        for asked in (
            client.post("/rank?sort=request", json=body),
            client.post("/rank", json={**body, "sort": "request"}),
            client.post("/rank?sort=request", json={**body, "sort": "request"}),
        ):
            assert asked.status_code == 200, asked.text
            assert [it["item_id"] for it in asked.json()["items"]] == IDS

        for bad in (
            client.post("/rank?sort=cvr", json=body),
            client.post("/rank?sort=score&sort=request", json=body),
            client.post("/rank?sort=score", json={**body, "sort": "request"}),
            client.post("/rank", json={**body, "sort": "cvr"}),
        ):
            assert bad.status_code == 400, bad.text
            assert "sort" in json.dumps(bad.json()["detail"])


def test_cli_rank_sorts_by_score_unless_asked(
    reader,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import ranking.reader
    from learnrec.cli import build_parser
    from ranking import cli

    monkeypatch.setattr(ranking.reader, "open_reader", lambda: reader)
    parser = build_parser()

    def run(*argv: str) -> list[dict]:
        args = parser.parse_args(["rank", "u1", *IDS, *argv])
        assert cli._rank(args) == 0
        return json.loads(capsys.readouterr().out)["items"]

    by_score = run()
    _scored_first(by_score)
    assert run("--sort", "score") == by_score
    assert [it["item_id"] for it in run("--sort", "request")] == IDS
    with pytest.raises(SystemExit):
        parser.parse_args(["rank", "u1", "a", "--sort", "cvr"])
    assert isinstance(parser.parse_args(["rank", "u1"]), argparse.Namespace)
