"""Adapters of the interaction consumer: durable history state, content lookup, user sink.

Where the history lives, and why not in a Feast view: the window is consumer-private
operational state (read-modify-write once per batch, never served), and a Feast view
would put it through the registry, protobuf value conversion and Feast's timestamp
rules, one row at a time. So it is a small Feast-independent key space in the *same
backend* as the online store: a table in a SQLite file next to ``online.db``
(embedded profile) or keys under a prefix in the same Redis (production profile). Each
batch's state change is one transaction (SQLite) or one MULTI/EXEC (Redis), written
after the features and before the Kafka commit.

The same backend also keeps the first content fingerprint of every event id
(``claim_events``, ``streaming.event_claims``): first write wins, atomically across the
consumers of a group, so a reused id with other content is refused everywhere
(``learn_core.events``). Claims expire after a retention (7 days by default), so this
grows with the event rate, not forever.

Ports: ``UserFeatureSink`` (memory, Feast); the history stores are in ``streaming.history_store``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from feature_repo.schema import INTERACTION_LOG, ITEM_CONTENT, USER_TOWER
from feature_repo.store_status import MemoryStoreStatus, StoreStatus, open_store_status
from learn_core.history import to_ms
from streaming.history_store import (  # noqa: F401 - re-exported: the stores' old home
    HistoryStore,
    MemoryHistoryStore,
    RedisHistoryStore,
    SqliteHistoryStore,
    open_history_store,
)

if TYPE_CHECKING:
    from feature_repo.store import FeatureStoreHandle

log = logging.getLogger(__name__)

USER_VIEW = USER_TOWER.name
CONTENT_VIEW = ITEM_CONTENT.name


# ----------------------------------------------------------------------------- content


class ContentLookup:
    """An in-process LRU over a content-embedding reader.

    Only hits are cached: a missing item must be asked for again, because its
    embedding may land at any moment (that is what releases held users). An item whose
    vector has the wrong width, or (once ``expect`` names the tower's content model)
    another content identity, counts as missing: the tower must not read it.
    """

    def __init__(
        self,
        fetch: Callable[..., dict[str, np.ndarray]],
        max_entries: int,
        dim: int,
    ) -> None:
        self.fetch = fetch
        self.max_entries = max_entries
        self.dim = dim
        self.content_model: str | None = None
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def expect(self, content_model: str | None) -> None:
        """Serve only vectors of ``content_model`` from now on (``None``: any)."""
        with self._lock:
            if content_model != self.content_model:
                self.content_model = content_model
                self._lru.clear()

    def get_many(self, item_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors of the ids that have content; absent ids have none yet."""
        out: dict[str, np.ndarray] = {}
        want: list[str] = []
        with self._lock:
            for i in dict.fromkeys(item_ids):
                v = self._lru.get(i)
                if v is None:
                    want.append(i)
                else:
                    self._lru.move_to_end(i)
                    out[i] = v
            self.hits += len(out)
            self.misses += len(want)
        if want:
            fetched = (
                self.fetch(want)
                if self.content_model is None
                else self.fetch(want, self.content_model)
            )
            got = {k: v for k, v in fetched.items() if v.shape == (self.dim,)}
            out.update(got)
            with self._lock:
                for k, v in got.items():
                    self._lru[k] = v
                while len(self._lru) > self.max_entries:
                    self._lru.popitem(last=False)
        return out


# -------------------------------------------------------------------------------- sink


class UserFeatureSink(Protocol):
    """Where the consumer reads content and writes user features."""

    def read_content(
        self, item_ids: list[str], content_model: str | None = None
    ) -> dict[str, np.ndarray]:
        """Content vectors of the ids found (only those of ``content_model`` when given)."""
        ...

    def write_users_online(self, rows: pd.DataFrame) -> None: ...

    def append_interactions(self, rows: pd.DataFrame) -> None:
        """Durably append raw interactions to the offline log (idempotent by key)."""
        ...

    def append_users(self, rows: pd.DataFrame) -> None:
        """Durably append user embeddings to the offline log (idempotent by key)."""
        ...

    def read_interactions(self) -> pd.DataFrame:
        """The offline interaction log (the truth a store that went back is rebuilt from)."""
        ...

    def user_times(self, users: list[str], version: str) -> dict[str, int | None]:
        """Event time (ms) of each user's online row of ``version`` (None: no row)."""
        ...

    def store_status(self) -> StoreStatus:
        """The shared ``degraded`` marks of this store (``feature_repo.store_status``)."""
        ...


class MemoryUserSink:
    """In-process sink for unit tests: dicts of content, online rows and offline logs."""

    def __init__(
        self,
        content: Mapping[str, np.ndarray] | None = None,
        versions: Mapping[str, str] | None = None,
    ) -> None:
        self.content: dict[str, np.ndarray] = dict(content or {})
        #: item -> content identity of its vector (absent: any model may read it)
        self.versions: dict[str, str] = dict(versions or {})
        self.online: dict[str, dict] = {}
        self.offline_users: list[pd.DataFrame] = []
        self.offline_interactions: list[pd.DataFrame] = []
        self.fail_writes = False
        self.status = MemoryStoreStatus()

    def read_content(
        self, item_ids: list[str], content_model: str | None = None
    ) -> dict[str, np.ndarray]:
        return {
            i: self.content[i]
            for i in item_ids
            if i in self.content
            and (content_model is None or self.versions.get(i, content_model) == content_model)
        }

    def write_users_online(self, rows: pd.DataFrame) -> None:
        if self.fail_writes:
            raise ConnectionError("online store unavailable (test)")
        for r in rows.to_dict("records"):
            self.online[r["user_id"]] = r

    def append_interactions(self, rows: pd.DataFrame) -> None:
        self.offline_interactions.append(rows)

    def append_users(self, rows: pd.DataFrame) -> None:
        self.offline_users.append(rows)

    def read_interactions(self) -> pd.DataFrame:
        frames = [f for f in self.offline_interactions if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def user_times(self, users: list[str], version: str) -> dict[str, int | None]:
        rows = {u: self.online.get(u) for u in users}
        return {
            u: None if r is None or r["model_version"] != version else to_ms(r["event_timestamp"])
            for u, r in rows.items()
        }

    def store_status(self) -> StoreStatus:
        return self.status


class FeastUserSink:
    """Feast adapter: content via the fast online reader, user rows online and offline."""

    def __init__(self, handle: FeatureStoreHandle) -> None:
        self.handle = handle
        self._status: StoreStatus | None = None

    def read_content(
        self, item_ids: list[str], content_model: str | None = None
    ) -> dict[str, np.ndarray]:
        rows = self.handle.read_embeddings(CONTENT_VIEW, item_ids)
        return {
            i: rows.vectors[r].copy()
            for r, i in enumerate(rows.ids)
            if rows.found[r] and (content_model is None or rows.model_version[r] == content_model)
        }

    def write_users_online(self, rows: pd.DataFrame) -> None:
        self.handle.write_online(USER_VIEW, rows)

    def append_interactions(self, rows: pd.DataFrame) -> None:
        if len(rows):
            self.handle.append_offline(INTERACTION_LOG.name, rows)

    def append_users(self, rows: pd.DataFrame) -> None:
        if len(rows):
            self.handle.append_offline(USER_VIEW, rows)

    def read_interactions(self) -> pd.DataFrame:
        return self.handle.read_offline(INTERACTION_LOG.name)

    def user_times(self, users: list[str], version: str) -> dict[str, int | None]:
        rows = self.handle.read_embeddings(USER_VIEW, users, model_version=version)
        return {
            u: to_ms(t) if found and t is not None else None
            for u, found, t in zip(users, rows.found, rows.event_timestamp, strict=True)
        }

    def store_status(self) -> StoreStatus:
        if self._status is None:
            self._status = open_store_status(self.handle.settings)
        return self._status
