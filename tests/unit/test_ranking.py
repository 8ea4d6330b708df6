"""Ranking reader core: request checks, the exact index, batched scoring, version refusal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from feast.protos.feast.types.Value_pb2 import FloatList, Value

from feature_repo.online import RawPair, VersionedVectors, decode_vectors
from learn_core.models import LearnConfig, LearnModel
from learn_core.models.cvr import CVRHead
from learn_core.serving import ModelCache, as_serving
from ranking.core import (
    OK,
    STALE,
    UNKNOWN,
    ExactIndex,
    NumpyCVR,
    RequestError,
    UnknownUserError,
    VersionError,
    check_ids,
    check_k,
    exact_topk_reference,
    score_pairs,
    score_pairs_reference,
)
from ranking.reader import RankingReader
from ranking.retrieval import stamps
from ranking.settings import RankingSettings


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ------------------------------------------------------------------- request checks


def test_check_ids_refuses_bad_requests_with_clear_messages() -> None:
    kw = dict(max_candidates=3, max_id_chars=8)
    assert check_ids("u1", ("a", "b"), **kw) == ["a", "b"]
    with pytest.raises(RequestError, match="empty"):
        check_ids("u1", [], **kw)
    with pytest.raises(RequestError, match="MAX_CANDIDATES=3"):
        check_ids("u1", ["a", "b", "c", "d"], **kw)
    with pytest.raises(RequestError, match="duplicate item ids \\['a'\\]"):
        check_ids("u1", ["a", "b", "a"], **kw)
    with pytest.raises(RequestError, match="user_id must be a non-empty"):
        check_ids(" ", ["a"], **kw)
    with pytest.raises(RequestError, match="item_id is 9 chars > 8"):
        check_ids("u1", ["x" * 9], **kw)
    with pytest.raises(RequestError, match="MAX_K=5"):
        check_k(6, 5)
    with pytest.raises(RequestError, match="positive"):
        check_k(0, 5)


# --------------------------------------------------------------------- exact index


def test_exact_index_matches_sorting_everything_and_takes_upserts() -> None:
    ids = [f"i{n:03d}" for n in range(300)]
    mat = unit_rows(300, 16, seed=1)
    idx = ExactIndex("v1", 16)
    got, scores = idx.search(mat[0], 10)  # empty (the service warms it at start-up)
    assert got == [] and scores.shape == (0,)
    assert idx.upsert(ids[:100], mat[:100]) == 100
    assert idx.upsert(ids[100:], mat[100:]) == 200  # grows past its initial capacity
    for q in unit_rows(20, 16, seed=2):
        got, scores = idx.search(q, 10)
        assert got == exact_topk_reference(ids, mat, q, 10)
        assert np.all(np.diff(scores) <= 0)
    # Replacing a vector moves the item; exclusion removes it.
    q = mat[5]
    assert idx.upsert(["i005"], -mat[5:6]) == 0
    assert "i005" not in idx.search(q, 300)[0][:299]
    got, _ = idx.search(q, 5, exclude={"i007"})
    assert "i007" not in got and len(got) == 5
    assert len(idx.search(q, 1000)[0]) == 300


def test_exact_index_with_stamps_keeps_each_items_newest_row() -> None:
    idx = ExactIndex("v1", 2)
    one, two = np.array([[1.0, 0.0]], np.float32), np.array([[0.0, 1.0]], np.float32)
    assert idx.upsert(["a"], one, [10]) == 1
    idx.upsert(["a"], two, [9])  # older, e.g. stored late: ignored
    idx.upsert(["a"], two, [10])  # the same row read again: ignored
    assert idx.search(np.array([1.0, 0.0], np.float32), 1)[1][0] == 1.0
    idx.upsert(["a"], two, [11])  # newer: replaces
    assert idx.search(np.array([1.0, 0.0], np.float32), 1)[1][0] == 0.0
    idx.upsert(["a"], one)  # no stamp: replaces, as before stamps existed
    assert idx.search(np.array([1.0, 0.0], np.float32), 1)[1][0] == 1.0
    # Stamps survive the matrix growing past its first capacity.
    ids = [f"i{n}" for n in range(40)]
    idx.upsert(ids, np.ones((40, 2), np.float32), list(range(100, 140)))
    idx.upsert(["i0"], np.zeros((1, 2), np.float32), [99])
    assert "i0" in idx.search(np.array([1.0, 1.0], np.float32), 41)[0][:40]
    with pytest.raises(ValueError, match="stamps"):
        idx.upsert(["a", "b"], np.zeros((2, 2), np.float32), [1])


def test_stamps_are_utc_nanoseconds_whatever_the_zone_or_unit() -> None:
    when = pd.Timestamp("2026-01-01T00:00:00.000001Z")
    df = pd.DataFrame({"event_timestamp": [when, pd.Timestamp("2026-01-01T01:00:00.000001+01:00")]})
    assert stamps(df).tolist() == [when.value, when.value]
    us = pd.DataFrame({"event_timestamp": pd.Series([when]).dt.as_unit("us")})
    assert stamps(us).tolist() == [when.value]


def test_exact_index_refuses_wrong_width() -> None:
    with pytest.raises(ValueError, match="vectors"):
        ExactIndex("v1", 8).upsert(["a"], np.zeros((1, 4), np.float32))


# ------------------------------------------------------------------------ scoring


def small_model(seed: int) -> LearnModel:
    torch.manual_seed(seed)
    return LearnModel(LearnConfig()).eval()


def test_batched_scoring_equals_per_pair_reference() -> None:
    m = small_model(0)
    user = unit_rows(1, 64, 3)[0]
    items = unit_rows(100, 64, 4)
    mid, cvr = score_pairs(m.cvr_head, user, items)
    ref_mid, ref_cvr = score_pairs_reference(m.cvr_head, user, items)
    assert mid.shape == (100, m.cfg.cvr.mid_dim)
    np.testing.assert_allclose(mid, ref_mid, atol=1e-5)
    np.testing.assert_allclose(cvr, ref_cvr, atol=1e-6)
    assert np.all((cvr > 0) & (cvr < 1))


def test_numpy_cvr_equals_torch_per_pair_reference() -> None:
    for seed in range(3):
        head = small_model(seed).cvr_head
        twin = NumpyCVR.from_head(head)
        assert twin is not None
        user = unit_rows(1, 64, 10 + seed)[0]
        items = unit_rows(100, 64, 20 + seed)
        mid, cvr = twin(user, items)
        ref_mid, ref_cvr = score_pairs_reference(head, user, items)
        assert mid.dtype == cvr.dtype == np.float32
        np.testing.assert_allclose(mid, ref_mid, atol=1e-5)
        np.testing.assert_allclose(cvr, ref_cvr, atol=1e-6)
    # Saturated logits: no overflow, same limits as torch.sigmoid.
    with torch.no_grad():
        head.out.weight.mul_(1e4)
    twin = NumpyCVR.from_head(head, atol=1e-2)
    assert twin is not None
    with np.errstate(all="raise"):
        _, cvr = twin(user, items * 50)
    _, ref_cvr = score_pairs(head, user, items * 50)
    np.testing.assert_allclose(cvr, ref_cvr, atol=1e-6)
    assert twin(user, items[:0])[1].shape == (0,)


def test_numpy_cvr_refuses_a_head_it_does_not_know() -> None:
    class Shifted(CVRHead):
        def forward(self, user: torch.Tensor, item: torch.Tensor):  # noqa: ANN202
            mid, logit = super().forward(user, item)
            return mid, logit + 1.0

    head = Shifted(small_model(0).cfg.cvr).eval()
    assert NumpyCVR.from_head(head) is None
    head.mlp = torch.nn.Sequential(*list(head.mlp)[:2], *list(head.mlp)[3:])
    assert NumpyCVR.from_head(head) is None
    # The serving model then scores with torch, still equal to the reference.
    model = as_serving("v", small_model(0))
    assert model.numpy_cvr is not None
    object.__setattr__(model, "numpy_cvr", None)
    user, items = unit_rows(1, 64, 1)[0], unit_rows(5, 64, 2)
    np.testing.assert_allclose(
        model.score(user, items)[1],
        score_pairs_reference(model.cvr_head, user, items)[1],
        atol=1e-6,
    )


# ------------------------------------------------------- reader over in-memory ports


class MemoryOnline:
    """In-memory stand-in for the online store (one row per entity), serialised as Feast does.

    ``read_vectors`` feeds the stored protobuf bytes through the same decoder as the
    SQLite and Redis sources, so the reader's unit tests exercise the real decode path.
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], RawPair] = {}
        self.online = self  # the reader reaches the fast path as ``handle.online``

    def put(self, view: str, ids: list[str], vecs: np.ndarray, version: str) -> None:
        for i, v in zip(ids, vecs, strict=True):
            self.rows[(view, i)] = (
                Value(float_list_val=FloatList(val=v.tolist())).SerializeToString(),
                Value(string_val=version).SerializeToString(),
            )

    def read_vectors(
        self, requests: list[tuple[str, list[str]]], model_version: str
    ) -> list[VersionedVectors]:
        return [
            decode_vectors([self.rows.get((view, i), (None, None)) for i in ids], model_version)
            for view, ids in requests
        ]


class MemoryModels:
    def __init__(self, **models: LearnModel) -> None:
        self.models = models
        self.version: str | None = next(iter(models), None)

    def current_version(self) -> str | None:
        return self.version

    def load(self, version: str) -> LearnModel:
        return self.models[version]


class NoRetrieval:
    backend = "none"

    def start(self) -> None: ...

    def close(self) -> None: ...


def _memory_reader(online: MemoryOnline, models: MemoryModels, max_candidates: int):
    """A reader over the in-memory store and models, without a retrieval index."""
    return RankingReader(
        online,  # type: ignore[arg-type]
        ModelCache(models, check_s=0),
        RankingSettings(max_candidates=max_candidates),
        retrieval=NoRetrieval(),  # type: ignore[arg-type]
    )


def test_reader_marks_other_versions_and_never_scores_them() -> None:
    online = MemoryOnline()
    models = MemoryModels(v1=small_model(0), v2=small_model(1))
    reader = _memory_reader(online, models, max_candidates=10)
    online.put("user_tower_embedding", ["u1"], unit_rows(1, 64, 5), "v1")
    online.put("item_tower_embedding", ["a", "b", "c"], unit_rows(3, 64, 6), "v1")
    online.put("item_tower_embedding", ["b"], unit_rows(1, 64, 7), "v2")  # mid-backfill

    res = reader.rank("u1", ["a", "b", "c", "zz"])
    assert res.model_version == "v1"
    assert res.status == [OK, STALE, OK, UNKNOWN]
    assert np.isnan(res.cvr[[1, 3]]).all() and not np.isnan(res.cvr[[0, 2]]).any()
    want_mid, want_cvr = score_pairs(
        models.models["v1"].cvr_head, res.user_embedding, res.item_embeddings[[0, 2]]
    )
    np.testing.assert_allclose(res.cvr[[0, 2]], want_cvr, atol=1e-6)
    np.testing.assert_allclose(res.mid_emb[[0, 2]], want_mid, atol=1e-6)
    body = res.to_dict()
    assert body["items"][1] == {
        "item_id": "b",
        "status": STALE,
        "embedding": None,
        "mid_emb": None,
        "cvr": None,
    }

    # The pointer moves to v2: the user still has a v1 row, so the reader refuses.
    models.version = "v2"
    with pytest.raises(UnknownUserError, match="not of the serving model v2"):
        reader.rank("u1", ["a"])
    with pytest.raises(UnknownUserError, match="unknown user 'nobody'"):
        reader.rank("nobody", ["a"])
    models.version = None
    with pytest.raises(VersionError, match="no model has been promoted"):
        reader.rank("u1", ["a"])
    with pytest.raises(RequestError):
        reader.rank("u1", [str(i) for i in range(11)])


def test_http_service_maps_errors_to_status_codes() -> None:
    from fastapi.testclient import TestClient

    from ranking.service import create_app

    online = MemoryOnline()
    models = MemoryModels(v1=small_model(0))
    reader = _memory_reader(online, models, max_candidates=5)
    online.put("user_tower_embedding", ["u1"], unit_rows(1, 64, 5), "v1")
    online.put("item_tower_embedding", ["a", "b"], unit_rows(2, 64, 6), "v1")
    client = TestClient(create_app(reader))
    ok = client.post("/rank", json={"user_id": "u1", "item_ids": ["a", "b"]})
    assert ok.status_code == 200
    body = ok.json()
    assert body["model_version"] == "v1" and [i["status"] for i in body["items"]] == [OK, OK]
    assert len(body["user_embedding"]) == 64 and 0 < body["items"][0]["cvr"] < 1
    too_many = client.post("/rank", json={"user_id": "u1", "item_ids": list("abcdef")})
    assert too_many.status_code == 400 and "MAX_CANDIDATES" in too_many.json()["detail"]
    assert client.post("/rank", json={"user_id": "zz", "item_ids": ["a"]}).status_code == 404
    models.version = None
    assert client.post("/rank", json={"user_id": "u1", "item_ids": ["a"]}).status_code == 503
