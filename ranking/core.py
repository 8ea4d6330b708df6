"""The ranking reader's pure core: request checks, pair scoring and the exact index.

Nothing here touches Kafka, Feast or the registry; ``reader.py`` wires these to the
online store and the current model, and the tests call them directly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

# Re-exported: the reader's callers and tests know them as part of the ranking core.
from learn_core.scoring import NumpyCVR, score_pairs, score_pairs_reference  # noqa: F401
from learn_core.serving import VersionError  # noqa: F401

#: Per-item status in a response. ``stale``: the store holds a row of another model
#: version (e.g. mid-backfill); it is reported, never scored with this version's model.
OK, UNKNOWN, STALE = "ok", "unknown", "stale"

#: Orders of a rank answer's candidates: by score, best first (the default of ``/rank`` and
#: ``learnrec rank``), or as the request listed them (``RankingReader.rank``'s own order).
Sort = Literal["score", "request"]
SORTS: tuple[str, ...] = get_args(Sort)
SORT_SCORE, SORT_REQUEST = SORTS


class RequestError(ValueError):
    """A request the reader refuses (HTTP 400/422); the message says what to fix."""


class UnknownUserError(LookupError):
    """No embedding of the serving version for this user (HTTP 404)."""


class DegradedError(RuntimeError):
    """The user's online state is known to be behind the logs and is being rebuilt
    (HTTP 503, ``degraded``): ``marks`` say which partitions and why."""

    def __init__(self, message: str, marks: Sequence[dict[str, Any]]) -> None:
        super().__init__(message)
        self.marks = list(marks)


def check_ids(
    user_id: str, item_ids: Sequence[str], *, max_candidates: int, max_id_chars: int
) -> list[str]:
    """Validate one rank request; return the item ids as a list (order kept)."""
    check_id("user_id", user_id, max_id_chars)
    if not item_ids:
        raise RequestError("item_ids is empty: give at least one candidate")
    if len(item_ids) > max_candidates:
        raise RequestError(
            f"{len(item_ids)} candidates > LEARNREC_RANKING_MAX_CANDIDATES={max_candidates}"
        )
    for i in item_ids:
        check_id("item_id", i, max_id_chars)
    if len(set(item_ids)) != len(item_ids):
        dup = sorted({i for i in item_ids if item_ids.count(i) > 1})[:5]
        raise RequestError(f"duplicate item ids {dup}")
    return list(item_ids)


def check_id(what: str, value: object, max_chars: int) -> str:
    if not isinstance(value, str) or not value or not value.strip():
        raise RequestError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > max_chars:
        raise RequestError(f"{what} is {len(value)} chars > {max_chars}")
    return value


def check_k(k: int, max_k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise RequestError(f"k must be a positive integer, got {k!r}")
    if k > max_k:
        raise RequestError(f"k={k} > LEARNREC_RANKING_MAX_K={max_k}")
    return k


@dataclass
class RankResult:
    """Everything one rank request returns, all made by ``model_version``.

    Rows of ``item_embeddings``, ``mid_emb`` and ``cvr`` follow ``item_ids``; rows whose
    ``status`` is not ``ok`` are zero / NaN. ``item_json``, when given, holds per row None
    or an object whose ``json()`` gives that embedding's JSON (the reader's near-cache
    entry, ``ranking.item_cache.Row``, which writes it once and keeps it); ``to_json``
    copies those bytes instead of formatting the floats again.
    """

    model_version: str
    user_id: str
    user_embedding: np.ndarray
    item_ids: list[str]
    status: list[str]
    item_embeddings: np.ndarray
    mid_emb: np.ndarray
    cvr: np.ndarray
    item_json: list[Any] | None = field(default=None, repr=False, compare=False)

    def ordered(self, sort: str = SORT_SCORE) -> RankResult:
        """The same answer with its candidates in ``sort`` order (one of ``SORTS``).

        ``score``: by ``cvr``, highest first, ties in request order; candidates without a
        score (``unknown``, ``stale``) follow, in request order. ``request``: unchanged.
        """
        if sort == SORT_REQUEST:
            return self
        if sort != SORT_SCORE:
            raise RequestError(f"sort must be one of {', '.join(SORTS)}, got {str(sort)[:40]!r}")
        ok = np.fromiter((s == OK for s in self.status), bool, len(self.status))
        key = np.where(ok, -np.asarray(self.cvr, np.float64), 0.0)
        order = np.lexsort((key, ~ok))  # stable: equal keys keep request order
        if (order == np.arange(len(order))).all():
            return self
        rows = order.tolist()
        return RankResult(
            self.model_version,
            self.user_id,
            self.user_embedding,
            [self.item_ids[r] for r in rows],
            [self.status[r] for r in rows],
            self.item_embeddings[order],
            self.mid_emb[order],
            self.cvr[order],
            None if self.item_json is None else [self.item_json[r] for r in rows],
        )

    def to_dict(self) -> dict[str, Any]:
        items = []
        for r, iid in enumerate(self.item_ids):
            ok = self.status[r] == OK
            items.append(
                {
                    "item_id": iid,
                    "status": self.status[r],
                    "embedding": self.item_embeddings[r].tolist() if ok else None,
                    "mid_emb": self.mid_emb[r].tolist() if ok else None,
                    "cvr": float(self.cvr[r]) if ok else None,
                }
            )
        return {
            "model_version": self.model_version,
            "user_id": self.user_id,
            "user_embedding": self.user_embedding.tolist(),
            "items": items,
        }

    def to_json(self) -> bytes:
        """``to_dict()`` as JSON, each value written as the shortest decimal of its float32.

        The values are float32 (in the store and out of the CVR head), so the shortest
        decimal that reads back to the same float32 is exact for them, as protobuf's JSON
        (and so Feast's server) writes its float fields; a client that parses as float64
        gets that decimal's double, within float32 rounding of ``to_dict()``'s value.
        It halves the answer against float64 digits (144 KB instead of 255 KB for 100
        candidates). The arrays go to orjson whole, so an answer builds 300 small objects
        instead of about 10,000; embeddings with a row in ``item_json`` are copied from
        there (the same bytes, written once per cache entry).
        """
        import orjson

        emb = np.ascontiguousarray(self.item_embeddings, np.float32)
        mid = np.ascontiguousarray(self.mid_emb, np.float32)
        cvr = np.asarray(self.cvr, np.float32)
        texts = self.item_json or [None] * len(self.item_ids)
        items = []
        for r, iid in enumerate(self.item_ids):
            ok = self.status[r] == OK
            text = texts[r]
            items.append(
                {
                    "item_id": iid,
                    "status": self.status[r],
                    "embedding": (emb[r] if text is None else text.json()) if ok else None,
                    "mid_emb": mid[r] if ok else None,
                    "cvr": cvr[r] if ok else None,
                }
            )
        return orjson.dumps(
            {
                "model_version": self.model_version,
                "user_id": self.user_id,
                "user_embedding": np.ascontiguousarray(self.user_embedding, np.float32),
                "items": items,
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )


@dataclass
class Retrieved:
    model_version: str
    user_id: str
    item_ids: list[str]
    scores: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "user_id": self.user_id,
            "items": [
                {"item_id": i, "score": float(s)}
                for i, s in zip(self.item_ids, self.scores, strict=True)
            ],
        }


@dataclass
class ExactIndex:
    """Exact maximum-inner-product search over the item vectors of one model version.

    Upserts are O(batch) amortised (the matrix grows by doubling); a search is one
    matrix-vector product plus ``argpartition``. Thread-safe: the retrieval thread
    upserts while request threads search. Rows upserted with a stamp (the row's event
    time) replace an item's vector only when newer than the one it holds, so a row read
    again, or written late, never brings an older vector back.
    """

    model_version: str
    dim: int
    _ids: list[str] = field(default_factory=list)
    _pos: dict[str, int] = field(default_factory=dict)
    _mat: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    _stamps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._pos

    def upsert(
        self, ids: Sequence[str], vectors: np.ndarray, stamps: Sequence[int] | None = None
    ) -> int:
        """Insert or replace vectors (with ``stamps``: only by newer ones); returns how
        many ids were new."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors {vectors.shape} != ({len(ids)}, {self.dim})")
        if stamps is not None and len(stamps) != len(ids):
            raise ValueError(f"{len(stamps)} stamps for {len(ids)} ids")
        oldest = np.iinfo(np.int64).min
        new = 0
        with self._lock:
            if self._mat.shape[1] != self.dim:
                self._mat = np.zeros((max(16, len(ids)), self.dim), np.float32)
                self._stamps = np.full(len(self._mat), oldest, np.int64)
            for j, iid in enumerate(ids):
                stamp = oldest if stamps is None else int(stamps[j])
                r = self._pos.get(iid)
                if r is None:
                    r = len(self._ids)
                    if r == self._mat.shape[0]:
                        grown = np.zeros((2 * r, self.dim), np.float32)
                        grown[:r] = self._mat
                        self._mat = grown
                        self._stamps = np.concatenate([self._stamps, np.full(r, oldest, np.int64)])
                    self._ids.append(iid)
                    self._pos[iid] = r
                    new += 1
                elif stamps is not None and stamp <= self._stamps[r]:
                    continue  # the index holds this row or a newer one
                self._mat[r] = vectors[j]
                self._stamps[r] = stamp
        return new

    def search(
        self, query: np.ndarray, k: int, exclude: Iterable[str] = ()
    ) -> tuple[list[str], np.ndarray]:
        """Top-``k`` ids by inner product with ``query`` (best first), skipping ``exclude``."""
        with self._lock:
            n = len(self._ids)
            if n == 0:  # nothing indexed yet (the matrix has no columns before an upsert)
                return [], np.zeros(0, np.float32)
            scores = self._mat[:n] @ np.asarray(query, dtype=np.float32)
            ids = self._ids[:n]
            skip = [self._pos[i] for i in exclude if i in self._pos]
        if skip:
            scores[skip] = -np.inf
        k = min(k, n - len(skip))
        if k <= 0:
            return [], np.zeros(0, np.float32)
        top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.lexsort((top, -scores[top]))]  # score desc, then insertion order
        return [ids[t] for t in top], scores[top]


def exact_topk_reference(
    ids: Sequence[str], matrix: np.ndarray, query: np.ndarray, k: int
) -> list[str]:
    """Sort-everything reference for ``ExactIndex.search`` (tests only)."""
    scores = matrix @ query
    order = sorted(range(len(ids)), key=lambda r: (-scores[r], r))
    return [ids[r] for r in order[:k]]
