"""The ranking reader: one user, N candidates -> embeddings, mid-emb and CVR of one version.

Every value in a response comes from the registry's current model version ``v``:
the user and item rows are read from the online store through the fast path
(``OnlineEmbeddings.read_vectors``: one round trip) under ``v``'s own keys (blue/green:
each version's rows sit beside the others', ``feature_repo.online.versions``) and
checked to carry ``model_version == v``; the mid-emb and CVR come from ``v``'s CVR head.
A user whose partition a consumer marked ``degraded`` (the store went back and is being
rebuilt from the logs, ``feature_repo.store_status``) is answered 503, not with the row.
A candidate's backfill writes beside ``v``'s rows, so it never takes an item away from
``v``'s responses; an id without a row of ``v`` is ``unknown``, a row of another version
(which the keys rule out) ``stale``, neither is scored, and a response cannot mix versions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from feature_repo.schema import ITEM_TOWER, USER_TOWER
from feature_repo.store_status import Degraded, MemoryStoreStatus, StoreStatus, open_store_status
from learn_core.serving import ModelCache, ModelSource, ServingModel
from ranking.core import (
    OK,
    STALE,
    UNKNOWN,
    DegradedError,
    RankResult,
    Retrieved,
    UnknownUserError,
    VersionError,
    check_id,
    check_ids,
    check_k,
)
from ranking.item_cache import ItemCache
from ranking.settings import RankingSettings

if TYPE_CHECKING:
    from feature_repo.online import VersionedVectors
    from feature_repo.store import FeatureStoreHandle
    from ranking.retrieval import Retrieval

log = logging.getLogger(__name__)


class RankingReader:
    """Python client over the online store and the current model (thread-safe reads)."""

    def __init__(
        self,
        handle: FeatureStoreHandle,
        models: ModelSource | ModelCache,
        settings: RankingSettings | None = None,
        retrieval: Retrieval | None = None,
        status: StoreStatus | None = None,
    ) -> None:
        self.handle = handle
        self.s = settings or RankingSettings()
        if status is None:  # the marks beside the online store (a test's memory store: none)
            feast = getattr(handle, "settings", None)
            status = MemoryStoreStatus() if feast is None else open_store_status(feast)
        self.status = StatusView(status, self.s.status_check_s)
        # The BLAS and torch pools are the process's: the service sizes them at start-up
        # (``ranking.service``), a reader embedded elsewhere leaves them to its host.
        self.models = (
            models if isinstance(models, ModelCache) else ModelCache(models, self.s.version_check_s)
        )
        if retrieval is None:
            from ranking.retrieval import make_retrieval

            retrieval = make_retrieval(handle, self.s)
        self.retrieval = retrieval
        self.items = ItemCache(self.s.item_cache_s, self.s.item_cache_entries)

    def model(self) -> ServingModel:
        return self.models.current()

    def check_user(self, user_id: str) -> None:
        """Refuse (503) a user whose online state is known to be behind the logs."""
        marks = [d for d in self.status.marks() if d.affects(user_id)]
        if marks:
            raise DegradedError(
                f"user {user_id!r}: {marks[0].reason}; it is being rebuilt from the offline "
                "log, retry shortly",
                [d.to_dict() for d in marks],
            )

    def user_embedding(self, user_id: str, model: ServingModel) -> np.ndarray:
        (got,) = self.handle.online.read_vectors([(USER_TOWER.name, [user_id])], model.version)
        return _user_row(user_id, got, model)

    def rank(self, user_id: str, item_ids: Sequence[str]) -> RankResult:
        """Embeddings, mid-emb and CVR for ``user_id`` x ``item_ids``, one model version.

        The user row and the candidate rows the item near-cache lacks come back in one
        online-store round trip.
        """
        ids = check_ids(
            user_id,
            item_ids,
            max_candidates=self.s.max_candidates,
            max_id_chars=self.s.max_id_chars,
        )
        self.check_user(user_id)
        model = self.model()
        user, item_vecs, ok, status, item_json = self._read(user_id, ids, model)
        n, mid_dim = len(ids), model.cvr_head.cfg.mid_dim
        if ok.all():
            mid, cvr = model.score(user, item_vecs)
        else:
            mid = np.zeros((n, mid_dim), np.float32)
            cvr = np.full(n, np.nan, np.float32)
            if ok.any():
                mid[ok], cvr[ok] = model.score(user, item_vecs[ok])
        return RankResult(model.version, user_id, user, ids, status, item_vecs, mid, cvr, item_json)

    def _read(
        self, user_id: str, ids: list[str], model: ServingModel
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[Any] | None]:
        """(user vector, item vectors, ok mask, statuses, the near-cache's rows of the
        items, None where it has none) of ``model``'s version."""
        version, dim, n = model.version, model.dim, len(ids)
        read_at = time.monotonic()
        hit, entries, miss = self.items.lookup(version, ids, read_at)
        wanted = [(USER_TOWER.name, [user_id])]
        if miss:
            wanted.append((ITEM_TOWER.name, [ids[r] for r in miss]))
        got = self.handle.online.read_vectors(wanted, version)
        user = _user_row(user_id, got[0], model)
        item_vecs = np.zeros((n, dim), np.float32)  # rows that are not ok stay zero
        ok = np.zeros(n, dtype=bool)
        if hit:
            item_vecs[hit] = [e.vector for e in entries]
            ok[hit] = True
        status = [OK] * n
        item_json: list[Any] | None = None
        if self.items.enabled:
            item_json = [None] * n
            for r, entry in zip(hit, entries, strict=True):
                item_json[r] = entry
        if miss:
            items = got[1]
            if items.ok.any():
                if items.vectors.shape[1] != dim:
                    raise VersionError(
                        f"item vectors of model {version} are {items.vectors.shape[1]}-d, "
                        f"the model's tower is {dim}-d"
                    )
                rows = np.asarray(miss)[items.ok]
                item_vecs[rows] = items.vectors[items.ok]
                ok[rows] = True
                read = self.items.store(
                    version, [ids[r] for r in rows], items.vectors[items.ok], read_at
                )
                if item_json is not None:
                    for r, entry in zip(rows.tolist(), read, strict=True):
                        item_json[r] = entry
            for j, r in enumerate(miss):
                if not items.ok[j]:
                    status[r] = UNKNOWN if items.version(j) is None else STALE
        return user, item_vecs, ok, status, item_json

    def retrieve(self, user_id: str, k: int = 10, exclude: Sequence[str] = ()) -> Retrieved:
        """Top-``k`` items for ``user_id`` by inner product of the serving version's vectors."""
        check_id("user_id", user_id, self.s.max_id_chars)
        check_k(k, self.s.max_k)
        self.check_user(user_id)
        model = self.model()
        user = self.user_embedding(user_id, model)
        ids, scores = self.retrieval.search(model.version, model.dim, user, k, set(exclude))
        return Retrieved(model.version, user_id, ids, scores)

    def start(self) -> None:
        """Follow the model pointer and refresh the index in the background (the service
        calls this): requests then never read the registry or load a model themselves."""
        self.models.start()
        self.retrieval.start()

    def close(self) -> None:
        self.models.close()
        self.retrieval.close()
        self.status.close()


class StatusView:
    """The store's ``degraded`` marks, re-read at most every ``ttl_s`` (0: every call).

    Why cached: the marks are one more round trip per request, and they change only when a
    consumer finds the store went back (rare); ``fresh`` reads them now (``/healthz``).
    """

    def __init__(
        self, status: StoreStatus, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.status, self.ttl_s, self.clock = status, ttl_s, clock
        self._marks: list[Degraded] = []
        self._read_at = float("-inf")

    def marks(self) -> list[Degraded]:
        now = self.clock()
        if self.ttl_s <= 0 or now - self._read_at >= self.ttl_s:
            self._marks, self._read_at = self.status.degraded(), now
        return self._marks

    def fresh(self) -> list[Degraded]:
        self._read_at = float("-inf")
        return self.marks()

    def close(self) -> None:
        self.status.close()


def _user_row(user_id: str, got: VersionedVectors, model: ServingModel) -> np.ndarray:
    """The user's vector of the serving version, or a clear 404."""
    if got.ok[0]:
        if got.vectors.shape[1] != model.dim:
            raise VersionError(
                f"user vectors of model {model.version} are {got.vectors.shape[1]}-d, "
                f"the model's tower is {model.dim}-d"
            )
        return got.vectors[0]
    version = got.version(0)
    if version is None:
        raise UnknownUserError(
            f"unknown user {user_id!r}: no user embedding of the serving model {model.version}"
        )
    if version != model.version:
        raise UnknownUserError(
            f"user {user_id!r} has an embedding of model {version}, not of the serving "
            f"model {model.version} (not yet re-embedded)"
        )
    raise UnknownUserError(f"user {user_id!r} has no embedding vector of model {version}")


def open_reader(settings: RankingSettings | None = None) -> RankingReader:
    """The reader over the configured Feast store and the default model registry."""
    from feature_repo.store import open_store
    from learn_core.serving import open_registry
    from learn_core.settings import load

    s = settings or load(RankingSettings)
    return RankingReader(open_store(), open_registry(), s)
